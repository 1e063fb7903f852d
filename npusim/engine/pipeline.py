"""The pipeline as a SimPy event simulation: one process per pipeline rank, one event per unit.

Units are forwards F, backwards B (the input gradient, which the previous stage waits for; a full
backward unless the schedule defers its weight gradient), weight gradients W (after their own B,
on the same rank) and overlapped pairs FB (a forward and a backward of two micro-batches run as
one unit, ``npusim.engine.overlap``). F(stage j, mb i) starts when its rank is free and F(j-1, i)
has arrived (finish + p2p when j-1 runs on another rank); B(j, i) waits for B(j+1, i) likewise (the
last stage's B follows its own F). Waiting time is split into the part spent while the activation
was in flight (exposed PP communication) and the rest (pipeline bubble). Fixed-order schedules run
their per-rank orders (``npusim.engine.schedules``); zero-bubble schedules pick their next unit at
run time (``npusim.engine.zerobubble``). DP replicas and the ranks inside a TP/CP/EP group are
symmetric, so one pipeline stands for the whole cluster.

Timeline events are (kind, stage, micro-batch, start, end), stage = index into the StageCost list.
Kinds: 'F', 'B', 'W', and 'FB': an overlapped pair is two consecutive 'FB' events with the same
start and end, the forward's (stage, micro-batch) first and the backward's second.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from npusim.config.schedules import schedule_facts
from npusim.engine.layout import GREEDY_SCHEDULES, Layout, pipeline_layout
from npusim.engine.overlap import Interference, fb_parts


@dataclass
class RankTrace:
    """What one pipeline rank did."""

    finish_s: float = 0.0
    busy: dict[str, float] = field(default_factory=dict)
    pp_wait_s: float = 0.0
    bubble_s: float = 0.0
    last_backward_end_s: dict[int, float] = field(default_factory=dict)
    """Per local chunk: when its last backward (or weight gradient) finished (gradients complete)."""
    last_backward_start_s: dict[int, float] = field(default_factory=dict)
    events: list[tuple[str, int, int, float, float]] = field(default_factory=list)
    """(kind, stage, micro-batch, start, end) for the timeline."""
    hidden_comm_s: dict[str, float] = field(default_factory=dict)
    """Communication seconds hidden behind compute, by part (pass-level overlap and FB pairs)."""
    units_run: int = 0
    """Pipeline units (F, B, W, FB) this rank ran."""
    resource_busy_s: dict[str, float] = field(default_factory=dict)
    """Resource-seconds used per resource over the step's units (matrix, vector, hbm, su, nic, spine)."""
    live: set[tuple[int, ...]] = field(default_factory=set)
    """Counts held after each unit that can raise memory: per local chunk, micro-batches whose
    activations wait for their B, then per local chunk those whose W is still pending."""

    @property
    def peak_in_flight(self) -> int:
        """Most micro-batch chunk activations held at once (forward done, input gradient not)."""
        half = len(next(iter(self.live), ())) // 2
        return max((sum(v[:half]) for v in self.live), default=0)

    @property
    def peak_pending_weight(self) -> int:
        """Most deferred weight gradients pending at once."""
        half = len(next(iter(self.live), ())) // 2
        return max((sum(v[half:]) for v in self.live), default=0)


@dataclass(frozen=True)
class StageCost:
    """Per-micro-batch cost of one stage (layer chunk), each split into named parts (seconds)."""

    forward: dict[str, float]
    backward: dict[str, float]
    p2p_s: float
    """Time to send this stage's activation (or gradient) to its neighbour."""
    hw_flops: float = 0.0
    """Matrix FLOPs executed per micro-batch, forward plus backward (recompute included)."""
    backward_input: dict[str, float] | None = None
    """The backward without its weight-gradient GEMMs (B of split schedules): dgrad, recompute,
    non-GEMM backward kernels and all collectives."""
    backward_weight: dict[str, float] | None = None
    """The weight-gradient GEMMs alone (W of split schedules)."""
    matrix_fraction: float = 1.0
    """Share of the stage's kernel time on the matrix unit (GEMMs, attention)."""
    interference: Interference = Interference()
    """Slowdowns while communication overlaps computation (from the hardware profile)."""
    hidden_s: dict[str, dict[str, float]] = field(default_factory=dict)
    """Communication hidden inside a unit by pass-level overlap: role ('F', 'B', 'Bi') -> part -> s."""
    busy_s: dict[str, dict[str, float]] = field(default_factory=dict)
    """Resource-seconds each unit role uses per resource (matrix, vector, hbm, su, nic, spine)."""
    spec: object = None
    """The chunk this stage holds (``ChunkSpec``)."""
    dp_after_s: float = 0.0
    """DP gradient traffic the last backward leaves behind (including its slowdown of that backward)."""
    pair_fn: Optional[Callable[..., tuple]] = field(default=None, compare=False)
    """``pair_fn(f_spec, b_spec, b_split) -> (parts, seconds, hidden, busy)``: an overlapped forward +
    backward pair on the event engine; without it pairs use ``npusim.engine.overlap.fb_parts``."""


