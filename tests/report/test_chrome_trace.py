"""Chrome trace export (npusim.report.chrome_trace): golden file, validity, tiling, determinism, CLI.

The golden case is a 4-layer Llama-shaped model on 8 devices of a pinned copy of the Atlas 800T A2
profile (tp=2 pp=2 dp=2, selective recompute, ZeRO-1, 2 micro-batches). After an intended change of
the cost model or the trace format, regenerate it with
``NPUSIM_UPDATE_GOLDEN=1 python -m pytest tests/report/test_chrome_trace.py`` and review the diff.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

from npusim.cli import main
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import TrainWorkload
from npusim.engine.step import stage_costs
from npusim.report.chrome_trace import TIDS, chrome_trace, dumps_trace, write_chrome_trace
from npusim.report.rebuild import inputs_from_result, step_parts, with_timeline
from npusim.simulate import simulate

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_PLAN = "tp=2,pp=2,sp=1,zero=1,recompute=selective,micro_batch=1"


def golden_case(keep_timeline: bool = True):
    """(Result, HardwareProfile) of the golden case."""
    hw = load_profile(str(GOLDEN / "golden-npu.yaml"))
    model = load_model(str(GOLDEN / "tiny-llama.yaml"))
    res = simulate(model, hw, make_plan(parse_plan(GOLDEN_PLAN)), TrainWorkload(seq_len=1024, global_batch=4), 8,
                   keep_timeline=keep_timeline)
    return res, hw


@pytest.fixture(scope="module")
def golden():
    res, hw = golden_case()
    return res, hw, chrome_trace(res, hardware=hw)


@pytest.fixture(scope="module")
def moe_trace():
    """An interleaved MoE step with EP all-to-all and DP: every kind of thread but CP."""
    from npusim.api import run_simulation

    res = with_timeline(run_simulation("qwen3-30b-a3b", "atlas-800t-a2", "tp=2,pp=2,vpp=2,ep=4,sp=1,zero=1", 16,
                                       1024, 16))
    return res, chrome_trace(res)


def test_golden_trace_is_byte_identical(golden, tmp_path):
    res, hw, _ = golden
    path = write_chrome_trace(res, tmp_path / "step.json", hardware=hw)
    text = path.read_text(encoding="utf-8")
    gold = GOLDEN / "tiny_pp2.trace.json"
    if os.environ.get("NPUSIM_UPDATE_GOLDEN"):
        gold.write_text(text, encoding="utf-8")
    assert text == gold.read_text(encoding="utf-8"), (
        "trace differs from tests/report/golden/tiny_pp2.trace.json; if the cost model or the trace format "
        "changed on purpose, rerun with NPUSIM_UPDATE_GOLDEN=1 and review the diff")


def test_same_inputs_give_the_same_bytes(golden):
    res, hw, trace = golden
    again, _ = golden_case()
    assert dumps_trace(chrome_trace(again, hardware=hw)) == dumps_trace(trace)
    # A result without its timeline is rerun with it: same trace.
    bare, _ = golden_case(keep_timeline=False)
    assert dumps_trace(chrome_trace(bare, hardware=hw)) == dumps_trace(trace)


def check_valid(trace: dict) -> None:
    """What Perfetto and chrome://tracing need, and what the docs promise."""
    parsed = json.loads(dumps_trace(trace))
    assert parsed["displayTimeUnit"] in ("ms", "ns")
    events = parsed["traceEvents"]
    names = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    procs = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    xs = [e for e in events if e["ph"] == "X"]
    assert xs and {e["ph"] for e in events} == {"X", "M"}
    for e in xs:
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int) and e["name"]
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0 and e["dur"] >= 0
        assert (e["pid"], e["tid"]) in names, e
        assert e["pid"] in procs
    assert all(v.startswith(f"pipeline rank {k} (stage") for k, v in procs.items())
    # Slices on one thread never partly overlap (viewers need proper nesting).
    by_thread = defaultdict(list)
    for e in xs:
        by_thread[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_thread.values():
        spans.sort()
        assert all(b[0] >= a[1] - 1e-6 for a, b in zip(spans, spans[1:]))


def test_trace_is_valid(golden, moe_trace):
    check_valid(golden[2])
    check_valid(moe_trace[1])


def test_slices_tile_each_unit_and_the_step_ends_at_step_time(golden, moe_trace):
    for res, trace in ((golden[0], golden[2]), moe_trace):
        xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
        units = [e for e in xs if e["tid"] == TIDS["schedule"]]
        assert len(units) == len(res.timeline)
        by_unit = defaultdict(float)
        for e in xs:
            if e["tid"] in (TIDS["schedule"], TIDS["pp"]) or e["cat"] not in ("forward", "backward"):
                continue
            by_unit[(e["pid"], e["cat"], e["args"]["virtual_stage"], e["args"]["micro_batch"])] += e["dur"]
        for u in units:
            key = (u["pid"], u["cat"], u["args"]["virtual_stage"], u["args"]["micro_batch"])
            assert by_unit[key] == pytest.approx(u["dur"], abs=0.01)
        end = max(e["ts"] + e["dur"] for e in xs)
        assert end == pytest.approx(res.step_time_s * 1e6, abs=0.01)


def test_threads_and_args(golden, moe_trace):
    xs = [e for e in golden[2]["traceEvents"] if e["ph"] == "X"]
    tids = {e["tid"] for e in xs}
    assert {TIDS[k] for k in ("schedule", "matrix", "vector", "tp", "pp", "dp")} <= tids
    assert any("(recompute)" in e["name"] and e["tid"] == TIDS["matrix"] for e in xs)
    gemm = next(e for e in xs if e["tid"] == TIDS["matrix"])
    assert gemm["args"]["flops"] > 0 and "micro_batch" in gemm["args"] and "virtual_stage" in gemm["args"]
    tp = next(e for e in xs if e["tid"] == TIDS["tp"])
    assert tp["args"]["bytes"] > 0 and tp["args"]["group"].startswith("tp (2 ranks")
    assert any(e["name"] == "optimizer step" for e in xs)
    assert any(e["name"] == "gradient reduce" for e in xs)
    moe = [e for e in moe_trace[1]["traceEvents"] if e["ph"] == "X"]
    ep = [e for e in moe if e["tid"] == TIDS["ep"]]
    assert ep and all("all_to_all" in e["args"]["collectives"] for e in ep)
    assert {e["args"]["chunk"] for e in moe if e["tid"] == TIDS["schedule"]} == {0, 1}


def test_coarse_stage_costs_are_accepted(golden):
    res, hw, _ = golden
    sp = step_parts(inputs_from_result(res, hw))
    costs = stage_costs(sp.inputs, sp.specs, sp.places, {}, sp.load)
    trace = chrome_trace(res, costs, hardware=hw)
    check_valid(trace)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert not any(e["tid"] == TIDS["vector"] and e["cat"] == "forward" for e in xs)  # compute all on the matrix unit
    with pytest.raises(ValueError, match="virtual stages"):
        chrome_trace(res, costs[:1], hardware=hw)


def test_cli_writes_a_trace(tmp_path, capsys):
    out = tmp_path / "step.json"
    rc = main(["trace", "--model", "llama2-7b", "--hardware", "atlas-800t-a2", "--devices", "8", "--plan",
               "tp=2,pp=2", "--seq-len", "1024", "--global-batch", "4", "--out", str(out)])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    check_valid(json.loads(out.read_text()))


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(["trace", "--model", "llama2-7b", "--devices", "8", "--plan", "tp=3", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "tp" in err
    rc = main(["trace", "--out", str(tmp_path / "missing" / "x.json")])
    assert rc == 2 and "folder does not exist" in capsys.readouterr().err


def test_op_level_tracks_show_what_the_engine_overlapped():
    """With op_level, every unit's kernels and collectives appear on engine tracks; in an
    overlapped forward+backward pair an EP all-to-all runs while a GEMM runs."""
    from npusim.api import run_simulation

    res = run_simulation("mixtral-8x7b", "atlas-800t-a2", "tp=2,pp=2,ep=8,sp=1,zero=1,ep_overlap=1", devices=32,
                         seq_len=2048, global_batch=16, micro_batch=1, keep_timeline=True)
    trace = chrome_trace(res, op_level=True)
    eng = [e for e in trace["traceEvents"] if e.get("cat") == "engine"]
    assert {e["tid"] for e in eng} >= {TIDS["engine:matrix"], TIDS["engine:ep_comm"]}
    ep = [(e["pid"], e["ts"], e["ts"] + e["dur"]) for e in eng if e["tid"] == TIDS["engine:ep_comm"] and e["args"]["unit"] == "FB"]
    mat = [(e["pid"], e["ts"], e["ts"] + e["dur"]) for e in eng if e["tid"] == TIDS["engine:matrix"] and e["args"]["unit"] == "FB"]
    assert ep and mat
    assert any(p == q and a < d and c < b for p, a, b in ep[:50] for q, c, d in mat)
    plain = chrome_trace(res)
    assert not any(e.get("cat") == "engine" for e in plain["traceEvents"])
