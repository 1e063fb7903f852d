"""The pipeline as a SimPy event simulation: one process per pipeline rank, one event per unit.

A unit F(stage j, mb i) starts when its rank is free and F(j-1, i) has arrived (finish + p2p);
B(j, i) waits for B(j+1, i) likewise (the last stage's B follows its own F). Waiting time is split
into the part spent while the activation was in flight (exposed PP communication) and the rest
(pipeline bubble). DP replicas and the ranks inside a TP/CP/EP group are symmetric, so one
pipeline stands for the whole cluster.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from npusim.engine.schedules import schedule_orders


@dataclass
class RankTrace:
    """What one pipeline rank did."""

    finish_s: float = 0.0
    busy: dict[str, float] = field(default_factory=dict)
    pp_wait_s: float = 0.0
    bubble_s: float = 0.0
    last_backward_end_s: dict[int, float] = field(default_factory=dict)
    """Per local chunk: when its last backward finished (gradients complete)."""
    last_backward_start_s: dict[int, float] = field(default_factory=dict)
    events: list[tuple[str, int, int, float, float]] = field(default_factory=list)
    """(kind, stage, micro-batch, start, end) for the timeline."""


@dataclass(frozen=True)
class StageCost:
    """Per-micro-batch cost of one virtual stage, each split into named parts (seconds)."""

    forward: dict[str, float]
    backward: dict[str, float]
    p2p_s: float
    """Time to send this stage's activation (or gradient) to its neighbour."""
    hw_flops: float = 0.0
    """Matrix FLOPs executed per micro-batch, forward plus backward (recompute included)."""


def simulate_pipeline(stages: list[StageCost], pp: int, vpp: int, m: int, schedule: str,
                      keep_events: bool = False) -> list[RankTrace]:
    """Run the schedule; return one trace per pipeline rank."""
    import simpy

    env = simpy.Environment()
    n_stages = pp * vpp
    done: dict[tuple[str, int, int], simpy.Event] = {}

    def ev(kind: str, stage: int, i: int) -> simpy.Event:
        key = (kind, stage, i)
        e = done.get(key)
        if e is None:
            e = done[key] = env.event()
        return e

    fwd_t = [sum(s.forward.values()) for s in stages]
    bwd_t = [sum(s.backward.values()) for s in stages]
    orders = schedule_orders(schedule, pp, vpp, m)
    traces = [RankTrace() for _ in range(pp)]

    def rank_proc(r: int):
        tr = traces[r]
        busy = tr.busy
        for kind, c, i in orders[r]:
            stage = c * pp + r
            if kind == "F":
                dep = ev("F", stage - 1, i) if stage > 0 else None
                dur, parts, hop = fwd_t[stage], stages[stage].forward, stages[stage - 1].p2p_s if stage > 0 else 0.0
            else:
                dep = ev("B", stage + 1, i) if stage < n_stages - 1 else None
                dur, parts, hop = bwd_t[stage], stages[stage].backward, stages[stage].p2p_s if stage < n_stages - 1 else 0.0
            if dep is not None:
                t0 = env.now
                if not dep.triggered:
                    yield dep
                arrive = dep.value + hop
                if arrive > env.now:
                    yield env.timeout(arrive - env.now)
                wait = env.now - t0
                if wait > 0:
                    in_flight = min(wait, hop)
                    tr.pp_wait_s += in_flight
                    tr.bubble_s += wait - in_flight
            start = env.now
            yield env.timeout(dur)
            for k, v in parts.items():
                busy[k] = busy.get(k, 0.0) + v
            ev(kind, stage, i).succeed(env.now)
            if kind == "B":
                tr.last_backward_end_s[c] = env.now
                tr.last_backward_start_s[c] = start
            if keep_events:
                tr.events.append((kind, stage, i, start, env.now))
        tr.finish_s = env.now

    for r in range(pp):
        env.process(rank_proc(r))
    env.run()
    return traces
