"""Fine-grained recompute, activation swapping and ZB-H1 memory (docs/memory.md).

Hand counts: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models"), Table 2: per layer, with tensor and sequence parallelism, s b h (34 / t + 5 a s / (h t))
bytes; selective (core attention) recompute drops the 5 a s / (h t) term; the two norm outputs are
2 s b h / t each, the GeLU input and output 8 s b h / t each; full recompute keeps 2 s b h / t."""
from __future__ import annotations

import pytest

from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import TrainWorkload
from npusim.cost.compute import op_time
from npusim.cost.memory import activation_bytes_per_layer, activation_terms
from npusim.engine.resolved import resolve_step
from npusim.engine.step import chunk_passes, make_shard
from npusim.engine.unitcost import UnitCoster
from npusim.simulate import simulate

GPT = load_model("gpt3-175b")
S, T_P = 2048, 8


def _plan(text: str):
    return make_plan(parse_plan(f"tp={T_P},sp=1,flash_attention=0" + ("," + text if text else "")))


@pytest.mark.parametrize("keys, coeff, attn_core", [
    ("", 34, True),
    ("recompute=selective", 34, False),
    ("recompute_modules=core_attn", 34, False),
    ("recompute_modules=layernorm", 34 - 4, True),
    ("recompute_modules=mlp", 34 - 16, True),
    ("recompute_modules=core_attn+layernorm+mlp", 34 - 20, False),
    ("recompute=full", 2, False),
])
def test_activation_bytes_match_korthikanti_table2(keys, coeff, attn_core):
    plan = _plan(keys)
    sh = make_shard(GPT, plan, S)
    s, b, h, a = S, 1, GPT.hidden, GPT.heads
    want = s * b * h * coeff / T_P + (5 * a * s * s * b / T_P if attn_core else 0.0)
    assert activation_bytes_per_layer(GPT, plan, sh, False) == pytest.approx(want, rel=1e-12)


def test_moe_modules_drop_their_terms():
    m = load_model("qwen3-30b-a3b")
    none = make_plan(parse_plan("tp=2,ep=4"))
    sh = make_shard(m, none, 4096)
    full = activation_terms(m, none, sh, True)
    for mod, gone in (("moe_act", {"moe_act"}), ("permute", {"permute"}),
                      ("moe", {"moe_act", "moe_experts", "permute", "router", "shared_experts"})):
        got = activation_terms(m, make_plan(parse_plan(f"tp=2,ep=4,recompute_modules={mod}")), sh, True)
        assert set(full) - set(got) == gone & set(full), mod
        assert sum(got.values()) < sum(full.values())


@pytest.mark.parametrize("mods", ["core_attn", "layernorm+mlp", "core_attn+layernorm+mlp"])
def test_recompute_time_is_the_recomputed_ops_cost(mods):
    """The backward's recompute part on the event engine = the recomputed forward kernels' times."""
    model, hw = load_model("llama2-7b"), load_profile("atlas-800t-a2")
    plan = make_plan(parse_plan(f"flash_attention=0,recompute_modules={mods}"))
    step = resolve_step(model, hw, plan, TrainWorkload(seq_len=2048, global_batch=1), 1)
    sh = make_shard(model, step.plan, 2048)
    spec = step.specs[0]
    coster = UnitCoster(step.inputs, step.places, sh, 1.0, {}, exact=True)
    parts, _ = coster.unit([(spec, "B")])
    fwd, bwd = chunk_passes(step.inputs, sh, spec)
    names = {o.name for o in bwd.ops if o.recompute}
    assert names and names <= {o.name for o in fwd.ops}
    want = sum(op_time(o, hw, "bf16") for o in bwd.ops if o.recompute)
    assert parts["recompute"] == pytest.approx(want, rel=1e-9)


def _sim(model, hw, text, devices=16, seq=4096, gb=32):
    return simulate(load_model(model), hw, make_plan(parse_plan(text)), TrainWorkload(seq_len=seq, global_batch=gb), devices)


