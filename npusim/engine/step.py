"""One training step: lower the chunks, cost them, run the pipeline, add DP reduction and optimizer."""
from __future__ import annotations

from dataclasses import dataclass

from npusim.cost.collectives import collective_time
from npusim.cost.compute import memory_efficiency, op_time
from npusim.cost.memory import activation_bytes_per_layer, chunk_params, grad_bytes_per_param
from npusim.cost.passes import comm_times, pass_parts
from npusim.engine.overlap import Interference
from npusim.engine.pipeline import StageCost
from npusim.workload.layers import ACT_BYTES, Shard
from npusim.workload.ops import Comm, Op, Pass
from npusim.workload.routing import LoadStats, RoutingSpec, load_stats
from npusim.workload.passes import (backward_pass, extras_forward, layer_forward,
                                    recompute_of)

OPTIMIZER_BYTES_PER_PARAM = 34.0
"""Adam step traffic per parameter: read fp32 master, m, v, grad (16 B), write master, m, v (12 B)
and the bf16 weight (2 B), plus the gradient-norm read (4 B)."""


@dataclass(frozen=True)
class StepInputs:
    """Resolved inputs of one step."""

    model: object
    hw: object
    plan: object
    seq_len: int
    global_batch: int
    devices: int

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step."""
        return self.global_batch // (self.plan.micro_batch * self.plan.dp)


def make_shard(model, plan, seq_len: int, ep_domains: int = 1, dropped: float = 0.0) -> Shard:
    """How one micro-batch is split on one device."""
    return Shard(plan.micro_batch, seq_len, plan.tp, plan.cp, plan.sp, plan.expert_ep, plan.expert_tp,
                 plan.flash_attention, plan.a2a, ep_domains, dropped)


def routing_spec(plan) -> RoutingSpec:
    """The routing load the plan asks for."""
    return RoutingSpec(plan.routing, plan.routing_param, plan.routing_histogram, plan.routing_seed,
                       plan.routing_samples, plan.capacity_factor, plan.redundant_experts)


def moe_load(inp: StepInputs, places) -> LoadStats:
    """Expected routing load of one EP group for one micro-batch (1.0 for dense models)."""
    model, plan = inp.model, inp.plan
    if not model.is_moe:
        return LoadStats(1.0, 1.0, 0.0, 0.0)
    tokens = plan.micro_batch * inp.seq_len // plan.cp // plan.tp * plan.expert_ep
    return load_stats(routing_spec(plan), model, plan.expert_ep, max(1, tokens))


def chunk_passes(inp: StepInputs, sh: Shard, spec, load_factor: float = 1.0) -> tuple[Pass, Pass]:
    """Forward and backward (with recomputation) passes of one chunk for one micro-batch; routed
    expert work and all-to-all sized for a device carrying ``load_factor`` x the mean load."""
    model, plan = inp.model, inp.plan
    fwd, bwd = Pass(), Pass()
    for moe, count in ((False, spec.dense_layers), (True, spec.moe_layers)):
        if not count:
            continue
        lf = layer_forward(model, sh, moe, load_factor)
        lb = backward_pass(lf)
        rc = recompute_of(lf, plan.recompute)
        for _ in range(count):
            fwd.extend(lf)
            bwd.extend(rc)
            bwd.extend(lb)
    ex = extras_forward(model, sh, spec)
    fwd.extend(ex)
    bwd.extend(backward_pass(ex))
    if plan.precision == "fp8":
        fwd.ops.extend(fp8_casts(fwd.ops))
        bwd.ops.extend(fp8_casts(bwd.ops))
    if plan.zero >= 3 and plan.dp * plan.cp > 1:
        cp_ = chunk_params(model, plan, spec)
        gather = Comm("zero3_param_gather", "dp", "all_gather", "dp_cp", plan.dp * plan.cp, cp_.dense * 2, overlappable=True)
        fwd.comms.append(gather)
        bwd.comms.append(gather)
    return fwd, bwd


def fp8_casts(ops) -> list:
    """Quantisation kernels of FP8 GEMMs: each GEMM's activation operand is read in bf16 and written
    in fp8 (with its amax), and the weight is cast once per micro-batch (Transformer Engine)."""
    out = []
    for o in ops:
        if o.kind in ("gemm", "grouped_gemm") and not o.name.startswith("attn_") and not o.recompute:
            elems = o.groups * (o.m * o.k + o.k * o.n)
            out.append(Op(f"{o.name}_fp8_cast", "memory", elems, elems * 3.0))
    return out


def stage_costs(inp: StepInputs, specs, places, cache: dict, load: LoadStats | None = None,
                split_backward: bool = False) -> list[StageCost]:
    """Per-stage forward/backward parts and p2p time. With an imbalanced router the busiest device
    sets the time; its excess over the balanced time is the ``imbalance`` part. ``split_backward``
    also costs the backward's input-gradient and weight-gradient parts apart (zero-bubble and
    DualPipe schedules)."""
    load = load or LoadStats(1.0, 1.0, 0.0, 0.0)
    sh = make_shard(inp.model, inp.plan, inp.seq_len, places["ep"].domains, load.dropped_fraction)
    p2p = Comm("pp_p2p", "pp", "send_recv", "pp", 2, sh.tokens * inp.model.hidden * ACT_BYTES / inp.plan.tp)
    p2p_s = collective_time(p2p, places["pp"], inp.hw) if inp.plan.pp > 1 else 0.0
    inter = interference(inp.hw)
    by_sig: dict[tuple, StageCost] = {}
    out = []
    for spec in specs:
        sig = (spec.dense_layers, spec.moe_layers, spec.embedding, spec.head, spec.mtp)
        if sig not in by_sig:
            fwd, bwd = chunk_passes(inp, sh, spec)
            loaded = chunk_passes(inp, sh, spec, load.max_over_mean) if spec.moe_layers and load.max_over_mean != 1.0 else None
            flops = sum(o.flops for o in fwd.ops + bwd.ops if o.kind in ("gemm", "grouped_gemm", "attention"))
            f_parts = _parts(fwd, loaded and loaded[0], inp, places, cache)
            b_parts = _parts(bwd, loaded and loaded[1], inp, places, cache)
            hidden = {"F": hidden_comm(fwd, f_parts, inp.hw, places, cache),
                      "B": hidden_comm(bwd, b_parts, inp.hw, places, cache)}
            extra = {}
            if split_backward:
                bi, bw = split_weight_grad(bwd)
                bi_x, bw_x = split_weight_grad(loaded[1]) if loaded else (None, None)
                extra = {"backward_input": _parts(bi, bi_x, inp, places, cache),
                         "backward_weight": _parts(bw, bw_x, inp, places, cache)}
                hidden["Bi"] = hidden_comm(bi, extra["backward_input"], inp.hw, places, cache)
            by_sig[sig] = StageCost(f_parts, b_parts, p2p_s, flops, matrix_fraction=matrix_fraction(fwd, bwd, inp, cache),
                                    interference=inter, hidden_s=hidden, **extra)
        out.append(by_sig[sig])
    return out


def _parts(p: Pass, loaded: Pass | None, inp: StepInputs, places, cache: dict) -> dict[str, float]:
    """Named parts of a pass; with the busiest device's pass, its excess time as ``imbalance``."""
    parts = pass_parts(p, inp.hw, inp.plan, places, cache)
    if loaded is not None:
        busiest = sum(pass_parts(loaded, inp.hw, inp.plan, places, cache).values())
        parts["imbalance"] = max(0.0, busiest - sum(parts.values()))
    return parts


