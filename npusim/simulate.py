"""The pure core: ``simulate(model, hardware, plan, workload, devices) -> Result``. No I/O."""
from __future__ import annotations

from npusim.cost.compute import matrix_dtype
from npusim.cost.memory import chunk_params, state_bytes
from npusim.cost.passes import named_sum
from npusim.engine.layout import pipeline_layout
from npusim.engine.pipeline import simulate_pipeline
from npusim.engine.schedules import paired_fb
from npusim.engine.resolved import resolve_step
from npusim.engine.step import (StepInputs, buffer_bytes, chunk_activation_bytes, chunk_activation_terms,
                                dp_reduce_time, dp_tail, make_shard, optimizer_time, swap_buffer_bytes,
                                weight_grad_bytes)
from npusim.flops import flops_per_token
from npusim.result import Result


def simulate(model, hardware, plan, workload, devices: int, *, keep_timeline: bool = False,
             flop_convention: str = "npusim") -> Result:
    """Predict one training step of ``model`` on ``devices`` devices of ``hardware`` under ``plan``.

    ``flop_convention`` picks the MFU numerator: 'npusim' (default), 'megatron' or 'palm'.
    """
    _check_offload(plan, hardware)
    step = resolve_step(model, hardware, plan, workload, devices)
    inp, plan, places, specs, load, layout = step.inputs, step.plan, step.places, step.specs, step.load, step.layout
    schedule = plan.pipeline_schedule
    stages = step.stage_costs()
    m = inp.micro_batches
    traces = simulate_pipeline(stages, plan.pp, plan.vpp, m, schedule, keep_timeline,
                               pair_fb=paired_fb(model, plan))

    ends = _rank_ends(inp, traces, layout, specs, places, stages)
    step_s = max(e[0] for e in ends)
    # Explain the step from the busiest rank (the bottleneck stage): its own waits are bubble, and so
    # is the time it idles while other ranks drain the pipeline -- except the part the last rank to
    # finish spends in a longer DP reduction or optimizer step, which is charged to those.
    crit = max(range(plan.pp), key=lambda r: (sum(traces[r].busy.values()), -r))
    end_c, _, dp_s, opt_s = ends[crit]
    tr = traces[crit]

    excess = step_s - end_c
    _, _, dp_last, opt_last = max(ends)
    more_dp = min(excess, max(0.0, dp_last - dp_s))
    more_opt = min(excess - more_dp, max(0.0, opt_last - opt_s))
    breakdown = named_sum(tr.busy, {"pp_comm": tr.pp_wait_s, "bubble": tr.bubble_s + excess - more_dp - more_opt,
                                    "dp_comm": dp_s + more_dp, "optimizer": opt_s + more_opt}, step_s=step_s)

    tokens = workload.global_batch * workload.seq_len
    tps = tokens / step_s
    mf_tok = flops_per_token(model, workload.seq_len, flop_convention)
    peak = hardware.matrix_peak_flops(matrix_dtype(hardware, plan.precision))
    hw_flops = _hardware_flops(stages, specs, plan, m)
    mem = _rank_memory(inp, layout, [tr.live for tr in traces], specs, make_shard(model, plan, workload.seq_len),
                       places, load.max_over_mean)
    peak_mem = max(v["total"] for v in mem)
    worst = max(mem, key=lambda v: v["total"])
    crit_mem = mem.index(worst)
    config = {"model": model.model_dump(mode="json"), "hardware": hardware.name, "devices": devices,
              "plan": plan.model_dump(mode="json"), "workload": workload.model_dump(mode="json"),
              "micro_batches": m, "schedule": schedule}
    return Result(
        step_time_s=step_s, breakdown_s=breakdown, tokens_per_s=tps, tokens_per_s_per_device=tps / devices,
        mfu=flops_per_token(model, workload.seq_len, flop_convention, load.dropped_fraction) * tps / (devices * peak),
        hfu=hw_flops / (step_s * peak), model_flops_per_token=mf_tok,
        peak_memory_GB=peak_mem / 1e9, memory_GB={k: v / 1e9 for k, v in worst.items()},
        hbm_capacity_GB=hardware.chip.hbm_capacity_GB, config=config,
        timeline=[(r, e) for r, t in enumerate(traces) for e in t.events] if keep_timeline else [],
        extra={"critical_rank": crit, **_engine_stats(stages, traces), "pipeline_ranks": plan.pp, "flop_convention": flop_convention,
               "moe_load_max_over_mean": load.max_over_mean, "moe_imbalance_score": load.imbalance_score,
               "moe_dropped_fraction": load.dropped_fraction,
               **_schedule_extra(traces, ends, step_s, crit, breakdown, layout, mem),
               "memory_breakdown_GB": memory_breakdown(inp, layout, specs, make_shard(model, plan, workload.seq_len),
                                                       places, crit_mem, worst, load.max_over_mean)})


