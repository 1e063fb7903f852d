"""The fast tier: one training step in closed form, for ranking thousands of sweep points.

It reuses the core's lowering and costs (``resolve_plan``, ``placements``, ``chunk_specs``, stage
costs equal to ``stage_costs``', ``moe_load``, ``dp_reduce_time``, ``optimizer_time``, ``dp_tail``,
the memory model of ``npusim.simulate``) and replaces the SimPy pipeline. With t_r the
per-micro-batch (forward + backward) time of rank r, 1F1B finishes at the bottleneck formula

    finish  = m x max_r t_r + (sum_r t_r - max_r t_r) + 2 (pp - 1) x p2p
    step    = max_r (finish - drain_r + DP tail_r + exposed ZeRO gather_r + optimizer_r)

with drain_r the chunk-0 backwards (and hops) of the ranks before r, which finish after it. For
uniform stages this is the textbook m t + (pp - 1) t. Interleaving has no such closed form once
chunks differ in cost (ranks move through the chunks in lock-step rounds of pp micro-batches), so
there each rank's finish is the longest path through the schedule's fixed order
(``npusim.engine.longest_path``, the event simulation's answer for the same unit durations, at
about 0.25 us per unit). Memory is exact: the peak of in-flight activations is read off the
schedule's live-count vectors, which repeat with period pp x vpp in the steady state, so a schedule
of min(m, 4 pp) micro-batches has the same peak. Everything that does not depend on the point is
memoised (``npusim.sweep.memo``).
"""
from __future__ import annotations

from npusim.config.plan import ParallelPlan, resolve_plan
from npusim.config.schedules import names
from npusim.cost.algorithms import collective_plan, stages_time
from npusim.cost.collectives import placements
from npusim.cost.compute import matrix_dtype
from npusim.cost.memory import activation_bytes_per_layer, chunk_params, state_bytes
from npusim.cost.passes import named_sum
from npusim.config.schedules import schedule_facts
from npusim.engine.layout import pipeline_layout
from npusim.engine.longest_path import compile_order, finish_times
from npusim.engine.pipeline import RankTrace
from npusim.engine.resolved import ResolvedStep
from npusim.engine.schedules import pair_steady, paired_fb, schedule_orders
from npusim.engine.step import StepInputs, chunk_activation_bytes, swap_buffer_bytes, dp_reduce_time, dp_tail, make_shard, moe_load, optimizer_time, routing_spec
from npusim.flops import flops_per_token
from npusim.sweep.lowered import clear_caches, stage_cost, stage_prefix  # noqa: F401 (fast.clear_caches)
from npusim.sweep.memo import Reads, cached, table, value_key
from npusim.workload.passes import chunk_specs

CLOSED_FORM = names(closed_form=True)
"""Schedules the closed form covers; others (zero-bubble, DualPipe...) fall back to the event simulation."""
_PLACES, _GROUPS, _LIVE, _LOAD, _PARAMS, _ACT, _REDUCE, _MFTOK, _MEMORY, _PROFILE, _SPECS = (table() for _ in range(11))
"""Memo tables (``npusim.sweep.memo``; ``clear_caches`` empties them), keyed by what each function
reads: config objects by value, plan fields by the declarations below."""

PLACE_READS = Reads(ParallelPlan, "tp cp dp expert_ep expert_tp")
"""``placements`` (``group_layout``)."""
LOAD_READS = Reads(ParallelPlan, "expert_ep micro_batch cp tp")
"""``moe_load`` besides the routing spec."""
PARAM_READS = Reads(ParallelPlan, "tp expert_ep expert_tp redundant_experts")
"""``chunk_params``."""
ACT_READS = Reads(ParallelPlan, "precision tp sp recompute recompute_modules offload_activations offload_modules "
                                "flash_attention expert_ep expert_tp cp")
"""``activation_bytes_per_layer`` besides the shard's tokens and sequence length."""
MEMORY_READS = ACT_READS + PARAM_READS + Reads(
    ParallelPlan, "pp vpp pipeline_schedule micro_batch zero master_weights offload_optimizer")
