"""Figures (npusim.report.plots) and `npusim plot`: each function returns a Figure with the right
number of series and bars; the CLI writes the image and fails on bad input with one line."""
from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from npusim.api import run_simulation
from npusim.cli import main
from npusim.report import plots
from npusim.report.rebuild import memory_per_rank, plan_label, with_timeline

SMALL = dict(model="llama2-7b", hardware="atlas-800t-a2", devices=8, seq_len=1024, global_batch=8)
PLANS = ("tp=2,pp=2", "tp=2,pp=2,recompute=full", "tp=4,pp=2,sp=1")
SIM_FLAGS = ["--model", "llama2-7b", "--hardware", "atlas-800t-a2", "--devices", "8", "--seq-len", "1024",
             "--global-batch", "8"]


@pytest.fixture(scope="module")
def results():
    return [run_simulation(plan=p, **SMALL) for p in PLANS]


def sweep_table() -> pd.DataFrame:
    rows = [(1, 1, 0.30, 100.0, "ok"), (2, 1, 0.40, 140.0, "ok"), (2, 2, 0.35, 150.0, "ok"),
            (4, 2, 0.50, 120.0, "ok"), (4, 4, 0.20, 90.0, "oom"), (8, 4, 0.10, 200.0, "ok")]
    return pd.DataFrame(rows, columns=["tp", "pp", "mfu", "tokens_per_s", "status"])


def bars(ax) -> int:
    return sum(len(c) for c in ax.containers)


def test_breakdown_bars_from_results_and_frames(results):
    fig = plots.breakdown_bars(results)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    df = plots.breakdown_frame(results)
    parts = plots.breakdown_parts(df)
    assert len(ax.containers) == len(parts) and all(len(c) == len(results) for c in ax.containers)
    assert [t.get_text() for t in ax.get_xticklabels()] == [plan_label(r.config["plan"]) for r in results]
    # The stacks add up to the step time (the named sum).
    tops = [sum(c[i].get_height() for c in ax.containers) for i in range(len(results))]
    assert tops == pytest.approx([r.step_time_s for r in results], rel=1e-5)
    assert "recompute" in parts and "imbalance" not in parts  # zero parts are not drawn
    frame = pd.concat([r.to_frame() for r in results], ignore_index=True)
    fig2 = plots.breakdown_bars(frame, labels=["a", "b", "c"])
    assert [t.get_text() for t in fig2.axes[0].get_xticklabels()] == ["a", "b", "c"]
    assert bars(fig2.axes[0]) == bars(ax)


