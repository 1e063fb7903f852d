"""Request-level serving (issue 16): low-load agreement with the step model, queueing, saturation."""
import json

import pytest

from npusim.cli import main
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import InferenceWorkload
from npusim.engine.serve import simulate_serving
from npusim.serving.requests import Request, poisson_requests
from npusim.serving.run import simulate_requests
from npusim.serving.sim import kv_transfer_s
from npusim.serving.spec import ServeSpec

PRO = "tp=4,ep=4,etp=1,shared_tp=4,sp=1,moe_dispatch=allgather,precision=int8"
M, HW = load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2")
PLAN = make_plan(parse_plan(PRO))


def serve(qps, duration=60.0, out_len=128, spec=None, seed=0):
    reqs = poisson_requests(qps, duration, 2048, out_len, seed)
    return simulate_requests(M, HW, PLAN, 4, reqs, spec or ServeSpec(), duration)


def single(kind, **kw):
    wl = InferenceWorkload(kind=kind, batch=1, input_len=2048, **kw)
    return simulate_serving(M, HW, PLAN, wl, 4)


def test_low_load_reproduces_single_request_ttft_and_tpot():
    r = serve(0.02, duration=300.0)  # requests ~50 s apart, each done in ~2 s: never two at once
    assert r["finished"] == r["requests"] >= 3
    assert r["ttft_s"]["p50"] == pytest.approx(single("prefill").ttft_s, rel=0.05)
    assert r["tpot_s"]["p50"] == pytest.approx(single("decode").tpot_s, rel=0.05)


def test_p99_ttft_rises_with_qps():
    p99 = [serve(q, duration=120.0)["ttft_s"]["p99"] for q in (1.0, 4.0, 6.0, 8.0)]
    assert p99 == sorted(p99) and p99[-1] > 10 * p99[0], p99


def test_throughput_stops_rising_past_saturation():
    rates = {q: serve(q)["output_tokens_per_s"] for q in (1.0, 4.0, 16.0, 32.0)}
    assert rates[4.0] > 3.5 * rates[1.0]  # below saturation, throughput follows the load
    assert rates[32.0] == pytest.approx(rates[16.0], rel=0.02)  # past it, it stays flat
    assert rates[32.0] < 0.5 * 32.0 * 128
    assert serve(32.0)["unfinished"] > 0


def test_same_seed_same_result_and_seed_changes_arrivals():
    assert serve(2.0, seed=3) == serve(2.0, seed=3)
    assert poisson_requests(2.0, 60, 16, 4, 1)[0].arrival_s != poisson_requests(2.0, 60, 16, 4, 2)[0].arrival_s


def test_slo_attainment_counts_requests_meeting_both_objectives():
    ttft, tpot = single("prefill").ttft_s, single("decode").tpot_s
    loose = serve(0.5, spec=ServeSpec(ttft_slo_s=10 * ttft, tpot_slo_s=10 * tpot))
    tight = serve(0.5, spec=ServeSpec(ttft_slo_s=0.5 * ttft, tpot_slo_s=10 * tpot))
    assert loose["slo_attainment"] == 1.0 and tight["slo_attainment"] == 0.0


def test_disaggregated_ttft_is_prefill_and_kv_moves_before_decode():
    reqs = [Request(0, 0.0, 2048, 64)]
    spec = ServeSpec(instances=0, prefill_instances=1, decode_instances=1)
    r = simulate_requests(M, HW, PLAN, 4, reqs, spec, 1.0)
    assert r["ttft_s"]["p50"] == pytest.approx(single("prefill").ttft_s, rel=1e-6)
    move = kv_transfer_s(M, HW, PLAN, 4, 2048)
    assert move > 0
    # The request's 63 later tokens wait for the KV move, then decode one per step.
    assert r["tpot_s"]["p50"] * 63 == pytest.approx(move + 63 * single("decode").tpot_s, rel=0.05)
    assert r["cards"] == 8


def test_cli_serve_json_and_bad_input(capsys, tmp_path):
    args = ["serve", "--devices", "4", "--plan", PRO, "--qps", "1", "--duration", "20", "--output-len", "32", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["finished"] == out["requests"] and out["ttft_s"]["p99"] > 0
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_len,output_len\n0.0,512,16\n0.5,1024,x\n")
    assert main(["serve", "--devices", "4", "--plan", PRO, "--trace", str(trace)]) == 2
    err = capsys.readouterr().err
    assert "output_len" in err and "t.csv:3" in err and err.count("\n") == 1
    trace.write_text("arrival_s,input_len,output_len\n0.0,512,16\n0.5,1024,8\n")
    assert main(["serve", "--devices", "4", "--plan", PRO, "--trace", str(trace), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"] == 2