"""The busiest rank's memory (``_memory``) besides the micro-batch count, placements and load."""
REDUCE_READS = Reads(ParallelPlan, "tp expert_ep expert_tp zero precision master_weights redundant_experts")
"""``dp_reduce_time`` besides the DP placements."""
BUCKET_READS = REDUCE_READS + Reads(ParallelPlan, "cp dp")
"""The DP gradient buckets of a chunk (``_bucket_time``)."""
PROFILE_READS = Reads(ParallelPlan, "pp vpp zero master_weights overlap_grad_reduce offload_optimizer precision")
"""A point's per-rank profile (``_profile``) besides its stages' key."""


def places_of(plan, hw) -> dict:
    """Placements of the plan's groups (memoised on the degrees that set them)."""
    return cached(_PLACES, (value_key(hw),) + PLACE_READS(plan), lambda: placements(plan, hw))


def _sig(spec) -> tuple:
    """What a chunk holds, as a hashable key."""
    return (spec.dense_layers, spec.moe_layers, spec.embedding, spec.head, spec.mtp)


def specs_of(model, pp: int, vpp: int) -> list:
    """``chunk_specs`` memoised on the model's value and the pipeline shape."""
    return cached(_SPECS, (value_key(model), pp, vpp), lambda: chunk_specs(model, pp, vpp))


def resolved(model, hw, plan, workload, devices: int) -> ResolvedStep:
    """The core's resolved step (``npusim.engine.resolved``) for an already resolved ``plan``, built
    from memoised parts: the same object ``simulate`` builds with ``resolve_step``, so both tiers
    read one set of inputs, chunk specs, placements, routing load and schedule facts."""
    inp = StepInputs(model, hw, plan, workload.seq_len, workload.global_batch, devices)
    places = places_of(plan, hw)
    sched = plan.pipeline_schedule
    return ResolvedStep(inp, specs_of(model, plan.pp, plan.vpp), places, _load(inp, places),
                        pipeline_layout(sched, plan.pp, plan.vpp), schedule_facts(sched))


def rank_groups(model, pp: int, vpp: int) -> list[tuple[tuple, list]]:
    """Pipeline ranks grouped by the chunks they hold: [(chunk specs of the rank, ranks)], memoised."""
    key = (value_key(model), pp, vpp)
    hit = _GROUPS.get(key)
    if hit is not None:
        return hit
    specs = specs_of(model, pp, vpp)
    by: dict[tuple, tuple] = {}
    for r in range(pp):
        mine = tuple(specs[c * pp + r] for c in range(vpp))
        sig = tuple(_sig(s) for s in mine)
        by.setdefault(sig, (mine, []))[1].append(r)
    out = _GROUPS[key] = list(by.values())
    return out


def live_vectors(schedule: str, pp: int, vpp: int, m: int, ranks: tuple, paired: bool = False) -> list[tuple]:
    """Non-dominated per-chunk counts of in-flight micro-batches over ``ranks`` (peaks of the schedule;
    ``paired``: steady-state backward + next forward run as one unit, ``schedules.pair_steady``)."""
    mm = min(m, 4 * pp)
    key = (schedule, pp, vpp, mm, ranks, paired)
    hit = _LIVE.get(key)
    if hit is not None:
        return hit
    orders = schedule_orders(schedule, pp, vpp, mm)
    if paired:
        orders = [pair_steady(o) for o in orders]
    seen: set = set()
    for r in ranks:
        live = [0] * vpp
        for u in orders[r]:
            if u[0] in ("F", "FB"):
                live[u[1]] += 1
                seen.add(tuple(live))
            if u[0] == "B":
                live[u[1]] -= 1
            elif u[0] == "FB":
                live[u[3]] -= 1
    vecs = [v for v in seen if not any(w != v and all(a >= b for a, b in zip(w, v)) for w in seen)]
    out = _LIVE[key] = sorted(vecs)
    return out


def _load(inp: StepInputs, places):
    """``moe_load`` memoised on the routing spec, model, EP size and tokens."""
    plan = inp.plan
    key = (value_key(inp.model), routing_spec(plan), inp.seq_len) + LOAD_READS(plan)
    return cached(_LOAD, key, lambda: moe_load(inp, places))


