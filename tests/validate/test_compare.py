"""Prediction-vs-measurement comparison: per-row errors, skipped rows, MAPE, Kendall tau, table."""
from __future__ import annotations

import dataclasses
import math

import pytest

from npusim.config.errors import ConfigError
from npusim.validate import compare
from npusim.validate.compare import format_table, kendall_tau, validate_runs
from npusim.validate.runs import COLUMNS, RunRecord


def make_record(rid: str, measured: float, workload: str = "train") -> RunRecord:
    values = {c: None for c in COLUMNS}
    values.update(id=rid, reliability="A", workload=workload, hardware="nvidia-a100-sxm-80g", devices=8,
                  layers=2, hidden=64, heads=4, vocab=100, attention="mha", mlp="gelu", precision="bf16",
                  flop_convention="none")
    col = {"train": "measured_step_time_s", "prefill": "measured_ttft_s", "decode": "measured_tpot_s"}[workload]
    values[col] = measured
    return RunRecord(**values, origin=f"test.csv:{rid}")


RECORDS = [make_record("V001", 1.0), make_record("V002", 2.0), make_record("V003", 4.0),
           make_record("P001", 0.5, "prefill"), make_record("P002", 0.02, "decode")]


def test_monotone_prediction_summary():
    res = validate_runs(RECORDS, lambda r: getattr(r, {"train": "measured_step_time_s", "prefill": "measured_ttft_s",
                                                        "decode": "measured_tpot_s"}[r.workload]) * 1.1)
    s = res["summary"]
    assert s == {"n": 5, "mape_pct": 10.0, "max_ape_pct": 10.0, "kendall_tau": 1.0, "skipped": 0}
    row = res["rows"][0]
    assert set(row) == {"id", "metric", "measured", "predicted", "error_pct", "status", "reason"}
    assert row["metric"] == "step_time_s" and row["status"] == "ok" and row["reason"] is None
    assert row["error_pct"] == 10.0 and row["predicted"] == pytest.approx(1.1)
    assert [r["metric"] for r in res["rows"]][3:] == ["ttft_s", "tpot_s"]


def test_raising_predictions_are_skipped():
    def predict(rec):
        if rec.id == "V002":
            raise NotImplementedError("pipeline\nschedule not modelled")
        if rec.id == "P001":
            raise ConfigError("x.csv:5", "tp", 3, "does not divide heads")
        if rec.id == "P002":
            raise ZeroDivisionError("division by zero")
        return {"V001": 1.5, "V003": 3.0}[rec.id]

    res = validate_runs(RECORDS, predict)
    s = res["summary"]
    assert s["n"] == 2 and s["skipped"] == 3
    assert s["mape_pct"] == 37.5 and s["max_ape_pct"] == 50.0 and s["kendall_tau"] == 1.0
    rows = {r["id"]: r for r in res["rows"]}
    assert rows["V001"]["error_pct"] == 50.0 and rows["V003"]["error_pct"] == -25.0
    assert rows["V002"]["status"] == "skipped" and rows["V002"]["reason"] == "pipeline schedule not modelled"
    assert rows["V002"]["predicted"] is None and rows["V002"]["error_pct"] is None
    assert rows["V002"]["measured"] == 2.0
    assert "does not divide heads" in rows["P001"]["reason"]
    assert rows["P002"]["reason"] == "division by zero"


def test_bad_prediction_values_are_skipped():
    preds = iter([float("nan"), -1.0, "fast", None, 4.4])
    res = validate_runs(RECORDS, lambda r: next(preds))
    assert [r["status"] for r in res["rows"]] == ["skipped"] * 4 + ["ok"]
    assert res["summary"]["n"] == 1 and res["summary"]["kendall_tau"] is None
    assert all("\n" not in r["reason"] for r in res["rows"][:4])


def test_all_skipped_and_empty():
    res = validate_runs(RECORDS, lambda r: (_ for _ in ()).throw(RuntimeError("boom")))
    assert res["summary"] == {"n": 0, "mape_pct": None, "max_ape_pct": None, "kendall_tau": None, "skipped": 5}
    assert validate_runs([], lambda r: 1.0)["summary"]["n"] == 0


def test_kendall_tau_values():
    inverse = validate_runs(RECORDS[:3], lambda r: 10.0 / r.measured_step_time_s)
    assert inverse["summary"]["kendall_tau"] == -1.0
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    y = [1.0, 3.0, 2.0, 2.0, 6.0, 5.0]  # with a tie: tau-b
    ref = compare._tau_b_simple(x, y)
    assert kendall_tau(x, y) == pytest.approx(ref)
    assert ref == pytest.approx(0.5520524474738833)  # scipy.stats.kendalltau (tau-b): 11 concordant, 3 discordant, 1 tie in y
    assert kendall_tau([1.0, 2.0], [3.0, 3.0]) is None
    assert compare._tau_b_simple([1.0, 2.0], [3.0, 3.0]) is None
    assert kendall_tau([1.0], [1.0]) is None


def test_kendall_tau_counting_equals_scipy_with_ties():
    """Short sequences count pairs, long ones use scipy: both give scipy's tau-b."""
    scipy_stats = pytest.importorskip("scipy.stats")
    n = compare.SCIPY_TAU_FROM + 10
    x = [float((i * 37) % 101) for i in range(n)]
    y = [float((i * 53) % 89) // 3 for i in range(n)]  # many ties
    ref = float(scipy_stats.kendalltau(x, y)[0])
    assert kendall_tau(x, y) == pytest.approx(ref)
    assert kendall_tau(x[:300], y[:300]) == pytest.approx(float(scipy_stats.kendalltau(x[:300], y[:300])[0]))


def test_kendall_tau_without_scipy(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert kendall_tau([1.0, 2.0, 3.0], [2.0, 4.0, 9.0]) == 1.0


def test_format_table():
    def predict(rec):
        if rec.id == "V002":
            raise NotImplementedError("not modelled yet")
        return rec.measured_step_time_s * 0.9 if rec.workload == "train" else 1.0

    res = validate_runs(RECORDS, predict)
    text = format_table(res)
    lines = text.splitlines()
    assert lines[0].split() == ["id", "metric", "measured", "predicted", "error", "%", "status"]
    assert len(lines) == 2 + len(RECORDS) + 1
    assert "V002" in lines[3] and "skipped: not modelled yet" in lines[3]
    assert "-10.00" in lines[2] and lines[2].rstrip().endswith("ok")
    # columns are aligned: the status column starts at the same offset on every row
    starts = {ln.index("ok") if "skipped" not in ln else ln.index("skipped") for ln in lines[2:-1]}
    assert len(starts) == 1
    s = res["summary"]
    assert lines[-1] == (f"n={s['n']} MAPE={s['mape_pct']}% max={s['max_ape_pct']}% "
                         f"tau={s['kendall_tau']} skipped=1")
    assert lines[-1].startswith("n=4 ")


def test_format_table_all_skipped():
    res = validate_runs(RECORDS[:1], lambda r: (_ for _ in ()).throw(ValueError("bad")))
    assert format_table(res).splitlines()[-1] == "n=0 MAPE=n/a max=n/a tau=n/a skipped=1"


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECORDS[0].id = "V999"  # type: ignore[misc]
    assert not math.isnan(RECORDS[0].measured_step_time_s)
