"""Core invariants of npusim.simulate.simulate: the breakdown is a sum, utilisation is bounded, more
hardware never hurts, memory responds to the plan, and the output is deterministic."""
from __future__ import annotations

import json
from functools import lru_cache

import pytest
from hypothesis import assume, given, settings, strategies as st

from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import ModelConfig, load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import TrainWorkload
from npusim.cost.passes import PART_NAMES
from npusim.flops import model_flops_per_token
from npusim.result import Result
from npusim.simulate import simulate

FAST = settings(max_examples=15, deadline=None)

# (model, hardware, devices, plan, seq_len, global_batch)
CASES = [
    ("llama2-7b", "nvidia-a100-sxm-80g", 16, "tp=8", 4096, 16),
    ("llama2-7b", "nvidia-a100-sxm-80g", 16, "tp=2,pp=2,vpp=2,zero=1", 4096, 16),
    ("llama2-7b", "atlas-800t-a2", 16, "tp=2,pp=4,recompute=full", 4096, 16),
    ("llama2-7b", "atlas-800t-a2", 16, "tp=4,cp=2,sp=1", 4096, 16),
    ("llama3-8b", "nvidia-h100-sxm-80g", 16, "tp=2,pp=2,recompute=selective,zero=2", 4096, 32),
    ("llama3-8b", "nvidia-h100-sxm-80g", 16, "tp=4,sp=1,tp_comm_overlap=1,zero=3", 8192, 16),
    ("llama3-8b", "atlas-800t-a2", 32, "tp=4,pp=4,vpp=2,micro_batch=2,cp=2,sp=1", 8192, 32),
    ("llama3-8b", "atlas-800t-a2", 16, "tp=2,pp=2,flash_attention=0", 4096, 16),
    ("llama3-8b", "nvidia-h100-sxm-80g", 8, "tp=2,pp=2,precision=fp8", 4096, 16),
    ("llama3-8b", "nvidia-h200-sxm-141g", 64, "tp=8,pp=2,overlap_grad_reduce=0,overlap_param_gather=0,zero=1", 8192, 32),
    ("qwen3-30b-a3b", "atlas-800t-a2", 32, "tp=2,ep=8,pp=2", 4096, 32),
    ("qwen3-30b-a3b", "nvidia-h100-sxm-80g", 32, "ep=8,pp=2,recompute=full,zero=1", 4096, 32),
    ("mixtral-8x7b", "nvidia-h100-sxm-80g", 16, "tp=2,ep=4,pp=2", 4096, 16),
    ("mixtral-8x7b", "atlas-800t-a2", 32, "tp=4,ep=2,tp_extend_ep=1,pp=2,vpp=2,sp=1,zero=1", 4096, 32),
]
IDS = [f"{c[0]}-{c[1]}-{c[3]}" for c in CASES]
KNOBS = ["flops", "hbm_bw", "scale_up_bw", "scale_out_bw"]


@lru_cache(maxsize=None)
def model(name: str):
    return load_model(name)


@lru_cache(maxsize=None)
def hardware(name: str):
    return load_profile(name)


def run(case, hw=None, **plan_fields) -> Result:
    m, h, devices, plan, seq, gb = case
    fields = {**parse_plan(plan), **plan_fields}
    return simulate(model(m), hw or hardware(h), make_plan(fields), TrainWorkload(seq_len=seq, global_batch=gb), devices)


@lru_cache(maxsize=None)
def base(i: int) -> Result:
    return run(CASES[i])


def check_breakdown(r: Result) -> None:
    assert set(r.breakdown_s) == set(PART_NAMES)
    assert all(v >= 0.0 for v in r.breakdown_s.values()), r.breakdown_s
    assert sum(r.breakdown_s.values()) == pytest.approx(r.step_time_s, rel=1e-9)
    assert r.step_time_s > 0


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_breakdown_sums_to_step(i):
    r = base(i)
    check_breakdown(r)
    assert r.breakdown_s["compute"] > 0
    assert r.tokens_per_s == pytest.approx(CASES[i][4] * CASES[i][5] / r.step_time_s)
    assert r.tokens_per_s_per_device == pytest.approx(r.tokens_per_s / CASES[i][2])


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_mfu_hfu_bounds(i):
    r = base(i)
    plan = r.config["plan"]
    assert 0 < r.mfu <= r.hfu * (1 + 1e-9)
    assert r.hfu <= 1.0
    if plan["recompute"] == "none":
        if plan["flash_attention"]:
            assert r.hfu == pytest.approx(r.mfu, rel=0.10)
    else:
        assert r.hfu > r.mfu * 1.02
        assert r.breakdown_s["recompute"] > 0


PLAN_PARTS = st.fixed_dictionaries({
    "tp": st.sampled_from([1, 2, 4, 8]), "pp": st.sampled_from([1, 2, 4]), "vpp": st.sampled_from([1, 2]),
    "cp": st.sampled_from([1, 2]), "zero": st.integers(0, 3), "sp": st.booleans(),
    "recompute": st.sampled_from(["none", "selective", "full"]), "micro_batch": st.sampled_from([1, 2]),
    "tp_comm_overlap": st.booleans(), "overlap_grad_reduce": st.booleans(),
})


