"""FLOP counts: npusim's model-FLOP convention and the published formulas (plan independent)."""
from __future__ import annotations


def attention_flops_per_token(model, seq_len: int, causal: bool = True) -> float:
    """Forward FLOPs of the score and context matmuls per token, summed over layers."""
    if model.attention == "mla":
        m = model.mla
        d_qk, d_v = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    else:
        d_qk = d_v = model.d_head
    ctx = seq_len * (0.5 if causal else 1.0)
    per_layer = 2.0 * model.heads * (d_qk + d_v) * ctx
    if model.sliding_window and model.sliding_window_every:
        local = 2.0 * model.heads * (d_qk + d_v) * min(model.sliding_window, ctx)
        frac = 1.0 / model.sliding_window_every
        per_layer = (1 - frac) * per_layer + frac * local
    return per_layer * model.layers


def model_flops_per_token(model, seq_len: int, causal: bool = True) -> float:
    """Training model FLOPs per token: 3 x (2 x activated matmul params + attention), no recompute."""
    return 3.0 * (2.0 * model.activated_matmul_params() + attention_flops_per_token(model, seq_len, causal))


def megatron_eq3_flops(model, global_batch: int, seq_len: int) -> float:
    """Narayanan et al. Eq. 3 per iteration (full recompute, non-causal): 96 B s l h^2 (1 + s/6h + V/16lh)."""
    B, s, l, h, V = global_batch, seq_len, model.layers, model.hidden, model.vocab
    return 96.0 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))


def korthikanti_eq7_flops(model, global_batch: int, seq_len: int) -> float:
    """Korthikanti et al. Eq. 7 model FLOPs per iteration: 72 B s l h^2 (1 + s/6h + V/12lh)."""
    B, s, l, h, V = global_batch, seq_len, model.layers, model.hidden, model.vocab
    return 72.0 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h))


def palm_flops_per_token(model, seq_len: int) -> float:
    """PaLM Appendix B: 6N + 12 L H Q T per token (N = activated params, non-causal attention)."""
    hq = model.heads * (model.d_head if model.attention != "mla" else model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim)
    return 6.0 * model.activated_params() + 12.0 * model.layers * hq * seq_len


CONVENTIONS = ("npusim", "megatron", "palm")


def flops_per_token(model, seq_len: int, convention: str = "npusim") -> float:
    """Model FLOPs per token under a named convention ('npusim', 'megatron' (Eq. 7 form), 'palm')."""
    if convention == "npusim":
        return model_flops_per_token(model, seq_len)
    if convention == "megatron":
        return korthikanti_eq7_flops(model, 1, seq_len) / seq_len
    if convention == "palm":
        return palm_flops_per_token(model, seq_len)
    raise ValueError(f"unknown FLOP convention {convention!r}; allowed: {', '.join(CONVENTIONS)}")
