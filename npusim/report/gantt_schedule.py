"""Per-rank Gantt chart of a pipeline schedule with every unit kind: forward (F), backward (B),
weight gradient (W), overlapped forward+backward pairs (FB), and each unit's communication.

Takes a ``Result.timeline`` (or the same list built from ``simulate_pipeline`` traces) and returns a
matplotlib Figure without touching pyplot. ``pipeline_gantt`` in ``npusim.report.plots`` draws F/B
only; this one also reads W and FB (``npusim.engine.pipeline`` documents the timeline kinds).
"""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import Patch

COLORS = {"F": "#4c72b0", "B": "#dd8452", "W": "#55a868", "comm": "#c44e52", "hidden": "#f2b8b8"}
"""One colour per unit kind; FB pairs are drawn half forward, half backward."""


def timeline_from_traces(traces) -> list[tuple[int, tuple]]:
    """``Result.timeline`` entries (rank, event) from ``simulate_pipeline`` traces."""
    return [(r, e) for r, tr in enumerate(traces) for e in tr.events]


def _units(timeline) -> list[tuple[int, str, list[tuple[int, int]], float, float]]:
    """(rank, kind, [(stage, mb)...], start, end) with each FB pair merged into one unit."""
    from npusim.engine.verify import units_of

    by_rank: dict[int, list] = {}
    for rank, ev in timeline:
        by_rank.setdefault(rank, []).append(ev)
    return [(r, k, halves, s, e) for r in sorted(by_rank) for k, halves, s, e in units_of(by_rank[r])]


def _comm_share(kind: str, halves, stages) -> tuple[float, float]:
    """(exposed, hidden) communication as fractions of a unit's time (0 without stage costs)."""
    if not stages:
        return 0.0, 0.0
    s = stages[halves[0][0]]
    parts = {"F": s.forward, "W": s.backward_weight or {}}.get(kind)
    if kind == "B":
        parts = s.backward_input if s.backward_input is not None else s.backward
    if kind == "FB":
        from npusim.engine.overlap import fb_parts

        b = stages[halves[1][0]]
        parts, hidden = fb_parts(s.forward, s.matrix_fraction, b.backward, b.matrix_fraction, s.interference)
        total = sum(parts.values())
        return sum(v for k, v in parts.items() if k.endswith("_comm")) / total, min(1.0, hidden / total)
    total = sum(parts.values())
    return (sum(v for k, v in parts.items() if k.endswith("_comm")) / total if total else 0.0), 0.0


def schedule_gantt(timeline, pp: int, stages=None, title: str | None = None, labels: bool = True) -> Figure:
    """Gantt chart: one row per rank (forward, backward, weight gradient, FB pairs split in two
    halves, micro-batch numbers inside), and under each row a lane of exposed communication (red,
    at the end of its unit) and EP communication hidden inside FB pairs (pink); ``stages`` are the
    StageCost list that gives each unit's communication share."""
    units = _units(timeline)
    end = max((u[4] for u in units), default=1.0)
    fig = Figure(figsize=(12.0, 1.2 + 0.55 * pp), layout="constrained")
    ax = fig.add_subplot()
    for rank, kind, halves, s, e in units:
        y = rank - 0.38
        if kind == "FB":
            ax.broken_barh([(s, e - s)], (y, 0.3), facecolors=COLORS["F"], edgecolor="white", linewidth=0.4)
            ax.broken_barh([(s, e - s)], (y + 0.3, 0.3), facecolors=COLORS["B"], edgecolor="white", linewidth=0.4)
        else:
            ax.broken_barh([(s, e - s)], (y, 0.6), facecolors=COLORS[kind], edgecolor="white", linewidth=0.4)
        exposed, hidden = _comm_share(kind, halves, stages)
        if hidden > 0:
            ax.broken_barh([(s, (e - s) * hidden)], (rank + 0.25, 0.13), facecolors=COLORS["hidden"])
        if exposed > 0:
            ax.broken_barh([(e - (e - s) * exposed, (e - s) * exposed)], (rank + 0.25, 0.13), facecolors=COLORS["comm"])
        if labels and (e - s) / end > 0.006:
            for h, (_, mb) in enumerate(halves):
                yy = y + (0.15 + 0.3 * h if kind == "FB" else 0.3)
                ax.text((s + e) / 2, yy, str(mb), ha="center", va="center", fontsize=5.5, color="white")
    ax.set_ylim(pp - 0.5, -0.5)
    ax.set_yticks(range(pp), [f"rank {r}" for r in range(pp)], fontsize=8)
    ax.set_xlim(0, end * 1.005)
    ax.set_xlabel("time (s)")
    handles = [Patch(color=COLORS["F"], label="forward F"), Patch(color=COLORS["B"], label="backward B"),
               Patch(color=COLORS["W"], label="weight gradient W"),
               Patch(facecolor=COLORS["F"], edgecolor=COLORS["B"], linewidth=3, label="F&B pair (top F, bottom B)"),
               Patch(color=COLORS["comm"], label="exposed communication"),
               Patch(color=COLORS["hidden"], label="EP hidden in F&B")]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=len(handles), frameon=False)
    ax.set_title(title or "pipeline schedule", fontsize=10)
    return fig