@FAST
@given(fields=PLAN_PARTS, hwname=st.sampled_from(["nvidia-a100-sxm-80g", "atlas-800t-a2"]),
       devices=st.sampled_from([8, 16, 32]))
def test_breakdown_invariants_random_dense_plans(fields, hwname, devices):
    m = model("llama2-7b")
    try:
        r = simulate(m, hardware(hwname), make_plan(fields), TrainWorkload(seq_len=4096, global_batch=64), devices)
    except ConfigError:
        assume(False)
        return
    check_breakdown(r)
    assert 0 < r.mfu <= r.hfu * (1 + 1e-9) <= 1.0 + 1e-9
    assert r.peak_memory_GB > 0
    if fields["pp"] == 1:
        assert r.breakdown_s["bubble"] == 0.0 and r.breakdown_s["pp_comm"] == 0.0


@FAST
@given(fields=st.fixed_dictionaries({"tp": st.sampled_from([1, 2, 4]), "ep": st.sampled_from([1, 2, 4, 8]),
                                     "pp": st.sampled_from([1, 2]), "zero": st.integers(0, 2),
                                     "tp_extend_ep": st.booleans(), "sp": st.booleans(),
                                     "recompute": st.sampled_from(["none", "full"])}),
       name=st.sampled_from(["qwen3-30b-a3b", "mixtral-8x7b"]))
def test_breakdown_invariants_random_moe_plans(fields, name):
    try:
        r = simulate(model(name), hardware("nvidia-h100-sxm-80g"), make_plan(fields),
                     TrainWorkload(seq_len=4096, global_batch=32), 32)
    except ConfigError:
        assume(False)
        return
    check_breakdown(r)
    assert 0 < r.mfu <= r.hfu * (1 + 1e-9) <= 1.0 + 1e-9
    if r.config["plan"]["ep"] > 1:
        assert r.breakdown_s["ep_comm"] > 0


@FAST
@given(i=st.integers(0, len(CASES) - 1), knob=st.sampled_from(KNOBS), factor=st.floats(1.0, 4.0))
def test_more_hardware_never_slower(i, knob, factor):
    hw = hardware(CASES[i][1])
    faster = run(CASES[i], hw=hw.with_changes(**{knob: factor}))
    assert faster.step_time_s <= base(i).step_time_s * (1 + 1e-9), (knob, factor)


@pytest.mark.parametrize("knob", KNOBS)
def test_more_hardware_never_slower_all_cases(knob):
    for i, case in enumerate(CASES):
        hw = hardware(case[1]).with_changes(**{knob: 1.5})
        assert run(case, hw=hw).step_time_s <= base(i).step_time_s * (1 + 1e-9), (knob, case)


def test_more_flops_strictly_faster():
    case = CASES[0]
    assert run(case, hw=hardware(case[1]).with_changes(flops=1.5)).step_time_s < base(0).step_time_s


# ---- memory ------------------------------------------------------------------------------------
MEM_CASE = ("llama2-7b", "nvidia-a100-sxm-80g", 8, "tp=2,pp=2", 4096, 32)  # dp = 2, m >= pp


def test_memory_grows_with_micro_batch():
    one = run(MEM_CASE, micro_batch=1)
    two = run(MEM_CASE, micro_batch=2)
    assert two.peak_memory_GB > one.peak_memory_GB
    assert two.memory_GB["activations"] == pytest.approx(2 * one.memory_GB["activations"], rel=1e-9)
    assert two.memory_GB["weights"] == pytest.approx(one.memory_GB["weights"])


def test_memory_shrinks_with_full_recompute():
    none = run(MEM_CASE, recompute="none")
    sel = run(MEM_CASE, recompute="selective")
    full = run(MEM_CASE, recompute="full")
    assert full.peak_memory_GB < none.peak_memory_GB
    assert full.memory_GB["activations"] < sel.memory_GB["activations"] <= none.memory_GB["activations"]


def test_memory_shrinks_with_zero():
    mem = [run(MEM_CASE, zero=z).peak_memory_GB for z in range(4)]
    assert mem[1] < mem[0]
    assert mem[3] < mem[2] < mem[1]
    z0, z1 = run(MEM_CASE, zero=0), run(MEM_CASE, zero=1)
    assert z1.memory_GB["optimizer"] == pytest.approx(z0.memory_GB["optimizer"] / 2)  # dp = 2


def test_zero_without_dp_changes_nothing():
    case = ("llama2-7b", "nvidia-a100-sxm-80g", 8, "tp=8", 4096, 8)  # dp = 1
    assert run(case, zero=1).peak_memory_GB == pytest.approx(run(case, zero=0).peak_memory_GB)


def test_fits_in_memory_flag():
    r = base(0)
    assert r.fits_in_memory == (r.peak_memory_GB <= r.hbm_capacity_GB)
    big = run(("llama3-8b", "nvidia-a100-sxm-80g", 1, "", 8192, 1))
    assert not big.fits_in_memory


