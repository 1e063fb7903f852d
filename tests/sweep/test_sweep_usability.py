"""Sweeps a team can live with: --dry-run and max_points, progress lines off a terminal, exit 3 when
nothing is feasible, objective shorthand, schedule / a2a / ep_overlap as auto axes, score intervals
and ties, budgets and the per-shape table."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from sweep_helpers import MOE, SMALL, merged, write_spec

from npusim.cli import main
from npusim.config.errors import ConfigError
from npusim.sweep.spec import load_spec
from npusim.sweep.store import rows_table

ONE = merged(SMALL, devices=[16], tiers={"full_top": 3, "batch_size": 40})


def test_dry_run_counts_axes_checks_and_time(tmp_path, capsys):
    spec = write_spec(tmp_path, SMALL)
    rc = main(["sweep", str(spec), "--dry-run", "--workers", "1", "--json"])
    out, _ = capsys.readouterr()
    d = json.loads(out)
    assert rc == 0 and not d["over_limit"] and d["points"] > 100
    assert d["axes"]["devices"] == [16, 32] and d["axes"]["plan.recompute"] == ["none", "full"]
    assert d["removed"]["constraint"] == 2 and d["removed"]["divisibility"] > 0 and d["removed"]["dominated"] > 0
    assert d["to_evaluate"] == d["points"] - sum(d["removed"].values())
    assert d["estimate_s"]["total_s"] > 0
    assert d["estimate_s"]["total_high_s"] >= d["estimate_s"]["total_s"]  # warm-memo to cold-memo range
    assert not (tmp_path / "out").exists()
    rc = main(["sweep", str(spec), "--dry-run", "--workers", "1"])
    text, _ = capsys.readouterr()
    assert rc == 0 and "points per axis" in text and "cheap checks and the search remove" in text
    assert "estimated time" in text and "dominated" in text


def test_max_points_refuses_with_the_count(tmp_path, capsys):
    spec = write_spec(tmp_path, merged(SMALL, max_points=100))
    rc = main(["sweep", str(spec), "--out", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert rc == 2 and len(err.splitlines()) == 1 and "points, over the limit" in err and "max_points = 100" in err
    rc = main(["sweep", str(spec), "--dry-run"])
    out, _ = capsys.readouterr()
    assert rc == 2 and "over max_points 100" in out
    rc = main(["sweep", str(write_spec(tmp_path, ONE, "one.yaml")), "--out", str(tmp_path / "o2"), "--max-points", "10"])
    _, err = capsys.readouterr()
    assert rc == 2 and "--max-points = 10" in err
    assert load_spec(write_spec(tmp_path, SMALL))[1]["max_points"] == 250_000


def test_progress_lines_when_not_a_terminal():
    from npusim.sweep.run import Progress

    t = [0.0]
    buf = io.StringIO()
    p = Progress(100, "fast tier", every=10, metric="mfu", stream=buf, clock=lambda: t[0])
    for i in range(10):
        t[0] += 3
        p.update(rows_table([{"id": str(i), "status": "ok", "score": 0.1 * i}] * 10))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2  # at 12 s and 24 s
    assert lines[0] == "npusim: fast tier: 40/100 points (40 %), 3 points/s, ETA 18 s, best mfu 0.3"


def test_cli_progress_goes_to_stderr(tmp_path, capsys):
    rc = main(["sweep", str(write_spec(tmp_path, ONE)), "--out", str(tmp_path / "o"), "--workers", "1",
               "--progress-every", "0.000001"])
    out, err = capsys.readouterr()
    assert rc == 0 and "npusim: fast tier:" in err and "points/s, ETA" in err and "npusim: fast tier" not in out


def test_all_infeasible_exits_3_with_reasons(tmp_path, capsys):
    spec = write_spec(tmp_path, merged(ONE, objective={"metric": "mfu", "max_step_time_s": 1e-6}))
    rc = main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "1"])
    _, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]
    assert rc == 3 and last.startswith("npusim: no feasible point among ") and "step_time" in last
    assert (tmp_path / "o" / "summary.json").exists()


def test_objective_shorthand(tmp_path):
    _, a = load_spec(write_spec(tmp_path, merged(SMALL, objective="tokens_per_s"), "a.yaml"))
    _, b = load_spec(write_spec(tmp_path, merged(SMALL, objective={"metric": "tokens_per_s"}), "b.yaml"))
    assert a["objective"] == b["objective"] and a["key"] == b["key"]
    with pytest.raises(ConfigError, match="objective.metric"):
        load_spec(write_spec(tmp_path, merged(SMALL, objective="speed"), "c.yaml"))


def test_option_auto_axes_enumerate_only_valid_combinations(tmp_path):
    from npusim.config.plan import make_plan, resolve_plan
    from npusim.sweep.run import prepare

    spec = merged(MOE, plan={**MOE["plan"], "schedule": "auto", "a2a": ["flat", "hierarchical"],
                             "ep_overlap": [0, 1]})
    resolved, ctx, variants, points = prepare(write_spec(tmp_path, spec))
    assert resolved["plan"]["schedule"] == ["1f1b", "interleaved", "zb-h1", "zb-v", "dualpipe", "dualpipev"]
    model = {json.dumps(v.overrides, sort_keys=True): v.model for v in variants}
    seen = set()
    for p in points:
        plan = p["plan"]
        m = model[json.dumps(p["model"], sort_keys=True)]
        resolve_plan(make_plan(plan), m, p["devices"], p["global_batch"], p["seq_len"])  # all valid
        if plan["ep"] == 1:
            assert plan["a2a"] == "flat" and plan["ep_overlap"] == 0
        if plan["pp"] == 1:
            assert plan["schedule"] == "1f1b"
        seen.add(plan["schedule"])
    assert seen >= {"1f1b", "interleaved", "zb-h1"}
    # the swept options are columns of their own and appear in the summary
    from npusim.sweep.report import format_summary
    from npusim.sweep.run import run_sweep

    small = merged(spec, devices=16, model={"base": "qwen3-30b-a3b"}, plan={**spec["plan"], "pp": [2], "vpp": [1, 2],
                                                                         "tp": [4], "schedule": ["1f1b", "zb-h1"]},
                   tiers={"full_top": 2, "batch_size": 200})
    s = run_sweep(write_spec(tmp_path, small, "s.yaml"), tmp_path / "o", workers=1, progress_every=0)
    assert set(s["options"]) == {"schedule", "a2a", "ep_overlap"}
    assert "schedule=" in s["top"][0]["plan"] and "swept options" in format_summary(s)
    frame = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert {"schedule", "a2a", "ep_overlap"} <= set(frame.columns)


BAD = [
    {"objective": 5}, {"objective": ["mfu"]}, {"objective": {"metric": 3}}, {"tiers": [1]}, {"tiers": {"full_top": "x"}},
    {"tiers": {"batch_size": -1}}, {"model": 3}, {"model": {"base": "llama2-7b", "vary": 5}},
    {"model": {"base": "llama2-7b", "constraints": {"params_B": 7}}},
    {"model": {"base": "llama2-7b", "constraints": {"params_B": {"max": 8}, "total_params_B": {"max": 8}}}},
    {"model": {"base": "llama2-7b", "constraints": {"compute_budget": {"max": 1e24}}}},
    {"model": {"base": "llama2-7b", "constraints": {"tokens": "many"}}},
    {"plan": {"auto": True, "pp": {"min": "x"}}}, {"plan": {"auto": True, "pp": {"low": 1}}},
    {"plan": {"auto": True, "schedule": ["zz"]}}, {"plan": {"auto": True, "a2a": "auto2"}}, {"plan": 7},
    {"plan": {"auto": "yes"}}, {"workload": {"seq_len": "long", "global_batch": 8}}, {"workload": [1]},
    {"workload": {"kind": "decode", "input_len": 10, "batch": [0]}}, {"devices": "many"}, {"devices": {"x": 1}},
    {"hardware": 5}, {"hardware": [["a"]]}, {"max_points": 0}, {"max_points": True}, {"max_points": "big"},
    {"search": "coarse"}, {"name": ["x"]}, {"objective": {"memory_headroom": "lots"}},
    {"objective": {"price_per_device_hour": {"atlas-800t-a2": -1}}},
    {"search": "refine", "workload": {"kind": "decode", "input_len": 128, "batch": [8]}},
]


@pytest.mark.parametrize("change", BAD, ids=[json.dumps(b)[:60] for b in BAD])
def test_spec_errors_name_no_python_class(tmp_path, change):
    path = write_spec(tmp_path, merged(SMALL, **change))
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for word in ("ValidationError", "pydantic", "Spec", "Constraints", "Range", "Model", "input_type", "[type=",
                 "errors.pydantic", "Traceback", "<class"):
        assert word not in msg, msg


def test_ties_intervals_and_shape_table(tmp_path):
    from npusim.sweep.error_table import ERROR_FRACTION
    from npusim.sweep.run import run_sweep

    budget = {"total_params_B": {"max": 8}, "tokens": 1e9, "compute_budget": {"max": 1e20}}
    spec = merged(SMALL, model={**SMALL["model"], "constraints": budget}, tiers={"full_top": 4, "batch_size": 80})
    s = run_sweep(write_spec(tmp_path, spec), tmp_path / "o", workers=1, progress_every=0)
    ranked = pd.read_csv(tmp_path / "o" / "ranked.csv")
    err = ERROR_FRACTION[("ascend", "dense")]
    assert (ranked["error_frac"] == err).all()
    best = ranked.iloc[0]
    used = ranked["full_score"].where(ranked["tier"] == "full", ranked["score"])
    assert ranked["score_lo"].round(12).equals((used * (1 - err)).round(12))
    assert not best["tie_with_best"]
    assert list(ranked["tie_with_best"]) == [i > 0 and hi >= best["score_lo"]
                                             for i, hi in enumerate(ranked["score_hi"])]
    assert 0 < s["ties_with_best"] == int(ranked["tie_with_best"].sum()) < len(ranked)
    shapes = pd.read_csv(tmp_path / "o" / "shapes.csv")
    assert len(shapes) == 4 and shapes["rank"].iloc[0] == 1  # 2 device counts x 2 layer counts
    assert (shapes["train_days"] > 0).all() and shapes["rank"].is_monotonic_increasing
    # a budget that excludes every shape: all points 'constraint', exit code 3 from the CLI
    tight = merged(spec, model={**SMALL["model"], "constraints": {"tokens": 1e12, "compute_budget": {"max": 1e20}}})
    rc = main(["sweep", str(write_spec(tmp_path, tight, "t.yaml")), "--out", str(tmp_path / "t"), "--workers", "1"])
    assert rc == 3


def test_error_table_matches_docs_accuracy():
    import re
    from pathlib import Path

    from npusim.sweep.error_table import ALL, ERROR_FRACTION

    text = (Path(__file__).resolve().parents[2] / "docs" / "accuracy.md").read_text()
    mape = {t: pytest.approx(float(m) / 100) for t, m in re.findall(r"^## (.+?)\n.*?MAPE=([\d.]+)%", text, re.S | re.M)}
    assert ERROR_FRACTION[("nvidia-a100", "dense")] == mape["Dense A100 (Narayanan T1-2, Korthikanti T5) - the issue-2 gate"]
    assert ERROR_FRACTION[("nvidia", "dense")] == mape["H100 dense (Megatron-Bridge, NeMo 24.12, AutoModel)"]
    assert ERROR_FRACTION[("nvidia", "moe")] == mape["H100 MoE (force-balanced benchmark routing)"]
    assert ERROR_FRACTION[("ascend", "moe")] == mape["Ascend 910B (MindSpeed-LLM)"]
    assert ERROR_FRACTION[("ascend", "serving")] == mape["Inference (Pangu Pro MoE)"]
    assert ALL == pytest.approx(float(re.search(r"All rows: n=\d+ MAPE=([\d.]+)%", text).group(1)) / 100)
