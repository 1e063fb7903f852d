"""The fast tier's memo keys cover every field its functions read: with caches warmed on a base point,
changing any one plan or model field gives exactly the estimate of cold caches and tracks the core
(the event simulation) as tests/sweep/test_sweep_fast.py asks; memos never keep configs alive."""
from __future__ import annotations

import gc
import weakref

import pytest

from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import ModelConfig, load_model
from npusim.config.plan import ParallelPlan, make_plan
from npusim.config.workload import TrainWorkload
from npusim.simulate import simulate
from npusim.sweep import fast
from npusim.sweep.memo import Reads, value_key

HW = load_profile("atlas-800t-a2")
DEVICES = 16
WL = TrainWorkload(seq_len=2048, global_batch=16)
BASE_MODEL = {**load_model("qwen3-30b-a3b").model_dump(), "name": "tiny-moe", "layers": 4, "experts": 16, "top_k": 4}
BASE_PLAN = {"tp": 2, "pp": 2, "ep": 4, "etp": 1, "sp": True, "zero": 1}
MLA = {"q_lora_rank": 384, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64}

PLAN_CHANGES = {
    "tp": {"tp": 4}, "pp": {"pp": 4}, "vpp": {"vpp": 2}, "cp": {"cp": 2}, "dp": {"dp": 4}, "ep": {"ep": 2},
    "etp": {"etp": 2}, "tp_extend_ep": {"tp_extend_ep": True, "ep": 2}, "sp": {"sp": False}, "zero": {"zero": 3},
    "recompute": {"recompute": "full"}, "recompute_modules": {"recompute_modules": ("core_attn", "moe_act")},
    "offload_activations": {"offload_activations": 0.5}, "offload_modules": {"offload_modules": ("moe_act",)},
    "offload_optimizer": {"offload_optimizer": 1.0}, "micro_batch": {"micro_batch": 2}, "schedule": {"schedule": "zb-h1"},
    "precision": {"precision": "fp8"}, "master_weights": {"master_weights": "none"},
    "overlap_grad_reduce": {"overlap_grad_reduce": False}, "overlap_param_gather": {"overlap_param_gather": False},
    "tp_comm_overlap": {"tp_comm_overlap": True}, "a2a": {"a2a": "hierarchical"}, "flash_attention": {"flash_attention": False},
    "ep_overlap": {"ep_overlap": True}, "routing": {"routing": "zipf"},
    "routing_param": {"routing": "zipf", "routing_param": 1.5}, "routing_histogram": {"routing": "histogram"},
    "routing_seed": {"routing": "zipf", "routing_seed": 3}, "routing_samples": {"routing": "zipf", "routing_samples": 4},
    "capacity_factor": {"capacity_factor": 1.25}, "pad_to_capacity": {"capacity_factor": 1.25, "pad_to_capacity": True},
    "placement_interval": {"placement_interval": 10}, "redundant_experts": {"redundant_experts": 4},
    "shared_tp": {"shared_tp": 2}, "moe_dispatch": {"moe_dispatch": "allgather"}, "kv_precision": {"kv_precision": "int8"},
    "weight_only": {"weight_only": True}, "weight_dtype": {"weight_dtype": "int8"},
}
"""One change per ParallelPlan field (with what it needs to be valid)."""
MODEL_CHANGES = {
    "name": {"name": "other"}, "layers": {"layers": 6}, "hidden": {"hidden": 1024}, "ffn_hidden": {"ffn_hidden": 4096,
                                                                                                    "dense_layers": 1},
    "heads": {"heads": 16}, "kv_heads": {"kv_heads": 8}, "head_dim": {"head_dim": 64}, "vocab": {"vocab": 32000},
    "attention": {"attention": "mla", "mla": MLA}, "mla": {"attention": "mla", "mla": {**MLA, "kv_lora_rank": 256}},
    "mlp": {"mlp": "gelu"}, "norm": {"norm": "layernorm"}, "qkv_bias": {"qkv_bias": True},
    "linear_bias": {"linear_bias": True}, "experts": {"experts": 32}, "top_k": {"top_k": 2},
    "shared_experts": {"shared_experts": 1}, "expert_ffn_hidden": {"expert_ffn_hidden": 512},
    "expert_groups": {"expert_groups": 4, "groups_per_token": 2}, "groups_per_token": {"expert_groups": 2,
                                                                                        "groups_per_token": 1},
    "moe_layer_freq": {"moe_layer_freq": 2, "ffn_hidden": 4096}, "dense_layers": {"dense_layers": 1, "ffn_hidden": 4096}, "mtp_layers": {"mtp_layers": 1},
    "tied_embeddings": {"tied_embeddings": True}, "sliding_window": {"sliding_window": 512},
    "sliding_window_every": {"sliding_window": 512, "sliding_window_every": 2}, "source": {"source": "elsewhere"},
}
"""One change per ModelConfig field."""
TRAINING_REFUSES = ("weight_dtype",)
"""Serving-only plan fields the training core refuses to change: the fast tier must refuse them too."""
STEP_TOL = {"ep_overlap": 0.2}
"""Fast vs core step time beyond the 6 % of test_sweep_fast: the closed form of overlapped
forward/backward pairs runs 15 % fast on this tiny model (tier agreement is tiers.py's work)."""


