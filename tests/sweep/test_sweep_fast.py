"""The fast tier reuses the core's lowering and memory exactly and puts the event engine's overlap
rules in closed form: its stage costs equal the engine's where the unit is one chain (no overlap),
stay close where overlap emerges from the engine, and its step time tracks the event simulation."""
from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import given, settings, strategies as st

from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan, resolve_plan
from npusim.config.workload import TrainWorkload
from npusim.cost.collectives import placements
from npusim.engine.schedules import peak_in_flight_total, schedule_orders
from npusim.engine.step import StepInputs, moe_load, stage_costs
from npusim.simulate import simulate
from npusim.sweep import fast
from npusim.sweep.lowered import stage_cost
from npusim.workload.passes import chunk_specs

# (model, hardware, devices, plan, seq_len, global_batch)
CASES = [
    ("llama2-7b", "nvidia-a100-sxm-80g", 16, "tp=2,pp=2,vpp=2,zero=1", 4096, 16),
    ("llama2-7b", "atlas-800t-a2", 16, "tp=2,pp=4,recompute=full", 4096, 16),
    ("llama2-7b", "atlas-800t-a2", 16, "tp=4,cp=2,sp=1", 4096, 16),
    ("llama3-8b", "nvidia-h100-sxm-80g", 16, "tp=4,sp=1,tp_comm_overlap=1,zero=3", 8192, 16),
    ("llama3-8b", "atlas-800t-a2", 32, "tp=4,pp=4,vpp=2,micro_batch=2,cp=2,sp=1", 8192, 32),
    ("llama3-8b", "atlas-800t-a2", 16, "tp=2,pp=2,flash_attention=0", 4096, 16),
    ("llama3-8b", "nvidia-h100-sxm-80g", 8, "tp=2,pp=2,precision=fp8", 4096, 16),
    ("qwen3-30b-a3b", "atlas-800t-a2", 32, "tp=2,ep=8,pp=2,routing=zipf,routing_samples=4", 4096, 32),
    ("mixtral-8x7b", "atlas-800t-a2", 32, "tp=4,ep=2,tp_extend_ep=1,pp=2,vpp=2,sp=1,zero=1,ep_overlap=1", 4096, 32),
    ("pangu-ultra-moe-718b", "atlas-800t-a2", 6144, "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2",
     4096, 1536),
    ("qwen3-30b-a3b", "atlas-800t-a2", 32, "tp=2,ep=8,pp=2,sp=1,recompute_modules=core_attn+layernorm+moe_act", 4096, 32),
    ("llama3-8b", "atlas-800t-a2", 16, "tp=2,pp=2,offload_activations=0.5,offload_optimizer=1", 4096, 16),
]
IDS = [f"{c[0]}-{c[3]}" for c in CASES]


@lru_cache(maxsize=None)
def load(name: str, hw: str):
    return load_model(name), load_profile(hw)


def inputs(case):
    m, h, devices, plan, seq, gb = case
    model, hw = load(m, h)
    return model, hw, make_plan(parse_plan(plan)), TrainWorkload(seq_len=seq, global_batch=gb), devices