def params_of(model, plan, spec):
    """``chunk_params`` memoised on the degrees that split parameters."""
    key = (value_key(model), _sig(spec)) + PARAM_READS(plan)
    return cached(_PARAMS, key, lambda: chunk_params(model, plan, spec))


def _act_key(model, plan, sh, load_factor: float) -> tuple:
    """The plan fields activation memory reads (``npusim.cost.memory.activation_terms``)."""
    return (value_key(model), sh.tokens, sh.seq_len, load_factor) + ACT_READS(plan)


def _layer_act(model, plan, sh, moe: bool, load_factor: float) -> float:
    """``activation_bytes_per_layer``, memoised on the fields it reads."""
    key = ("layer", moe) + _act_key(model, plan, sh, load_factor)
    return cached(_ACT, key, lambda: activation_bytes_per_layer(model, plan, sh, moe, load_factor))


def _chunk_act(model, plan, spec, sh, load_factor: float) -> float:
    """``chunk_activation_bytes`` (what one micro-batch leaves in a chunk): identical layers add
    identical bytes, so it is built from memoised per-layer terms, plus the chunk-level swap
    correction when activations are offloaded."""
    act = spec.dense_layers * _layer_act(model, plan, sh, False, 1.0) if spec.dense_layers else 0.0
    if spec.moe_layers:
        act += spec.moe_layers * _layer_act(model, plan, sh, True, load_factor)
    if spec.head:
        act += sh.tokens * model.vocab / plan.tp * 4.0
    if plan.offload_activations or plan.offload_modules:
        act = chunk_activation_bytes(model, plan, spec, sh, load_factor)
    return act


def memory(model, hw, plan, seq_len: int, places, m: int, load_factor: float = 1.0) -> dict[str, float]:
    """Memory (bytes) of the busiest pipeline rank of a resolved plan, as ``npusim.simulate._memory``
    (memoised: it depends on the micro-batch count only through min(m, 4 pp))."""
    key = (value_key(model), min(m, 4 * plan.pp), seq_len, places["dp_cp"].size, places["edp"].size, load_factor,
           paired_fb(model, plan)) + MEMORY_READS(plan)
    hit = _MEMORY.get(key)
    if hit is None:
        hit = _MEMORY[key] = _memory(model, plan, seq_len, places, m, load_factor)
    return hit


def _memory(model, plan, seq_len: int, places, m: int, load_factor: float) -> dict[str, float]:
    """Memory of every rank group; the worst one."""
    sh = make_shard(model, plan, seq_len)
    dp_shard, edp_shard = places["dp_cp"].size, places["edp"].size
    worst: dict[str, float] = {}
    for specs, ranks in rank_groups(model, plan.pp, plan.vpp):
        dense = expert = 0.0
        weight = []
        for spec in specs:
            p = params_of(model, plan, spec)
            dense, expert = dense + p.dense, expert + p.expert
            weight.append(_chunk_act(model, plan, spec, sh, load_factor))
        vecs = live_vectors(plan.pipeline_schedule, plan.pp, plan.vpp, m, tuple(ranks), paired_fb(model, plan))
        acts = max((sum(w * n for w, n in zip(weight, v)) for v in vecs), default=0.0)
        acts += max((swap_buffer_bytes(model, plan, s, sh, load_factor) for s in specs), default=0.0)
        row = dict(state_bytes(plan, dense, expert, dp_shard, edp_shard), activations=max(0.0, acts))
        row["total"] = sum(row.values())
        if not worst or row["total"] > worst["total"]:
            worst = row
    return worst


def _reduce(inp: StepInputs, spec, places) -> tuple[float, float]:
    """``dp_reduce_time`` memoised on what it reads."""
    plan = inp.plan
    key = (value_key(inp.model), value_key(inp.hw), _sig(spec), places["dp_cp"], places["edp"]) + REDUCE_READS(plan)
    return cached(_REDUCE, key, lambda: dp_reduce_time(inp, spec, places))


