"""Strict reading of the published run records and their conversion to model / plan / workload."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from npusim.config.errors import ConfigError
from npusim.validate import runs as runs_module
from npusim.validate.runs import (
    COLUMNS, RunRecord, measured_metric, published_path, read_runs, record_model, record_plan_fields,
    record_workload,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared/data/runs/published.csv"
PUBLISHED = published_path()
"""The packaged copy: the project's reference rows plus the ``plan`` column."""

needs_shared = pytest.mark.skipif(not SHARED.is_file(), reason=f"{SHARED} not present")


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
        make_plan({**fields, "micro_batch": fields.get("micro_batch", 1)}, rec.origin)
        name, value = measured_metric(rec)
        assert value > 0
        assert name == {"train": "step_time_s", "prefill": "ttft_s", "decode": "tpot_s"}[rec.workload]


def test_plan_column_states_the_options(by_id):
    old = record_plan_fields(by_id["V001"])
    assert old["flash_attention"] is False and old["overlap_grad_reduce"] is False
    assert old["vpp"] == 1 and "micro_batch" not in old and "ep" not in old and "etp" not in old
    assert old["sp"] is False and old["zero"] == 0 and old["recompute"] == "full" and old["precision"] == "fp16"
    assert record_plan_fields(by_id["V023"])["flash_attention"] is False  # korthikanti-eq7
    new = record_plan_fields(by_id["V071"])  # megatron-core: plan defaults
    assert "flash_attention" not in new and "overlap_grad_reduce" not in new
    assert new["zero"] == 3 and "recompute" not in new and new["master_weights"] == "fp32"
    assert record_plan_fields(by_id["V072"])["sp"] is True  # NeMo recipe: SP with TP
    assert record_plan_fields(by_id["V093"])["zero"] == 1  # distributed optimizer of the recipe
    v077 = record_plan_fields(by_id["V077"])
    assert v077["a2a"] == "hierarchical" and v077["ep_overlap"] is True
    assert record_plan_fields(by_id["V098"])["a2a"] == "hierarchical"  # DeepEP
    assert record_plan_fields(by_id["V114"])["tp_comm_overlap"] is True  # --use-mc2
    assert record_plan_fields(by_id["V124"])["moe_dispatch"] == "allgather"


def test_notes_and_recipe_tables_are_gone():
    for name in ("NOTE_OPTIONS", "RECIPE_OPTIONS", "RECIPE_SP", "LEGACY_MEGATRON"):
        assert not hasattr(runs_module, name), name


def test_workload_and_metric(by_id):
    w = record_workload(by_id["V001"])
    assert (w.seq_len, w.global_batch) == (2048, 512)
    assert measured_metric(by_id["P002"]) == ("tpot_s", pytest.approx(0.01844))
    with pytest.raises(ValueError):
        record_workload(by_id["P001"])


@needs_shared
def test_packaged_copy_is_the_reference_plus_the_plan_column():
    def table(path):
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]

    ref_head, ref = table(SHARED)
    head, ours = table(published_path())
    assert [c for c in head if c != "plan"] == ref_head and head.count("plan") == 1
    assert [{k: v for k, v in r.items() if k != "plan"} for r in ours] == ref
    assert {r["id"]: r["plan"] for r in ours}["V077"] == "sp=1,a2a=hierarchical,ep_overlap=1"


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


def test_blank_workload_is_an_error_and_a_missing_column_means_train(tmp_path):
    rows = _rows()
    rows[0]["workload"] = ""
    msg = _error(_write(tmp_path / "blank.csv", rows))
    assert "blank.csv:2" in msg and "workload" in msg and "blank" in msg
    recs = read_runs(_write(tmp_path / "nocol.csv", rows, [c for c in COLUMNS if c != "workload"]))
    assert recs[0].workload == "train" and measured_metric(recs[0])[0] == "step_time_s"


def test_missing_columns_are_named_together(tmp_path):
    path = _write(tmp_path / "nocol.csv", _rows(), [c for c in COLUMNS if c not in ("plan", "seq_len")])
    msg = _error(path)
    assert "nocol.csv:1" in msg and "missing required columns: plan, seq_len" in msg


def test_optional_column_may_be_left_out(tmp_path):
    recs = read_runs(_write(tmp_path / "norc.csv", _rows(), [c for c in COLUMNS if c != "recompute"]))
    assert recs[0].recompute is None


def test_unknown_column(tmp_path):
    rows = [{**r, "bogus": "1", "measured_mfu_pct": "1"} for r in _rows()]
    header = [c for c in COLUMNS if c != "measured_mfu"] + ["bogus", "measured_mfu_pct"]
    msg = _error(_write(tmp_path / "extra.csv", rows, header))
    assert "extra.csv:1" in msg and "'bogus'" in msg and "unknown column" in msg
    assert "did you mean 'measured_mfu'" in msg