def test_gantt_draws_one_bar_per_unit(results):
    res = with_timeline(results[0])
    fig = plots.pipeline_gantt(res)
    ax = fig.axes[0]
    n = sum(len(c.get_paths()) for c in ax.collections if isinstance(c, PolyCollection))
    assert n == len(res.timeline) == 2 * 2 * res.config["micro_batches"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rank 0", "rank 1"]
    with pytest.raises(ValueError, match="timeline"):
        plots.pipeline_gantt(results[0])


def test_memory_breakdown_bar_stacks_activations_by_module():
    from npusim.api import run_simulation

    res = run_simulation("qwen3-30b-a3b", "atlas-800t-a2", "tp=2,ep=8,pp=2,sp=1,zero=1", devices=32, seq_len=4096,
                         global_batch=32, micro_batch=1)
    b = res.extra["memory_breakdown_GB"]
    fig = plots.memory_breakdown_bar(res)
    ax = fig.axes[0]
    labels = [c.get_label() for c in ax.containers]
    modules = [m for m, v in b["activations_by_module"].items() if v > 0]
    assert all(f"activations: {m}" in labels for m in modules) and "weights" in labels
    stacked = sum(c[0].get_height() for c in ax.containers)
    assert stacked == pytest.approx(b["total"] + b.get("workspace", 0.0) + b.get("comm_buffers", 0.0), rel=1e-6)


def test_memory_bars_per_rank_and_busiest(results):
    res = results[0]
    per_rank = memory_per_rank(res)
    assert max(r["total"] for r in per_rank) == pytest.approx(res.peak_memory_GB, rel=1e-9)
    fig = plots.memory_bars(res, per_rank)
    ax = fig.axes[0]
    comps = [k for k in per_rank[0] if k != "total"]
    assert len(ax.containers) == len(comps) and all(len(c) == 2 for c in ax.containers)
    assert ax.lines[0].get_ydata()[0] == pytest.approx(res.hbm_capacity_GB)
    assert bars(plots.memory_bars(res).axes[0]) == len(comps)


def test_pareto_front_and_sweep_scatter():
    df = sweep_table()
    front = plots.pareto_front(df[df.status == "ok"])
    assert list(zip(front.tp, front.pp)) == [(4, 2), (2, 1), (2, 2), (8, 4)]  # (1, 1) is dominated
    fig = plots.sweep_scatter(df)
    ax = fig.axes[0]
    sizes = [len(c.get_offsets()) for c in ax.collections]
    assert sizes == [1, 5]  # infeasible, feasible
    assert len(ax.lines[0].get_xdata()) == 4


def test_heatmap_is_tp_by_pp_of_the_best_feasible_mfu():
    fig = plots.tp_pp_heatmap(sweep_table())
    data = fig.axes[0].images[0].get_array()
    assert data.shape == (3, 4)  # pp in {1, 2, 4} x tp in {1, 2, 4, 8}
    assert data[1, 2] == pytest.approx(50.0)  # pp=2, tp=4
    assert data.mask[2, 2]  # pp=4, tp=4 is oom only: blank


def test_predicted_vs_measured():
    validation = {"rows": [
        {"id": "V001", "metric": "step_time_s", "measured": 1.0, "predicted": 1.05, "status": "ok"},
        {"id": "V002", "metric": "step_time_s", "measured": 2.0, "predicted": 2.6, "status": "ok"},
        {"id": "V003", "metric": "step_time_s", "measured": 3.0, "predicted": None, "status": "skipped"}],
        "summary": {"n": 2, "mape_pct": 17.5, "max_ape_pct": 30.0, "kendall_tau": 1.0, "skipped": 1}}
    fig = plots.predicted_vs_measured(validation, annotate=True)
    ax = fig.axes[0]
    assert [len(c.get_offsets()) for c in ax.collections[1:]] == [1, 1]  # band, then within / outside
    assert len(ax.texts) == 2 and "MAPE=17.5" in ax.get_title()


def test_save_figure_is_byte_stable(results, tmp_path):
    for suffix in ("png", "svg"):
        a, b = tmp_path / f"a.{suffix}", tmp_path / f"b.{suffix}"
        plots.save_figure(plots.breakdown_bars(results), a)
        plots.save_figure(plots.breakdown_bars(results), b)
        assert a.read_bytes() == b.read_bytes()


def test_cli_plots(tmp_path, capsys):
    out = tmp_path / "b.png"
    argv = ["plot", "breakdown", *SIM_FLAGS, "--plan", PLANS[0], "--plan", PLANS[1], "--out", str(out)]
    assert main(argv) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", "gantt", *SIM_FLAGS, "--plan", PLANS[0], "--out", str(tmp_path / "g.svg")]) == 0
    assert (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")
    csv = tmp_path / "ranked.csv"
    sweep_table().to_csv(csv, index=False)
    sweep_table().to_parquet(tmp_path / "results.parquet")
    assert main(["plot", "sweep", str(csv), "--out", str(tmp_path / "s.png")]) == 0
    assert main(["plot", "heatmap", str(tmp_path / "results.parquet"), "--out", str(tmp_path / "h.png")]) == 0
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["plot", "sweep", "nope.csv"], "file not found"),
    (["plot", "gantt", "--plan", "tp=2,pp=2", "--devices", "8"], "unknown image format"),
    (["plot", "breakdown", "--plan", "tp=2", "--label", "a", "--label", "b"], "one --label per --plan"),
])
def test_cli_errors_are_one_line(argv, needle, tmp_path, capsys):
    out = tmp_path / ("x.txt" if "gantt" in argv else "x.png")
    rc = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err


def test_cli_missing_sweep_column(tmp_path, capsys):
    csv = tmp_path / "r.csv"
    sweep_table().drop(columns=["pp"]).to_csv(csv, index=False)
    assert main(["plot", "heatmap", str(csv), "--out", str(tmp_path / "h.png")]) == 2
    assert "missing column" in capsys.readouterr().err
