"""Finish times of a fixed-order pipeline schedule as longest paths, without the event loop.

With unit durations that do not depend on when a unit runs, the SimPy pipeline
(``npusim.engine.pipeline.simulate_pipeline``) computes a longest path through a fixed graph: a unit
starts when its rank's previous unit has finished and its cross-rank inputs have arrived (finish +
p2p), and runs for its duration. ``compile_order`` turns a schedule's per-rank orders into that graph
once per (schedule, pp, vpp, micro-batches, pairing), listed in an order where every unit follows
its inputs; ``finish_times`` then walks it once per set of durations. The fast tier uses it for the
interleaved bubble, which has no exact closed form once chunks differ in cost.

Durations are per stage: forward ``fwd[s]`` and backward ``bwd[s]`` (a full backward); an overlapped
pair ('FB' unit) lasts ``fwd[f] + bwd[b]`` (the fast tier's paired parts are already split so), and
``p2p[s]`` is the time to send stage ``s``'s activation or gradient to its neighbour's rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from npusim.engine.layout import pipeline_layout
from npusim.engine.schedules import pair_steady, schedule_orders

_NONE = -1


@dataclass(frozen=True)
class Program:
    """A schedule's dependency graph in an order where every unit follows its inputs."""

    pp: int
    stages: int
    nodes: tuple[tuple[int, int, int, int, int, int, int], ...]
    """Per unit: (rank, forward stage, backward stage, first input, its p2p stage, second input, its
    p2p stage); -1 where absent (a lone F has no backward stage, an input on the same rank no p2p)."""
    last_backward: tuple[int, ...]
    """Per stage, the node of its last backward (when its weight gradients are complete)."""


@lru_cache(maxsize=256)
def compile_order(schedule: str, pp: int, vpp: int, m: int, paired: bool) -> Program:
    """The graph of ``schedule``'s fixed per-rank orders over ``m`` micro-batches (``paired``: steady
    backward + next forward as one unit, ``schedules.pair_steady``). Raises ValueError for orders
    with deferred weight gradients (W units) or a deadlock."""
    lay = pipeline_layout(schedule, pp, vpp)
    orders = schedule_orders(schedule, pp, vpp, m)
    if paired:
        orders = [pair_steady(o) for o in orders]
    last = lay.stages - 1
    where: dict[tuple[str, int, int], int] = {}
    nodes: list[tuple[int, int, int, int, int, int, int]] = []

    def inputs(kind: str, stage: int, mb: int) -> tuple[int, int] | None:
        """(node, p2p stage) the unit waits for; None while that node is not placed yet."""
        if kind == "F":
            if stage == 0:
                return _NONE, _NONE
            dep, hop = ("F", stage - 1, mb), stage - 1
        elif stage == last:
            dep, hop = ("F", stage, mb), _NONE
        else:
            dep, hop = ("B", stage + 1, mb), stage
        if dep not in where:
            return None
        same = lay.rank_of(dep[1], mb, m) == lay.rank_of(stage, mb, m)
        return where[dep], (_NONE if same or hop == _NONE else hop)

    pos = [0] * pp
    left = sum(len(o) for o in orders)
    while left:
        moved = False
        for r in range(pp):
            while pos[r] < len(orders[r]):
                u = orders[r][pos[r]]
                chunks = lay.rank_chunks[r]
                z: tuple[int, int] | None = (_NONE, _NONE)
                if u[0] == "F":
                    f, b, a = chunks[u[1]], _NONE, inputs("F", chunks[u[1]], u[2])
                elif u[0] == "B":
                    f, b, a = _NONE, chunks[u[1]], inputs("B", chunks[u[1]], u[2])
                elif u[0] == "FB":
                    f, b = chunks[u[1]], chunks[u[3]]
                    a, z = inputs("F", f, u[2]), inputs("B", b, u[4])
                else:
                    raise ValueError(f"schedule {schedule!r}: unit {u[0]!r} has no fixed-duration graph")
                if a is None or z is None:
                    break
                if f != _NONE:
                    where[("F", f, u[2])] = len(nodes)
                if b != _NONE:
                    where[("B", b, u[-1])] = len(nodes)
                nodes.append((r, f, b, a[0], a[1], z[0], z[1]))
                pos[r] += 1
                left -= 1
                moved = True
        if not moved:
            raise ValueError(f"schedule {schedule!r} with pp={pp}, vpp={vpp}, m={m} deadlocks")
    last_b = [_NONE] * lay.stages
    for n, node in enumerate(nodes):
        if node[2] != _NONE:
            last_b[node[2]] = n
    return Program(pp, lay.stages, tuple(nodes), tuple(last_b))


def finish_times(prog: Program, fwd: list[float], bwd: list[float], p2p: list[float]) -> tuple[list[float], list[float]]:
    """(per rank, when its last unit finishes; per stage, when its last backward finishes), in
    seconds from the step's start."""
    fin = [0.0] * len(prog.nodes)
    now = [0.0] * prog.pp
    for n, (r, f, b, d1, h1, d2, h2) in enumerate(prog.nodes):
        t = now[r]
        if d1 >= 0:
            x = fin[d1] + (p2p[h1] if h1 >= 0 else 0.0)
            if x > t:
                t = x
        if d2 >= 0:
            x = fin[d2] + (p2p[h2] if h2 >= 0 else 0.0)
            if x > t:
                t = x
        if f >= 0:
            t += fwd[f]
        if b >= 0:
            t += bwd[b]
        fin[n] = now[r] = t
    return now, [fin[n] for n in prog.last_backward]