def _buckets(inp: StepInputs, spec, places) -> tuple[dict[str, float], dict[str, float]]:
    """A chunk's DP gradient buckets as the event engine issues them (one per layer and group, plus
    the embedding/head bucket; each group on its own serial stream): (per group, seconds of its
    buckets back to back; per link tier, seconds of wire time they need), memoised."""
    from npusim.engine.step import dp_comms, layer_spec
    from npusim.workload.passes import ChunkSpec

    plan = inp.plan
    base = (value_key(inp.model), value_key(inp.hw), places["dp_cp"], places["edp"]) + BUCKET_READS(plan)
    key = ("buckets", _sig(spec)) + base
    hit = _REDUCE.get(key)
    if hit is None:
        red = "reduce_scatter" if plan.zero >= 1 else "all_reduce"

        def cost(sp) -> tuple[dict[str, float], dict[str, float]]:
            """One layer's (or the extras') buckets, memoised apart from the chunk's layer count."""
            k = ("bucket", base, sp.dense_layers, sp.moe_layers, sp.embedding, sp.head, sp.mtp)
            got = _REDUCE.get(k)
            if got is None:
                streams: dict[str, float] = {}
                wire: dict[str, float] = {}
                launch_s = inp.hw.derating.collective_launch_us * 1e-6
                for c in dp_comms(inp, sp, "b", red, True):
                    if places[c.group].size <= 1 or c.bytes <= 0:
                        continue
                    stages = collective_plan(c, places[c.group], inp.hw)[1]
                    # ``collective_time``: launch plus the stages alone
                    streams[c.group] = streams.get(c.group, 0.0) + launch_s + stages_time(stages)
                    for stage in stages:
                        for ph in stage:
                            if ph.bytes > 0:
                                for tier in (ph.tier, "spine") if ph.cross_leaf else (ph.tier,):
                                    wire[tier] = wire.get(tier, 0.0) + ph.bytes / ph.rate_Bps
                got = _REDUCE[k] = (streams, wire)
            return got

        parts = [(1, cost(ChunkSpec(spec.index, 0, 0, spec.embedding, spec.head, spec.mtp)))]
        if spec.dense_layers:
            parts.append((spec.dense_layers, cost(layer_spec(spec, False))))
        if spec.moe_layers:
            parts.append((spec.moe_layers, cost(layer_spec(spec, True))))
        streams, wire = {}, {}
        for n, (st, wi) in parts:
            for out, d in ((streams, st), (wire, wi)):
                for k, v in d.items():
                    out[k] = out.get(k, 0.0) + n * v
        hit = _REDUCE[key] = (streams, wire)
    return hit


def _tail(inp: StepInputs, specs, places, bwd: list[float], nic: list[float] | None = None) -> tuple[float, float, float, dict]:
    """(DP tail, exposed ZeRO gather, optimizer, DP seconds per chunk) of one rank, with its last
    backwards placed in closed form: chunk c's last backward ends pp x (backwards of chunks < c)
    before the rank's finish. The DP seconds per chunk are what queues on the rank's DP stream at
    the chunk's last backward (``dp_tail``)."""
    plan = inp.plan
    finish_s = (plan.pp + 1) * sum(bwd)
    tr = RankTrace(finish_s=finish_s)
    red, gather, dense, expert, before = {}, 0.0, 0.0, 0.0, 0.0
    for c, spec in enumerate(specs):
        r_s, g_s = _reduce(inp, spec, places)
        if plan.overlap_grad_reduce:
            # one bucket per layer, released evenly through the last backward on a serial stream:
            # what is left after it (the event engine's ``dp_after_s``)
            # (the event engine's ``dp_after_s``). The groups' streams run side by side; on a
            # shared port their wire time adds up, with the backward's own NIC traffic (EP, PP).
            n = max(1, spec.layers)
            streams, wire = _buckets(inp, spec, places)
            longest = max(streams.values(), default=0.0)
            busy = nic[c] if nic else 0.0
            load = max([longest] + [w + (busy if tier == "nic" else 0.0) for tier, w in wire.items()])
            r_s = max(longest / n, load - bwd[c] * (n - 1) / n)
        red[c], gather = r_s, gather + g_s
        tr.last_backward_end_s[c] = finish_s - before
        tr.last_backward_start_s[c] = finish_s - before - bwd[c]
        before += plan.pp * bwd[c]
        p = params_of(inp.model, plan, spec)
        dense, expert = dense + p.dense, expert + p.expert
    tail = dp_tail(tr, red, plan.overlap_grad_reduce)
    gather_exposed = gather / (8.0 * plan.vpp) if plan.overlap_param_gather else gather
    return tail, gather_exposed, optimizer_time(inp, dense, expert, places), red