def split_weight_grad(bwd: Pass) -> tuple[Pass, Pass]:
    """(input-gradient pass, weight-gradient pass) of a backward pass: the weight-gradient GEMMs
    (and their FP8 casts) form W; everything else, collectives included, is B."""
    w = [o for o in bwd.ops if "_wgrad" in o.name]
    return Pass([o for o in bwd.ops if "_wgrad" not in o.name], list(bwd.comms)), Pass(w, [])


def weight_grad_bytes(inp: StepInputs, spec, load_factor: float = 1.0) -> float:
    """Bytes one micro-batch of a chunk keeps from its B until its W: each weight-gradient GEMM's
    input activation and output gradient (plan dependent)."""
    _, bwd = chunk_passes(inp, make_shard(inp.model, inp.plan, inp.seq_len), spec, load_factor)
    _, w = split_weight_grad(bwd)
    return sum(o.groups * o.k * (o.m + o.n) * ACT_BYTES for o in w.ops if o.kind in ("gemm", "grouped_gemm"))


def chunk_activation_bytes(model, plan, spec, sh: Shard, load_factor: float = 1.0) -> float:
    """Activation bytes one micro-batch leaves in a chunk for its backward (plan dependent; routed
    expert activations sized for a device with ``load_factor`` x the mean load)."""
    act = spec.dense_layers * activation_bytes_per_layer(model, plan, sh, False) if spec.dense_layers else 0.0
    if spec.moe_layers:
        act += spec.moe_layers * activation_bytes_per_layer(model, plan, sh, True, load_factor)
    if spec.head:
        act += sh.tokens * model.vocab / plan.tp * 4.0  # fp32 logits for the loss
    return act