def test_swap_beyond_host_link_is_exposed_offload():
    hw = load_profile("atlas-800t-a2")
    base = _sim("llama2-7b", hw, "tp=2,pp=2")
    ok = _sim("llama2-7b", hw, "tp=2,pp=2,offload_activations=0.5")
    slow_node = hw.node.model_copy(update={"host": hw.node.host.model_copy(update={"link_GBps": 0.5})})
    slow = _sim("llama2-7b", hw.model_copy(update={"node": slow_node}), "tp=2,pp=2,offload_activations=0.5")
    assert ok.memory_GB["activations"] < base.memory_GB["activations"]
    assert slow.breakdown_s["offload"] > 0.1 * slow.step_time_s
    assert slow.step_time_s > ok.step_time_s >= base.step_time_s * (1 - 1e-9)
    assert ok.breakdown_s["offload"] < 0.05 * ok.step_time_s
    assert sum(slow.breakdown_s.values()) == pytest.approx(slow.step_time_s)


def test_optimizer_offload_frees_states_and_costs_host_time():
    hw = load_profile("atlas-800t-a2")
    base = _sim("llama2-7b", hw, "tp=2,pp=2")
    off = _sim("llama2-7b", hw, "tp=2,pp=2,offload_optimizer=1")
    assert off.memory_GB["optimizer"] == 0.0
    assert off.extra["memory_breakdown_GB"]["host_optimizer"] == pytest.approx(base.memory_GB["optimizer"])
    assert off.breakdown_s["optimizer"] > base.breakdown_s["optimizer"]


def test_zb_h1_holds_1f1b_activations():
    """Qi et al. 2024 (Zero Bubble Pipeline Parallelism), Table 3: ZB-H1's peak activation memory is
    p M_B, as 1F1B's: no rank holds more than p micro-batches' activations (rank 0 exactly 1F1B's),
    and it shrinks with recomputation like 1F1B's."""
    hw = load_profile("nvidia-h100-sxm-80g")
    for rc in ("none", "full"):
        one = _sim("llama2-7b", hw, f"tp=2,pp=4,recompute={rc}", devices=8, gb=16)
        zb = _sim("llama2-7b", hw, f"tp=2,pp=4,recompute={rc},schedule=zb-h1", devices=8, gb=16)
        assert zb.extra["activations_GB_per_rank"][0] == pytest.approx(one.extra["activations_GB_per_rank"][0], rel=1e-9)
        for r, (z, o) in enumerate(zip(zb.extra["activations_GB_per_rank"], one.extra["activations_GB_per_rank"])):
            assert z <= 4 * o / (4 - r) * (1 + 1e-9), (rc, r)  # 1F1B rank r holds pp - r micro-batches
        if rc == "none":
            assert max(zb.extra["activations_GB_per_rank"]) <= 1.1 * max(one.extra["activations_GB_per_rank"])
    full = _sim("llama2-7b", hw, "tp=2,pp=4,recompute=full,schedule=zb-h1", devices=8, gb=16)
    none = _sim("llama2-7b", hw, "tp=2,pp=4,schedule=zb-h1", devices=8, gb=16)
    assert full.memory_GB["activations"] < 0.3 * none.memory_GB["activations"]


def test_memory_breakdown_names_and_parsing():
    r = _sim("qwen3-30b-a3b", load_profile("atlas-800t-a2"), "tp=2,ep=8,pp=2,recompute_modules=moe_act+layernorm", devices=32)
    bd = r.extra["memory_breakdown_GB"]
    assert {"weights", "gradients", "optimizer", "activations_by_module", "workspace", "comm_buffers"} <= set(bd)
    assert sum(bd["activations_by_module"].values()) == pytest.approx(bd["activations"], rel=1e-9)
    assert "moe_act" not in bd["activations_by_module"] and "layernorm" not in bd["activations_by_module"]
    assert bd["total"] == pytest.approx(r.peak_memory_GB)
    with pytest.raises(Exception):
        make_plan(parse_plan("recompute_modules=attention"))