def _mf_per_token(model, seq_len: int, convention: str) -> float:
    """Model FLOPs per token, memoised."""
    key = (value_key(model), seq_len, convention)
    return cached(_MFTOK, key, lambda: flops_per_token(model, seq_len, convention))


def estimate(model, hw, plan, workload, devices: int, *, memory_limit_GB: float | None = None,
             flop_convention: str = "npusim") -> dict:
    """Fast estimate of one training step: the metrics of ``Result.to_dict()`` (step time, tokens/s,
    MFU, HFU, peak memory, breakdown) from the closed-form pipeline. Raises ConfigError for an
    invalid plan. When the busiest rank needs more than ``memory_limit_GB`` the step is not costed
    and ``step_time_s`` is None."""
    plan = resolve_plan(plan, model, devices, workload.global_batch, workload.seq_len)
    if plan.pipeline_schedule not in CLOSED_FORM or plan.vpp > 1 and plan.pipeline_schedule != "interleaved":
        return _simulated(model, hw, plan, workload, devices, flop_convention)
    rs = resolved(model, hw, plan, workload, devices)
    m = rs.micro_batches
    mem = memory(model, hw, plan, workload.seq_len, rs.places, m, rs.load.max_over_mean)
    out = {"peak_memory_GB": mem["total"] / 1e9, "hbm_capacity_GB": hw.chip.hbm_capacity_GB,
           "memory_GB": {k: v / 1e9 for k, v in mem.items()}, "micro_batches": m}
    out["fits_in_memory"] = out["peak_memory_GB"] <= out["hbm_capacity_GB"]
    if memory_limit_GB is not None and out["peak_memory_GB"] > memory_limit_GB:
        out["step_time_s"] = None
        return out
    out.update(_step(rs, flop_convention))
    return out


def _simulated(model, hw, plan, workload, devices: int, convention: str) -> dict:
    """A schedule without a closed form: the event simulation's numbers in the estimate's shape."""
    from npusim.simulate import simulate

    res = simulate(model, hw, plan, workload, devices, flop_convention=convention)
    return {"step_time_s": res.step_time_s, "tokens_per_s": res.tokens_per_s,
            "tokens_per_s_per_device": res.tokens_per_s_per_device, "mfu": res.mfu, "hfu": res.hfu,
            "peak_memory_GB": res.peak_memory_GB, "hbm_capacity_GB": res.hbm_capacity_GB,
            "fits_in_memory": res.fits_in_memory, "memory_GB": dict(res.memory_GB),
            "breakdown_s": dict(res.breakdown_s), "micro_batches": res.config.get("micro_batches")}