def hidden_comm(p: Pass, parts: dict[str, float], hw, places, cache: dict) -> dict[str, float]:
    """Seconds of each kind of communication of a pass hidden behind its compute (all of it minus
    the exposed part ``pass_parts`` reports)."""
    raw = comm_times(p, hw, places, cache)
    return {k: v - parts.get(k, 0.0) for k, v in raw.items() if v - parts.get(k, 0.0) > 1e-12}


def matrix_fraction(fwd: Pass, bwd: Pass, inp: StepInputs, cache: dict) -> float:
    """Share of a chunk's kernel time spent on the matrix unit (GEMMs and attention)."""
    mat = tot = 0.0
    for op in fwd.ops + bwd.ops:
        key = ("op", op)
        t = cache.get(key)
        if t is None:
            t = cache[key] = op_time(op, inp.hw, inp.plan.precision)
        tot += t
        if op.kind in ("gemm", "grouped_gemm", "attention"):
            mat += t
    return mat / tot if tot > 0 else 1.0


def interference(hw) -> Interference:
    """The profile's slowdowns while communication and computation overlap."""
    d = hw.derating
    return Interference(d.overlap_compute_slowdown, d.overlap_vector_slowdown, d.overlap_comm_slowdown)


def dp_reduce_time(inp: StepInputs, spec, places) -> tuple[float, float]:
    """(gradient reduction, parameter all-gather) seconds of one chunk over its DP groups."""
    plan, hw = inp.plan, inp.hw
    cp_ = chunk_params(inp.model, plan, spec)
    g = grad_bytes_per_param(plan)
    red, gather = 0.0, 0.0
    for n, group in ((cp_.dense, "dp_cp"), (cp_.expert, "edp")):
        pl = places[group]
        if n <= 0 or pl.size <= 1:
            continue
        kind = "reduce_scatter" if plan.zero >= 1 else "all_reduce"
        red += collective_time(Comm("grad_reduce", "dp", kind, group, pl.size, n * g), pl, hw)
        if plan.zero in (1, 2):
            gather += collective_time(Comm("param_gather", "dp", "all_gather", group, pl.size, n * 2), pl, hw)
    return red, gather


def optimizer_time(inp: StepInputs, params_dense: float, params_expert: float, places) -> float:
    """Seconds of the Adam update on one device's shard of parameters (memory bound)."""
    plan, hw = inp.plan, inp.hw
    dp_shard = places["dp_cp"].size if plan.zero >= 1 else 1
    edp_shard = places["edp"].size if plan.zero >= 1 else 1
    n = params_dense / dp_shard + params_expert / edp_shard
    nbytes = n * OPTIMIZER_BYTES_PER_PARAM
    return nbytes / (hw.chip.hbm_bandwidth_GBps * 1e9 * memory_efficiency(hw.derating, nbytes))


def dp_tail(trace, chunk_reduce: dict[int, float], overlap: bool) -> float:
    """Seconds the DP gradient reduction runs past the rank's last backward."""
    if not chunk_reduce:
        return 0.0
    if not overlap:
        return sum(chunk_reduce.values())
    t = 0.0
    for c in sorted(chunk_reduce, key=lambda c: trace.last_backward_end_s.get(c, 0.0)):
        start = trace.last_backward_start_s.get(c, 0.0)
        end = trace.last_backward_end_s.get(c, 0.0)
        # Layer buckets become ready evenly through the chunk's last backward; the stream is serial.
        t = max(t, start) + chunk_reduce[c]
        t = max(t, end + chunk_reduce[c] / 8.0)
    return max(0.0, t - trace.finish_s)
