"""Collective time on the topology: ring / mesh / hierarchical algorithms per tier.

Model: a collective of ``n`` ranks whose members sit ``k`` to a scale-up domain over ``n/k``
domains. Inside a domain, a switch gives each device its full port; a full mesh gives a group of
``k`` only ``k-1`` of the device's links (HCCL's mesh algorithm sends to every peer at once).
Across domains the collective is hierarchical: reduce-scatter inside the domain, the inter-domain
step on 1/k of the data over every member's own NIC at once, then all-gather inside the domain.
Concurrent groups of other ranks use their own NICs and mesh links, so they do not contend unless
the profile shares NICs (``nics_per_device`` < 1) or oversubscribes the spine.
"""
from __future__ import annotations

from npusim.cost.topology import Placement, Tiers, place_group, tiers_of
from npusim.workload.ops import Comm


def _intra_bw(t: Tiers, k: int, hw) -> float:
    """Per-device bytes/s inside a scale-up domain for a group of ``k`` members."""
    frac = hw.derating.scale_up_fraction
    if t.full_mesh:
        return min(t.scale_up_GBps, t.scale_up_link_GBps * (k - 1)) * 1e9 * frac
    return t.scale_up_GBps * 1e9 * frac


def _inter_bw(t: Tiers, pl: Placement, hw) -> float:
    """Per-device bytes/s across domains (NIC, or the spine share when the group spans leaves)."""
    frac = hw.derating.scale_out_fraction
    bw = t.scale_out_GBps if pl.leaves <= 1 else t.spine_GBps
    return bw * 1e9 * frac


def _reduce_scatter_intra(nbytes: float, k: int, t: Tiers, hw) -> float:
    """Reduce-scatter (or all-gather) of an ``nbytes`` buffer among ``k`` ranks in one domain."""
    if k <= 1:
        return 0.0
    steps = 1 if t.full_mesh else k - 1
    return (k - 1) / k * nbytes / _intra_bw(t, k, hw) + steps * t.scale_up_latency_us * 1e-6


def _reduce_scatter_inter(nbytes: float, n: int, pl: Placement, t: Tiers, hw) -> float:
    """Ring reduce-scatter of ``nbytes`` among ``n`` ranks each in a different domain."""
    if n <= 1:
        return 0.0
    return (n - 1) / n * nbytes / _inter_bw(t, pl, hw) + (n - 1) * t.scale_out_latency_us * 1e-6


def _all_to_all(nbytes: float, pl: Placement, t: Tiers, hw) -> float:
    """All-to-all where each rank sends ``nbytes`` in total, spread evenly over the group."""
    n, k = pl.size, pl.per_domain
    intra = nbytes * (k - 1) / n
    inter = nbytes * (n - k) / n
    t_intra = intra / _intra_bw(t, k, hw) if k > 1 else 0.0
    t_inter = inter / _inter_bw(t, pl, hw) if pl.domains > 1 else 0.0
    lat = t.scale_up_latency_us if pl.domains == 1 else t.scale_out_latency_us
    return max(t_intra, t_inter) + lat * 1e-6 * (1 if t.full_mesh and pl.domains == 1 else max(1, pl.domains - 1))


def collective_time(c: Comm, pl: Placement, hw) -> float:
    """Seconds one device spends in collective ``c`` placed as ``pl`` (plan dependent)."""
    if pl.size <= 1 or c.bytes <= 0:
        return 0.0
    return hw.derating.collective_launch_us * 1e-6 + _transfer_time(c, pl, hw)


def _transfer_time(c: Comm, pl: Placement, hw) -> float:
    """Seconds of data movement and per-step latency of collective ``c``."""
    t = tiers_of(hw)
    k, n_dom = pl.per_domain, pl.domains
    if c.collective == "all_to_all":
        return _all_to_all(c.bytes, pl, t, hw)
    if c.collective == "all_to_all_inter":
        # Hierarchical EP, stage 1: each device sends its tokens once to every other server that
        # hosts one of their experts; ``bytes`` is that volume, all of it over the NIC.
        if n_dom <= 1:
            return 0.0
        return c.bytes / _inter_bw(t, pl, hw) + (n_dom - 1) * t.scale_out_latency_us * 1e-6
    if c.collective == "all_to_all_intra":
        # Stage 2: the received copies are spread to the experts' devices inside the server.
        if k <= 1:
            return 0.0
        return c.bytes * (k - 1) / k / _intra_bw(t, k, hw) + t.scale_up_latency_us * 1e-6
    if c.collective == "send_recv":
        if n_dom > 1:
            return c.bytes / _inter_bw(t, pl, hw) + t.scale_out_latency_us * 1e-6
        return c.bytes / (t.scale_up_link_GBps * 1e9 * hw.derating.scale_up_fraction) + t.scale_up_latency_us * 1e-6
    one_way = _reduce_scatter_intra(c.bytes, k, t, hw) + _reduce_scatter_inter(c.bytes / k, n_dom, pl, t, hw)
    if c.collective == "all_reduce":
        return 2.0 * one_way
    return one_way


def group_layout(plan) -> dict[str, tuple[int, int]]:
    """(size, stride) in global rank order of every group kind (tp fastest, then cp, dp, pp)."""
    tp, cp, dp = plan.tp, plan.cp, plan.dp
    eep, etp = plan.expert_ep, plan.expert_tp
    edp = max(1, tp * cp * dp // (eep * etp))
    return {"tp": (tp, 1), "cp": (cp, tp), "dp": (dp, tp * cp), "pp": (2, tp * cp * dp),
            "etp": (etp, 1), "ep": (eep, etp), "edp": (edp, eep * etp), "dp_cp": (dp * cp, tp),
            "instance": (tp * cp * dp, 1)}


def placements(plan, hw) -> dict[str, Placement]:
    """Placement of every group kind of the plan on the profile's topology."""
    dom = hw.scale_up_devices
    out = {}
    for name, (size, stride) in group_layout(plan).items():
        out[name] = place_group(size, stride, dom, hw.cluster.nodes_per_leaf, hw.node.devices_per_node)
    return out