def _profile(rs: ResolvedStep) -> tuple[list[tuple], tuple[list[float], list[float], list[float]], list[tuple]]:
    """(rows, stage durations, rank groups) memoised on everything but the micro-batch count. Rows,
    per rank group and micro-batch: (time, first rank, ranks, summed parts, FLOPs, p2p, drain, DP
    tail, exposed gather, optimizer); ``drain`` is how much earlier than rank 0 the group's first rank
    finishes (the last micro-batch's chunk-0 backwards of the ranks before it). Stage durations:
    per stage (chunk c of rank r is stage c pp + r) its forward, backward and p2p seconds. Rank
    groups: the ranks of each row."""
    inp, places, load = rs.inputs, rs.places, rs.load
    model, hw, plan = inp.model, inp.hw, inp.plan
    sh = make_shard(model, plan, inp.seq_len, places["ep"].domains, load.dropped_fraction, load.expert_spread)
    prefix = stage_prefix(model, hw, plan, sh, places, load)
    key = (prefix, places["dp_cp"], places["edp"]) + PROFILE_READS(plan)
    hit = _PROFILE.get(key)
    if hit is not None:
        return hit
    rows, b0 = [], [0.0] * plan.pp
    n = plan.pp * plan.vpp
    stage_f, stage_b, stage_p2p, members = [0.0] * n, [0.0] * n, [0.0] * n, []
    for specs, ranks in rank_groups(model, plan.pp, plan.vpp):
        costs = [stage_cost(model, hw, plan, inp.seq_len, places, s, load, prefix) for s in specs]
        bwd = [sum(c.backward.values()) for c in costs]
        for c, cost in enumerate(costs):
            for r in ranks:
                s = c * plan.pp + r
                stage_f[s], stage_b[s], stage_p2p[s] = sum(cost.forward.values()), bwd[c], cost.p2p_s
        for r in ranks:
            b0[r] = bwd[0]
        members.append(tuple(ranks))
        parts: dict[str, float] = {}
        for c in costs:
            for d in (c.forward, c.backward):
                for k, v in d.items():
                    parts[k] = parts.get(k, 0.0) + v
        p2p = max(c.p2p_s for c in costs)
        rows.append((sum(parts.values()), ranks[0], len(ranks), parts, sum(c.hw_flops for c in costs), p2p)
                    + _tail(inp, specs, places, bwd, [c.busy_s.get("B", {}).get("nic", 0.0) for c in costs]))
    hop = max(r[5] for r in rows)
    out = _PROFILE[key] = ([r[:6] + (sum(b0[:r[1]]) + r[1] * hop,) + r[6:] for r in rows],
                           (stage_f, stage_b, stage_p2p), members)
    return out


def _step(rs: ResolvedStep, convention: str) -> dict:
    """Closed-form step time, breakdown and utilisation of a resolved point."""
    inp, m = rs.inputs, rs.micro_batches
    model, hw, plan = inp.model, inp.hw, inp.plan
    groups, stages, members = _profile(rs)
    crit = max(groups, key=lambda g: (g[0], -g[1]))
    t_max = crit[0]
    total_t = sum(g[0] * g[2] for g in groups)
    hops = 2.0 * (plan.pp - 1) * max(g[5] for g in groups)
    if plan.vpp > 1:
        # Interleaving moves every rank through the chunks in lock-step rounds of pp micro-batches:
        # the finish is the longest path through the schedule's fixed order (no closed form once
        # chunks differ in cost), and each chunk's DP buckets queue behind its actual last backward.
        ends, last_b = finish_times(compile_order(plan.pipeline_schedule, plan.pp, plan.vpp, m,
                                                  paired_fb(model, plan)), *stages)
        step = 0.0
        for g, ranks in zip(groups, members):
            for r in ranks:
                tr = RankTrace(finish_s=ends[r], last_backward_end_s={c: last_b[c * plan.pp + r] for c in range(plan.vpp)})
                step = max(step, ends[r] + dp_tail(tr, g[10], plan.overlap_grad_reduce) + g[8] + g[9])
    else:
        finish = m * t_max + total_t - t_max + hops
        step = finish + max(g[7] + g[8] + g[9] - g[6] for g in groups)
    breakdown = named_sum({k: m * v for k, v in crit[3].items()},
                          {"pp_comm": hops, "dp_comm": crit[7] + crit[8], "optimizer": crit[9]},
                          step_s=step, residual="bubble")
    tps = inp.global_batch * inp.seq_len / step
    peak = hw.matrix_peak_flops(matrix_dtype(hw, plan.precision))
    flops = sum(g[4] * g[2] for g in groups)
    return {"step_time_s": step, "tokens_per_s": tps, "tokens_per_s_per_device": tps / inp.devices,
            "mfu": _mf_per_token(model, inp.seq_len, convention) * tps / (inp.devices * peak),
            "hfu": flops * m / plan.pp / (step * peak), "breakdown_s": breakdown}