class Engine:
    """Shared state of one pipeline simulation: dependency events, unit costs, rank traces."""

    def __init__(self, env, stages: list[StageCost], layout: Layout, m: int, keep_events: bool):
        """Set up one simulation of ``m`` micro-batches over ``layout``."""
        self.env, self.stages, self.layout, self.m, self.keep = env, stages, layout, m, keep_events
        self.done: dict[tuple[str, int, int], object] = {}
        self.traces = [RankTrace() for _ in range(layout.pp)]
        self.cost: dict[tuple, tuple[dict[str, float], float, dict[str, float]]] = {}
        self.fb_cost: dict[tuple[int, int, bool], tuple[dict[str, float], float, dict[str, float]]] = {}
        self.busy: dict[tuple, dict[str, float]] = {}
        """Resource-seconds per unit cost key (``role_cost`` / ``pair_cost``)."""
        self.state = [([0] * len(c), [0] * len(c)) for c in layout.rank_chunks]
        self.finished = 0
        """Ranks whose process ran all its units."""

    def event(self, kind: str, stage: int, mb: int):
        """The event that fires (value = finish time) when unit (kind, stage, mb) completes."""
        key = (kind, stage, mb)
        e = self.done.get(key)
        if e is None:
            e = self.done[key] = self.env.event()
        return e

    def _hop(self, a: int, b: int, mb: int, p2p: float) -> float:
        """p2p time between stages a and b for ``mb``: zero when one rank runs both."""
        lay = self.layout
        return 0.0 if lay.rank_of(a, mb, self.m) == lay.rank_of(b, mb, self.m) else p2p

    def deps(self, kind: str, stage: int, mb: int) -> list[tuple[object, float]]:
        """(event, p2p seconds) pairs a forward or backward of (stage, mb) waits for."""
        if kind == "F":
            if stage == 0:
                return []
            return [(self.event("F", stage - 1, mb), self._hop(stage - 1, stage, mb, self.stages[stage - 1].p2p_s))]
        if stage == self.layout.stages - 1:
            return [(self.event("F", stage, mb), 0.0)]
        return [(self.event("B", stage + 1, mb), self._hop(stage + 1, stage, mb, self.stages[stage].p2p_s))]

    def unit_deps(self, r: int, unit: tuple) -> list[tuple[object, float]]:
        """Dependencies of a unit of rank ``r`` (W needs only its own B, which ran before it)."""
        chunks = self.layout.rank_chunks[r]
        if unit[0] == "FB":
            return self.deps("F", chunks[unit[1]], unit[2]) + self.deps("B", chunks[unit[3]], unit[4])
        if unit[0] == "W":
            return []
        return self.deps(unit[0], chunks[unit[1]], unit[2])

    @staticmethod
    def ready_time(deps) -> float | None:
        """When all ``deps`` have arrived, or None while one is still running."""
        t = 0.0
        for e, hop in deps:
            if not e.triggered:
                return None
            t = max(t, e.value + hop)
        return t

    def account_wait(self, tr: RankTrace, t0: float, deps) -> None:
        """Split the rank's idle time since ``t0`` into in-flight PP communication and bubble."""
        now = self.env.now
        wait = now - t0
        if wait <= 0:
            return
        in_flight = 0.0
        if deps:
            e, hop = max(deps, key=lambda d: d[0].value + d[1])
            in_flight = max(0.0, min(hop, now - max(t0, e.value)))
        tr.pp_wait_s += in_flight
        tr.bubble_s += wait - in_flight

    def wait_for(self, tr: RankTrace, deps):
        """Process step: wait until every dependency has arrived, then account the wait."""
        env, t0 = self.env, self.env.now
        for e, _ in deps:
            if not e.triggered:
                yield e
        arrive = self.ready_time(deps)
        if arrive is not None and arrive > env.now:
            yield env.timeout(arrive - env.now)
        self.account_wait(tr, t0, deps)

    def role_cost(self, stage: int, role: str) -> tuple[dict[str, float], float, dict[str, float]]:
        """(parts, seconds, hidden comm) of one unit: role 'F', 'B' (full backward), 'Bi' or 'W'."""
        key = (stage, role)
        hit = self.cost.get(key)
        if hit is None:
            s = self.stages[stage]
            parts = {"F": s.forward, "B": s.backward, "Bi": s.backward_input, "W": s.backward_weight}[role]
            if parts is None:
                raise ValueError(f"stage {stage} has no backward_input/backward_weight split, which "
                                 f"schedule {self.layout.schedule!r} needs")
            hit = self.cost[key] = (parts, sum(parts.values()), s.hidden_s.get(role, {}))
            self.busy[key] = s.busy_s.get(role, {})
        return hit

    def pair_cost(self, f_stage: int, b_stage: int, b_split: bool):
        """(parts, seconds, hidden comm) of an overlapped forward + backward pair."""
        key = (f_stage, b_stage, b_split)
        hit = self.fb_cost.get(key)
        pair_fn = self.stages[f_stage].pair_fn
        if hit is None and pair_fn is not None:
            fs, bs = self.stages[f_stage], self.stages[b_stage]
            parts, dur, hidden, busy = pair_fn(fs.spec, bs.spec, b_split)
            hit = self.fb_cost[key] = (parts, dur, hidden)
            self.busy[("FB",) + key] = busy
        if hit is None:
            fs, bs = self.stages[f_stage], self.stages[b_stage]
            f_parts, _, f_hid = self.role_cost(f_stage, "F")
            b_parts, _, b_hid = self.role_cost(b_stage, "Bi" if b_split else "B")
            parts, ep_hidden = fb_parts(f_parts, fs.matrix_fraction, b_parts, bs.matrix_fraction, fs.interference)
            hidden = dict(f_hid)
            for k, v in b_hid.items():
                hidden[k] = hidden.get(k, 0.0) + v
            hidden["ep_comm"] = hidden.get("ep_comm", 0.0) + ep_hidden
            hit = self.fb_cost[key] = (parts, sum(parts.values()), hidden)
        return hit

    def run_unit(self, r: int, unit: tuple, split: bool):
        """Process step: run one unit of rank ``r`` now (its dependencies have arrived)."""
        env, tr, chunks = self.env, self.traces[r], self.layout.rank_chunks[r]
        fb, bw = self.state[r]
        kind, c, i = unit[0], unit[1], unit[2]
        stage = chunks[c]
        if kind == "FB":
            cb, ib = unit[3], unit[4]
            parts, dur, hidden = self.pair_cost(stage, chunks[cb], split)
            busy = self.busy.get(("FB", stage, chunks[cb], split), {})
        else:
            role = "B" if kind == "B" and not split else ("Bi" if kind == "B" else kind)
            parts, dur, hidden = self.role_cost(stage, role)
            busy = self.busy.get((stage, role), {})
        tr.units_run += 1
        for k, v in busy.items():
            tr.resource_busy_s[k] = tr.resource_busy_s.get(k, 0.0) + v
        start = env.now
        yield env.timeout(dur)
        for k, v in parts.items():
            tr.busy[k] = tr.busy.get(k, 0.0) + v
        for k, v in hidden.items():
            tr.hidden_comm_s[k] = tr.hidden_comm_s.get(k, 0.0) + v
        if kind in ("F", "FB"):
            self.event("F", stage, i).succeed(env.now)
            fb[c] += 1
            tr.live.add((*fb, *bw))
        if kind == "FB":
            c, i, stage = cb, ib, chunks[cb]
        if kind in ("B", "FB"):
            self.event("B", stage, i).succeed(env.now)
            fb[c] -= 1
            if split:
                bw[c] += 1
                tr.live.add((*fb, *bw))
        elif kind == "W":
            bw[c] -= 1
        if kind == "W" or (kind in ("B", "FB") and not split):
            tr.last_backward_end_s[c] = env.now
            tr.last_backward_start_s[c] = start
        if self.keep:
            if kind == "FB":
                tr.events.append(("FB", chunks[unit[1]], unit[2], start, env.now))
                tr.events.append(("FB", stage, i, start, env.now))
            else:
                tr.events.append((kind, stage, i, start, env.now))


