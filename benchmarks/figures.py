"""Regenerate the figures in docs/img/ that the README and docs/plots.md show.

Usage: ``python benchmarks/figures.py``. Writes docs/img/breakdown.png (Pangu Ultra MoE on 6144
Atlas 800T A2: flat vs hierarchical EP all-to-all vs hierarchical + EP overlap) and
docs/img/timeline.png (the default simulation's pipeline schedule) and prints one line per file.
"""
from __future__ import annotations

from pathlib import Path

from npusim.api import run_simulation
from npusim.report import plots
from npusim.report.rebuild import with_timeline

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
MODEL, HARDWARE, DEVICES, SEQ, GLOBAL_BATCH = "pangu-ultra-moe-718b", "atlas-800t-a2", 6144, 4096, 1536
PLAN = "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2"
VARIANTS = {"flat a2a": PLAN, "hierarchical a2a": PLAN + ",a2a=hierarchical",
            "hierarchical a2a + ep_overlap": PLAN + ",a2a=hierarchical,ep_overlap=1"}


def main() -> None:
    """Simulate, draw and write the figures."""
    IMG.mkdir(parents=True, exist_ok=True)
    results = [run_simulation(MODEL, HARDWARE, p, DEVICES, SEQ, GLOBAL_BATCH) for p in VARIANTS.values()]
    fig = plots.breakdown_bars(results, labels=list(VARIANTS),
                               title=f"Pangu Ultra MoE 718B on {DEVICES} x Atlas 800T A2: step time by part")
    path = plots.save_figure(fig, IMG / "breakdown.png")
    steps = ", ".join(f"{k} {r.step_time_s:.2f} s" for k, r in zip(VARIANTS, results))
    print(f"{path.relative_to(ROOT)}: {steps}")
    res = with_timeline(results[0])
    path = plots.save_figure(plots.pipeline_gantt(res), IMG / "timeline.png")
    print(f"{path.relative_to(ROOT)}: {len(res.timeline)} units on {res.extra['pipeline_ranks']} pipeline ranks")


if __name__ == "__main__":
    main()