def test_bad_enum(tmp_path):
    rows = _rows()
    rows[1]["recompute"] = "partial"
    msg = _error(_write(tmp_path / "enum.csv", rows))
    assert "enum.csv:3" in msg and "recompute" in msg and "'partial'" in msg and "selective" in msg


def test_non_integer_tp(tmp_path):
    rows = _rows()
    rows[2]["tp"] = "4.5"
    msg = _error(_write(tmp_path / "tp.csv", rows))
    assert "tp.csv:4" in msg and "tp = '4.5'" in msg and "not an integer" in msg


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
    ("hardware", "nvidia-b200", "unknown hardware preset"),
    ("hardware", "profiles/b200.yaml", "file not found"),
    ("attention", "mqa", "unknown value"),
    ("mlp", "relu", "unknown value"),
    ("sp", "2", "not a flag"),
    ("zero", "4", "out of range"),
    ("precision", "fp32", "unknown value"),
    ("master_weights", "bf16", "unknown value"),
    ("routing", "random", "unknown value"),
    ("devices", "0", "must be positive"),
    ("layers", "-3", "must be positive"),
    ("measured_step_time_s", "fast", "not a number"),
    ("measured_step_time_s", "0", "must be positive"),
    ("measured_step_time_s", "inf", "finite"),
    ("model", "llama9", "unknown model preset"),
    ("id", "", "blank"),
    ("seq_len", "", "required for train rows"),
    ("dp", "16", "tp*pp*cp*dp"),
    ("plan", "tp=2,bogus=1", "unknown plan key"),
    ("plan", "recompute=selective", "contradicts the recompute column"),
    ("flop_convention", "flops", "unknown value"),
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


def test_records_are_frozen_dataclasses_validated_by_pydantic(by_id):
    import dataclasses

    import pydantic

    rec = by_id["V121"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.tp = 2  # type: ignore[misc]
    assert dataclasses.replace(rec, hardware="nvidia-a100-sxm-80g").hardware == "nvidia-a100-sxm-80g"
    with pytest.raises(pydantic.ValidationError):
        dataclasses.replace(rec, devices=0)


@needs_shared
def test_the_published_schema_without_a_plan_column_still_reads():
    """The reference CSV (``shared/data/runs``) has no ``plan`` column: its rows read with the plan
    derived from their era/recipe defaults and notes (``legacy_plan``), and predict as the shipped
    copy does except where the shipped plan cell states a recipe option (V077's EP overlap, V124's
    all-gather MoE dispatcher)."""
    from npusim.validate.predict import predict_record

    legacy = {r.id: r for r in read_runs(SHARED)}
    shipped = {r.id: r for r in read_runs(published_path())}
    assert set(legacy) == set(shipped)
    differ = [i for i in shipped if legacy[i].plan != shipped[i].plan
              and predict_record(legacy[i]) != pytest.approx(predict_record(shipped[i]), rel=1e-9)]
    assert differ == ["V077", "V124"]


def test_routing_column_sets_the_simulated_load(by_id):
    from npusim.validate.convert import record_plan_fields

    assert record_plan_fields(by_id["V124"])["routing"] == "learned"   # dropless
    assert record_plan_fields(by_id["V074"])["routing"] == "balanced"  # force-balanced benchmark


def test_dropless_predicts_slower_than_balanced_for_one_configuration(by_id):
    """The measured direction (dropless runs 5-25 % slower): the busiest EP rank and the unequal
    expert GEMMs of a trained router's load set the pace."""
    import dataclasses

    from npusim.validate.predict import predict_record

    dropless = by_id["V124"]
    balanced = dataclasses.replace(dropless, routing="balanced")
    assert predict_record(dropless) > 1.01 * predict_record(balanced)


def test_ascend_calibration_reproduces_the_profile():
    """The 800T A2 calibration section is what `npusim calibrate` fits from the packaged data."""
    from npusim.config.hardware import load_profile
    from npusim.validate.calibrate import calibrate

    hw = load_profile("atlas-800t-a2")
    fit = calibrate(hw, Path(__file__).resolve().parents[2] / "npusim" / "data" / "calibration" / "ascend")
    cal = hw.calibration
    assert cal is not None and fit["gemm"]["max_fraction"] == pytest.approx(cal.gemm.max_fraction, rel=1e-3)
    assert fit["attention"]["max_fraction"] == pytest.approx(cal.attention.max_fraction, rel=1e-3)
    assert fit["memory"]["max_fraction"] == pytest.approx(cal.memory.max_fraction, rel=1e-3)
    assert fit["launch_overhead_us"] == hw.efficiency.launch_overhead_us  # not covered by the data: kept
    assert all(v < 20 for v in fit["residuals"].values())
