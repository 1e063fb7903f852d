"""The search space: auto plans are valid by construction, listed values are taken as given, model
variants carry their constraint status, and point ids are stable hashes of the inputs."""
from __future__ import annotations

from sweep_helpers import MOE, SMALL, merged, write_spec

from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, resolve_plan
from npusim.sweep.run import prepare
from npusim.sweep.space import _ENCODE, build_variant, divisors, encoded_plans, plans, point_id


def context(model_name: str, devices: int, seq: int, gb: int) -> dict:
    return {"model": load_model(model_name), "devices": devices, "seq_len": seq, "global_batch": gb,
            "devices_per_node": load_profile("atlas-800t-a2").node.devices_per_node}


def test_auto_plans_are_all_valid_and_distinct():
    for name, devices, seq, gb in (("llama2-7b", 64, 4096, 64), ("qwen3-30b-a3b", 64, 4096, 128),
                                   ("mixtral-8x7b", 96, 4096, 96)):
        c = context(name, devices, seq, gb)
        seen = set()
        for fields in plans({"auto": True}, c):
            resolve_plan(make_plan(fields), c["model"], devices, gb, seq)  # raises if invalid
            key = tuple(sorted(fields.items()))
            assert key not in seen
            seen.add(key)
        assert len(seen) > 100


def test_auto_axes_respect_the_model_and_ranges():
    c = context("qwen3-30b-a3b", 64, 4096, 128)
    got = list(plans({"auto": True, "pp": {"min": 2, "max": 4}, "zero": [1], "recompute": ["none"]}, c))
    assert {p["pp"] for p in got} == {2, 4}
    assert all(c["model"].experts % p["ep"] == 0 and c["model"].heads % p["tp"] == 0 for p in got)
    assert all(p["sp"] == (p["tp"] > 1) for p in got)


def test_listed_values_are_kept_even_when_invalid():
    c = context("llama2-7b", 16, 4096, 16)
    got = list(plans({"tp": [3, 4], "pp": [2], "a2a": ["flat"]}, c))
    assert got == [{"tp": 3, "pp": 2, "a2a": "flat"}, {"tp": 4, "pp": 2, "a2a": "flat"}]
    try:
        resolve_plan(make_plan(got[0]), c["model"], 16, 16, 4096)
        raise AssertionError("tp=3 should not divide 32 heads")
    except ConfigError as e:
        assert "tp" in str(e)


def test_encoded_plans_are_the_canonical_json_of_each_plan():
    """The ids' plan JSON is joined from cached field fragments: it must equal encoding each plan,
    with listed options (strings, booleans), ranges and axes left unset."""
    c = context("qwen3-30b-a3b", 64, 4096, 128)
    space = {"auto": True, "pp": {"min": 1, "max": 4}, "a2a": ["flat", "hierarchical"], "sp": [True, False],
             "recompute": ["none", "full"], "offload_optimizer": [False, True]}
    got = list(encoded_plans(space, c))
    assert [p for p, _ in got] == list(plans(space, c))
    assert len(got) > 100
    for plan, text in got:
        assert text == _ENCODE(plan)
    modules = {"auto": True, "pp": [2], "recompute_modules": [[], ["core_attn"], ["core_attn", "mlp"]]}
    listed = list(encoded_plans(modules, c))
    assert {tuple(p["recompute_modules"]) for p, _ in listed} == {(), ("core_attn",), ("core_attn", "mlp")}
    assert all(text == _ENCODE(plan) for plan, text in listed)


def test_variants_and_constraints():
    base = load_model("llama2-7b").model_dump(mode="json")
    from npusim.sweep.spec import Constraints, Range

    budget = Constraints(total_params_B=Range(min=6, max=8))
    assert build_variant(base, {"layers": 32}, budget).reason is None
    small = build_variant(base, {"layers": 8}, budget)
    assert small.reason == "constraint" and "total_params_B" in small.message
    bad = build_variant(base, {"kv_heads": 5})
    assert bad.reason == "model" and bad.model is None


def test_point_ids_are_stable_and_unique(tmp_path):
    _, _, _, pts = prepare(write_spec(tmp_path, SMALL))
    _, _, _, again = prepare(write_spec(tmp_path, SMALL, "copy.yaml"))
    assert [p["id"] for p in pts] == [p["id"] for p in again]
    assert len({p["id"] for p in pts}) == len(pts)
    assert point_id({"a": 1, "b": [1, 2]}) == point_id({"b": [1, 2], "a": 1})
    assert [p["index"] for p in pts] == list(range(len(pts)))


def test_moe_spec_enumerates_expert_parallelism(tmp_path):
    _, ctx, variants, pts = prepare(write_spec(tmp_path, MOE))
    assert len(variants) == 2 and ctx["vary_keys"] == ["experts"]
    assert {p["plan"]["ep"] for p in pts} >= {1, 2, 4, 8}
    assert divisors(12) == [1, 2, 3, 4, 6, 12]


def test_constraint_rows_are_generated_once_per_context(tmp_path):
    spec = merged(SMALL, model={"base": "llama2-7b", "vary": {"num_layers": [8, 32]},
                                "constraints": {"total_params_B": {"min": 5}}})
    _, _, _, pts = prepare(write_spec(tmp_path, spec))
    pre = [p for p in pts if "pre" in p]
    assert len(pre) == 2 and all(p["pre"][0] == "constraint" for p in pre)  # one per device count


def test_counting_plans_equals_generating_them():
    """count_plans (the dry run's count) agrees with plans() context by context, values per axis included,
    on the shipped specs (training and serving) and with option axes listed; so does plan_slice (the
    dry run's timing sample, built without the plans before it)."""
    from pathlib import Path

    from npusim.sweep.run import load
    from npusim.sweep.space import contexts, count_plans, plan_slice

    sweeps = Path(__file__).resolve().parents[2] / "sweeps"
    specs = [p for p in sorted(sweeps.glob("*.yaml")) if p.name != "pangu-ultra-shapes.yaml"]
    checked = 0
    for path in specs:
        _, resolved, _, variants, profiles = load(path)
        spaces = [resolved["plan"]]
        if resolved["workload"].get("kind", "train") == "train":
            spaces.append({**resolved["plan"], "schedule": ["1f1b", "interleaved", "dualpipe"],
                           "a2a": ["flat", "hierarchical"], "ep_overlap": [False, True]})
        for space in spaces:
            for _, _, c in contexts(resolved, variants, profiles)[:4]:
                if c is None:
                    continue
                seen: dict = {}
                listed = list(plans(space, c))
                assert count_plans(space, c, seen) == len(listed)
                for axis, vals in seen.items():
                    assert set(map(repr, vals.values())) == {repr(p[axis]) for p in listed if p.get(axis) is not None}
                n = len(listed)
                for a, b in ((0, 3), (n // 2 - 7, n // 2 + 9), (n - 2, n + 5), (5, 5), (n // 3, 2 * n // 3)):
                    assert plan_slice(space, c, a, b) == listed[max(0, a):b]  # the dry run's sample
                checked += 1
    assert checked >= 8
