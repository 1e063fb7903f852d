"""What a serving instance holds and where its collectives run: the resolved serving plan, the
per-device split of a forward and its routing load, memory per device and the view of the profile
that the collective model sees (the host topology of PCIe cards)."""
from __future__ import annotations

from npusim.config.errors import ConfigError
from npusim.config.hardware import ScaleOutSpec
from npusim.engine.step import routing_spec
from npusim.workload.layers import ACT_BYTES
from npusim.workload.routing import LoadStats
from npusim.workload.serving import (WEIGHT_BYTES, ServeShard, expert_slots, kv_bytes, kv_elems_per_token,
                                     serving_load, weight_bytes)

WORKSPACE_TENSORS = 8
"""Activation tensors of one layer's width alive at once per token in a forward (input, norm
output, q/k/v, attention output, residual, MLP input): the working buffer of a serving forward."""


def comm_view(hw, instance_devices: int):
    """The profile as the collective model should see it for an instance of ``instance_devices``
    devices (plan dependent): where devices hang off several host CPUs (``node.devices_per_cpu``,
    e.g. an Atlas 300I Duo host: 4 chips per CPU) and the instance fits in one server, the CPU's
    chips form the scale-up domain and traffic between CPUs is the next tier, at the profile's
    ``cross_cpu_GBps`` and ``cross_cpu_latency_us``. Otherwise the profile unchanged."""
    node = hw.node
    per_cpu = node.devices_per_cpu
    if per_cpu is None or per_cpu >= node.devices_per_node or instance_devices > node.devices_per_node:
        return hw
    cross = ScaleOutSpec.model_construct(
        nics_per_device=1.0, nic_bandwidth_GBps=node.cross_cpu_GBps, latency_us=node.cross_cpu_latency_us,
        topology="clos", oversubscription=1.0, nodes_per_leaf=node.devices_per_node // per_cpu,
        source=f"host view of {hw.name}: devices of different CPUs (node.cross_cpu_GBps)")
    su = node.scale_up.model_copy(update={"domain_devices": None})
    return hw.model_copy(update={"node": node.model_copy(update={"devices_per_node": per_cpu, "scale_up": su}),
                                 "cluster": cross})


