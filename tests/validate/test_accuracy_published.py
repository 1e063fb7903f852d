"""Accuracy gate on published dense A100 runs (Narayanan et al. Tables 1-2, Korthikanti et al. Table 5).

Tolerances (issue 2): step-time MAPE <= 6 % over the 24 rows and every row within 15 %.
For scale: Calculon, run on 18 of these rows, gets 6.0 % overall. The per-row table is printed.
"""
import pytest

from npusim.validate.compare import format_table, validate_runs
from npusim.validate.predict import predict_record
from npusim.validate.runs import published_path, read_runs

DENSE_A100 = [f"V{i:03d}" for i in range(1, 17)] + [f"V{i:03d}" for i in range(23, 31)]
MAPE_LIMIT_PCT = 6.0
ROW_LIMIT_PCT = 15.0


@pytest.fixture(scope="module")
def records():
    return {r.id: r for r in read_runs(published_path())}


@pytest.fixture(scope="module")
def dense_result(records):
    return validate_runs([records[i] for i in DENSE_A100], predict_record)


@pytest.mark.parametrize("row_id", DENSE_A100)
def test_row_within_tolerance(row_id, dense_result):
    row = next(r for r in dense_result["rows"] if r["id"] == row_id)
    assert row["status"] == "ok", row
    assert abs(row["error_pct"]) <= ROW_LIMIT_PCT, row


def test_dense_a100_mape(dense_result, capsys):
    with capsys.disabled():
        print("\n" + format_table(dense_result))
    s = dense_result["summary"]
    assert s["n"] == len(DENSE_A100) and s["skipped"] == 0
    assert s["mape_pct"] <= MAPE_LIMIT_PCT
    assert s["max_ape_pct"] <= ROW_LIMIT_PCT


def test_every_row_predicts_or_is_skipped(records):
    result = validate_runs(list(records.values()), predict_record)
    assert len(result["rows"]) == len(records)
    for row in result["rows"]:
        assert row["status"] in ("ok", "skipped")
        if row["status"] == "skipped":
            assert row["reason"] and "\n" not in row["reason"]
