"""What a serving instance holds and where its collectives run: memory per device and the view of
the profile that the collective model sees (the host topology of PCIe cards)."""
from __future__ import annotations

from npusim.config.hardware import ScaleOutSpec
from npusim.workload.layers import ACT_BYTES
from npusim.workload.serving import expert_slots, kv_bytes, kv_elems_per_token, weight_bytes

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
