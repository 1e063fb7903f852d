"""Run one pipeline unit's ops and collectives on the device's resources (SimPy + fluid fabric).

Each node of the unit's graph (``npusim.engine.opgraph``) starts when the nodes it waits for are
done. A kernel occupies its compute stream (matrix, or vector where the chip has a separate vector
unit) and the HBM bandwidth its roofline implies; a collective runs its algorithm's stages
(``npusim.cost.algorithms``), each phase charging its bytes to the device's link of that tier
(``su``, ``nic``, plus ``spine`` across leaves) and twice its rate to HBM (read the send buffer,
write the receive buffer), and taking the profile's share of the compute units while it runs
(``overlap_compute_slowdown`` of the matrix unit, ``overlap_vector_slowdown`` of the vector unit).

The unit's time is split into named parts by what the device was doing: any kernel running is
``compute`` (or ``recompute``); otherwise a collective in flight is that class's exposed
communication. A collective's in-flight time beyond its exposed part is hidden.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import simpy

from npusim.cost.algorithms import collective_plan
from npusim.cost.compute import op_time
from npusim.cost.topology import host_capacities, tiers_of
from npusim.engine.fabric import Fabric
from npusim.engine.opgraph import DP_BUCKET, SWAP_OUT, ZERO3, Node
from npusim.workload.ops import Comm, Op

MATRIX_KINDS = ("gemm", "grouped_gemm", "attention")


@dataclass(frozen=True)
class UnitRun:
    """What one unit did on one device."""

    duration_s: float
    """Until every node except DP gradient buckets finished."""
    parts: dict[str, float]
    """Named parts adding up to ``duration_s``."""
    busy_s: dict[str, float]
    """Resource-seconds used per resource (matrix, vector, hbm, su, nic, spine)."""
    in_flight_s: dict[str, float]
    """Per communication class: time with at least one of its collectives in flight."""
    dp_tail_s: float = 0.0
    """DP gradient traffic still running after ``duration_s``."""
    slices: tuple = field(default=(), compare=False)
    """(track, name, start, end) per node, for timelines."""


def category(item) -> str:
    """The named part an item's time counts to while it is what the device is doing."""
    if isinstance(item, Op):
        return "recompute" if item.recompute else "compute"
    if item.name.startswith((ZERO3, DP_BUCKET)):
        return "dp_comm"
    if item.kind == "offload":
        return "offload"
    return f"{item.kind}_comm"


def capacities(hw) -> dict[str, float]:
    """Capacity of each resource of one device (streams: 1; HBM and links: bytes/s)."""
    t = tiers_of(hw)
    d = hw.derating
    return {"matrix": 1.0, "vector": 1.0, "hbm": hw.chip.hbm_bandwidth_GBps * 1e9,
            "su": t.scale_up_GBps * 1e9 * d.scale_up_fraction,
            "nic": t.scale_out_GBps * 1e9 * d.scale_out_fraction,
            "spine": t.spine_GBps * 1e9 * d.scale_out_fraction, **host_capacities(hw)}


