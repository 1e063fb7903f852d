"""Serving: prefill and decode through the shared cost models and event engine."""
import pytest

from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import InferenceWorkload
from npusim.engine.serve import simulate_serving

PRO = "tp=4,ep=4,etp=1,shared_tp=4,sp=1,moe_dispatch=allgather,precision=int8"


def run(plan=PRO, model="pangu-pro-moe-72b", hw="atlas-800i-a2", devices=4, **wl):
    wl = {"kind": "decode", "batch": 64, "input_len": 2048, **wl}
    return simulate_serving(load_model(model), load_profile(hw), make_plan(parse_plan(plan)),
                            InferenceWorkload(**wl), devices)


def parts_sum(r):
    return sum(r.breakdown_s.values())


def test_decode_breakdown_sums_and_tpot():
    r = run()
    assert parts_sum(r) == pytest.approx(r.step_time_s, rel=1e-9)
    assert r.tpot_s == pytest.approx(r.step_time_s) and r.ttft_s is None
    assert r.to_dict()["tpot_s"] > 0 and r.to_dict()["kv_cache_GB"] > 0


def test_decode_grows_with_context_and_batch():
    assert run(input_len=8192).tpot_s > run(input_len=1024).tpot_s
    assert run(batch=256).tpot_s > run(batch=16).tpot_s
    assert run(batch=256).tokens_per_s > run(batch=16).tokens_per_s


def test_decode_is_memory_bound_weight_reads_dominate_small_batch():
    fast_mem = load_profile("atlas-800i-a2").with_changes(hbm_bw=2.0)
    m, plan = load_model("pangu-pro-moe-72b"), make_plan(parse_plan(PRO))
    wl = InferenceWorkload(kind="decode", batch=64, input_len=2048)
    base = simulate_serving(m, load_profile("atlas-800i-a2"), plan, wl, 4)
    faster = simulate_serving(m, fast_mem, plan, wl, 4)
    assert faster.tpot_s < 0.85 * base.tpot_s


def test_prefill_reports_ttft_and_input_throughput():
    r = run(kind="prefill", batch=2, devices=2, plan="tp=2,ep=2,etp=1,shared_tp=2,sp=1,moe_dispatch=allgather,precision=int8")
    assert r.ttft_s == pytest.approx(r.step_time_s) and r.tpot_s is None
    assert r.tokens_per_s == pytest.approx(2 * 2048 / r.ttft_s)


def test_kv_int8_halves_cache_and_auto_falls_back_when_needed():
    a = run(batch=256, plan=PRO + ",kv_precision=bf16")
    b = run(batch=256, plan=PRO + ",kv_precision=int8")
    assert b.kv_cache_GB == pytest.approx(a.kv_cache_GB / 2)
    big = run(batch=584)  # does not fit with a 16-bit cache: auto picks int8
    assert big.config["plan"]["kv_precision"] == "int8"


def test_speculative_and_block_decoding_change_tokens_per_step():
    plain = run()
    spec = run(draft_tokens=1, accepted_tokens=0.85)
    assert spec.tpot_s < plain.tpot_s and spec.step_time_s > plain.step_time_s
    block = run(block_size=32, denoise_steps=8)
    assert block.extra["tokens_per_step"] == pytest.approx(4.0)


def test_weight_only_int8_uses_16bit_matmul_peak():
    w8a16 = run(plan=PRO + ",weight_only=1", kind="prefill", batch=4)
    w8a8 = run(kind="prefill", batch=4)
    assert w8a16.ttft_s > w8a8.ttft_s


def test_300i_duo_has_no_bf16_and_still_runs_fp16():
    r = run(model="llama3-8b", hw="atlas-300i-duo", plan="tp=2,sp=1,precision=fp16", devices=2, batch=8)
    assert r.tpot_s > 0


@pytest.mark.parametrize("plan,batch,msg", [
    (PRO, 5000, "does not fit"),
    ("tp=3,ep=4,precision=int8", 8, "tp*pp*dp"),
    ("tp=4,ep=3,precision=int8", 8, "experts"),
    ("tp=2,dp=2,ep=4,precision=int8", 3, "dp"),
])
def test_bad_serving_inputs_are_one_line_errors(plan, batch, msg):
    with pytest.raises(ConfigError) as e:
        run(plan=plan, batch=batch)
    assert msg in str(e.value) and "\n" not in str(e.value)
