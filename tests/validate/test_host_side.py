"""training_steps_host.csv: reading it, and the dropless / batched pairs the device report shows."""
from __future__ import annotations

import pytest

from npusim.config.errors import ConfigError
from npusim.validate.host_side import HostRow, dropless_pairs, read_host_csv

HEADER = "id,step_s,host_issue_s,dispatched_ops,host_syncs_per_step\n"


def test_reads_rows_and_derives_issue_share_and_time_per_operator(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(HEADER + "V906-moe-5.0b-128e,0.1,0.04,2000,0\n")
    (row,) = read_host_csv(path)
    assert row == HostRow("V906-moe-5.0b-128e", 0.1, 0.04, 2000, 0)
    assert row.issue_share == pytest.approx(0.4) and row.issue_us_per_op == pytest.approx(20.0)


def test_malformed_cell_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(HEADER + "V906,0.1,fast,2000,0\n")
    with pytest.raises(ConfigError) as e:
        read_host_csv(path)
    assert f"{path}:2" in str(e.value) and "\n" not in str(e.value)
    assert "host_issue_s = 'fast'" in str(e.value)


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("id,step_s,host_issue_s,dispatched_ops\nV906,0.1,0.04,2000\n")
    with pytest.raises(ConfigError, match="host_syncs_per_step = None"):
        read_host_csv(path)


def test_dropless_row_pairs_with_its_batched_twin_and_splits_the_unpriced_time_per_layer():
    rows = [HostRow("V906-moe-5.0b-128e", 0.100, 0.03, 2000, 0),
            HostRow("V907-moe-5.0b-128e-dropless", 0.180, 0.17, 9000, 8),
            HostRow("V901-dense-0.9b", 0.2, 0.05, 900, 0)]
    (p,) = dropless_pairs(rows, {"V906-moe-5.0b-128e": 0.098, "V907-moe-5.0b-128e-dropless": 0.102})
    assert (p.dropless_id, p.batched_id, p.extra_ops, p.syncs_per_step) == (
        "V907-moe-5.0b-128e-dropless", "V906-moe-5.0b-128e", 7000, 8)
    assert p.measured_extra_s == pytest.approx(0.080) and p.predicted_extra_s == pytest.approx(0.004)
    assert p.unpriced_s == pytest.approx(0.076) and p.unpriced_per_sync_s == pytest.approx(0.0095)


def test_pair_without_predictions_reports_no_unpriced_time():
    rows = [HostRow("V902-tiny-moe", 0.02, 0.02, 600, 0), HostRow("V903-tiny-moe-dropless", 0.03, 0.03, 800, 2)]
    (p,) = dropless_pairs(rows, {})
    assert p.predicted_extra_s is None and p.unpriced_s is None and p.unpriced_per_sync_s is None


def test_dropless_row_without_a_twin_is_left_out():
    assert dropless_pairs([HostRow("V903-tiny-moe-dropless", 0.03, 0.03, 800, 2)], {}) == []