class _Runner:
    """One unit simulation."""

    def __init__(self, nodes: list[Node], hw, precision: str, places: dict, cache: dict):
        self.nodes, self.hw, self.precision, self.places, self.cache = nodes, hw, precision, places, cache
        self.env = simpy.Environment()
        self.fabric = Fabric(self.env, capacities(hw))
        self.vector = "vector" if hw.chip.separate_vector_unit else "matrix"
        d = hw.derating
        self.comm_share = {"matrix": d.overlap_compute_slowdown}
        if hw.chip.separate_vector_unit:
            self.comm_share["vector"] = d.overlap_vector_slowdown
        self.waiting = [len(n.deps) for n in nodes]
        self.children: list[list[int]] = [[] for _ in nodes]
        for i, n in enumerate(nodes):
            for dep in n.deps:
                self.children[dep].append(i)
        self.span: list[tuple[float, float]] = [(0.0, 0.0)] * len(nodes)

    def op_time(self, op: Op) -> float:
        key = ("op", op)
        t = self.cache.get(key)
        if t is None:
            t = self.cache[key] = op_time(op, self.hw, self.precision)
        return t

    def plan_of(self, c: Comm):
        key = ("algo", c, self.places[c.group])
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = collective_plan(c, self.places[c.group], self.hw)[1]
        return hit

    def start(self, i: int) -> None:
        self.env.process(self.run_node(i))

    def run_node(self, i: int):
        item = self.nodes[i].item
        t0 = self.env.now
        if isinstance(item, Op):
            t = self.op_time(item)
            stream = "matrix" if item.kind in MATRIX_KINDS else self.vector
            yield self.fabric.run(i, t, {stream: 1.0, "hbm": item.bytes / t if t > 0 else 0.0})
        elif item.kind == "offload":
            # A DMA copy between HBM and pinned host memory: its link direction and HBM, no cores.
            link = "host_d2h" if item.name.startswith(SWAP_OUT) else "host_h2d"
            rate = self.fabric.capacity[link]
            yield self.fabric.run(i, item.bytes / rate, {link: rate, "hbm": rate})
        else:
            pl = self.places[item.group]
            if pl.size > 1 and item.bytes > 0:
                yield self.env.timeout(self.hw.derating.collective_launch_us * 1e-6)
                for stage in self.plan_of(item):
                    yield simpy.AllOf(self.env, [self.env.process(self.phase(i, p)) for p in stage])
        self.span[i] = (t0, self.env.now)
        for ch in self.children[i]:
            self.waiting[ch] -= 1
            if self.waiting[ch] == 0:
                self.start(ch)

    def phase(self, i: int, p):
        if p.latency_s > 0:
            yield self.env.timeout(p.latency_s)
        if p.bytes > 0:
            demand = dict(self.comm_share)
            demand[p.tier] = p.rate_Bps
            if p.cross_leaf:
                demand["spine"] = p.rate_Bps
            demand["hbm"] = 2.0 * p.rate_Bps
            yield self.fabric.run(i, p.bytes / p.rate_Bps, demand)

    def run(self) -> UnitRun:
        for i, w in enumerate(self.waiting):
            if w == 0:
                self.start(i)
        self.env.run()
        return self.summary()

    def summary(self) -> UnitRun:
        nodes, span = self.nodes, self.span
        dur = max((span[i][1] for i, n in enumerate(nodes) if n.lane != "dp"), default=0.0)
        end_all = max((s[1] for s in span), default=0.0)
        parts, in_flight = attribute([(span[i][0], span[i][1], category(n.item), isinstance(n.item, Op))
                                      for i, n in enumerate(nodes)], dur)
        busy = {k: v for k, v in self.fabric.used_s.items() if v > 0 or not k.startswith("host_")}
        slices = tuple((_track(n.item, self.vector), n.item.name, span[i][0], span[i][1])
                       for i, n in enumerate(nodes) if span[i][1] > span[i][0])
        return UnitRun(dur, parts, busy, in_flight, max(0.0, end_all - dur), slices)


def _track(item, vector: str) -> str:
    """Timeline track of an item: its compute stream, or its communication class."""
    if isinstance(item, Op):
        return "matrix" if item.kind in MATRIX_KINDS else vector
    return category(item)


def attribute(spans: list[tuple[float, float, str, bool]], until: float) -> tuple[dict[str, float], dict[str, float]]:
    """(named parts adding up to ``until``, in-flight seconds per communication class) from
    (start, end, category, is_kernel) spans: kernels first, then collectives, then activation swaps,
    else 'other'."""
    events = []
    for s, e, cat, is_k in spans:
        if e > s:
            events.append((s, 1, cat, is_k))
            events.append((e, -1, cat, is_k))
    events.sort(key=lambda x: x[0])
    kern: dict[str, int] = {}
    comm: dict[str, int] = {}
    parts: dict[str, float] = {}
    in_flight: dict[str, float] = {}
    t = 0.0
    i = 0
    while i <= len(events):
        nxt = events[i][0] if i < len(events) else max(until, t)
        a, b = t, min(nxt, until) if t < until else t
        if b > a:
            # a swap is charged only when nothing else is in flight (it runs on its own DMA lane)
            owners = ([c for c, n in kern.items() if n > 0] or [c for c, n in comm.items() if n > 0 and c != "offload"]
                      or [c for c, n in comm.items() if n > 0] or ["other"])
            for c in owners:
                parts[c] = parts.get(c, 0.0) + (b - a) / len(owners)
        for c, n in comm.items():
            if n > 0 and nxt > t:
                in_flight[c] = in_flight.get(c, 0.0) + nxt - t
        if i == len(events):
            break
        t = nxt
        while i < len(events) and events[i][0] == t:
            _, d, cat, is_k = events[i]
            box = kern if is_k else comm
            box[cat] = box.get(cat, 0) + d
            i += 1
    return parts, in_flight


def run_unit(nodes: list[Node], hw, precision: str, places: dict, cache: dict) -> UnitRun:
    """Simulate one unit's graph on one device (plan dependent through ``places`` and the nodes)."""
    return _Runner(nodes, hw, precision, places, cache).run()