def static_rank(eng: Engine, r: int, order: list[tuple]):
    """Process of one rank running a fixed order of units."""
    tr = eng.traces[r]
    split = {(u[1], u[2]) for u in order if u[0] == "W"}
    for unit in order:
        yield from eng.wait_for(tr, eng.unit_deps(r, unit))
        b = (unit[3], unit[4]) if unit[0] == "FB" else (unit[1], unit[2])
        yield from eng.run_unit(r, unit, b in split)
    tr.finish_s = eng.env.now
    eng.finished += 1


def simulate_pipeline(stages: list[StageCost], pp: int, vpp: int, m: int, schedule: str,
                      keep_events: bool = False, pair_fb: bool = False) -> list[RankTrace]:
    """Run the schedule over ``stages`` (one StageCost per layer chunk); return one trace per rank.
    ``pair_fb`` runs the steady-state forward/backward pairs of 1F1B and interleaved 1F1B as
    overlapped units (``schedules.pair_steady``)."""
    import simpy

    from npusim.engine.schedules import pair_steady, schedule_orders
    from npusim.engine.zerobubble import greedy_rank

    env = simpy.Environment()
    layout = pipeline_layout(schedule, pp, vpp)
    if len(stages) != layout.stages:
        raise ValueError(f"schedule {schedule!r} with pp={pp}, vpp={vpp} needs {layout.stages} stage costs, got {len(stages)}")
    eng = Engine(env, stages, layout, m, keep_events)
    if schedule in GREEDY_SCHEDULES:
        for r in range(pp):
            env.process(greedy_rank(eng, r))
    else:
        orders = schedule_orders(schedule, pp, vpp, m)
        if pair_fb and not schedule_facts(schedule).pairs_fb:
            orders = [pair_steady(o) for o in orders]
        for r in range(pp):
            env.process(static_rank(eng, r, orders[r]))
    env.run()
    if eng.finished != pp:
        raise RuntimeError(f"schedule {schedule!r} deadlocked: {pp - eng.finished} of {pp} ranks did not finish")
    return eng.traces
