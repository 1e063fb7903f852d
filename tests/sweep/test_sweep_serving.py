"""Serving sweeps: decode / prefill workloads in the spec, the batch search under a TPOT limit and
memory, the serving plan space, and a small decode sweep end to end."""
from __future__ import annotations

import re

import pandas as pd
import pytest
from sweep_helpers import assert_spec_error, replaced, sweep_once, write_spec

from npusim.cli import main
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan
from npusim.config.workload import InferenceWorkload
from npusim.engine.serve import resolve_serving_plan, simulate_serving
from npusim.sweep.run import run_sweep
from npusim.sweep.serving import search_batch
from npusim.sweep.space import plans
from npusim.sweep.spec import load_spec

DECODE = {
    "name": "decode",
    "hardware": ["atlas-800i-a2", "atlas-300i-duo"],
    "devices": {"atlas-800i-a2": 4, "atlas-300i-duo": 8},
    "workload": {"kind": "decode", "input_len": 2048, "batch": "auto"},
    "model": {"base": "pangu-pro-moe-72b", "vary": {"hidden_size": [4096, 5120]}, "derive": {"heads": "hidden // 128"}},
    "plan": "auto",
    "objective": {"metric": "tokens_per_s_per_card", "max_tpot_s": {"atlas-800i-a2": 0.05, "atlas-300i-duo": 0.1},
                  "devices_per_card": {"atlas-300i-duo": 2}},
}
TINY = {
    "name": "tiny-decode",
    "hardware": "atlas-800i-a2",
    "devices": 4,
    "workload": {"kind": "decode", "input_len": 2048, "batch": "auto"},
    "model": {"base": "pangu-pro-moe-72b", "vary": {"num_layers": [24, 48]}},
    "plan": {"auto": True, "tp": [1, 4], "moe_dispatch": ["allgather"]},
    "objective": {"metric": "tokens_per_s_per_card", "max_tpot_s": 0.016},
    "tiers": {"full_top": 3, "batch_size": 8},
}
"""36 points: 24 layers meet 16 ms at some batch; 48 layers mostly miss it even at the smallest batch."""


def changed(path: str, value) -> dict:
    """A copy of DECODE with one (dotted) key replaced."""
    return replaced(DECODE, path, value)


