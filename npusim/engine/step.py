"""One training step: lower the chunks, cost them, run the pipeline, add DP reduction and optimizer."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from npusim.cost.collectives import collective_time
from npusim.cost.compute import memory_efficiency, op_time
from npusim.cost.memory import (activation_bytes_per_layer, activation_terms, chunk_params, grad_bytes_per_param,
                                offloaded_bytes, recompute_set)
from npusim.cost.passes import comm_times, pass_parts
from npusim.engine.overlap import Interference
from npusim.engine.pipeline import StageCost
from npusim.engine.unitcost import UnitCoster, hidden_of
from npusim.workload.layers import ACT_BYTES, Shard
from npusim.workload.ops import Collective, Comm, Marker, Op, Pass
from npusim.workload.routing import LoadStats, RoutingSpec, load_stats
from npusim.engine.opgraph import LAYER_START, SWAP_IN, SWAP_OUT
from npusim.workload.layers import embedding_pass, head_pass, mtp_pass
from npusim.workload.passes import (ChunkSpec, backward_pass, layer_forward,
                                    recompute_of)

if TYPE_CHECKING:  # pragma: no cover
    from npusim.config.hardware import HardwareProfile
    from npusim.config.model import ModelConfig
    from npusim.config.plan import ParallelPlan

OPTIMIZER_BYTES_PER_PARAM = 34.0
"""Adam step traffic per parameter: read fp32 master, m, v, grad (16 B), write master, m, v (12 B)
and the bf16 weight (2 B), plus the gradient-norm read (4 B)."""


@dataclass(frozen=True)
class StepInputs:
    """Resolved inputs of one step."""

    model: "ModelConfig"
    hw: "HardwareProfile"
    plan: "ParallelPlan"
    seq_len: int
    global_batch: int
    devices: int

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step."""
        return self.global_batch // (self.plan.micro_batch * self.plan.dp)


def make_shard(model, plan, seq_len: int, ep_domains: int = 1, dropped: float = 0.0, spread: float = 0.0) -> Shard:
    """How one micro-batch is split on one device (``spread``: CV of tokens per local expert)."""
    return Shard(plan.micro_batch, seq_len, plan.tp, plan.cp, plan.sp, plan.expert_ep, plan.expert_tp,
                 plan.flash_attention, plan.a2a, ep_domains, dropped, spread, plan.moe_dispatch,
                 plan.capacity_factor, plan.pad_to_capacity)


def routing_spec(plan) -> RoutingSpec:
    """The routing load the plan asks for."""
    return RoutingSpec(plan.routing, plan.routing_param, plan.routing_histogram, plan.routing_seed,
                       plan.routing_samples, plan.capacity_factor, plan.redundant_experts, plan.placement_interval)


def moe_load(inp: StepInputs, places) -> LoadStats:
    """Expected routing load of one EP group for one micro-batch (1.0 for dense models)."""
    model, plan = inp.model, inp.plan
    if not model.is_moe:
        return LoadStats(1.0, 1.0, 0.0, 0.0)
    tokens = plan.micro_batch * inp.seq_len // plan.cp // plan.tp * plan.expert_ep
    return load_stats(routing_spec(plan), model, plan.expert_ep, max(1, tokens))


ZERO3_PREFETCH_LAYERS = 1
"""ZeRO-3 parameter gathers in flight ahead of the layer that needs them (Megatron-FSDP and
DeepSpeed prefetch the next layer's parameters while the current one computes)."""


def layer_spec(spec, moe: bool) -> ChunkSpec:
    """A one-layer chunk of the kind given (its parameters are one layer's)."""
    return ChunkSpec(spec.index, 0 if moe else 1, 1 if moe else 0, False, False, 0)