def _engine_stats(stages, traces) -> dict:
    """How much the event engine simulated: unit simulations and their op/collective events (after
    memoisation and coalescing), and pipeline units run."""
    coster = stages[0].pair_fn.args[0] if stages and stages[0].pair_fn is not None else None
    return {"engine_unit_simulations": coster.simulations if coster else 0,
            "engine_op_events": coster.op_events if coster else 0,
            "engine_pipeline_units": sum(t.units_run for t in traces)}


def _hardware_flops(stages, specs, plan, m: int) -> float:
    """FLOPs one device executes per step (average over pipeline ranks), from the lowered ops."""
    return sum(s.hw_flops for s in stages) * m / plan.pp


def _rank_ends(inp, traces, layout, specs, places, stages) -> list[tuple[float, int, float, float]]:
    """Per rank: (end of step, rank, DP tail + exposed ZeRO gather, optimizer) after its pipeline work.
    Overlapped gradient reduction: each chunk's buckets run beside its last backward on the event
    engine and what they leave (``StageCost.dp_after_s``) queues on the rank's DP stream."""
    model, plan = inp.model, inp.plan
    reduce = [dp_reduce_time(inp, s, places) for s in specs]
    ends = []
    for r, tr in enumerate(traces):
        mine = layout.rank_chunks[r]
        if plan.overlap_grad_reduce:
            chunk_red = {c: stages[s].dp_after_s for c, s in enumerate(mine)}
        else:
            chunk_red = {c: reduce[s][0] for c, s in enumerate(mine)}
        gather = sum(reduce[s][1] for s in mine)
        tail = dp_tail(tr, chunk_red, plan.overlap_grad_reduce)
        # ZeRO-1/2 parameter all-gather: overlapped with the next step's forward when enabled, except
        # its first bucket; otherwise exposed after the optimizer step.
        gather_exposed = gather / (8.0 * len(mine)) if plan.overlap_param_gather else gather
        dense = sum(chunk_params(model, plan, specs[s]).dense for s in mine)
        expert = sum(chunk_params(model, plan, specs[s]).expert for s in mine)
        opt = optimizer_time(inp, dense, expert, places)
        ends.append((tr.finish_s + tail + opt + gather_exposed, r, tail + gather_exposed, opt))
    return ends


def _schedule_extra(traces, ends, step_s: float, crit: int, breakdown: dict, layout, mem) -> dict:
    """What the schedule did: bubble and in-flight activations per rank, hidden vs exposed comm."""
    hidden = traces[crit].hidden_comm_s
    return {
        "bubble_s": breakdown["bubble"],
        "bubble_per_rank_s": [tr.bubble_s + step_s - e[0] for tr, e in zip(traces, ends)],
        "in_flight_per_rank": [tr.peak_in_flight for tr in traces],
        "pending_weight_grads_per_rank": [tr.peak_pending_weight for tr in traces],
        "activations_GB_per_rank": [row["activations"] / 1e9 for row in mem],
        "memory_GB_per_rank": [row["total"] / 1e9 for row in mem],
        "parameter_copies": layout.copies,
        "resource_busy_s": {k: v for k, v in sorted(traces[crit].resource_busy_s.items())},
        "resource_utilisation": {k: v / step_s for k, v in sorted(traces[crit].resource_busy_s.items())},
        "hidden_comm_s": sum(hidden.values()),
        "hidden_comm_by_part_s": dict(sorted(hidden.items())),
        "exposed_comm_s": sum(v for k, v in breakdown.items() if k.endswith("_comm")),
    }


def schedule_memory(model, hw, plan, specs, sh, places, m: int, load_factor: float = 1.0) -> list[dict[str, float]]:
    """Memory (bytes) of each pipeline rank, with the held activations read off the schedule's
    orders (``schedule_orders``; zero-bubble schedules as they run with equal unit times)."""
    from npusim.engine.schedules import live_counts, pair_steady, schedule_orders

    layout = pipeline_layout(plan.pipeline_schedule, plan.pp, plan.vpp)
    orders = schedule_orders(plan.pipeline_schedule, plan.pp, plan.vpp, m)
    if paired_fb(model, plan):
        orders = [pair_steady(o) for o in orders]
    lives = [live_counts(o, len(layout.rank_chunks[r])) for r, o in enumerate(orders)]
    inp = StepInputs(model, hw, plan, sh.seq_len, 0, 0)
    return _rank_memory(inp, layout, lives, specs, sh, places, load_factor)


def _check_offload(plan, hw) -> None:
    """Refuse offload keys on a profile without a host section (``node.host``)."""
    from npusim.config.errors import ConfigError

    if hw.node.host is None:
        for key in ("offload_activations", "offload_optimizer", "offload_modules"):
            if getattr(plan, key):
                raise ConfigError("--plan", key, getattr(plan, key), f"profile {hw.name} has no node.host section",
                                  "0 (or a profile with node.host)")


