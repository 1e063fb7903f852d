"""Memory levers as sweep axes (issue 18) and fast-tier memory that depends on every plan field it
reads, whatever the order points arrive in (issue 17: fp8 vs bf16, recompute modules, swapping)."""
from __future__ import annotations

import itertools

import pytest

from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan
from npusim.config.workload import TrainWorkload
from npusim.simulate import simulate
from npusim.sweep import fast
from npusim.sweep.space import plans

VARIANTS = [{"precision": "bf16"}, {"precision": "fp8"}, {"recompute_modules": "core_attn+layernorm+moe_act"},
            {"recompute_modules": "core_attn+layernorm+moe_act+permute"}, {"offload_activations": 0.5},
            {"offload_optimizer": 1.0}]
BASE = {"tp": 2, "pp": 2, "ep": 4, "sp": True, "zero": 1}


def _memory(order):
    fast.clear_caches()
    model, hw = load_model("qwen3-30b-a3b"), load_profile("nvidia-h100-sxm-80g")
    wl = TrainWorkload(seq_len=4096, global_batch=16)
    return [fast.estimate(model, hw, make_plan({**BASE, **v}), wl, 16)["peak_memory_GB"] for v in order]


def test_fast_memory_matches_the_core_in_any_order():
    model, hw = load_model("qwen3-30b-a3b"), load_profile("nvidia-h100-sxm-80g")
    wl = TrainWorkload(seq_len=4096, global_batch=16)
    core = [simulate(model, hw, make_plan({**BASE, **v}), wl, 16).peak_memory_GB for v in VARIANTS]
    assert len(set(round(c, 6) for c in core)) == len(core)  # every lever changes memory
    for order in (VARIANTS, VARIANTS[::-1]):
        got = dict(zip(map(str, order), _memory(order)))
        for v, c in zip(VARIANTS, core):
            assert got[str(v)] == pytest.approx(c, rel=1e-9), v


def test_memory_levers_are_auto_axes():
    model = load_model("qwen3-30b-a3b")
    c = {"model": model, "devices": 16, "global_batch": 16, "seq_len": 4096, "devices_per_node": 8}
    space = {"auto": True, "tp": [2], "pp": [2], "ep": [4], "zero": [1], "micro_batch": [1],
             "recompute": ["none"], "recompute_modules": ["", "core_attn+layernorm+moe_act"],
             "offload_activations": [0.0, 0.5]}
    got = {(p.get("recompute_modules"), p.get("offload_activations")) for p in plans(space, c)}
    assert got == set(itertools.product(["", "core_attn+layernorm+moe_act"], [0.0, 0.5]))
