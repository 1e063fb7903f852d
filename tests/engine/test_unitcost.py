"""Coalescing identical layers in the op-level engine changes no result by more than 0.1 %."""
from __future__ import annotations

from dataclasses import replace

import pytest

from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan, resolve_plan
from npusim.cost.collectives import placements
from npusim.engine.step import StepInputs, make_shard
from npusim.engine.unitcost import EXACT_LAYERS, UnitCoster
from npusim.workload.passes import ChunkSpec


@pytest.mark.parametrize("model,hw,plan,layers", [
    ("llama2-7b", "nvidia-h100-sxm-80g", "tp=8,sp=1,tp_comm_overlap=1", (9, 0)),
    ("deepseek-v2-lite", "atlas-800t-a2", "tp=1,ep=8,ep_overlap=1,zero=3", (1, 7)),
    ("qwen3-30b-a3b", "nvidia-h100-sxm-80g", "tp=2,ep=8,sp=1,recompute=full", (0, 8)),
])
def test_coalesced_units_match_the_full_simulation(model, hw, plan, layers):
    m, h = load_model(model), load_profile(hw)
    devices = 64
    p = resolve_plan(make_plan(parse_plan(plan)), m, devices, 64, 4096)
    inp = StepInputs(m, h, p, 4096, 64, devices)
    places = placements(p, h)
    sh = make_shard(m, p, 4096, places["ep"].domains)
    spec = ChunkSpec(0, layers[0], layers[1], False, False, 0)
    assert max(layers) > EXACT_LAYERS
    fast = UnitCoster(inp, places, sh, 1.0, {})
    full = UnitCoster(inp, places, sh, 1.0, {}, exact=True)
    for parts in ([(spec, "F")], [(spec, "B")], [(spec, "F"), (replace(spec), "B")]):
        a, b = fast.unit(parts)[1], full.unit(parts)[1]
        assert a.duration_s == pytest.approx(b.duration_s, rel=1e-3)
        for k in b.parts:
            assert a.parts.get(k, 0.0) == pytest.approx(b.parts[k], rel=1e-3, abs=1e-3 * b.duration_s)
