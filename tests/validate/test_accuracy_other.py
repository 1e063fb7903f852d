"""Regression gates on the published rows beyond the issue-2 dense A100 gate. Each group states the
tolerance this version meets and, where an issue sets one, the target (MoE training: 15 %, issue 3).
The per-row tables are printed; docs/accuracy.md has them with their assumptions."""
import pytest

from npusim.validate.compare import format_table, validate_runs
from npusim.validate.predict import predict_record
from npusim.validate.runs import published_path, read_runs

MOE_ROWS = ["V074", "V075", "V076", "V077", "V097", "V098", "V099", "V100", "V121", "V124"]
GROUPS = {
    # name: (row ids, MAPE limit %, per-row limit %)
    "h100-dense": (["V071", "V072", "V073", "V089", "V090", "V091", "V092", "V093", "V094", "V095", "V101"], 12.0, 30.0),
    "ascend-dense": (["V114", "V115", "V116", "V118"], 15.0, 25.0),
    # All 10 rows, none set aside (issue 14). Target 15 % (issues 3 and 14) NOT met: 24.8 % with every
    # MoE kernel lowered, learned routing for the dropless rows, the all-gather dispatcher, the
    # Ascend calibration and DeepEP's one-row-per-destination-rank dispatch; V074 (-63 %), V121 and
    # V124 (-49 %, -50 %) stay about 2x fast while V077 / V098 are 15-27 % slow; docs/moe.md bounds
    # the candidate mechanisms for the Ascend rows.
    "moe-training": (MOE_ROWS, 25.0, 65.0),
}


@pytest.fixture(scope="module")
def records():
    return {r.id: r for r in read_runs(published_path())}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_group_within_stated_tolerance(group, records, capsys):
    ids, mape_limit, row_limit = GROUPS[group]
    result = validate_runs([records[i] for i in ids], predict_record)
    with capsys.disabled():
        print(f"\n[{group}]\n" + format_table(result))
    s = result["summary"]
    assert s["skipped"] == 0
    assert s["mape_pct"] <= mape_limit
    assert s["max_ape_pct"] <= row_limit