OVERLAPPED = ("cp=2", "tp_comm_overlap=1", "zero=3", "ep_overlap=1", "offload_activations")
"""Plans whose units the event engine runs as more than one chain (closed form approximates them)."""


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_stage_costs_equal_the_core(case):
    model, hw, plan, wl, devices = inputs(case)
    plan = resolve_plan(plan, model, devices, wl.global_batch, wl.seq_len)
    inp = StepInputs(model, hw, plan, wl.seq_len, wl.global_batch, devices)
    places = placements(plan, hw)
    specs = chunk_specs(model, plan.pp, plan.vpp)
    load_ = moe_load(inp, places)
    chain = not any(o in case[3] for o in OVERLAPPED)
    for core, mine in zip(stage_costs(inp, specs, places, {}, load_),
                          [stage_cost(model, hw, plan, wl.seq_len, places, s, load_) for s in specs]):
        if chain:  # one chain per unit: the engine's parts are the sums
            for a, b in ((core.forward, mine.forward), (core.backward, mine.backward)):
                for k in set(a) | set(b):
                    assert a.get(k, 0.0) == pytest.approx(b.get(k, 0.0), rel=1e-9, abs=1e-15), k
        else:  # a forward plus a backward, per micro-batch
            total = sum(core.forward.values()) + sum(core.backward.values())
            if "ep_overlap=1" in case[3]:  # steady state runs a forward beside a backward
                total = core.pair_fn(core.spec, core.spec, False)[1]
            assert sum(mine.forward.values()) + sum(mine.backward.values()) == pytest.approx(total, rel=0.1)
        assert core.hw_flops == pytest.approx(mine.hw_flops, rel=1e-12)
        assert core.p2p_s == pytest.approx(mine.p2p_s, rel=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_estimate_tracks_the_event_simulation(case):
    full = simulate(*inputs(case))
    est = fast.estimate(*inputs(case))
    assert est["peak_memory_GB"] == pytest.approx(full.peak_memory_GB, rel=1e-9)
    # closed-form overlap (ZeRO-3 prefetch, TP pipelining) within 6 %; one-chain plans within 3 %
    tol = 0.06 if any(o in case[3] for o in OVERLAPPED) else 0.03
    assert est["step_time_s"] == pytest.approx(full.step_time_s, rel=tol)
    assert sum(est["breakdown_s"].values()) == pytest.approx(est["step_time_s"], rel=1e-9)
    assert set(est["breakdown_s"]) == set(full.breakdown_s)
    assert 0 < est["mfu"] <= 1 and est["mfu"] == pytest.approx(full.mfu, rel=tol)


def test_one_f_one_b_is_exact_for_uniform_stages():
    case = ("llama2-7b", "atlas-800t-a2", 16, "tp=2,pp=4", 4096, 64)
    assert fast.estimate(*inputs(case))["step_time_s"] == pytest.approx(simulate(*inputs(case)).step_time_s, rel=2e-3)


def test_memory_limit_skips_costing():
    est = fast.estimate(*inputs(CASES[0]), memory_limit_GB=1.0)
    assert est["step_time_s"] is None and est["peak_memory_GB"] > 1.0 and "breakdown_s" not in est


def test_invalid_plan_raises_config_error():
    from npusim.config.errors import ConfigError

    model, hw, _, wl, _ = inputs(CASES[0])
    with pytest.raises(ConfigError):
        fast.estimate(model, hw, make_plan({"tp": 3}), wl, 16)


@settings(max_examples=25, deadline=None)
@given(pp=st.integers(1, 6), vpp=st.integers(1, 3), rounds=st.integers(1, 5),
       weights=st.lists(st.floats(0.0, 10.0), min_size=3, max_size=3))
def test_live_vectors_give_the_schedules_peak(pp, vpp, rounds, weights):
    vpp = 1 if pp == 1 else vpp
    m = pp * rounds
    schedule = "interleaved" if vpp > 1 else "1f1b"
    w = {c: weights[c] for c in range(vpp)}
    for r, order in enumerate(schedule_orders(schedule, pp, vpp, m)):
        vecs = fast.live_vectors(schedule, pp, vpp, m, (r,))
        peak = max(sum(w[c] * n for c, n in enumerate(v)) for v in vecs)
        assert peak == pytest.approx(peak_in_flight_total(order, w), rel=1e-12, abs=1e-12)


def test_schedules_without_a_closed_form_fall_back_to_the_event_simulation():
    from npusim.config.errors import ConfigError

    model, hw, _, wl, _ = inputs(CASES[1])
    try:
        plan = make_plan({"tp": 2, "pp": 4, "schedule": "zb-h1"})
    except ConfigError:
        pytest.skip("this core has no zero-bubble schedule")
    est = fast.estimate(model, hw, plan, wl, 16)
    assert est["step_time_s"] == simulate(model, hw, plan, wl, 16).step_time_s
