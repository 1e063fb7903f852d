"""Convenience API: names and strings in, Result out (loads presets, then calls the pure core)."""
from __future__ import annotations


def run_simulation(model: str, hardware: str, plan: str | dict, devices: int, seq_len: int, global_batch: int,
                   flop_convention: str = "npusim", **plan_fields):
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
                    flop_convention=flop_convention)
