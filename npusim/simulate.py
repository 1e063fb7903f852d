"""The pure core: ``simulate(model, hardware, plan, workload, devices) -> Result``. No I/O."""
from __future__ import annotations

from npusim.config.plan import resolve_plan
from npusim.cost.collectives import placements
from npusim.cost.compute import matrix_dtype
from npusim.cost.memory import activation_bytes_per_layer, chunk_params, state_bytes
from npusim.cost.passes import PART_NAMES
from npusim.engine.pipeline import simulate_pipeline
from npusim.engine.schedules import peak_in_flight_total, schedule_orders
from npusim.engine.step import (StepInputs, dp_reduce_time, dp_tail, make_shard, moe_load, optimizer_time,
                                stage_costs)
from npusim.flops import flops_per_token
from npusim.result import Result
from npusim.workload.passes import chunk_specs


def simulate(model, hardware, plan, workload, devices: int, *, keep_timeline: bool = False,
             flop_convention: str = "npusim") -> Result:
    """Predict one training step of ``model`` on ``devices`` devices of ``hardware`` under ``plan``.

    ``flop_convention`` picks the MFU numerator: 'npusim' (default), 'megatron' or 'palm'.
    """
    plan = resolve_plan(plan, model, devices, workload.global_batch, workload.seq_len)
    inp = StepInputs(model, hardware, plan, workload.seq_len, workload.global_batch, devices)
    places = placements(plan, hardware)
    specs = chunk_specs(model, plan.pp, plan.vpp)
    cache: dict = {}
    load = moe_load(inp, places)
    stages = stage_costs(inp, specs, places, cache, load)
    m = inp.micro_batches
    traces = simulate_pipeline(stages, plan.pp, plan.vpp, m, plan.pipeline_schedule, keep_timeline)

    reduce = [dp_reduce_time(inp, s, places) for s in specs]
    ends = []
    for r, tr in enumerate(traces):
        chunk_red = {c: reduce[c * plan.pp + r][0] for c in range(plan.vpp)}
        gather = sum(reduce[c * plan.pp + r][1] for c in range(plan.vpp))
        tail = dp_tail(tr, chunk_red, plan.overlap_grad_reduce)
        # ZeRO-1/2 parameter all-gather: overlapped with the next step's forward when enabled, except
        # its first bucket; otherwise exposed after the optimizer step.
        gather_exposed = gather / (8.0 * plan.vpp) if plan.overlap_param_gather else gather
        dense = sum(chunk_params(model, plan, specs[c * plan.pp + r]).dense for c in range(plan.vpp))
        expert = sum(chunk_params(model, plan, specs[c * plan.pp + r]).expert for c in range(plan.vpp))
        opt = optimizer_time(inp, dense, expert, places)
        ends.append((tr.finish_s + tail + opt + gather_exposed, r, tail + gather_exposed, opt))
    step_s = max(e[0] for e in ends)
    # Explain the step from the busiest rank (the bottleneck stage): its own waits are bubble, and
    # so is the time it idles while other ranks drain the pipeline.
    crit = max(range(plan.pp), key=lambda r: (sum(traces[r].busy.values()), -r))
    end_c, _, dp_s, opt_s = ends[crit]
    tr = traces[crit]

    breakdown = {k: 0.0 for k in PART_NAMES}
    for k, v in tr.busy.items():
        breakdown[k] += v
    breakdown["pp_comm"] += tr.pp_wait_s
    breakdown["bubble"] += tr.bubble_s + (step_s - end_c)
    breakdown["dp_comm"] += dp_s
    breakdown["optimizer"] += opt_s
    breakdown["other"] = max(0.0, step_s - sum(breakdown.values()))

    tokens = workload.global_batch * workload.seq_len
    tps = tokens / step_s
    mf_tok = flops_per_token(model, workload.seq_len, flop_convention)
    peak = hardware.matrix_peak_flops(matrix_dtype(hardware, plan.precision))
    hw_flops = _hardware_flops(stages, specs, plan, m)
    mem = _memory(model, hardware, plan, specs, make_shard(model, plan, workload.seq_len), places, m,
                  load.max_over_mean)
    peak_mem = max(v["total"] for v in mem)
    worst = max(mem, key=lambda v: v["total"])
    config = {"model": model.model_dump(mode="json"), "hardware": hardware.name, "devices": devices,
              "plan": plan.model_dump(mode="json"), "workload": workload.model_dump(mode="json"),
              "micro_batches": m, "schedule": plan.pipeline_schedule}
    return Result(
        step_time_s=step_s, breakdown_s=breakdown, tokens_per_s=tps, tokens_per_s_per_device=tps / devices,
        mfu=mf_tok * tps / (devices * peak), hfu=hw_flops / (step_s * peak), model_flops_per_token=mf_tok,
        peak_memory_GB=peak_mem / 1e9, memory_GB={k: v / 1e9 for k, v in worst.items()},
        hbm_capacity_GB=hardware.chip.hbm_capacity_GB, config=config,
        timeline=[(r, e) for r, t in enumerate(traces) for e in t.events] if keep_timeline else [],
        extra={"critical_rank": crit, "pipeline_ranks": plan.pp, "flop_convention": flop_convention,
               "moe_load_max_over_mean": load.max_over_mean, "moe_imbalance_score": load.imbalance_score,
               "moe_dropped_fraction": load.dropped_fraction})


def _hardware_flops(stages, specs, plan, m: int) -> float:
    """FLOPs one device executes per step (average over pipeline ranks), from the lowered ops."""
    return sum(s.hw_flops for s in stages) * m / plan.pp


def _memory(model, hw, plan, specs, sh, places, m: int, load_factor: float = 1.0) -> list[dict[str, float]]:
    """Memory (bytes) of each pipeline rank: states plus peak in-flight activations (MoE layers
    sized for the busiest device of the EP group)."""
    out = []
    dp_shard, edp_shard = places["dp_cp"].size, places["edp"].size
    orders = schedule_orders(plan.pipeline_schedule, plan.pp, plan.vpp, m)
    for r in range(plan.pp):
        dense = expert = 0.0
        weight = {}
        for c in range(plan.vpp):
            spec = specs[c * plan.pp + r]
            p = chunk_params(model, plan, spec)
            dense, expert = dense + p.dense, expert + p.expert
            act = spec.dense_layers * activation_bytes_per_layer(model, plan, sh, False) if spec.dense_layers else 0.0
            if spec.moe_layers:
                act += spec.moe_layers * activation_bytes_per_layer(model, plan, sh, True, load_factor)
            if spec.head:
                act += sh.tokens * model.vocab / plan.tp * 4.0  # fp32 logits for the loss
            weight[c] = act
        states = state_bytes(plan, dense, expert, dp_shard, edp_shard)
        acts = peak_in_flight_total(orders[r], weight)
        row = dict(states, activations=acts)
        row["total"] = sum(row.values())
        out.append(row)
    return out