def _rank_memory(inp, layout, lives, specs, sh, places, load_factor: float = 1.0) -> list[dict[str, float]]:
    """Memory (bytes) of each pipeline rank: states of the stages it holds plus its peak of held
    activations (MoE layers sized for the busiest device of the EP group): a micro-batch's chunk
    activations from its F to its B, and its weight-gradient inputs from B to W when W is deferred
    (at most the chunk's activations: the inputs are part of what F stored, or with recompute are
    re-derived from the kept checkpoint). ZB-H1 holds at most ``pp`` micro-batches between F and W
    on a rank, 1F1B's peak (Qi et al. 2024, Table 3: peak memory p M_B for 1F1B and ZB-H1); with
    activation offload, two layers in transit (``swap_buffer_bytes``). ``lives``: per rank, the
    held counts (``RankTrace.live``)."""
    model, plan = inp.model, inp.plan
    out = []
    dp_shard, edp_shard = places["dp_cp"].size, places["edp"].size
    w_bytes: dict[int, float] = {}
    for r, live in enumerate(lives):
        mine = layout.rank_chunks[r]
        dense = expert = 0.0
        act, wgt = [], []
        for s in mine:
            spec = specs[s]
            p = chunk_params(model, plan, spec)
            dense, expert = dense + p.dense, expert + p.expert
            act.append(chunk_activation_bytes(model, plan, spec, sh, load_factor))
            if s not in w_bytes and any(any(v[len(mine):]) for v in live):
                w_bytes[s] = min(weight_grad_bytes(inp, spec, load_factor), act[-1])
            wgt.append(w_bytes.get(s, 0.0))
        states = state_bytes(plan, dense, expert, dp_shard, edp_shard)
        n = len(mine)
        acts = max((sum(act[c] * v[c] + wgt[c] * v[n + c] for c in range(n)) for v in live), default=0.0)
        if plan.pipeline_schedule == "zb-h1":
            acts = min(acts, plan.pp * max(act, default=0.0))
        acts += max((swap_buffer_bytes(model, plan, specs[s], sh, load_factor) for s in mine), default=0.0)
        row = dict(states, activations=acts)
        row["total"] = sum(row.values())
        out.append(row)
    return out


def memory_breakdown(inp, layout, specs, sh, places, rank: int, row: dict, load_factor: float = 1.0) -> dict:
    """Named memory breakdown (GB) of pipeline rank ``rank`` (its ``_rank_memory`` row): weights,
    gradients, optimizer states on the device, activations by module (one micro-batch's share of
    the held peak in each module's proportion), the total the peak counts, and beside it the
    transient workspace and communication buffers and what lives in host memory."""
    model, plan = inp.model, inp.plan
    terms: dict[str, float] = {}
    buf = {"workspace": 0.0, "comm_buffers": 0.0}
    swap = 0.0
    for s in layout.rank_chunks[rank]:
        for k, v in chunk_activation_terms(model, plan, specs[s], sh, load_factor).items():
            terms[k] = terms.get(k, 0.0) + v
        for k, v in buffer_bytes(inp, specs[s], sh, load_factor).items():
            buf[k] = max(buf[k], v)
        swap = max(swap, swap_buffer_bytes(model, plan, specs[s], sh, load_factor))
    held = row["activations"] - swap
    per_mb = sum(terms.values())
    scale = held / per_mb if per_mb > 0 else 0.0
    by_mod = {k: v * scale / 1e9 for k, v in sorted(terms.items()) if k != "offloaded"}
    if swap:
        by_mod["swap_buffer"] = swap / 1e9
    opt_host = state_bytes(plan.model_copy(update={"offload_optimizer": 0.0}), *_params(inp, layout, specs, rank),
                           places["dp_cp"].size, places["edp"].size)["optimizer"] - row["optimizer"]
    return {"weights": row["weights"] / 1e9, "gradients": row["gradients"] / 1e9, "optimizer": row["optimizer"] / 1e9,
            "activations": row["activations"] / 1e9, "activations_by_module": by_mod, "total": row["total"] / 1e9,
            "workspace": buf["workspace"] / 1e9, "comm_buffers": buf["comm_buffers"] / 1e9,
            "total_with_buffers": (row["total"] + buf["workspace"] + buf["comm_buffers"]) / 1e9,
            "host_activations_per_micro_batch": -terms.get("offloaded", 0.0) / 1e9, "host_optimizer": opt_host / 1e9}


def _params(inp, layout, specs, rank: int) -> tuple[float, float]:
    """(dense, expert) parameters a rank holds."""
    ps = [chunk_params(inp.model, inp.plan, specs[s]) for s in layout.rank_chunks[rank]]
    return sum(p.dense for p in ps), sum(p.expert for p in ps)