def test_every_field_has_a_change():
    assert set(PLAN_CHANGES) == set(ParallelPlan.model_fields)
    assert set(MODEL_CHANGES) == set(ModelConfig.model_fields)


@pytest.fixture(scope="module")
def histogram(tmp_path_factory):
    path = tmp_path_factory.mktemp("hist") / "hist.csv"
    path.write_text("expert,tokens\n" + "".join(f"{e},{100 + 37 * (e % 5)}\n" for e in range(16)))
    return str(path)


def _point(plan_change: dict, model_change: dict, histogram: str):
    plan = {**BASE_PLAN, **plan_change}
    if plan.get("routing") == "histogram":
        plan["routing_histogram"] = histogram
    return ModelConfig.model_validate({**BASE_MODEL, **model_change}), make_plan(plan)


def _check(model, plan, tol: float = 0.06) -> None:
    fast.clear_caches()
    base_model, base_plan = ModelConfig.model_validate(BASE_MODEL), make_plan(BASE_PLAN)
    fast.estimate(base_model, HW, base_plan, WL, DEVICES)  # warm every memo on the base point
    warm = fast.estimate(model, HW, plan, WL, DEVICES)
    fast.clear_caches()
    assert warm == fast.estimate(model, HW, plan, WL, DEVICES)  # the cached answer is the uncached one
    core = simulate(model, HW, plan, WL, DEVICES)
    assert warm["peak_memory_GB"] == pytest.approx(core.peak_memory_GB, rel=1e-9)
    assert warm["step_time_s"] == pytest.approx(core.step_time_s, rel=tol)  # the overlapped plans' tolerance


@pytest.mark.parametrize("field", sorted(PLAN_CHANGES))
def test_a_changed_plan_field_is_never_served_from_a_stale_memo(field, histogram):
    model, plan = _point(PLAN_CHANGES[field], {}, histogram)
    if field in TRAINING_REFUSES:
        with pytest.raises(ConfigError):
            simulate(model, HW, plan, WL, DEVICES)
        with pytest.raises(ConfigError):
            fast.estimate(model, HW, plan, WL, DEVICES)
        return
    _check(model, plan, STEP_TOL.get(field, 0.06))


@pytest.mark.parametrize("field", sorted(MODEL_CHANGES))
def test_a_changed_model_field_is_never_served_from_a_stale_memo(field, histogram):
    _check(*_point({}, MODEL_CHANGES[field], histogram))


def test_memos_do_not_keep_configs_alive_and_key_them_by_value():
    fast.clear_caches()
    model = ModelConfig.model_validate(BASE_MODEL)
    fast.estimate(model, HW, make_plan(BASE_PLAN), WL, DEVICES)
    ref = weakref.ref(model)
    twin = ModelConfig.model_validate(BASE_MODEL)
    assert value_key(twin) == value_key(model)
    assert value_key(ModelConfig.model_validate({**BASE_MODEL, "layers": 6})) != value_key(model)
    del model
    gc.collect()
    assert ref() is None


def test_a_misspelt_field_fails_at_declaration():
    with pytest.raises(TypeError, match="no field tpp"):
        Reads(ParallelPlan, "tp tpp")
    assert Reads(ParallelPlan, "tp expert_ep")(make_plan({"tp": 2, "ep": 2, "tp_extend_ep": True})) == (2, 4)
