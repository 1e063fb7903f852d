"""End-to-end sweeps: the files in --out, ranking, determinism across executors, error rows, and the
summary."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from sweep_helpers import MOE, SMALL, write_spec

from npusim.cli import main
from npusim.config.errors import ConfigError
from npusim.sweep.executors import LocalExecutor, group_runs
from npusim.sweep.report import format_summary
from npusim.sweep.run import run_sweep


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    spec = write_spec(tmp, SMALL)
    return spec, run_sweep(spec, tmp / "out", workers=1), tmp / "out"


def test_outputs_and_ranking(small):
    _, summary, out = small
    assert {p.name for p in out.iterdir()} >= {"results.parquet", "ranked.csv", "spec.resolved.json", "summary.json",
                                                "chunks"}
    frame = pd.read_parquet(out / "results.parquet")
    ranked = pd.read_csv(out / "ranked.csv")
    assert len(frame) == summary["points"] == frame["id"].nunique()
    assert list(frame["index"]) == list(range(len(frame)))
    assert sum(summary["status"].values()) == len(frame)
    assert set(frame["status"]) <= {"ok", "infeasible", "pruned"}
    assert set(frame.loc[frame["status"] == "pruned", "reason"]) <= {"dominated"}
    assert summary["infeasible_by_reason"].get("constraint") == 2  # 24 layers (5.2B) < 5.5B, once per device count
    ok = frame[frame["status"] == "ok"]
    assert len(ranked) == len(ok[(ok["full_status"] != "infeasible")])
    full = ranked[ranked["tier"] == "full"]
    assert list(full["full_score"]) == sorted(full["full_score"], reverse=True)
    fast = ranked[ranked["tier"] == "fast"]
    assert list(fast["score"]) == sorted(fast["score"], reverse=True)
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    parts = [c for c in frame.columns if c.startswith("bd_")]
    assert (ok[parts].sum(axis=1) - ok["step_time_s"]).abs().max() < 1e-9
    mem = frame[frame["stage"] == "memory"]
    assert len(mem) and (mem["peak_memory_GB"] > 0.95 * 64).all() and mem["step_time_s"].isna().all()
    bound = frame[frame["stage"] == "memory_bound"]
    assert (bound["reason"] == "memory").all() and bound["message"].str.contains("optimizer state").all()
    assert s_stages(summary) == frame["stage"].value_counts().to_dict()


def test_results_are_stored_once_and_compactly(small):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, _, out = small
    assert not list((out / "chunks").iterdir())  # merged into results.parquet, not kept twice
    schema = pq.read_schema(out / "results.parquet")
    for col in ("status", "reason", "stage", "hardware", "recompute"):
        assert pa.types.is_dictionary(schema.field(col).type), col


def s_stages(summary: dict) -> dict:
    """Points per stage from the summary's stage lines (zeros left out)."""
    out = {st["stage"]: st.get("removed", st.get("timed")) for st in summary["stages"]}
    return {k: v for k, v in out.items() if v}


def test_summary_counts_rates_and_top(small):
    _, s, out = small
    assert s["fast"]["evaluated"] == s["points"] and s["fast"]["points_per_s"] > 0
    assert "stage dominated: removed" in format_summary(s) and "stage fast: timed" in format_summary(s)
    assert s["full"]["simulated"] >= 12 and s["full"]["n"] >= 10 and -1 <= s["full"]["kendall_tau"] <= 1
    assert 0 <= s["full"]["top10_overlap"] <= 10 and len(s["top"]) == 10
    text = format_summary(s)
    assert "points/s" in text and "Kendall tau" in text and "breakdown s:" in text
    assert json.loads((out / "summary.json").read_text())["points"] == s["points"]


def test_same_spec_gives_identical_ranked_csv_on_a_process_pool(small, tmp_path):
    spec, _, out = small
    run_sweep(spec, tmp_path / "pool", workers=2)
    assert (tmp_path / "pool" / "ranked.csv").read_bytes() == (out / "ranked.csv").read_bytes()
    a, b = pd.read_parquet(out / "results.parquet"), pd.read_parquet(tmp_path / "pool" / "results.parquet")
    pd.testing.assert_frame_equal(a, b)


def _pid(ctx, batch):
    return [(os.getpid(), x) for x in batch]


def test_the_pool_keeps_a_group_of_batches_together_and_runs_each_once():
    batches = [(n, [n]) for n in range(8)]
    runs = group_runs(batches, lambda b: b[0] // 4)  # two groups of four consecutive batches
    assert [[n for n, _ in run] for run in runs] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [len(r) for r in group_runs(batches, None)] == [1] * 8
    ex = LocalExecutor(2)
    try:
        got = dict(ex.map(_pid, {}, batches, group=lambda b: b[0] // 4))
    finally:
        ex.close()
    assert sorted(got) == list(range(8)) and all(rows[0][1] == n for n, rows in got.items())
    first = {n: got[n][0][0] for n in (0, 4)}
    assert first[0] != first[4]  # the two groups start on different workers


def test_a_failing_point_is_an_error_row(tmp_path, monkeypatch):
    from npusim.sweep import fast

    original = fast.estimate

    def flaky(model, hw, plan, workload, devices, **kw):
        if plan.pp == 2:
            raise RuntimeError("boom at pp=2")
        return original(model, hw, plan, workload, devices, **kw)

    monkeypatch.setattr(fast, "estimate", flaky)
    s = run_sweep(write_spec(tmp_path, MOE), tmp_path / "out", workers=1)
    frame = pd.read_parquet(tmp_path / "out" / "results.parquet")
    errors = frame[frame["status"] == "error"]
    assert len(errors) == s["status"]["error"] > 0
    assert (errors["pp"] == 2).all() and (errors["reason"] == "RuntimeError").all()
    assert errors["message"].str.contains("boom at pp=2").all()
    assert s["status"]["ok"] > 0 and "error" in format_summary(s)


def test_out_holding_a_sweep_needs_resume(small, capsys):
    spec, _, out = small
    rc = main(["sweep", str(spec), "--out", str(out)])
    _, err = capsys.readouterr()
    assert rc == 2 and "--resume" in err and len(err.splitlines()) == 1


def test_resume_of_a_finished_sweep_recomputes_nothing(small, tmp_path):
    spec, first, out = small
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    s = run_sweep(spec, copy, workers=1, resume=True)
    assert s["fast"]["evaluated"] == 0 and s["fast"]["reused"] == first["points"]
    assert s["full"]["simulated"] == 0
    assert (copy / "ranked.csv").read_bytes() == (out / "ranked.csv").read_bytes()


def test_resume_with_another_spec_is_refused(small, tmp_path):
    spec, _, out = small
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    other = write_spec(tmp_path, {**SMALL, "devices": [16]}, "other.yaml")
    with pytest.raises(ConfigError, match="differs from the sweep"):
        run_sweep(other, copy, workers=1, resume=True)


def test_cli_json_summary(tmp_path, capsys):
    spec = write_spec(tmp_path, {**SMALL, "devices": [16]})
    rc = main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "1", "--json"])
    out, _ = capsys.readouterr()
    assert rc == 0 and json.loads(out)["points"] > 0
