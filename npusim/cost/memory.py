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
        per_layer = model.experts * model.ffn_params(model.expert_ffn_hidden) / (plan.expert_ep * plan.expert_tp)
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
    """Weights, gradients and optimizer states in bytes for the given parameter counts."""
    z = plan.zero
    w = 2.0
    g = grad_bytes_per_param(plan)
    opt = (12.0 if plan.master_weights == "fp32" else 8.0)
    def shard(n: float, k: int, on: bool) -> float:
        return n / k if on else n
    return {
        "weights": w * (shard(dense, dp_shard, z >= 3) + shard(expert, edp_shard, z >= 3)),
        "gradients": g * (shard(dense, dp_shard, z >= 2) + shard(expert, edp_shard, z >= 2)),
        "optimizer": opt * (shard(dense, dp_shard, z >= 1) + shard(expert, edp_shard, z >= 1)),
    }


def activation_bytes_per_layer(model, plan, sh, moe: bool, load_factor: float = 1.0) -> float:
    """Activation bytes one layer stores for backward, for one micro-batch on one device (routed
    expert activations scaled by the device's routing ``load_factor``)."""
    h, t, T = model.hidden, plan.tp, sh.tokens
    sp_div = t if plan.sp else 1
    if plan.recompute == "full":
        return 2.0 * T * h / sp_div
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
    # Norm input, QKV input and dropout mask sit in the SP region; Q, K, V and the out-proj input are TP-split.
    attn = (2 * h + g * h + h) / sp_div + (2 * (q + kv) + g * dv + 2 * latent) / t
    if not plan.flash_attention and plan.recompute != "selective":
        attn += 5.0 * model.heads * sh.seq_len / t
    norm_mlp_in = (2 * h + g * h + h) / sp_div
    if moe:
        fe = model.expert_ffn_hidden
        up = 2 if model.mlp == "swiglu" else 1
        routed = load_factor * model.top_k * (g * h + 2 * up * fe + g * fe) / t
        shared = 0.0
        if model.shared_experts:
            sw = model.shared_experts * fe
            shared = (g * h + 2 * up * sw + g * sw) / t
        mlp = norm_mlp_in + routed + shared + model.experts * 4 / t
    else:
        f = model.ffn_hidden
        up = 2 if model.mlp == "swiglu" else 1
        mlp = norm_mlp_in + (2 * up * f + g * f) / t
    return T * (attn + mlp)
