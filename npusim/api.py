"""Convenience API: names and strings in, Result out (loads presets, then calls the pure core)."""
from __future__ import annotations


def run_simulation(model: str, hardware: str, plan: str | dict, devices: int, seq_len: int, global_batch: int,
                   flop_convention: str = "npusim", keep_timeline: bool = False, **plan_fields):
    """Load presets by name or path, parse the plan, and simulate one training step."""
    from npusim.config.hardware import load_profile
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan, parse_plan
    from npusim.config.workload import TrainWorkload
    from npusim.simulate import simulate

    fields = parse_plan(plan) if isinstance(plan, str) else dict(plan)
    fields.update(plan_fields)
    return simulate(load_model(model), load_profile(hardware), make_plan(fields),
                    TrainWorkload(seq_len=seq_len, global_batch=global_batch), devices,
                    flop_convention=flop_convention, keep_timeline=keep_timeline)


def default_serving_plan(model, devices: int) -> dict:
    """The serving layout used when none is given: attention TP over all devices; for MoE models routed
    experts EP over all devices, shared experts TP over all devices, all-gather MoE dispatch."""
    if model.is_moe:
        return {"tp": devices, "ep": devices, "etp": 1, "shared_tp": devices, "sp": True, "moe_dispatch": "allgather"}
    return {"tp": devices, "sp": True}


def run_serving(model: str, hardware: str, plan: str | dict | None, devices: int, kind: str, batch: int,
                input_len: int, **workload_fields):
    """Load presets and simulate a prefill (TTFT) or one decode step (TPOT)."""
    from npusim.config.errors import ConfigError
    from npusim.config.hardware import load_profile
    from npusim.config.loader import validate
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan, parse_plan
    from npusim.config.workload import InferenceWorkload
    from npusim.engine.serve import simulate_serving

    m = load_model(model)
    fields = default_serving_plan(m, devices) if plan is None else (parse_plan(plan) if isinstance(plan, str) else dict(plan))
    if m.is_moe and plan is not None and "tp" in fields and "ep" not in fields:
        raise ConfigError("--plan", "ep", None, "serving an MoE model needs ep (experts over devices)", "e.g. ep=8")
    wl = validate(InferenceWorkload, {"kind": kind, "batch": batch, "input_len": input_len,
                                      **{k: v for k, v in workload_fields.items() if v is not None}}, "--workload")
    return simulate_serving(m, load_profile(hardware), make_plan(fields), wl, devices)
