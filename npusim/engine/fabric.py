"""Shared resources of one device as a fluid model on a SimPy clock.

A *task* (a kernel, or one phase of a collective) has ``work_s``, the seconds it takes alone, and a
demand rate on each resource it uses while running alone (``demand[r]``: resource units per second;
a kernel demands 1.0 of its compute stream and ``bytes / work_s`` of HBM, a transfer demands its
link rate of a link tier). While tasks run together each progresses at a rate factor ``f <= 1`` of
its alone speed, chosen max-min fair under every resource's capacity (progressive filling): no
resource carries more than its capacity, and a task is slowed only by a resource that is full. Two
kernels on one compute stream each run at half speed; a DP reduce-scatter and an EP all-to-all on
one NIC share it; a collective that takes a share of the compute units (NCCL's SMs, HCCL's AI
vector cores) slows the kernels it overlaps. Waiting is emergent; nothing is granted as a budget.

The fabric is event-driven: on each start and finish it advances every running task's remaining
work at its old rate, recomputes the rates and schedules the next finish. Ties finish in start
order, so a run is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import simpy

_EPS = 1e-15


@dataclass(eq=False)
class Task:
    """One running task: remaining work (alone-seconds), demands, rate and its completion event."""

    label: object
    remaining_s: float
    demand: dict[str, float]
    done: simpy.Event
    start_s: float
    seq: int
    rate: float = 1.0
    busy_s: dict[str, float] = field(default_factory=dict)


class Fabric:
    """Resources of capacity ``capacity[name]`` shared max-min fairly by the tasks that run."""

    def __init__(self, env: simpy.Environment, capacity: dict[str, float]):
        """Resources named in ``capacity`` (units per second; compute streams have capacity 1)."""
        self.env = env
        self.capacity = dict(capacity)
        self.active: list[Task] = []
        self.last_s = 0.0
        self.gen = 0
        self.seq = 0
        self.used_s: dict[str, float] = {r: 0.0 for r in capacity}
        """Resource-seconds of use so far (integral of load / capacity)."""
        self.intervals: list[tuple[float, float, tuple]] = []
        """(start, end, labels running) for every stretch between two events with tasks running."""

    def run(self, label: object, work_s: float, demand: dict[str, float]) -> simpy.Event:
        """Start a task now; the returned event fires (value = finish time) when its work is done."""
        done = self.env.event()
        if work_s <= 0.0:
            done.succeed(self.env.now)
            return done
        for r in demand:
            if r not in self.capacity:
                raise KeyError(f"task {label!r} demands unknown resource {r!r}")
        self._advance()
        self.seq += 1
        self.active.append(Task(label, work_s, {r: d for r, d in demand.items() if d > 0.0}, done,
                                self.env.now, self.seq))
        self._reschedule()
        return done

    def _advance(self) -> None:
        """Progress every running task from the last event to now at its current rate."""
        now = self.env.now
        dt = now - self.last_s
        if dt > 0.0 and self.active:
            self.intervals.append((self.last_s, now, tuple(t.label for t in self.active)))
            for t in self.active:
                t.remaining_s -= dt * t.rate
                for r, d in t.demand.items():
                    self.used_s[r] += dt * t.rate * d / self.capacity[r]
        self.last_s = now

    def _rates(self) -> None:
        """Max-min fair rate factors (<= 1) of the running tasks under the resource capacities."""
        left = dict(self.capacity)
        open_ = list(self.active)
        while open_:
            level, full = 1.0, None
            load: dict[str, float] = {}
            for t in open_:
                for r, d in t.demand.items():
                    load[r] = load.get(r, 0.0) + d
            for r, d in load.items():
                lvl = max(0.0, left[r]) / d
                if lvl < level - _EPS:
                    level, full = lvl, r
            if full is None:
                for t in open_:
                    t.rate = 1.0
                return
            frozen = [t for t in open_ if full in t.demand]
            for t in frozen:
                t.rate = level
                for r, d in t.demand.items():
                    left[r] -= level * d
            open_ = [t for t in open_ if full not in t.demand]

    def _reschedule(self) -> None:
        """Recompute rates and arm a timer for the next finish."""
        self._rates()
        self.gen += 1
        if not self.active:
            return
        nxt = min(self.active, key=lambda t: (t.remaining_s / max(t.rate, _EPS), t.seq))
        dt = max(0.0, nxt.remaining_s / max(nxt.rate, _EPS))
        gen = self.gen
        timer = self.env.timeout(dt)
        timer.callbacks.append(lambda _ev: self._on_timer(gen))

    def _on_timer(self, gen: int) -> None:
        """Finish the tasks whose work is done (if no later event re-armed the timer)."""
        if gen != self.gen:
            return
        self._advance()
        finished = [t for t in self.active if t.remaining_s <= 1e-12]
        if not finished:
            finished = [min(self.active, key=lambda t: (t.remaining_s, t.seq))]
        self.active = [t for t in self.active if t not in finished]
        for t in sorted(finished, key=lambda t: t.seq):
            t.done.succeed(self.env.now)
        self._reschedule()
