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
- all-to-all (``pairwise``): intra- and inter-domain shares move at once on their own ports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


def intra_rate(t: Tiers, k: int, hw) -> float:
    """Per-device bytes/s inside a scale-up domain for a group of ``k`` members."""
    frac = hw.derating.scale_up_fraction
    if t.full_mesh:
        return min(t.scale_up_GBps, t.scale_up_link_GBps * (k - 1)) * 1e9 * frac
    return t.scale_up_GBps * 1e9 * frac


def inter_rate(t: Tiers, pl: Placement, hw) -> float:
    """Per-device bytes/s across domains (NIC, or the spine share when the group spans leaves)."""
    bw = t.scale_out_GBps if pl.leaves <= 1 else t.spine_GBps
    return bw * 1e9 * hw.derating.scale_out_fraction


def _intra_half(nbytes: float, k: int, t: Tiers, hw) -> Phase:
    """Reduce-scatter (or all-gather) of an ``nbytes`` buffer among ``k`` ranks in one domain."""
    steps = 1 if t.full_mesh else k - 1
    return Phase("su", (k - 1) / k * nbytes, intra_rate(t, k, hw), steps * t.scale_up_latency_us * 1e-6)


def _inter_half(nbytes: float, n: int, pl: Placement, t: Tiers, hw, steps: int | None = None) -> Phase:
    """Reduce-scatter (or all-gather) of ``nbytes`` among ``n`` ranks each in a different domain."""
    steps = n - 1 if steps is None else steps
    return Phase("nic", (n - 1) / n * nbytes, inter_rate(t, pl, hw), steps * t.scale_out_latency_us * 1e-6,
                 pl.leaves > 1)


def _hierarchical(c: Comm, pl: Placement, t: Tiers, hw, inter_steps: int | None = None) -> list[Stage]:
    """Reduce-scatter inside the domain, the inter-domain step on 1/k of the data, all-gather inside
    (all-reduce); one half of it for reduce-scatter or all-gather."""
    k, n_dom = pl.per_domain, pl.domains
    half: list[Stage] = []
    if k > 1:
        half.append((_intra_half(c.bytes, k, t, hw),))
    if n_dom > 1:
        half.append((_inter_half(c.bytes / k, n_dom, pl, t, hw, inter_steps),))
    if c.collective == "all_reduce":
        return half + half[::-1]
    return half


def ring(c: Comm, pl: Placement, t: Tiers, hw) -> list[Stage] | None:
    """Ring (mesh inside a full-mesh domain), hierarchical across domains."""
    if c.collective not in ("all_reduce", "all_gather", "reduce_scatter"):
        return None
    return _hierarchical(c, pl, t, hw)


def tree(c: Comm, pl: Placement, t: Tiers, hw) -> list[Stage] | None:
    """Double binary tree across domains (all-reduce only): log-depth latency, ring bytes."""
    if c.collective != "all_reduce" or pl.domains <= 2:
        return None
    return _hierarchical(c, pl, t, hw, inter_steps=max(1, math.ceil(math.log2(pl.domains))))


def one_shot(c: Comm, pl: Placement, t: Tiers, hw) -> list[Stage] | None:
    """All-reduce inside one domain in one step: each rank reads every peer's whole buffer."""
    if c.collective != "all_reduce" or pl.domains != 1 or pl.per_domain <= 1:
        return None
    k = pl.per_domain
    return [(Phase("su", (k - 1) * c.bytes, intra_rate(t, k, hw), t.scale_up_latency_us * 1e-6),)]


def pairwise(c: Comm, pl: Placement, t: Tiers, hw) -> list[Stage] | None:
    """All-to-all(-v): the intra- and inter-domain shares of each rank's ``bytes`` move at once;
    the hierarchical stages (``all_to_all_inter`` / ``_intra``) move on one tier each."""
    n, k, n_dom = pl.size, pl.per_domain, pl.domains
    up, out = t.scale_up_latency_us * 1e-6, t.scale_out_latency_us * 1e-6
    if c.collective == "all_to_all":
        phases = []
        if k > 1:
            phases.append(Phase("su", c.bytes * (k - 1) / n, intra_rate(t, k, hw), 0.0))
        if n_dom > 1:
            phases.append(Phase("nic", c.bytes * (n - k) / n, inter_rate(t, pl, hw), 0.0, pl.leaves > 1))
        steps = 1 if t.full_mesh and n_dom == 1 else max(1, n_dom - 1)
        lat = (up if n_dom == 1 else out) * steps
        phases = [Phase(p.tier, p.bytes, p.rate_Bps, lat, p.cross_leaf) for p in phases]
        return [tuple(phases)] if phases else []
    if c.collective == "all_to_all_inter":
        if n_dom <= 1:
            return []
        return [(Phase("nic", c.bytes, inter_rate(t, pl, hw), (n_dom - 1) * out, pl.leaves > 1),)]
    if c.collective == "all_to_all_intra":
        if k <= 1:
            return []
        return [(Phase("su", c.bytes * (k - 1) / k, intra_rate(t, k, hw), up),)]
    if c.collective == "send_recv":
        if n_dom > 1:
            return [(Phase("nic", c.bytes, inter_rate(t, pl, hw), out, pl.leaves > 1),)]
        link = t.scale_up_link_GBps * 1e9 * hw.derating.scale_up_fraction
        return [(Phase("su", c.bytes, link, up),)]
    return None


ALGORITHMS = {"ring": ring, "tree": tree, "one_shot": one_shot, "pairwise": pairwise}
"""Collective algorithm registry: name -> stages of a collective (None where it does not apply)."""


def stages_time(stages: list[Stage]) -> float:
    """Seconds the stages take alone (phases of a stage at once, stages in sequence)."""
    return sum(max(p.alone_s for p in st) for st in stages)


def collective_plan(c: Comm, pl: Placement, hw) -> tuple[str, list[Stage]]:
    """(algorithm name, stages) of the fastest algorithm for ``c`` alone (plan dependent)."""
    t = tiers_of(hw)
    best: tuple[float, str, list[Stage]] | None = None
    for name, algo in ALGORITHMS.items():
        st = algo(c, pl, t, hw)
        if st is None:
            continue
        cost = stages_time(st)
        if best is None or cost < best[0]:
            best = (cost, name, st)
    if best is None:
        raise ValueError(f"no algorithm for collective {c.collective!r}")
    return best[1], best[2]