# ---- output ------------------------------------------------------------------------------------
DICT_KEYS = {"step_time_s", "tokens_per_s", "tokens_per_s_per_device", "mfu", "hfu", "model_flops_per_token",
             "peak_memory_GB", "fits_in_memory", "breakdown_s", "config"}


def test_to_dict_keys_and_json():
    d = base(1).to_dict()
    assert DICT_KEYS <= set(d)
    assert set(d["breakdown_s"]) == set(PART_NAMES)
    assert isinstance(d["fits_in_memory"], bool)
    json.dumps(d)  # plain JSON
    assert d["config"]["plan"]["dp"] == 4
    assert d["config"]["devices"] == 16
    assert d["config"]["model"]["name"] == "llama2-7b"


def test_dp_is_derived_at_scale():
    r = simulate(model("pangu-ultra-moe-718b"), hardware("atlas-800t-a2"), make_plan(parse_plan("tp=8,pp=16")),
                 TrainWorkload(seq_len=4096, global_batch=1536), 6144)
    assert r.config["plan"]["dp"] == 48
    assert r.to_dict()["config"]["plan"]["dp"] == 48
    check_breakdown(r)


def test_deterministic_json():
    case = CASES[13]
    a = json.dumps(run(case).to_dict(), sort_keys=True)
    b = json.dumps(simulate(load_model(case[0]), load_profile(case[1]), make_plan(parse_plan(case[3])),
                            TrainWorkload(seq_len=case[4], global_batch=case[5]), case[2]).to_dict(), sort_keys=True)
    assert a == b


def test_timeline_kept_on_request():
    case = CASES[1]
    m, h, devices, plan, seq, gb = case
    r = simulate(model(m), hardware(h), make_plan(parse_plan(plan)), TrainWorkload(seq_len=seq, global_batch=gb),
                 devices, keep_timeline=True)
    assert r.timeline and base(1).timeline == []
    assert r.step_time_s == base(1).step_time_s


# ---- FLOPs -------------------------------------------------------------------------------------
def test_model_flops_per_token_llama3_8b():
    m = model("llama3-8b")
    s = 8192
    d = m.d_head
    attn = m.layers * 2 * m.heads * (2 * d) * (s / 2)  # causal half of QK^T and PV, forward
    expect = 6 * m.activated_matmul_params() + 3 * attn
    assert model_flops_per_token(m, s) == pytest.approx(expect, rel=1e-12)
    # hand count of the 6N basis: 32 layers x (attn + swiglu + norms) + LM head + final norm
    h, f, kv, v = 4096, 14336, 8, 128256
    per_layer = h * (32 + 2 * kv) * 128 + 32 * 128 * h + 3 * h * f + 2 * h
    assert m.activated_matmul_params() == 32 * per_layer + v * h + h
    r = simulate(m, hardware("nvidia-h100-sxm-80g"), make_plan({"tp": 8}), TrainWorkload(seq_len=s, global_batch=8), 8)
    assert r.model_flops_per_token == pytest.approx(expect, rel=1e-12)
    assert r.model_flops_per_token / (6 * 8.03e9) == pytest.approx(1.0, abs=0.15)


def test_tiny_custom_model():
    m = ModelConfig(layers=4, hidden=256, ffn_hidden=1024, heads=4, vocab=1000)
    r = simulate(m, hardware("nvidia-a100-sxm-80g"), make_plan({"tp": 2, "pp": 2}),
                 TrainWorkload(seq_len=512, global_batch=8), 4)
    check_breakdown(r)
    assert 0 < r.mfu <= r.hfu <= 1


# ---- regression: overlapped collectives share one compute budget --------------------------------
def test_more_flops_not_slower_with_zero3_and_tp_overlap():
    case = ("llama3-8b", "atlas-800t-a2", 16, "tp=8,zero=3,tp_comm_overlap=1", 4096, 32)
    hw = hardware(case[1])
    slow = run(case, hw=hw).step_time_s
    fast = run(case, hw=hw.with_changes(flops=1.5)).step_time_s  # was slower before the shared budget
    assert fast <= slow * (1 + 1e-9)


def test_forward_pass_not_slower_with_more_flops():
    from npusim.config.plan import resolve_plan
    from npusim.cost.collectives import placements
    from npusim.cost.passes import pass_parts
    from npusim.engine.step import StepInputs, chunk_passes, make_shard
    from npusim.workload.passes import chunk_specs

    m = model("llama3-8b")
    totals = []
    for f in (1.0, 1.5):
        hw = hardware("atlas-800t-a2").with_changes(flops=f)
        plan = resolve_plan(make_plan(parse_plan("tp=8,zero=3,tp_comm_overlap=1")), m, 16, 32, 4096)
        places = placements(plan, hw)
        fwd, _ = chunk_passes(StepInputs(m, hw, plan, 4096, 32, 16), make_shard(m, plan, 4096), chunk_specs(m, 1, 1)[0])
        totals.append(sum(pass_parts(fwd, hw, plan, places).values()))
    assert totals[1] <= totals[0] * (1 + 1e-9), totals  # 0.0800 s -> 0.0855 s