def dp_comms(inp: StepInputs, spec, prefix: str, kind: Collective, grad: bool) -> list[Comm]:
    """ZeRO-3 parameter gathers (``grad`` False) or DP gradient buckets (True) of ``spec``'s
    parameters: dense ones over the DP x CP group, expert ones over the expert-DP group."""
    model, plan = inp.model, inp.plan
    p = chunk_params(model, plan, spec)
    per = grad_bytes_per_param(plan) if grad else 2
    out = []
    edp = max(1, plan.tp * plan.cp * plan.dp // (plan.expert_ep * plan.expert_tp))
    for n, group, size in ((p.dense, "dp_cp", plan.dp * plan.cp), (p.expert, "edp", edp)):
        if n > 0:
            out.append(Comm(f"{prefix}_{group}", "dp", kind, group, size, n * per, overlappable=True))
    if grad and plan.redundant_experts and p.expert > 0 and plan.expert_ep > 1:
        # a replica and its original sum their gradients across the EP group (a pair all-reduce)
        copies = plan.redundant_experts / (inp.model.experts + plan.redundant_experts)
        out.append(Comm(f"{prefix}_replicas", "dp", "all_reduce", "ep", 2, copies * p.expert * per, overlappable=True))
    return out


def swap_comms(inp: StepInputs, sh: Shard, moe: bool, load_factor: float) -> tuple[list[Comm], list[Comm]]:
    """(swap-out, swap-in) of one layer's offloaded activations (``offload_activations`` /
    ``offload_modules``) over the host link; none when nothing is offloaded."""
    plan = inp.plan
    if not (plan.offload_activations or plan.offload_modules):
        return [], []
    off = offloaded_bytes(activation_terms(inp.model, plan, sh, moe, load_factor), plan)
    if off <= 0:
        return [], []
    return ([Comm(SWAP_OUT, "offload", "send_recv", "host", 2, off, overlappable=True)],
            [Comm(SWAP_IN, "offload", "send_recv", "host", 2, off, overlappable=True)])


def chunk_passes(inp: StepInputs, sh: Shard, spec, load_factor: float = 1.0,
                 dp_buckets: bool = False) -> tuple[Pass, Pass]:
    """Forward and backward (with recomputation) passes of one chunk for one micro-batch in program
    order; routed expert work and all-to-all sized for a device carrying ``load_factor`` x the mean
    load. Each layer starts with a ``layer_start`` marker; ZeRO-3 gathers each layer's parameters
    before its forward and again before its backward (and recompute); ``dp_buckets`` adds each
    layer's gradient reduction after its backward (the last micro-batch's backward). With
    activation offload every layer but the chunk's last swaps out after its forward and back in at
    the start of its backward (``swap_comms``)."""
    model, plan = inp.model, inp.plan
    zero3 = plan.zero >= 3 and plan.dp * plan.cp > 1
    red: Collective = "reduce_scatter" if plan.zero >= 1 else "all_reduce"
    fwd, bwd = Pass(), Pass()
    if spec.embedding:
        fwd.extend(embedding_pass(model, sh))
    layers = []
    for moe, count in ((False, spec.dense_layers), (True, spec.moe_layers)):
        if not count:
            continue
        lf = layer_forward(model, sh, moe, load_factor)
        lb = backward_pass(lf)
        rc = recompute_of(lf, plan.recompute, recompute_set(plan))
        one = layer_spec(spec, moe)
        gather = dp_comms(inp, one, "zero3_param_gather", "all_gather", False) if zero3 else []
        bucket = dp_comms(inp, one, "dp_grad_bucket", red, True) if dp_buckets else []
        s_out, s_in = swap_comms(inp, sh, moe, load_factor)
        for j in range(count):
            last = j == count - 1 and (moe or not spec.moe_layers)
            fwd.add(Marker(LAYER_START), *gather)
            fwd.extend(lf)
            if not last:
                fwd.add(*s_out)
            layers.append((rc, lb, gather + ([] if last else s_in), bucket))
    tail = Pass()
    for _ in range(spec.mtp):
        tail.extend(mtp_pass(model, sh))
    if spec.head:
        tail.extend(head_pass(model, sh))
    fwd.extend(tail)
    bwd.extend(backward_pass(tail))
    for rc, lb, gather, bucket in reversed(layers):
        bwd.add(Marker(LAYER_START), *gather)
        bwd.extend(rc)
        bwd.extend(lb)
        bwd.add(*bucket)
    if spec.embedding:
        bwd.extend(backward_pass(embedding_pass(model, sh)))
    if dp_buckets:
        extra = ChunkSpec(spec.index, 0, 0, spec.embedding, spec.head, spec.mtp)
        bwd.add(*dp_comms(inp, extra, "dp_grad_bucket", red, True))
    if plan.precision == "fp8":
        fwd, bwd = Pass(with_fp8_casts(fwd.items)), Pass(with_fp8_casts(bwd.items))
    return fwd, bwd


def with_fp8_casts(items: list) -> list:
    """Items with each GEMM's FP8 quantisation kernel just before it (``fp8_casts``)."""
    out = []
    for it in items:
        if isinstance(it, Op):
            out.extend(fp8_casts([it]))
        out.append(it)
    return out


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
    """Per-stage unit costs from the op-level event engine (``npusim.engine.unitcost``): forward and
    backward parts, p2p time, the input-/weight-gradient split for split schedules, the overlapped
    forward+backward pair of any two stages (``StageCost.pair``), and the DP gradient traffic
    left after the last backward (``dp_after_s``, contending with that backward's traffic)."""
    load = load or LoadStats(1.0, 1.0, 0.0, 0.0)
    sh = make_shard(inp.model, inp.plan, inp.seq_len, places["ep"].domains, load.dropped_fraction, load.expert_spread)
    p2p = Comm("pp_p2p", "pp", "send_recv", "pp", 2, sh.tokens * inp.model.hidden * ACT_BYTES / inp.plan.tp)
    p2p_s = collective_time(p2p, places["pp"], inp.hw) if inp.plan.pp > 1 else 0.0
    inter = interference(inp.hw)
    coster = UnitCoster(inp, places, sh, load.max_over_mean, cache)
    by_sig: dict[tuple, StageCost] = {}
    out = []
    for spec in specs:
        sig = (spec.dense_layers, spec.moe_layers, spec.embedding, spec.head, spec.mtp)
        if sig not in by_sig:
            fwd, bwd = chunk_passes(inp, sh, spec)
            flops = sum(o.flops for o in fwd.ops + bwd.ops if o.kind in ("gemm", "grouped_gemm", "attention"))
            roles = ("F", "B", "Bi", "W") if split_backward else ("F", "B")
            units = {r: coster.unit([(spec, r)]) for r in roles}
            dp_after = 0.0
            if inp.plan.overlap_grad_reduce and (places["dp_cp"].size > 1 or places["edp"].size > 1):
                _, with_dp = coster.unit([(spec, "Bdp")])
                dp_after = max(0.0, with_dp.duration_s - units["B"][1].duration_s) + with_dp.dp_tail_s
            extra = {}
            if split_backward:
                extra = {"backward_input": units["Bi"][0], "backward_weight": units["W"][0]}
            by_sig[sig] = StageCost(units["F"][0], units["B"][0], p2p_s, flops,
                                    matrix_fraction=matrix_fraction(fwd, bwd, inp, cache), interference=inter,
                                    hidden_s={r: hidden_of(u[1]) for r, u in units.items()},
                                    busy_s={r: dict(u[1].busy_s) for r, u in units.items()},
                                    spec=spec, dp_after_s=dp_after, pair_fn=partial(pair_unit, coster), **extra)
        out.append(by_sig[sig])
    return out


def pair_unit(coster: "UnitCoster", f_spec, b_spec, b_split: bool):
    """(parts, seconds, hidden comm, resource busy) of a forward of ``f_spec`` and a backward of
    ``b_spec`` run as one overlapped unit on the event engine."""
    parts, run = coster.unit([(f_spec, "F"), (b_spec, "Bi" if b_split else "B")])
    return parts, sum(parts.values()), hidden_of(run), dict(run.busy_s)


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
    return Pass([i for i in bwd.items if not (isinstance(i, Op) and "_wgrad" in i.name)]), Pass(w)


def weight_grad_bytes(inp: StepInputs, spec, load_factor: float = 1.0) -> float:
    """Bytes one micro-batch of a chunk keeps from its B until its W: each weight-gradient GEMM's
    input activation and output gradient (plan dependent)."""
    _, bwd = chunk_passes(inp, make_shard(inp.model, inp.plan, inp.seq_len), spec, load_factor)
    _, w = split_weight_grad(bwd)
    return sum(o.groups * o.k * (o.m + o.n) * ACT_BYTES for o in w.ops if o.kind in ("gemm", "grouped_gemm"))


def chunk_activation_terms(model, plan, spec, sh: Shard, load_factor: float = 1.0) -> dict[str, float]:
    """Activation bytes one micro-batch leaves on the device in a chunk for its backward, by module
    (``activation_terms``; plan dependent; routed expert activations sized for a device with
    ``load_factor`` x the mean load). Offloaded activations (every layer but the chunk's last) are
    ``offloaded`` (negative: on the host); the LM head's fp32 logits are ``head_logits``."""
    out: dict[str, float] = {}
    off = 0.0
    for moe, count in ((False, spec.dense_layers), (True, spec.moe_layers)):
        if not count:
            continue
        terms = activation_terms(model, plan, sh, moe, load_factor)
        for k, v in terms.items():
            out[k] = out.get(k, 0.0) + count * v
        if plan.offload_activations or plan.offload_modules:
            last = moe or not spec.moe_layers  # the chunk's last layer stays on the device
            off += (count - (1 if last else 0)) * offloaded_bytes(terms, plan)
    if spec.head:
        out["head_logits"] = sh.tokens * model.vocab / plan.tp * 4.0  # fp32 logits for the loss
    if off:
        out["offloaded"] = -off
    return out


def chunk_activation_bytes(model, plan, spec, sh: Shard, load_factor: float = 1.0) -> float:
    """Activation bytes one micro-batch leaves on the device in a chunk for its backward (plan
    dependent; routed expert activations sized for a device with ``load_factor`` x the mean load)."""
    act = spec.dense_layers * activation_bytes_per_layer(model, plan, sh, False) if spec.dense_layers else 0.0
    if spec.moe_layers:
        act += spec.moe_layers * activation_bytes_per_layer(model, plan, sh, True, load_factor)
    if spec.head:
        act += sh.tokens * model.vocab / plan.tp * 4.0  # fp32 logits for the loss
    if plan.offload_activations or plan.offload_modules:
        act += chunk_activation_terms(model, plan, spec, sh, load_factor).get("offloaded", 0.0)
    return act


def swap_buffer_bytes(model, plan, spec, sh: Shard, load_factor: float = 1.0) -> float:
    """Device memory for swapped activations in transit: two layers' worth (the layer whose
    backward runs and the one prefetched; in the forward, the swap-out in flight)."""
    if not (plan.offload_activations or plan.offload_modules):
        return 0.0
    per = [offloaded_bytes(activation_terms(model, plan, sh, moe, load_factor), plan)
           for moe, n in ((False, spec.dense_layers), (True, spec.moe_layers)) if n]
    return 2.0 * max(per, default=0.0)


def buffer_bytes(inp: StepInputs, spec, sh: Shard, load_factor: float = 1.0) -> dict[str, float]:
    """Transient device memory of a chunk (reported beside the peak, not in it): ``workspace`` = the
    largest GEMM output of a layer's forward or backward (16-bit), ``comm_buffers`` = the largest
    collective's send and receive buffers plus one DP gradient bucket."""
    fwd, bwd = chunk_passes(inp, sh, layer_spec(spec, spec.moe_layers > 0), load_factor)
    gemms = [o for o in fwd.ops + bwd.ops if o.kind in ("gemm", "grouped_gemm")]
    work = max((o.groups * o.m * o.n * ACT_BYTES for o in gemms), default=0.0)
    comms = [c.bytes for c in fwd.comms + bwd.comms if c.kind != "offload"]
    bucket = sum(c.bytes for c in dp_comms(inp, layer_spec(spec, spec.moe_layers > 0), "b", "all_reduce", True))
    return {"workspace": work, "comm_buffers": 2.0 * max(comms, default=0.0) + bucket}


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
        kind: Collective = "reduce_scatter" if plan.zero >= 1 else "all_reduce"
        red += collective_time(Comm("grad_reduce", "dp", kind, group, pl.size, n * g), pl, hw)
        if plan.zero in (1, 2):
            gather += collective_time(Comm("param_gather", "dp", "all_gather", group, pl.size, n * 2), pl, hw)
    return red, gather


ADAM_FLOPS_PER_PARAM = 12.0
"""FP32 operations of one Adam update per parameter (moments, bias correction, sqrt, divide, step)."""


def optimizer_time(inp: StepInputs, params_dense: float, params_expert: float, places) -> float:
    """Seconds of the Adam update on one device's shard of parameters (memory bound). With
    ``offload_optimizer`` = f, f of the shard is stepped on the host while the device steps the
    rest: the host part moves the gradients down (4 B) and the bf16 weights up (2 B) over the host
    link and is bound by the device's share of host DRAM bandwidth and CPU FLOPs (``node.host``)."""
    plan, hw = inp.plan, inp.hw
    dp_shard = places["dp_cp"].size if plan.zero >= 1 else 1
    edp_shard = places["edp"].size if plan.zero >= 1 else 1
    n = params_dense / dp_shard + params_expert / edp_shard
    f = plan.offload_optimizer
    nbytes = n * (1.0 - f) * OPTIMIZER_BYTES_PER_PARAM
    device_s = nbytes / (hw.chip.hbm_bandwidth_GBps * 1e9 * memory_efficiency(hw.derating, nbytes)) if nbytes else 0.0
    if f <= 0 or hw.node.host is None:
        return device_s
    return max(device_s, host_optimizer_time(hw, n * f))


def host_optimizer_time(hw, params: float) -> float:
    """Seconds to step ``params`` parameters of one device on the host: the slowest of the host
    link (gradients down, weights up, pipelined), the device's share of host DRAM and of CPU FLOPs."""
    host, d = hw.node.host, hw.derating
    share = 1.0 / hw.node.devices_per_node
    link_s = params * 6.0 / (host.link_GBps * 1e9 * d.host_link_fraction)
    mem_s = params * OPTIMIZER_BYTES_PER_PARAM / (host.memory_bandwidth_GBps * 1e9 * share * d.host_memory_fraction)
    cpu_s = params * ADAM_FLOPS_PER_PARAM / (host.cpu_tflops * 1e12 * share * d.host_memory_fraction)
    return max(link_s, mem_s, cpu_s)


def dp_tail(trace, chunk_reduce: dict[int, float], overlap: bool) -> float:
    """Seconds the DP gradient reduction runs past the rank's last backward."""
    if not chunk_reduce:
        return 0.0
    if not overlap:
        return sum(chunk_reduce.values())
    t = 0.0
    for c in sorted(chunk_reduce, key=lambda c: trace.last_backward_end_s.get(c, 0.0)):
        # What the buckets leave after the chunk's last backward queues on the serial DP stream.
        t = max(t, trace.last_backward_end_s.get(c, 0.0)) + chunk_reduce[c]
    return max(0.0, t - trace.finish_s)
