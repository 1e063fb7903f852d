"""Serving capacity as a sweep objective (``workload.kind: serve``): each point's answer is the
layout search of npusim.serving.capacity on that instance layout, ranked by the fewest cards."""
from __future__ import annotations


import pandas as pd
import pytest
from sweep_helpers import assert_spec_error, replaced, sweep_once, write_spec

from npusim.cli import main
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan
from npusim.serving.capacity import Slo, search_layouts
from npusim.serving.requests import poisson_requests
from npusim.serving.spec import ServeSpec
from npusim.sweep.run import run_sweep

LOAD = {"kind": "serve", "qps": 2, "input_len": 1024, "output_len": 32, "ttft_p99_s": 0.5, "tpot_p99_s": 0.03,
        "duration_s": 10, "full_duration_s": 20}
SPEC = {
    "name": "capacity",
    "hardware": "atlas-800i-a2",
    "devices": [2, 4],
    "workload": LOAD,
    "model": {"base": "pangu-pro-moe-72b"},
    "plan": {"tp": [2, 4], "ep": [2, 4], "etp": [1], "shared_tp": [2, 4], "moe_dispatch": ["allgather"],
             "sp": [True], "precision": ["int8"]},
    "objective": {"metric": "cards"},
    "tiers": {"full_top": 1, "batch_size": 8},
}
"""Instance layouts of 2 and 4 devices; combinations the degrees do not divide are divisibility rows."""


def changed(path: str, value) -> dict:
    """A copy of SPEC with one (dotted) key replaced."""
    return replaced(SPEC, path, value)


@pytest.mark.parametrize("spec,field,needle", [
    (changed("objective.metric", "mfu"), "objective.metric", "does not rank a serve workload"),
    ({**changed("workload", {"kind": "decode", "input_len": 2048}), "objective": {"metric": "cards"}},
     "objective.metric", "serving capacity only"),
    (changed("workload.qps", 0), "workload.qps", "greater than 0"),
    (changed("workload.batch", ["auto", "many"]), "workload.batch.1", "'auto' or a positive integer"),
    (changed("objective", {"metric": "cards", "max_tpot_s": 0.05}), "objective.max_tpot_s", "does not apply"),
])
def test_capacity_spec_error_is_one_line(tmp_path, spec, field, needle):
    assert_spec_error(tmp_path, spec, field, needle)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    return sweep_once(tmp_path_factory.mktemp("capacity"), SPEC)


def test_each_point_answers_with_the_layout_search_of_its_instance(swept):
    summary, out = swept
    frame = pd.read_parquet(out / "results.parquet")
    ok = frame[frame["status"] == "ok"]
    assert summary["status"]["error"] == 0 and set(ok["devices"]) == {2, 4}
    assert set(frame.loc[frame["status"] != "ok", "reason"]) <= {"divisibility"}
    model, hw = load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2")
    slo = Slo(LOAD["ttft_p99_s"], LOAD["tpot_p99_s"])
    requests = poisson_requests(LOAD["qps"], LOAD["duration_s"], LOAD["input_len"], LOAD["output_len"], 0)
    for _, r in ok.iterrows():
        d = int(r["devices"])
        plan = make_plan({"tp": int(r["tp"]), "ep": int(r["ep"]), "etp": 1, "shared_tp": int(r["shared_tp"]),
                          "moe_dispatch": "allgather", "sp": bool(r["sp"]), "precision": "int8"})
        base = ServeSpec(ttft_slo_s=slo.ttft_p99_s, tpot_slo_s=slo.tpot_p99_s)
        best = search_layouts(model, hw, requests, LOAD["duration_s"], slo, [(d, plan)], True, base)["best"]
        assert r["cards"] == best["cards"] and r["score"] == -best["cards"]
        assert r["ttft_s"] == best["ttft_s"]["p99"] <= slo.ttft_p99_s
        assert r["tpot_s"] == best["tpot_s"]["p99"] <= slo.tpot_p99_s
        pools = r["instances"] + r["prefill_instances"] + r["decode_instances"]
        assert r["cards"] == pools * d and r["chips"] == r["cards"]  # one chip per 800I A2 card


def test_ranked_by_fewest_cards_and_the_leader_resized_on_the_longer_window(swept):
    summary, out = swept
    ranked = pd.read_csv(out / "ranked.csv")
    fast = ranked[ranked["tier"] == "fast"]
    assert list(fast["score"]) == sorted(fast["score"], reverse=True)
    lead = ranked.iloc[0]
    assert lead["tier"] == "full" and lead["full_status"] == "ok" and lead["full_cards"] >= 1
    assert lead["full_tpot_s"] <= LOAD["tpot_p99_s"] and lead["full_ttft_s"] <= LOAD["ttft_p99_s"]
    assert summary["top"][0]["cards"] == lead["full_cards"] and "devices" in summary["top"][0]["layout"]


def test_impossible_objective_is_infeasible_with_reason_slo(tmp_path):
    spec = changed("workload.tpot_p99_s", 0.001)
    spec["devices"], spec["plan"] = [4], {**SPEC["plan"], "tp": [4], "ep": [4], "shared_tp": [4]}
    spec["workload"]["disaggregated"] = False
    summary = run_sweep(write_spec(tmp_path, spec), tmp_path / "out", workers=1)
    frame = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert summary["status"]["ok"] == 0 and list(frame["reason"]) == ["slo"]
    assert "meets the SLO" in frame["message"].iloc[0]


def test_cli_prints_cards_and_layout(tmp_path, capsys):
    spec = changed("devices", [4])
    assert main(["sweep", str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "cards:" in out and "x 4 devices" in out and "SLO met" in out