def weight_params(model, plan) -> float:
    """Weight elements one device stores (plan dependent): its layers' attention by TP, its expert
    copies (redundant ones included) by expert TP, shared experts by shared TP, the router, and
    its share of the embedding and LM head."""
    layers = -(-model.layers // plan.pp)
    attn = model.attention_params() / plan.tp + model.norm_params()
    if model.is_moe:
        slots = expert_slots(model.experts, plan.redundant_experts, plan.ep)
        experts = slots * model.ffn_params(model.expert_ffn_hidden) / plan.etp
        stp = plan.shared_tp or plan.tp
        shared = model.ffn_params(model.shared_experts * model.expert_ffn_hidden) / stp if model.shared_experts else 0.0
        ffn = experts + shared + model.hidden * model.experts
    else:
        ffn = model.ffn_params(model.ffn_hidden) / plan.tp
    embed = model.vocab * model.hidden / plan.tp * (1 if model.tied_embeddings else 2) / plan.pp
    return layers * (attn + ffn) + embed


def serving_memory(model, plan, wl, seqs_per_device_group: int) -> dict[str, float]:
    """Bytes per device (plan dependent): weights at their stored dtype, the KV cache of this
    device's attention group, and the working buffer of the tokens this device holds in a forward
    (its own group's; plus the gathered instance tokens with all-gather MoE dispatch)."""
    layers = -(-model.layers // plan.pp)
    kv = seqs_per_device_group * wl.kv_len * layers * kv_elems_per_token(model, plan.tp) * kv_bytes(plan)
    own = seqs_per_device_group * wl.query_tokens
    gathered = own * plan.dp if model.is_moe and plan.moe_dispatch == "allgather" else 0
    work = (own * WORKSPACE_TENSORS + 2 * gathered) * model.hidden * ACT_BYTES
    return {"weights": weight_params(model, plan) * weight_bytes(plan), "kv_cache": kv, "workspace": work}


def resolve_serving_plan(plan, model, devices: int, batch: int, source: str = "--plan"):
    """Derive dp and check a serving plan; one-line ConfigError on any violation."""
    def bad(field, value, problem, allowed=""):
        return ConfigError(source, field, value, problem, allowed)

    if plan.cp != 1:
        raise bad("cp", plan.cp, "context parallelism is not modelled for serving", "1")
    mp = plan.tp * plan.pp
    dp = plan.dp or (devices // mp if devices % mp == 0 else 0)
    if dp == 0 or mp * dp != devices:
        raise bad("devices", devices, f"not equal to tp*pp*dp (tp*pp = {mp})", f"a multiple of {mp}")
    if model.heads % plan.tp:
        raise bad("tp", plan.tp, f"does not divide heads ({model.heads})", "a divisor of the head count")
    if batch % dp:
        raise bad("batch", batch, f"not divisible by the attention data-parallel size dp = {dp}", f"a multiple of {dp}")
    if model.layers < plan.pp:
        raise bad("pp", plan.pp, f"more stages than layers ({model.layers})", f"<= {model.layers}")
    group = plan.tp * dp
    etp = plan.etp or 1
    if WEIGHT_BYTES[plan.weight_dtype if plan.weight_dtype != "auto" else "int8"] > WEIGHT_BYTES[plan.precision] and not plan.weight_only:
        raise bad("weight_dtype", plan.weight_dtype, f"wider than the GEMM precision ({plan.precision})",
                  "int4, int8 or fp8 with precision=int8/fp8; any with 16-bit precision")
    if plan.ep_overlap and plan.moe_dispatch != "alltoall":
        raise bad("ep_overlap", 1, "two-batch overlap hides the all-to-all dispatch", "moe_dispatch=alltoall")
    if model.is_moe:
        slots = model.experts + plan.redundant_experts
        if slots % plan.ep:
            raise bad("ep", plan.ep, f"does not divide experts + redundant_experts ({model.experts} + "
                      f"{plan.redundant_experts})", "a divisor, or redundant_experts filling the EP group")
        if group % (plan.ep * etp):
            raise bad("ep", plan.ep, f"ep*etp = {plan.ep * etp} does not divide tp*dp = {group}", "ep*etp dividing tp*dp")
        if model.expert_ffn_hidden % etp:
            raise bad("etp", etp, f"does not divide expert_ffn_hidden ({model.expert_ffn_hidden})")
        stp = plan.shared_tp or plan.tp
        if model.shared_experts and (group % stp or (model.shared_experts * model.expert_ffn_hidden) % stp):
            raise bad("shared_tp", stp, f"must divide tp*dp ({group}) and the shared width", "a divisor of both")
    elif plan.ep > 1:
        raise bad("ep", plan.ep, "a dense model has no experts", "1")
    return plan.model_copy(update={"dp": dp, "etp": etp})


def serve_shard(model, plan, wl, seqs: int) -> ServeShard:
    """The per-device split of one forward pass of ``seqs`` sequences per attention-DP group, with
    the busiest EP device's routing load."""
    q = wl.query_tokens
    int8 = plan.precision in ("int8", "fp8")
    sh = ServeShard(seqs=seqs, q_tokens=q, ctx=wl.input_len, prefill=wl.kind == "prefill", tp=plan.tp, dp=plan.dp,
                    ep=plan.ep, etp=plan.etp, shared_tp=plan.shared_tp, sp=plan.sp,
                    allgather_moe=plan.moe_dispatch == "allgather", w_bytes=weight_bytes(plan),
                    kv_bytes=kv_bytes(plan), quantize_activations=int8 and not plan.weight_only,
                    expert_slots=expert_slots(model.experts, plan.redundant_experts, plan.ep) if model.is_moe else 0,
                    bidirectional=wl.block_size > 0)
    if not model.is_moe:
        return sh
    return ServeShard(**{**sh.__dict__, "load_factor": shard_load(model, plan, sh).max_over_mean})


def shard_load(model, plan, sh: ServeShard) -> LoadStats:
    """Routing load of the EP group for the tokens one forward of ``sh`` routes (plan dependent):
    the instance's tokens with all-gather dispatch, else each TP rank's slice times ep."""
    if not model.is_moe:
        return LoadStats(1.0, 1.0, 0.0, 0.0)
    routed = sh.instance_tokens if sh.allgather_moe else max(1, -(-sh.tokens // plan.tp)) * plan.ep
    return serving_load(routing_spec(plan), model.experts, model.top_k, model.expert_groups, plan.ep, routed)
