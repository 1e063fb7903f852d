"""Per-device memory: weights, gradients, optimizer states and activations (plan dependent)."""
from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True)
class ChunkParams:
    """Parameters one device holds for one pipeline chunk."""

    dense: float
    """Replicated over DP (and CP): attention, dense FFN, shared experts, norms, embeddings."""
    expert: float
    """Routed-expert weights, replicated over the expert-data-parallel group."""


def chunk_params(model, plan, spec) -> ChunkParams:
    """Parameters per device of a chunk (divided by tp / ep*etp)."""
    t = plan.tp
    attn = model.attention_params() / t + model.norm_params()
    dense = spec.layers * attn + spec.dense_layers * model.ffn_params(model.ffn_hidden or 0) / t
    expert = 0.0
    if model.is_moe and spec.moe_layers:
        shared = model.ffn_params(model.shared_experts * model.expert_ffn_hidden) / t if model.shared_experts else 0.0
        dense += spec.moe_layers * (shared + model.hidden * model.experts)
        # redundant experts: extra copies spread over the EP group (weights, grads and states)
        per_layer = ((model.experts + plan.redundant_experts) * model.ffn_params(model.expert_ffn_hidden)
                     / (plan.expert_ep * plan.expert_tp))
        expert = spec.moe_layers * per_layer
    vh = model.vocab * model.hidden / t
    if spec.embedding:
        dense += vh
    if spec.head and (not model.tied_embeddings or not spec.embedding):
        dense += vh + model.hidden
    if spec.mtp:
        mtp_moe = model.experts * model.ffn_params(model.expert_ffn_hidden) / (plan.expert_ep * plan.expert_tp) if model.is_moe else 0.0
        dense += spec.mtp * (model.mtp_params() - (model.experts * model.ffn_params(model.expert_ffn_hidden) if model.is_moe else 0)) / t
        expert += spec.mtp * mtp_moe
    return ChunkParams(dense, expert)


def grad_bytes_per_param(plan) -> int:
    """Bytes of one gradient element: fp32 main grads for bf16/fp8 (Megatron), fp16 otherwise."""
    return 2 if plan.precision == "fp16" and plan.master_weights == "fp32" else 4


def state_bytes(plan, dense: float, expert: float, dp_shard: int, edp_shard: int) -> dict[str, float]:
    """Weights, gradients and optimizer states in bytes on the device for the given parameter counts
    (``offload_optimizer`` of the optimizer states live in host memory instead)."""
    z = plan.zero
    w = 2.0
    g = grad_bytes_per_param(plan)
    opt = (12.0 if plan.master_weights == "fp32" else 8.0) * (1.0 - getattr(plan, "offload_optimizer", 0.0))
    def shard(n: float, k: int, on: bool) -> float:
        return n / k if on else n
    return {
        "weights": w * (shard(dense, dp_shard, z >= 3) + shard(expert, edp_shard, z >= 3)),
        "gradients": g * (shard(dense, dp_shard, z >= 2) + shard(expert, edp_shard, z >= 2)),
        "optimizer": opt * (shard(dense, dp_shard, z >= 1) + shard(expert, edp_shard, z >= 1)),
    }


RECOMPUTE_FREES: dict[str, tuple[str, ...]] = {
    "core_attn": ("core_attn",),
    "layernorm": ("layernorm",),
    "mla_up_proj": ("qkv",),
    "moe_act": ("moe_act",),
    "mlp": ("mlp",),
    "moe": ("moe_experts", "moe_act", "permute", "router", "shared_experts"),
    "shared_experts": ("shared_experts",),
    "permute": ("permute",),
}
"""Activation terms (``activation_terms``) each recompute module drops."""


def recompute_set(plan) -> frozenset[str]:
    """Recompute modules in force: ``recompute_modules``, else core_attn for ``recompute=selective``
    (Megatron-Core's default selective recompute), else none (full recompute is separate)."""
    if plan.recompute == "full":
        return frozenset()
    if plan.recompute_modules:
        return frozenset(plan.recompute_modules)
    return frozenset(("core_attn",)) if plan.recompute == "selective" else frozenset()


def activation_terms(model, plan, sh, moe: bool, load_factor: float = 1.0) -> dict[str, float]:
    """Activation bytes one layer stores for backward by module, for one micro-batch on one device
    (Korthikanti et al. 2022, Table 2 terms; routed-expert terms scaled by the device's routing
    ``load_factor``). Recompute modules in force (``recompute_set``) drop their terms; full recompute
    keeps only the layer input (``checkpoint``)."""
    h, t, T = model.hidden, plan.tp, sh.tokens
    sp_div = t if plan.sp else 1
    if plan.recompute == "full":
        return {"checkpoint": 2.0 * T * h / sp_div}
    if model.attention == "mla":
        m = model.mla
        q = model.heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
        kv = q + model.heads * m.v_head_dim
        dv = model.heads * m.v_head_dim
        latent = (m.q_lora_rank or 0) + m.kv_lora_rank
    else:
        q = model.heads * model.d_head
        kv = 2 * model.n_kv_heads * model.d_head
        dv = model.heads * model.d_head
        latent = 0
    # GEMM inputs are saved in the GEMM's precision: 1 byte under FP8 (Transformer Engine keeps the
    # quantised copy for the weight gradient), else 2. Norm inputs, Q/K/V and activations stay 16-bit.
    g = 1 if plan.precision == "fp8" else 2
    # Per token. SP region: both norms' inputs (2 B), their outputs = QKV / MLP input (g B), both
    # dropout masks (1 B); TP region: Q, K, V, latents, out-proj input, MLP internals.
    terms = {"norm_inputs": 4 * h / sp_div, "layernorm": 2 * g * h / sp_div, "dropout_masks": 2 * h / sp_div,
             "qkv": 2 * (q + kv) / t, "attn_out": g * dv / t}
    if latent:
        terms["mla_latent"] = 2 * latent / t
    if not plan.flash_attention:
        terms["core_attn"] = 5.0 * model.heads * sh.seq_len / t  # scores, softmax, dropout mask
    up = 2 if model.mlp == "swiglu" else 1
    if moe:
        fe = model.expert_ffn_hidden
        k = load_factor * model.top_k
        terms.update(permute=k * g * h / t, moe_experts=k * 2 * up * fe / t, moe_act=k * g * fe / t,
                     router=model.experts * 4 / t)
        if model.shared_experts:
            sw = model.shared_experts * fe
            terms["shared_experts"] = (g * h + 2 * up * sw + g * sw) / t
    else:
        f = model.ffn_hidden
        terms["mlp"] = (2 * up * f + g * f) / t
    drop: set[str] = set()
    for mod in recompute_set(plan):
        if mod == "mla_up_proj" and model.attention != "mla":
            continue
        drop.update(RECOMPUTE_FREES[mod])
    return {k: T * v for k, v in terms.items() if k not in drop}


def activation_bytes_per_layer(model, plan, sh, moe: bool, load_factor: float = 1.0) -> float:
    """Activation bytes one layer stores for backward, for one micro-batch on one device (routed
    expert activations scaled by the device's routing ``load_factor``)."""
    return sum(activation_terms(model, plan, sh, moe, load_factor).values())


def offloaded_bytes(terms: dict[str, float], plan) -> float:
    """Bytes of one layer's ``terms`` swapped to host: ``offload_modules``' terms whole plus
    ``offload_activations`` of the rest."""
    whole = {t for m in plan.offload_modules for t in RECOMPUTE_FREES[m]}
    mods = sum(v for k, v in terms.items() if k in whole)
    return mods + plan.offload_activations * (sum(terms.values()) - mods)
