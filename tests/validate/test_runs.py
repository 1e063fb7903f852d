"""Strict reading of the published run records and their conversion to model / plan / workload."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from npusim.config.errors import ConfigError
from npusim.validate.runs import (
    COLUMNS, RunRecord, measured_metric, published_path, read_runs, record_model, record_plan_fields,
    record_workload,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared/data/runs/published.csv"
PUBLISHED = SHARED if SHARED.is_file() else published_path()
"""The project's reference copy when it is beside the checkout, else the copy shipped in the package."""

needs_published = pytest.mark.skipif(not SHARED.is_file(), reason=f"{SHARED} not present")


@pytest.fixture(scope="module")
def records() -> list[RunRecord]:
    return read_runs(PUBLISHED)


@pytest.fixture(scope="module")
def by_id(records) -> dict[str, RunRecord]:
    return {r.id: r for r in records}


# ---- the published file ------------------------------------------------------------------------
def test_all_rows_parse(records):
    assert len(records) == 53
    assert len({r.id for r in records}) == 53
    kinds = [r.workload for r in records]
    assert kinds.count("train") == 49 and kinds.count("prefill") == 1 and kinds.count("decode") == 3


def test_typed_values(by_id):
    r = by_id["V001"]
    assert r.devices == 32 and isinstance(r.devices, int)
    assert r.measured_step_time_s == pytest.approx(3.52802)
    assert r.sp is False and r.zero == 0 and r.recompute == "full"
    assert r.model is None and r.micro_batch is None and r.experts is None
    assert r.raw["id"] == "V001" and r.raw["micro_batch"] == ""
    assert r.origin.endswith("published.csv:2")
    p = by_id["P001"]
    assert p.workload == "prefill" and p.tp is None and p.batch == 2


def test_v001_model_is_gpt_style(by_id):
    m = record_model(by_id["V001"])
    assert (m.layers, m.hidden, m.ffn_hidden, m.heads) == (24, 2304, 9216, 24)
    assert m.norm == "layernorm" and m.linear_bias and m.tied_embeddings
    assert m.mlp == "gelu" and m.name == "V001"
    assert m.total_params() / 1e9 == pytest.approx(1.7, abs=0.1)  # "GPT 1.7B"


def test_v071_uses_llama3_8b_preset(by_id):
    rec = by_id["V071"]
    assert rec.model == "llama3-8b"
    m = record_model(rec)
    assert m.name == "llama3-8b" and m.norm == "rmsnorm" and m.kv_heads == 8 and m.vocab == 128256


def test_every_row_builds_model_and_plan(records):
    from npusim.config.plan import make_plan

    for rec in records:
        record_model(rec)
        fields = record_plan_fields(rec)
        make_plan({**fields, "micro_batch": fields["micro_batch"] or 1}, rec.origin)
        name, value = measured_metric(rec)
        assert value > 0
        assert name == {"train": "step_time_s", "prefill": "ttft_s", "decode": "tpot_s"}[rec.workload]


def test_plan_fields_era_defaults(by_id):
    old = record_plan_fields(by_id["V001"])
    assert old["flash_attention"] is False and old["overlap_grad_reduce"] is False
    assert old["vpp"] == 1 and old["micro_batch"] is None and old["ep"] == 1 and old["etp"] == 0
    assert old["sp"] is False and old["zero"] == 0 and old["recompute"] == "full" and old["precision"] == "fp16"
    assert record_plan_fields(by_id["V023"])["flash_attention"] is False  # korthikanti-eq7
    new = record_plan_fields(by_id["V071"])  # megatron-core: plan defaults
    assert "flash_attention" not in new and "overlap_grad_reduce" not in new
    assert new["zero"] == 3 and new["recompute"] == "none" and new["master_weights"] == "fp32"


def test_workload_and_metric(by_id):
    w = record_workload(by_id["V001"])
    assert (w.seq_len, w.global_batch) == (2048, 512)
    assert measured_metric(by_id["P002"]) == ("tpot_s", pytest.approx(0.01844))
    with pytest.raises(ValueError):
        record_workload(by_id["P001"])


@needs_published
def test_packaged_copy_matches_shared():
    assert published_path().read_bytes() == SHARED.read_bytes()


# ---- bad files ---------------------------------------------------------------------------------
def _rows() -> list[dict[str, str]]:
    with PUBLISHED.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))[:3]


