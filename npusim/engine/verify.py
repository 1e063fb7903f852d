"""Brute-force checks of a simulated pipeline's event log: every unit ran once, on its rank, after
its inputs existed, and no rank ran two units at once.

Used by the tests of every schedule; also handy when adding a schedule.
"""
from __future__ import annotations

from npusim.engine.layout import Layout

EPS = 1e-9


def units_of(events: list[tuple]) -> list[tuple]:
    """One rank's timeline events as units: (kind, [(stage, mb) per half], start, end); an 'FB'
    pair (two consecutive events) becomes one unit whose halves are the forward then the backward."""
    out, k = [], 0
    while k < len(events):
        kind, stage, mb, s, e = events[k]
        if kind == "FB":
            _, stage2, mb2, s2, e2 = events[k + 1]
            if (s2, e2) != (s, e):
                raise ValueError(f"FB halves of differing spans at event {k}")
            out.append(("FB", [(stage, mb), (stage2, mb2)], s, e))
            k += 2
        else:
            out.append((kind, [(stage, mb)], s, e))
            k += 1
    return out


def _collect(traces, layout: Layout, m: int, bad: list[str]) -> dict[tuple, tuple[float, float]]:
    """(kind, stage, mb) -> (start, end) over all ranks; wrong ranks, repeats and overlaps to ``bad``."""
    when: dict[tuple, tuple[float, float]] = {}
    for r, tr in enumerate(traces):
        spans = []
        for kind, halves, s, e in units_of(tr.events):
            spans.append((s, e))
            for h, (stage, mb) in enumerate(halves):
                k = ("F" if h == 0 else "B") if kind == "FB" else kind
                if layout.rank_of(stage, mb, m) != r:
                    bad.append(f"{k}({stage},{mb}) ran on rank {r}, not {layout.rank_of(stage, mb, m)}")
                if (k, stage, mb) in when:
                    bad.append(f"{k}({stage},{mb}) ran twice")
                when[(k, stage, mb)] = (s, e)
        spans.sort()
        for (s0, e0), (s1, _) in zip(spans, spans[1:]):
            if s1 < e0 - EPS:
                bad.append(f"rank {r} runs two units at once at t={s1:.6g}")
    return when


def dependency_violations(traces, stages, layout: Layout, m: int) -> list[str]:
    """Every way the event log breaks the pipeline's rules (empty when it is valid)."""
    bad: list[str] = []
    when = _collect(traces, layout, m, bad)
    n = layout.stages

    def hop(a: int, b: int, mb: int, p2p: float) -> float:
        """p2p time from stage a to b for ``mb`` (0 on one rank)."""
        return 0.0 if layout.rank_of(a, mb, m) == layout.rank_of(b, mb, m) else p2p

    def after(unit: tuple, dep: tuple, gap: float) -> None:
        """Record a violation unless ``unit`` starts ``gap`` after ``dep`` ends."""
        if unit not in when or dep not in when:
            bad.append(f"{unit if unit not in when else dep} never ran")
        elif when[unit][0] < when[dep][1] + gap - EPS:
            bad.append(f"{unit} starts at {when[unit][0]:.6g} before {dep} arrives at {when[dep][1] + gap:.6g}")

    for i in range(m):
        for j in range(n):
            if j > 0:
                after(("F", j, i), ("F", j - 1, i), hop(j - 1, j, i, stages[j - 1].p2p_s))
            after(("B", j, i), ("F", j, i), 0.0)
            if j < n - 1:
                after(("B", j, i), ("B", j + 1, i), hop(j + 1, j, i, stages[j].p2p_s))
            if ("W", j, i) in when:
                after(("W", j, i), ("B", j, i), 0.0)
    extra = set(when) - {(k, j, i) for k in "FBW" for j in range(n) for i in range(m)}
    bad += [f"unexpected unit {u}" for u in sorted(extra)]
    return bad
