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


def routed_expert_flops_per_token(model, convention: str = "npusim") -> float:
    """The part of the model FLOPs per token spent in routed (top-k) experts: 3 x 2 x their activated
    matmul parameters for 'npusim' and 'palm'; 0 for 'megatron' (its formula has no experts)."""
    if not model.is_moe or convention == "megatron":
        return 0.0
    return 6.0 * model.n_moe_layers * model.top_k * model.ffn_params(model.expert_ffn_hidden)


def flops_per_token(model, seq_len: int, convention: str = "npusim", dropped_fraction: float = 0.0) -> float:
    """Model FLOPs per token under a named convention ('npusim', 'megatron' (Eq. 7 form), 'palm').

    ``dropped_fraction``: share of routed token-slots a capacity factor drops; their expert FLOPs do
    not run, so they are not model FLOPs (the routed-expert part is scaled by 1 - dropped_fraction)."""
    if convention == "npusim":
        full = model_flops_per_token(model, seq_len)
    elif convention == "megatron":
        full = korthikanti_eq7_flops(model, 1, seq_len) / seq_len
    elif convention == "palm":
        full = palm_flops_per_token(model, seq_len)
    else:
        raise ValueError(f"unknown FLOP convention {convention!r}; allowed: {', '.join(CONVENTIONS)}")
    if dropped_fraction > 0:
        full -= min(1.0, dropped_fraction) * routed_expert_flops_per_token(model, convention)
    return full
