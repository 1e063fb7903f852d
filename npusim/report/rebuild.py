"""The core's inputs, loaded by name or rebuilt from a Result's resolved config, for reports that need
more than a Result holds (the timeline, per-stage parts, per-rank memory)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from npusim.engine.resolved import ResolvedStep, resolve_step


@dataclass(frozen=True)
class SimInputs:
    """The five arguments of ``npusim.simulate.simulate`` (plan resolved or not)."""

    model: Any
    hardware: Any
    plan: Any
    workload: Any
    devices: int
    flop_convention: str = "npusim"


def load_inputs(model: str, hardware: str, plan: str | dict, devices: int, seq_len: int, global_batch: int,
                flop_convention: str = "npusim", **plan_fields) -> SimInputs:
    """Load presets by name or path and parse the plan (what ``npusim.api.run_simulation`` loads)."""
    from npusim.config.hardware import load_profile
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan, parse_plan
    from npusim.config.workload import TrainWorkload

    fields = parse_plan(plan) if isinstance(plan, str) else dict(plan)
    fields.update(plan_fields)
    return SimInputs(load_model(model), load_profile(hardware), make_plan(fields),
                     TrainWorkload(seq_len=seq_len, global_batch=global_batch), devices, flop_convention)


def inputs_from_result(result, hardware=None) -> SimInputs:
    """The inputs that produced ``result``, from its resolved config. ``hardware`` (a HardwareProfile,
    a preset name or a YAML path) is needed when the result's profile is not a loadable preset."""
    from npusim.config.errors import ConfigError
    from npusim.config.hardware import HardwareProfile, load_profile
    from npusim.config.loader import validate
    from npusim.config.model import ModelConfig
    from npusim.config.plan import make_plan
    from npusim.config.workload import TrainWorkload

    c = result.config
    src = "result.config"
    wl = dict(c["workload"])
    if set(wl) - {"seq_len", "global_batch"}:
        raise ConfigError(src, "workload", wl.get("kind", wl), "not a training step", "a training result")
    hw = hardware if isinstance(hardware, HardwareProfile) else load_profile(hardware or c["hardware"])
    if hw.name != c["hardware"]:
        raise ConfigError(src, "hardware", hw.name, f"does not match the result's profile {c['hardware']!r}",
                          c["hardware"])
    return SimInputs(validate(ModelConfig, c["model"], src), hw, make_plan(c["plan"], src),
                     validate(TrainWorkload, wl, src), int(c["devices"]),
                     result.extra.get("flop_convention", "npusim"))


def simulate_inputs(inp: SimInputs, keep_timeline: bool = True):
    """Run the pure core on ``inp``."""
    from npusim.simulate import simulate

    return simulate(inp.model, inp.hardware, inp.plan, inp.workload, inp.devices, keep_timeline=keep_timeline,
                    flop_convention=inp.flop_convention)


def with_timeline(result, hardware=None):
    """``result`` itself when it kept its timeline, else the same simulation rerun with it."""
    if result.timeline:
        return result
    return simulate_inputs(inputs_from_result(result, hardware), keep_timeline=True)


StepParts = ResolvedStep
"""What the engine derives from resolved inputs before it runs the pipeline (the shared
``npusim.engine.resolved.ResolvedStep``)."""


def step_parts(inp: SimInputs) -> ResolvedStep:
    """Resolve the plan and derive chunk specs, group placements and MoE load as ``simulate`` does."""
    return resolve_step(inp.model, inp.hardware, inp.plan, inp.workload, inp.devices)


def memory_per_rank(result, hardware=None) -> list[dict[str, float]]:
    """Memory (GB) of every pipeline rank of ``result``: states, activations and total (plan dependent)."""
    from npusim.engine.step import make_shard
    from npusim.simulate import schedule_memory

    sp = step_parts(inputs_from_result(result, hardware))
    si = sp.inputs
    rows = schedule_memory(si.model, si.hw, si.plan, sp.specs, make_shard(si.model, si.plan, si.seq_len), sp.places,
                   si.micro_batches, sp.load.max_over_mean)
    return [{k: v / 1e9 for k, v in row.items()} for row in rows]


def plan_label(plan: dict) -> str:
    """A short label of a resolved plan: degrees above 1 and the options that differ from the defaults."""
    from npusim.config.plan import ParallelPlan

    degrees = ("tp", "pp", "vpp", "cp", "dp", "ep")
    parts = [f"{k}{plan[k]}" for k in degrees if plan.get(k, 1) not in (0, 1)]
    default = ParallelPlan().model_dump(mode="json")
    for k, v in plan.items():
        if k in degrees or k not in default or v == default[k] or k in ("etp", "micro_batch"):
            continue
        parts.append(f"{k}={int(v) if isinstance(v, bool) else v}")
    if plan.get("micro_batch", 1) != 1:
        parts.append(f"mb{plan['micro_batch']}")
    return " ".join(parts) or "no parallelism"