def _write(path: Path, rows: list[dict[str, str]], columns=COLUMNS) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as ei:
        read_runs(path)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_good_subset_reads(tmp_path):
    assert [r.id for r in read_runs(_write(tmp_path / "ok.csv", _rows()))] == ["V001", "V002", "V003"]


def test_blank_workload_means_train(tmp_path):
    """Regression (found by tests/test_fuzz.py about 1 run in 10 before CI was derandomised): a blank
    workload cell raised KeyError instead of defaulting to a training row."""
    rows = _rows()
    rows[0]["workload"] = ""
    recs = read_runs(_write(tmp_path / "blank.csv", rows))
    assert recs[0].workload == "train" and measured_metric(recs[0])[0] == "step_time_s"


def test_missing_column(tmp_path):
    path = _write(tmp_path / "nocol.csv", _rows(), [c for c in COLUMNS if c != "recompute"])
    msg = _error(path)
    assert "nocol.csv:1" in msg and "recompute" in msg and "missing column" in msg


def test_unknown_column(tmp_path):
    rows = [{**r, "bogus": "1"} for r in _rows()]
    msg = _error(_write(tmp_path / "extra.csv", rows, [*COLUMNS, "bogus"]))
    assert "extra.csv:1" in msg and "bogus" in msg and "unknown column" in msg


def test_bad_enum(tmp_path):
    rows = _rows()
    rows[1]["recompute"] = "partial"
    msg = _error(_write(tmp_path / "enum.csv", rows))
    assert "enum.csv:3" in msg and "recompute" in msg and "'partial'" in msg and "selective" in msg


def test_non_integer_tp(tmp_path):
    rows = _rows()
    rows[2]["tp"] = "4.0"
    msg = _error(_write(tmp_path / "tp.csv", rows))
    assert "tp.csv:4" in msg and "tp = '4.0'" in msg and "not an integer" in msg


def test_duplicate_id(tmp_path):
    rows = _rows()
    rows[2]["id"] = rows[0]["id"]
    msg = _error(_write(tmp_path / "dup.csv", rows))
    assert "dup.csv:4" in msg and "duplicate id" in msg and "line 2" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    msg = _error(path)
    assert "empty.csv:1" in msg and "empty" in msg


def test_non_utf8(tmp_path):
    path = _write(tmp_path / "latin.csv", _rows())
    path.write_bytes(path.read_bytes().replace(b"Narayanan", "Narayan\u00e1n".encode("latin-1")))
    msg = _error(path)
    assert "latin.csv:2" in msg and "UTF-8" in msg


@pytest.mark.parametrize("column, value, problem", [
    ("workload", "pretrain", "unknown value"),
    ("hardware", "nvidia-b200", "unknown value"),
    ("attention", "mqa", "unknown value"),
    ("mlp", "relu", "unknown value"),
    ("sp", "2", "not a flag"),
    ("zero", "4", "not a ZeRO stage"),
    ("precision", "fp32", "unknown value"),
    ("master_weights", "bf16", "unknown value"),
    ("routing", "random", "unknown value"),
    ("devices", "0", "must be positive"),
    ("layers", "-3", "not an integer"),
    ("measured_step_time_s", "fast", "not a number"),
    ("measured_step_time_s", "0", "must be a positive"),
    ("model", "llama9", "unknown model preset"),
    ("id", "X001", "malformed id"),
    ("seq_len", "", "required for train rows"),
    ("dp", "16", "tp*pp*cp*dp"),
])
def test_bad_cells(tmp_path, column, value, problem):
    rows = _rows()
    rows[0][column] = value
    msg = _error(_write(tmp_path / "bad.csv", rows))
    assert "bad.csv:2" in msg and column.split("_")[0] in msg and problem in msg


def test_ragged_row(tmp_path):
    path = _write(tmp_path / "ragged.csv", _rows())
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] += ",extra"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    msg = _error(path)
    assert "ragged.csv:3" in msg and "cells" in msg


def test_line_numbers_count_multiline_cells(tmp_path):
    rows = _rows()
    rows[0]["notes"] = "first line\nsecond line"
    rows[1]["tp"] = "x"
    msg = _error(_write(tmp_path / "multi.csv", rows))
    assert "multi.csv:4" in msg  # row 2 starts after the two physical lines of row 1


def test_disputed_rows_name_published_training_rows_with_a_reason():
    from npusim.validate.runs import DISPUTED_ROWS

    recs = {r.id: r for r in read_runs(published_path())}
    for rid, why in DISPUTED_ROWS.items():
        assert recs[rid].workload == "train" and len(why) > 40