BAD = [
    ("unknown kind", changed("workload.kind", "decod"), "workload.kind", "unknown workload kind"),
    ("missing input_len", changed("workload", {"kind": "decode"}), "workload.input_len", "missing"),
    ("bad batch", changed("workload.batch", ["auto", "big"]), "workload.batch.1", "'auto' or a positive integer"),
    ("zero batch", changed("workload.batch", 0), "workload.batch.0", "'auto' or a positive integer"),
    ("training key", changed("workload.seq_len", 4096), "workload.seq_len", "unknown key"),
    ("tpot on training", changed("workload", {"seq_len": 4096, "global_batch": 8}), "objective.max_tpot_s",
     "does not apply to a train workload"),
    ("ttft on decode", changed("objective.max_ttft_s", 0.5), "objective.max_ttft_s", "does not apply to a decode"),
    ("step time on decode", changed("objective.max_step_time_s", 1), "objective.max_step_time_s", "does not apply"),
    ("limit for other hardware", changed("objective.max_tpot_s", {"h100": 0.05}), "objective.max_tpot_s.h100",
     "not in the sweep"),
    ("negative limit", changed("objective.max_tpot_s", -1), "objective.max_tpot_s", "positive float"),
    ("fractional card", changed("objective.devices_per_card", 1.5), "objective.devices_per_card", "positive int"),
    ("devices missing a profile", changed("devices", {"atlas-800i-a2": 4}), "devices", "no device count for atlas-300i-duo"),
    ("devices of another profile", changed("devices", {"atlas-800i-a2": 4, "atlas-300i-duo": 8, "x": 2}), "devices.x",
     "not in the sweep"),
    ("bad device count", changed("devices", {"atlas-800i-a2": [4, 0], "atlas-300i-duo": 8}), "devices.atlas-800i-a2.1",
     "greater than 0"),
    ("derive unknown field", changed("model.derive", {"headz": "hidden // 128"}), "model.derive.headz", "did you mean"),
    ("derive true division", changed("model.derive", {"heads": "hidden / 128"}), "model.derive.heads", "use //"),
    ("derive varied field", changed("model.derive", {"hidden": "heads * 128"}), "model.derive.hidden", "also varied"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_serving_spec_error_is_one_line(tmp_path, case):
    _, spec, field, needle = case
    assert_spec_error(tmp_path, spec, field, needle)


def test_serving_spec_resolves(tmp_path):
    spec, resolved = load_spec(write_spec(tmp_path, DECODE))
    assert spec.workload.kind == "decode" and resolved["workload"]["batch"] == ["auto"]
    assert resolved["devices"] == {"atlas-800i-a2": [4], "atlas-300i-duo": [8]}
    assert resolved["model"]["derive"] == {"heads": "hidden // 128"}


def test_serving_auto_plans_are_valid():
    model, hw = load_model("pangu-pro-moe-72b"), load_profile("atlas-300i-duo")
    c = {"model": model, "devices": 8, "devices_per_node": hw.node.devices_per_node, "serving": True}
    got = list(plans({"auto": True}, c))
    assert len(got) == len({tuple(sorted(p.items())) for p in got}) > 50
    for p in got:
        plan = resolve_serving_plan(make_plan(p), model, 8, 8)  # raises if invalid
        assert p["precision"] == "int8" and plan.pp == 1 and plan.tp * plan.dp == 8
        assert p["shared_tp"] in (p["tp"], 8)
    assert {"tp": 4, "moe_dispatch": "allgather", "etp": 2, "ep": 4, "shared_tp": 8} in [
        {k: p[k] for k in ("tp", "moe_dispatch", "etp", "ep", "shared_tp")} for p in got]  # Pangu's H2P


PLAN_800I = {"tp": 4, "ep": 4, "etp": 1, "shared_tp": 4, "sp": True, "moe_dispatch": "allgather", "precision": "int8"}
PLAN_DUO = {"tp": 4, "ep": 4, "etp": 2, "shared_tp": 8, "sp": True, "moe_dispatch": "allgather", "precision": "int8"}


@pytest.mark.parametrize("hw_name, devices, fields, limit, bound", [
    ("atlas-800i-a2", 4, PLAN_800I, 0.050, "tpot"),    # 16-bit KV cache
    ("atlas-800i-a2", 4, PLAN_800I, 0.120, "tpot"),    # past the 16-bit capacity: int8 KV cache
    ("atlas-800i-a2", 4, PLAN_800I, None, "memory"),   # no limit: the largest batch that fits
    ("atlas-300i-duo", 8, PLAN_DUO, 0.100, "tpot"),    # attention DP 2: batches in steps of 2
])
def test_batch_search_meets_the_limit_and_the_next_batch_does_not(hw_name, devices, fields, limit, bound):
    model, hw = load_model("pangu-pro-moe-72b"), load_profile(hw_name)
    plan = make_plan(fields)
    wl = InferenceWorkload(kind="decode", batch=devices, input_len=2048)
    cap = hw.chip.hbm_capacity_GB
    s = search_batch(model, hw, plan, wl, devices, limit_s=limit, mem_limit_GB=cap)
    assert s.ok and s.bound == bound and s.evals <= 16
    assert (limit is None or s.result.tpot_s <= limit) and s.result.peak_memory_GB <= cap
    assert s.result.config["workload"]["batch"] == s.batch
    dp = resolve_serving_plan(plan, model, devices, devices).dp
    # The next batch up, with the KV dtype the core itself picks for it, breaks the limit or memory.
    nxt = simulate_serving(model, hw, plan, wl.model_copy(update={"batch": s.batch + dp}), devices, strict_memory=False)
    assert (limit is not None and nxt.tpot_s > limit) or nxt.peak_memory_GB > cap
    if limit == 0.120:
        assert s.kv_dtype == "int8"


def test_batch_search_reports_a_limit_missed_at_the_smallest_batch():
    model, hw = load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2")
    wl = InferenceWorkload(kind="decode", batch=4, input_len=2048)
    s = search_batch(model, hw, make_plan(PLAN_800I), wl, 4, limit_s=0.010, mem_limit_GB=68.0)
    assert not s.ok and s.bound == "tpot" and s.batch == 1 and s.result.tpot_s > 0.010
    assert "smallest batch (1)" in s.message


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return sweep_once(tmp_path_factory.mktemp("tiny"), TINY)


def test_tiny_serving_sweep_ranks_by_throughput_per_card(tiny):
    summary, out = tiny
    frame = pd.read_parquet(out / "results.parquet")
    ranked = pd.read_csv(out / "ranked.csv")
    assert len(frame) == summary["points"] == 36 and summary["status"]["error"] == 0
    ok = frame[frame["status"] == "ok"]
    assert len(ranked) == len(ok) > 0
    assert (ok["tpot_s"] <= 0.016).all() and (ok["peak_memory_GB"] <= 68.72).all()
    assert (ok["batch"] % ok["dp"] == 0).all() and (ok["score"] == ok["tokens_per_s_per_card"]).all()
    full, fast = ranked[ranked["tier"] == "full"], ranked[ranked["tier"] == "fast"]
    assert len(full) == 3 and list(full["full_score"]) == sorted(full["full_score"], reverse=True)
    assert list(fast["score"]) == sorted(fast["score"], reverse=True)
    assert (full["full_score"] - full["score"]).abs().max() < 1e-9  # both tiers run the core's serving model
    assert ranked["score"].iloc[0] == ok["score"].max()


def test_tiny_serving_sweep_marks_limits_missed_at_the_smallest_batch(tiny):
    _, out = tiny
    frame = pd.read_parquet(out / "results.parquet")
    missed = frame[frame["reason"] == "tpot"]
    assert len(missed) > 0 and (missed["status"] == "infeasible").all()
    assert (missed["tpot_s"] > 0.016).all() and (missed["batch"] == missed["dp"]).all()
    assert missed["message"].str.contains("smallest batch").all()
    deep = frame[frame["model_layers"] == 48]
    assert set(deep["reason"].dropna()) <= {"tpot", "memory"} and (deep["status"] == "infeasible").sum() > 10


def test_cli_prints_tpot_and_throughput_per_card(tmp_path, capsys):
    spec = dict(TINY, model={"base": "pangu-pro-moe-72b", "vary": {"num_layers": [24]}}, plan={
        "tp": [4], "ep": [4], "etp": [1], "shared_tp": [4], "moe_dispatch": ["allgather"], "sp": [True],
        "precision": ["int8"]})
    assert main(["sweep", str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "TPOT" in out and "tok/s/card" in out and re.search(r"batch \d+ \(tpot\)", out)
