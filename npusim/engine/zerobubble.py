"""Zero-bubble schedules (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, and "Pipeline
Parallelism with Controllable Memory", NeurIPS 2024) as a greedy policy each rank applies at run time.

Every backward is split into B (input gradient, which the previous stage waits for) and W (weight
gradient, local, any time after its B). Whenever a rank is free it starts, among the units whose
inputs have arrived: a B (it unblocks the rank before it), else an F, else the oldest pending W. A
rank with nothing ready waits (SimPy ``AnyOf``) for the first dependency to arrive. An F that starts
a new micro-batch on the rank needs fewer than ``limit_b`` micro-batch chunks holding activations
for their B, and fewer than ``limit_w`` holding activations for their B or W (W keeps the GEMM
inputs and output gradients); the V's second chunk is exempt (its micro-batches already hold the
first chunk, and blocking it could deadlock the turn of the V).

- ZB-H1: one chunk per rank; limit_b = pp - r, 1F1B's in-flight count, so the activations held for
  B match 1F1B; limit_w = limit_b + pp - 1. With equal F, b, W times (B = b + W, the full
  backward) the bubble is (pp - 1)(F + B - 2W), a third of 1F1B's (pp - 1)(F + B).
- ZB-V: V-shaped placement (rank r holds stages r and 2pp-1-r); limit_b = 2pp chunk activations
  per rank (1F1B's first-rank peak of pp full stages, now on every rank), limit_w = 3pp. With equal
  times the bubble is (pp - 1) F of one chunk.

The ``limit_w`` values are the smallest (in steps of pp) that keep those bubbles. As in the papers,
the bounds count micro-batches; a pending W keeps its GEMM inputs and output gradients, which the
memory report adds (``npusim.simulate``), so deferred weight gradients can cost memory beyond
1F1B's when they are large (MoE expert GEMMs).
"""
from __future__ import annotations

from collections import deque


class Limits:
    """When rank ``r`` may start a new micro-batch (an F of its first chunk) under a zero-bubble schedule."""

    def __init__(self, eng, r: int):
        """Count limits of rank ``r`` (see the module docstring)."""
        lay, p = eng.layout, eng.layout.pp
        self.chunks = len(lay.rank_chunks[r])
        if lay.schedule == "zb-h1":
            self.limit_b, self.limit_w = p - r, 2 * p - 1 - r
        elif lay.schedule == "zb-v":
            self.limit_b, self.limit_w = 2 * p, 3 * p
        else:
            raise ValueError(f"{lay.schedule!r} is not a zero-bubble schedule")

    def new_ok(self, nf: list[int], nb: list[int], pending: int) -> bool:
        """True when one more micro-batch fits: counting every chunk a micro-batch past its first
        chunk will hold before its first B, and the micro-batches waiting for a W."""
        held = (nf[0] - nb[0]) * self.chunks
        return held + self.chunks <= self.limit_b and sum(nf) - sum(nb) + pending < self.limit_w


def _candidates(eng, r: int, nf: list[int], nb: list[int], wq: deque, limits: Limits) -> list[tuple]:
    """(priority, unit, deps) of every unit rank ``r`` could start next, best priority first."""
    chunks = eng.layout.rank_chunks[r]
    new_ok = limits.new_ok(nf, nb, len(wq))
    out = []
    # Later chunks first: in the V their B comes first on the way back, their F finishes a micro-batch.
    for c in reversed(range(len(chunks))):
        if nb[c] < nf[c]:
            out.append((0, ("B", c, nb[c]), eng.deps("B", chunks[c], nb[c])))
    for c in reversed(range(len(chunks))):
        if nf[c] < eng.m and (new_ok or c > 0):
            out.append((1, ("F", c, nf[c]), eng.deps("F", chunks[c], nf[c])))
    if wq:
        out.append((2, ("W", *wq[0]), []))
    return out


def greedy_rank(eng, r: int):
    """Process of one rank under the zero-bubble greedy policy (B > F within the limit > W)."""
    env, tr = eng.env, eng.traces[r]
    chunks = len(eng.layout.rank_chunks[r])
    limits = Limits(eng, r)
    nf, nb = [0] * chunks, [0] * chunks
    wq: deque = deque()
    left = 3 * eng.m * chunks
    t0 = env.now
    while left:
        # Decide after every unit finishing at this instant has fired its event (ties in time).
        yield env.timeout(0)
        cands = _candidates(eng, r, nf, nb, wq, limits)
        ready = [(eng.ready_time(d), p, u, d) for p, u, d in cands]
        now_ready = [x for x in ready if x[0] is not None and x[0] <= env.now]
        if not now_ready:
            later = [x[0] for x in ready if x[0] is not None]
            waits = [e for _, _, _, d in ready if d and eng.ready_time(d) is None for e, _ in d if not e.triggered]
            if later:
                waits.append(env.timeout(min(later) - env.now))
            if not waits:
                raise RuntimeError(f"rank {r} has nothing to run and nothing to wait for")
            yield env.any_of(waits)
            continue
        _, _, unit, deps = min(now_ready, key=lambda x: x[1])
        eng.account_wait(tr, t0, deps)
        yield from eng.run_unit(r, unit, True)
        kind, c, i = unit
        if kind == "F":
            nf[c] += 1
        elif kind == "B":
            nb[c] += 1
            wq.append((c, i))
        else:
            wq.popleft()
        left -= 1
        t0 = env.now
    tr.finish_s = env.now
    eng.finished += 1
