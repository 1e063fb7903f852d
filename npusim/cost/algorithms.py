"""Collective algorithms as steps over the link tiers of one device.

A collective of ``n`` ranks, ``k`` to a scale-up domain over ``n / k`` domains, runs as *stages* in
sequence; a stage is one or more *phases* that run at once, each moving ``bytes`` through one
device's port of one tier (``su`` scale-up, ``nic`` scale-out, plus ``spine`` when the group spans
leaf switches) after ``latency_s`` of per-step latency. Alone, a phase takes
``latency_s + bytes / rate_Bps``; in the event engine the bytes are charged to the link resources
and share them with whatever else runs (``npusim.engine.fabric``).

Algorithms (``ALGORITHMS``; the fastest alone is used, so small messages take latency-optimal
ones and large messages bandwidth-optimal ones):

- ``ring``: reduce-scatter / all-gather in ``k - 1`` steps of ``S / k`` inside a switched domain
  (``1`` step on a full mesh, HCCL's mesh algorithm sending to every peer at once), ``n/k - 1``
  steps across domains; all-reduce = reduce-scatter + all-gather. Hierarchical across domains:
  reduce-scatter inside, the inter-domain step on ``1 / k`` of the data over every member's own
  NIC, all-gather inside.
- ``tree`` (all-reduce across domains): a double binary tree, ``2 ceil(log2 (n/k))`` latency steps
  for the same bytes as the ring (NCCL's tree algorithm).
- ``one_shot`` (all-reduce inside one domain): every rank reads all peers' full buffers in one step,
  ``(k - 1) S`` bytes through its port (TensorRT-LLM / vLLM custom all-reduce for small messages).
- ``in_switch`` (all-reduce inside one switched domain whose switches reduce,
  ``node.scale_up.in_switch_reduction_latency_us``; NCCL's NVLS): each rank sends its buffer up
  once and reads the reduced result once, ``S (1 + 1/k)`` bytes per direction (multimem
  load-reduce of its slice from every peer, then a multicast store), after the fixed latency.
- all-to-all (``pairwise``): intra- and inter-domain shares move at once on their own ports.

Each tier may list low-latency protocols (``protocols``: NCCL's LL and LL128 beside Simple): every
combination is costed with its per-step latency and its wire bytes (payload / ``payload_fraction``),
and the fastest algorithm-protocol pair alone is used. A group inside a two-level scale-up domain
whose members sit under different first-level switches moves its intra-domain phases at the second
level's rate and latency. On a multi-plane network, traffic between members on different planes
is forwarded over the scale-up fabric first (NCCL's PXN), so those bytes also cross a scale-up link.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

from npusim.cost.topology import Placement, Tiers, tiers_of
from npusim.workload.ops import Comm


@dataclass(frozen=True)
class Phase:
    """Bytes one device moves through its port of one tier in one step group."""

    tier: str
    """'su' (scale-up) or 'nic' (scale-out)."""
    bytes: float
    rate_Bps: float
    """Per-device rate alone (bytes/s)."""
    latency_s: float
    cross_leaf: bool = False
    """True when the traffic crosses the spine (also charged to the device's spine share)."""

    @property
    def alone_s(self) -> float:
        """Seconds this phase takes with nothing else on its links."""
        return self.latency_s + (self.bytes / self.rate_Bps if self.bytes > 0 else 0.0)


Stage = tuple[Phase, ...]
"""Phases that run at the same time."""


@dataclass(frozen=True)
class Wire:
    """The protocol in force on each tier: per-step latency and data fraction of the wire bytes."""

    su_latency_us: float
    su_payload: float
    su_l2_latency_us: float
    nic_latency_us: float
    nic_payload: float


def intra_rate(t: Tiers, k: int, hw, pl: Placement | None = None) -> float:
    """Per-device bytes/s inside a scale-up domain for a group of ``k`` members (at the second
    level's share when the group spans first-level switches)."""
    frac = hw.derating.scale_up_fraction
    if t.full_mesh:
        return min(t.scale_up_GBps, t.scale_up_link_GBps * (k - 1)) * 1e9 * frac
    if pl is not None and pl.cross_switch:
        return min(t.scale_up_GBps, t.scale_up_l2_GBps) * 1e9 * frac
    return t.scale_up_GBps * 1e9 * frac


def inter_rate(t: Tiers, pl: Placement, hw) -> float:
    """Per-device bytes/s across domains (NIC, or the spine share when the group spans leaves)."""
    bw = t.scale_out_GBps if pl.leaves <= 1 else t.spine_GBps
    return bw * 1e9 * hw.derating.scale_out_fraction


def _su_step_s(pl: Placement, w: Wire) -> float:
    """Seconds of one scale-up step (second-level latency when the group spans first-level switches)."""
    return (w.su_l2_latency_us if pl.cross_switch else w.su_latency_us) * 1e-6


def _forward(nic_bytes: float, pl: Placement, t: Tiers, hw, w: Wire) -> list[Phase]:
    """The scale-up hop that carries cross-plane bytes to a peer on the right plane (PXN)."""
    if pl.planes <= 1 or nic_bytes <= 0:
        return []
    share = nic_bytes * (pl.planes - 1) / pl.planes
    link = (t.scale_up_link_GBps if t.full_mesh else t.scale_up_GBps) * 1e9 * hw.derating.scale_up_fraction
    return [Phase("su", share / w.su_payload, link, w.su_latency_us * 1e-6)]


def _intra_half(nbytes: float, pl: Placement, t: Tiers, hw, w: Wire) -> Phase:
    """Reduce-scatter (or all-gather) of an ``nbytes`` buffer among the ``k`` ranks of one domain."""
    k = pl.per_domain
    steps = 1 if t.full_mesh else k - 1
    return Phase("su", (k - 1) / k * nbytes / w.su_payload, intra_rate(t, k, hw, pl), steps * _su_step_s(pl, w))


def _inter_half(nbytes: float, pl: Placement, t: Tiers, hw, w: Wire, steps: int | None = None) -> Stage:
    """Reduce-scatter (or all-gather) of ``nbytes`` among ``n`` ranks each in a different domain
    (ring neighbours share their local index, so only one-per-domain groups cross planes)."""
    n = pl.domains
    steps = n - 1 if steps is None else steps
    nic = Phase("nic", (n - 1) / n * nbytes / w.nic_payload, inter_rate(t, pl, hw),
                steps * w.nic_latency_us * 1e-6, pl.leaves > 1)
    fwd = _forward(nic.bytes, pl, t, hw, w) if pl.per_domain == 1 else []
    return (nic, *fwd)


def _hierarchical(c: Comm, pl: Placement, t: Tiers, hw, w: Wire, inter_steps: int | None = None) -> list[Stage]:
    """Reduce-scatter inside the domain, the inter-domain step on 1/k of the data, all-gather inside
    (all-reduce); one half of it for reduce-scatter or all-gather."""
    k, n_dom = pl.per_domain, pl.domains
    half: list[Stage] = []
    if k > 1:
        half.append((_intra_half(c.bytes, pl, t, hw, w),))
    if n_dom > 1:
        half.append(_inter_half(c.bytes / k, pl, t, hw, w, inter_steps))
    if c.collective == "all_reduce":
        return half + half[::-1]
    return half


def ring(c: Comm, pl: Placement, t: Tiers, hw, w: Wire) -> list[Stage] | None:
    """Ring (mesh inside a full-mesh domain), hierarchical across domains."""
    if c.collective not in ("all_reduce", "all_gather", "reduce_scatter"):
        return None
    return _hierarchical(c, pl, t, hw, w)


def tree(c: Comm, pl: Placement, t: Tiers, hw, w: Wire) -> list[Stage] | None:
    """Double binary tree across domains (all-reduce only): log-depth latency, ring bytes."""
    if c.collective != "all_reduce" or pl.domains <= 2:
        return None
    return _hierarchical(c, pl, t, hw, w, inter_steps=max(1, math.ceil(math.log2(pl.domains))))


def one_shot(c: Comm, pl: Placement, t: Tiers, hw, w: Wire) -> list[Stage] | None:
    """All-reduce inside one domain in one step: each rank reads every peer's whole buffer."""
    if c.collective != "all_reduce" or pl.domains != 1 or pl.per_domain <= 1:
        return None
    k = pl.per_domain
    return [(Phase("su", (k - 1) * c.bytes / w.su_payload, intra_rate(t, k, hw, pl), _su_step_s(pl, w)),)]


def in_switch(c: Comm, pl: Placement, t: Tiers, hw, w: Wire) -> list[Stage] | None:
    """All-reduce reduced by the scale-up switches (NVLS): ``S (1 + 1/k)`` bytes each way, fixed latency."""
    lat_us = hw.node.scale_up.in_switch_reduction_latency_us
    if (lat_us is None or c.collective != "all_reduce" or pl.domains != 1 or pl.per_domain <= 1
            or t.full_mesh or w.su_payload < 1.0):
        return None
    k = pl.per_domain
    return [(Phase("su", c.bytes * (1 + 1 / k), intra_rate(t, k, hw, pl), lat_us * 1e-6),)]


def pairwise(c: Comm, pl: Placement, t: Tiers, hw, w: Wire) -> list[Stage] | None:
    """All-to-all(-v): the intra- and inter-domain shares of each rank's ``bytes`` move at once;
    the hierarchical stages (``all_to_all_inter`` / ``_intra``) move on one tier each."""
    n, k, n_dom = pl.size, pl.per_domain, pl.domains
    up, out = _su_step_s(pl, w), w.nic_latency_us * 1e-6
    if c.collective == "all_to_all":
        phases = []
        if k > 1:
            phases.append(Phase("su", c.bytes * (k - 1) / n / w.su_payload, intra_rate(t, k, hw, pl), 0.0))
        if n_dom > 1:
            phases.append(Phase("nic", c.bytes * (n - k) / n / w.nic_payload, inter_rate(t, pl, hw), 0.0,
                                pl.leaves > 1))
        steps = 1 if t.full_mesh and n_dom == 1 else max(1, n_dom - 1)
        lat = (up if n_dom == 1 else out) * steps
        phases = [Phase(p.tier, p.bytes, p.rate_Bps, lat, p.cross_leaf) for p in phases]
        if n_dom > 1:
            phases += _forward(phases[-1].bytes, pl, t, hw, w)
        return [tuple(phases)] if phases else []
    if c.collective == "all_to_all_inter":
        if n_dom <= 1:
            return []
        return [(Phase("nic", c.bytes / w.nic_payload, inter_rate(t, pl, hw), (n_dom - 1) * out, pl.leaves > 1),)]
    if c.collective == "all_to_all_intra":
        if k <= 1:
            return []
        return [(Phase("su", c.bytes * (k - 1) / k / w.su_payload, intra_rate(t, k, hw, pl), up),)]
    if c.collective == "send_recv":
        if n_dom > 1:
            nic = Phase("nic", c.bytes / w.nic_payload, inter_rate(t, pl, hw), out, pl.leaves > 1)
            return [(nic, *_forward(nic.bytes, pl, t, hw, w))]
        link = t.scale_up_link_GBps * 1e9 * hw.derating.scale_up_fraction
        return [(Phase("su", c.bytes / w.su_payload, link, up),)]
    return None


ALGORITHMS = {"ring": ring, "tree": tree, "one_shot": one_shot, "in_switch": in_switch, "pairwise": pairwise}
"""Collective algorithm registry: name -> stages of a collective (None where it does not apply)."""


def stages_time(stages: list[Stage]) -> float:
    """Seconds the stages take alone (phases of a stage at once, stages in sequence)."""
    return sum(max(p.alone_s for p in st) for st in stages)


def wires(c: Comm, t: Tiers, hw) -> list[tuple[str, Wire]]:
    """(name, wire) of every protocol combination the profile allows for a buffer of ``c.bytes``:
    the bulk protocol first, then each tier's low-latency ones (plan independent)."""
    su_l2_extra = t.scale_up_l2_latency_us - t.scale_up_latency_us
    ups = [("", t.scale_up_latency_us, 1.0)] + [
        (p.name, p.step_latency_us, p.payload_fraction) for p in hw.node.scale_up.protocols
        if p.max_message_bytes is None or c.bytes <= p.max_message_bytes]
    outs = [("", t.scale_out_latency_us, 1.0)] + [
        (p.name, p.step_latency_us, p.payload_fraction) for p in hw.cluster.protocols
        if p.max_message_bytes is None or c.bytes <= p.max_message_bytes]
    return [("/".join(n for n in (u[0], o[0]) if n),
             Wire(u[1], u[2], u[1] + su_l2_extra, o[1], o[2])) for u, o in product(ups, outs)]


def collective_plan(c: Comm, pl: Placement, hw) -> tuple[str, list[Stage]]:
    """(algorithm name, stages) of the fastest algorithm and protocol for ``c`` alone (plan
    dependent); the name carries the protocol after a colon when it is not the bulk one."""
    t = tiers_of(hw)
    best: tuple[float, str, list[Stage]] | None = None
    for proto, w in wires(c, t, hw):
        for name, algo in ALGORITHMS.items():
            st = algo(c, pl, t, hw, w)
            if st is None:
                continue
            cost = stages_time(st)
            if best is None or cost < best[0]:
                best = (cost, f"{name}:{proto}" if proto else name, st)
    if best is None:
        raise ValueError(f"no algorithm for collective {c.collective!r}")
    return best[1], best[2]
