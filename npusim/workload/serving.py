"""Lower one transformer layer's forward pass for serving (prefill or decode) to per-device ops.

Layout: attention runs as ``dp`` groups of ``tp`` devices (each group owns batch/dp sequences);
routed experts are spread over ep x etp devices of the instance; shared experts over ``shared_tp``
devices. With ``moe_dispatch=allgather`` every device receives all the instance's tokens before
the MoE block and a reduce-scatter returns them (the Pangu Pro MoE H2P scheme); otherwise tokens
move by EP all-to-all. ``sp`` rewrites the TP all-reduce as reduce-scatter + all-gather.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from npusim.workload.layers import ACT_BYTES, active_experts, elementwise, gemm
from npusim.workload.ops import Comm, Op, Pass
from npusim.workload.routing import (LoadStats, RoutingSpec, apply_capacity, device_loads, expert_popularity,
                                     per_group_counts, sample_expert_tokens)

WEIGHT_BYTES = {"int4": 0.5, "int8": 1.0, "fp8": 1.0, "bf16": 2.0, "fp16": 2.0}
"""Bytes per stored weight element by dtype."""
KV_BYTES = {"bf16": 2, "fp16": 2, "int8": 1}
"""Bytes per KV-cache element by dtype ('auto' is 16-bit: ``kv_bytes``)."""


def weight_bytes(plan) -> float:
    """Bytes per stored weight (plan dependent): ``weight_dtype`` when given, else 1 for int8 / fp8
    GEMMs and W8A16 (``weight_only``), 2 for 16-bit GEMMs."""
    if plan.weight_dtype != "auto":
        return WEIGHT_BYTES[plan.weight_dtype]
    return WEIGHT_BYTES[plan.precision]


def kv_bytes(plan) -> int:
    """Bytes per KV-cache element (plan dependent): the plan's choice; 'auto' is 16-bit at every
    batch, so time per token never falls as the batch grows (an int8 cache is an explicit choice)."""
    return KV_BYTES.get(plan.kv_precision, ACT_BYTES)


def expert_slots(experts: int, redundant: int, ep: int) -> int:
    """Expert copies one device of an EP group holds: (experts + redundant copies) / ep."""
    return -(-(experts + redundant) // ep)


def routed_counts(spec: RoutingSpec, experts: int, top_k: int, groups: int, tokens: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Tokens per expert of one forward of ``tokens`` tokens. A grouped (MoGE) router picks
    top_k/groups experts in every group whatever the experts' popularity, so every group gets exactly
    its share and the scheme's popularity only spreads it inside the group; other routers draw from
    the scheme (``npusim.workload.routing.sample_expert_tokens``)."""
    if spec.scheme in ("balanced", "grouped") or groups <= 1 or top_k % groups or experts % groups:
        return sample_expert_tokens(spec, experts, top_k, groups, tokens, rng)
    return per_group_counts(expert_popularity(spec, experts, rng), groups, tokens * (top_k // groups), rng)


@lru_cache(maxsize=4096)
def serving_load(spec: RoutingSpec, experts: int, top_k: int, groups: int, ep: int, tokens: int) -> LoadStats:
    """Expected routing load of an EP group of ``ep`` devices for one forward of ``tokens`` tokens
    (seeded samples of ``npusim.workload.routing``): busiest and idlest device over the mean, the
    dropped fraction and the imbalance score (max - min) / tokens. Experts sit contiguously, padded
    with empty slots up to a multiple of ``ep``; ``spec.redundant_experts`` hot copies go greedily
    to the least-loaded devices (how EP72 serves 256 experts with 32 redundant ones)."""
    if ep <= 1 or tokens <= 0:
        return LoadStats(1.0, 1.0, 0.0, 0.0)
    pad = -(-experts // ep) * ep - experts
    rng = np.random.default_rng(spec.seed)
    mx, mn, drop, score = [], [], [], []
    for _ in range(1 if spec.scheme == "balanced" else spec.samples):
        counts, d = apply_capacity(routed_counts(spec, experts, top_k, groups, tokens, rng), spec.capacity_factor)
        loads = device_loads(np.concatenate([counts, np.zeros(pad)]), ep, spec.redundant_experts)
        mean = loads.mean()
        mx.append(loads.max() / mean if mean > 0 else 1.0)
        mn.append(loads.min() / mean if mean > 0 else 1.0)
        drop.append(d)
        score.append((loads.max() - loads.min()) / tokens)
    return LoadStats(float(np.mean(mx)), float(np.mean(mn)), float(np.mean(drop)), float(np.mean(score)))


def moe_load_factor(spec: RoutingSpec, experts: int, top_k: int, groups: int, ep: int, tokens: int) -> float:
    """Expected busiest-device / mean routed tokens over an EP group (``serving_load``)."""
    return serving_load(spec, experts, top_k, groups, ep, tokens).max_over_mean


@dataclass(frozen=True)
class ServeShard:
    """How one forward pass is split on one device (plan and workload dependent)."""

    seqs: int
    """Sequences of this device's attention-DP group."""
    q_tokens: int
    """Tokens per sequence in this forward (prompt length, 1, 1 + drafts, or a block)."""
    ctx: int
    """KV context each query attends to (decode: cached tokens; prefill: the prompt)."""
    prefill: bool
    tp: int
    dp: int
    ep: int
    etp: int
    shared_tp: int
    sp: bool
    allgather_moe: bool
    w_bytes: float
    """Bytes per weight element (1 for int8 / fp8, 0.5 for int4)."""
    kv_bytes: int
    quantize_activations: bool
    """W8A8: each GEMM input is quantised to int8 by a vector kernel."""
    expert_slots: int = 0
    """Expert copies on one device (0 = experts / ep); more than that with redundant experts."""
    load_factor: float = 1.0
    """Busiest device's routed tokens / the mean (routing load, ``moe_load_factor``)."""
    bidirectional: bool = False
    """Block (diffusion) decoding: the queries of a block attend to each other both ways."""

    @property
    def tokens(self) -> int:
        """Tokens of this device's attention group in this forward."""
        return self.seqs * self.q_tokens

    @property
    def instance_tokens(self) -> int:
        """Tokens of the whole instance (all attention-DP groups)."""
        return self.tokens * self.dp


def _gemm(sh: ServeShard, name: str, m: int, n: int, k: int, groups: int = 1) -> list[Op]:
    """A weight GEMM, preceded by its activation quantisation under W8A8."""
    ops = [gemm(name, m, n, k, groups=groups, w_bytes=sh.w_bytes)]
    if sh.quantize_activations:
        ops.insert(0, Op(f"{name}_quant", "memory", m * k * groups, m * k * groups * 3.0))
    return ops


def kv_elems_per_token(model, tp: int) -> int:
    """KV-cache elements one device stores per token per layer (heads split over TP; MLA's latent
    is shared by all heads and replicated on every TP rank)."""
    if model.attention == "mla":
        return model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
    return 2 * max(1, model.n_kv_heads // tp) * model.d_head


def serve_attention(model, sh: ServeShard) -> Pass:
    """Norm, projections, attention over the KV cache, output projection and its TP collective."""
    h, T, t = model.hidden, sh.tokens, sh.tp
    p = Pass([elementwise("input_norm", T * h, passes=2.0, flops_per_elem=4)])
    hl = model.heads // t
    if model.attention == "mla":
        m = model.mla
        dqk, dv = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
        if m.q_lora_rank:
            p.add(*(_gemm(sh, "q_down", T, m.q_lora_rank, h) + _gemm(sh, "q_up", T, hl * dqk, m.q_lora_rank)))
        else:
            p.add(*(_gemm(sh, "q_proj", T, hl * dqk, h)))
        p.add(*(_gemm(sh, "kv_down", T, m.kv_lora_rank + m.qk_rope_head_dim, h)))
        p.add(*(_gemm(sh, "kv_up", T, hl * (m.qk_nope_head_dim + dv), m.kv_lora_rank)))
    else:
        dqk = dv = model.d_head
        kvl = max(1, model.n_kv_heads // t)
        p.add(*(_gemm(sh, "qkv_proj", T, (hl + 2 * kvl) * dqk, h)))
    kv_tok = kv_elems_per_token(model, t)
    p.add(Op("kv_write", "memory", 0.0, T * kv_tok * sh.kv_bytes))
    # Causal: a query sees half the new tokens on average; a bidirectional block sees all of them.
    ctx = sh.q_tokens / 2.0 if sh.prefill else sh.ctx + sh.q_tokens * (1.0 if sh.bidirectional else 0.5)
    flops = 2.0 * T * hl * ctx * (dqk + dv)
    kv_read = sh.seqs * (sh.ctx if not sh.prefill else sh.q_tokens) * kv_tok * sh.kv_bytes
    p.add(Op("attention", "attention", flops, kv_read + T * hl * (dqk + dv) * ACT_BYTES,
                    seq=max(sh.ctx, sh.q_tokens)))
    p.add(*(_gemm(sh, "out_proj", T, h, hl * dv)))
    p.add(*_tp_reduce(sh, "tp_attn_out", T * h))
    p.add(elementwise("residual", T * h, passes=3.0))
    return p


def _tp_reduce(sh: ServeShard, name: str, elems: float) -> list[Comm]:
    """TP all-reduce after a row-parallel GEMM, or reduce-scatter + all-gather with ``sp``."""
    if sh.tp <= 1:
        return []
    buf = elems * ACT_BYTES
    if sh.sp:
        return [Comm(f"{name}_rs", "tp", "reduce_scatter", "tp", sh.tp, buf),
                Comm(f"{name}_ag", "tp", "all_gather", "tp", sh.tp, buf)]
    return [Comm(name, "tp", "all_reduce", "tp", sh.tp, buf)]


def serve_dense_mlp(model, sh: ServeShard) -> Pass:
    """Norm and dense FFN (TP split) with its TP collective."""
    h, T = model.hidden, sh.tokens
    w = model.ffn_hidden // sh.tp
    up = w * (2 if model.mlp == "swiglu" else 1)
    p = Pass([elementwise("post_norm", T * h, passes=2.0, flops_per_elem=4)])
    p.add(*(_gemm(sh, "mlp_up", T, up, h)))
    p.add(elementwise("mlp_act", T * w, passes=3.0, flops_per_elem=8))
    p.add(*(_gemm(sh, "mlp_down", T, h, w)))
    p.add(*_tp_reduce(sh, "tp_mlp_out", T * h))
    return p


def serve_moe(model, sh: ServeShard) -> Pass:
    """Router, token exchange, grouped expert GEMMs on this device, shared experts, exchange back."""
    h = model.hidden
    group = sh.tp * sh.dp
    T_in = sh.instance_tokens if sh.allgather_moe else sh.tokens
    p = Pass([elementwise("post_norm", sh.tokens * h, passes=2.0, flops_per_elem=4)])
    p.add(*(_gemm(sh, "router", sh.tokens, model.experts, h)))
    # All-to-all: the TP ranks of an attention group split its tokens (after the reduce-scatter), and
    # every slice of an expert split etp ways sees all of that expert's tokens.
    T_disp = max(1, -(-sh.tokens // sh.tp))
    slots = T_disp * model.top_k * h * ACT_BYTES
    if sh.allgather_moe and group > 1:
        p.add(Comm("moe_allgather", "ep", "all_gather", "instance", group, sh.instance_tokens * h * ACT_BYTES))
    elif sh.ep > 1 or sh.etp > 1:
        if sh.ep > 1:
            p.add(Comm("ep_dispatch", "ep", "all_to_all", "ep", sh.ep, slots))
        if sh.etp > 1:
            p.add(Comm("etp_gather", "ep", "all_gather", "etp", sh.etp, slots * sh.etp))
    local = sh.expert_slots or model.experts // sh.ep
    # Tokens the busiest device's experts process: the instance's routed slots / ep (all-gather), or
    # its own dispatched slots times the expert-TP slices that share each expert (all-to-all),
    # times the routing load of the busiest device.
    routed = (T_in * model.top_k / sh.ep if sh.allgather_moe else T_disp * model.top_k * sh.etp) * sh.load_factor
    active = max(1, round(active_experts(local, routed)))
    per_expert = max(1, round(routed / active))
    width = model.expert_ffn_hidden // sh.etp
    up = width * (2 if model.mlp == "swiglu" else 1)
    p.add(elementwise("permute", routed * h, passes=2.0))
    p.add(*(_gemm(sh, "expert_up", per_expert, up, h, groups=active)))
    p.add(elementwise("expert_act", per_expert * active * width, passes=3.0, flops_per_elem=8))
    p.add(*(_gemm(sh, "expert_down", per_expert, h, width, groups=active)))
    p.add(elementwise("unpermute", routed * h, passes=2.0))
    if model.shared_experts:
        stp = sh.shared_tp or sh.tp
        sw = model.shared_experts * model.expert_ffn_hidden // stp
        m_sh = max(1, T_in * stp // group) if sh.allgather_moe else sh.tokens
        p.add(*(_gemm(sh, "shared_up", m_sh, sw * (2 if model.mlp == "swiglu" else 1), h)))
        p.add(elementwise("shared_act", m_sh * sw, passes=3.0, flops_per_elem=8))
        p.add(*(_gemm(sh, "shared_down", m_sh, h, sw)))
        if not sh.allgather_moe:
            p.add(*_tp_reduce(sh, "tp_shared_out", sh.tokens * h))
    if sh.allgather_moe and group > 1:
        p.add(Comm("moe_reducescatter", "ep", "reduce_scatter", "instance", group, sh.instance_tokens * h * ACT_BYTES))
    elif sh.ep > 1 or sh.etp > 1:
        if sh.etp > 1:
            p.add(Comm("etp_scatter", "ep", "reduce_scatter", "etp", sh.etp, slots * sh.etp))
        if sh.ep > 1:
            p.add(Comm("ep_combine", "ep", "all_to_all", "ep", sh.ep, slots))
    p.add(elementwise("residual", sh.tokens * h, passes=3.0))
    return p


def serve_head(model, sh: ServeShard) -> Pass:
    """Final norm and LM head on the positions that produce tokens (last prompt token in prefill)."""
    h = model.hidden
    rows = sh.seqs if sh.prefill else sh.tokens
    p = Pass([elementwise("final_norm", rows * h, passes=2.0)])
    p.add(*(_gemm(sh, "lm_head", rows, model.vocab // sh.tp, h)))
    p.add(Op("sample", "memory", rows * model.vocab / sh.tp, rows * model.vocab / sh.tp * 4.0))
    if sh.tp > 1:
        p.add(Comm("tp_logits_gather", "tp", "all_gather", "tp", sh.tp, rows * 8.0 * sh.tp))
    return p


def serve_layer(model, sh: ServeShard, moe: bool) -> Pass:
    """Forward of one layer for serving."""
    p = serve_attention(model, sh)
    p.extend(serve_moe(model, sh) if moe else serve_dense_mlp(model, sh))
    return p
