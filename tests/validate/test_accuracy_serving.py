"""Accuracy on the Pangu Pro MoE inference rows (Atlas 800I A2, W8A8): issue 5 asks for 20 % each.

Assumptions (docs/inference.md): the 376T 910B SKU, the serving layout of
npusim.validate.predict.SERVING_PLAN, a 16-bit KV cache unless the batch does not fit (then int8),
and 0.85 accepted MTP tokens per step (DeepSeek-V3's lower bound) for P004.
"""
import pytest

from npusim.validate.compare import format_table, validate_runs
from npusim.validate.predict import predict_record
from npusim.validate.runs import published_path, read_runs

LIMIT_PCT = 20.0
"""The issue's target for every row."""
CURRENT_PCT = {"P001": 20.0, "P002": 35.0, "P003": 20.0, "P004": 40.0}
"""What this version asserts: the target where met; P002 and P004 are open gaps (docs/inference.md).
P002 (batch-1 decode) is set by per-kernel fixed costs: with msModeling's static costs as published
(5 us per cube op, 2 us per vector op, 10 us per collective) it is 33 % fast."""
MAPE_CURRENT_PCT = 22.0
"""What this version asserts for the four rows together. Issue 16's target is 20 % with nothing
fitted to a row: not met yet (21.1 %): P004's accepted MTP tokens per step are not published (0.85
assumed; the measured TPOT implies about 0.17) and P002 is fixed-cost bound; what the public 910B /
A3 operator data do and do not explain: docs/serving.md, "Accuracy on the four 800I A2 rows"."""


@pytest.fixture(scope="module")
def result():
    recs = [r for r in read_runs(published_path()) if r.workload != "train"]
    return validate_runs(recs, predict_record)


@pytest.mark.parametrize("row_id", sorted(CURRENT_PCT))
def test_row_within_current_tolerance(row_id, result):
    row = next(r for r in result["rows"] if r["id"] == row_id)
    assert row["status"] == "ok" and abs(row["error_pct"]) <= CURRENT_PCT[row_id], row


def test_target_met_on_prefill_and_plain_high_batch_decode(result):
    for row in result["rows"]:
        if row["id"] in ("P001", "P003"):
            assert abs(row["error_pct"]) <= LIMIT_PCT, row


def test_mape_of_the_four_rows_within_current_bound(result):
    assert result["summary"]["mape_pct"] <= MAPE_CURRENT_PCT, result["summary"]


def test_print_table(result, capsys):
    with capsys.disabled():
        print("\n" + format_table(result))
    assert result["summary"]["n"] == 4
