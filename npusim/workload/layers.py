"""Lower one transformer layer's forward pass to per-device ops and collectives.

Conventions: activations are 2 bytes (bf16/fp16); ``T`` is the tokens one device holds for one
micro-batch (micro_batch × seq_len / cp); TP splits heads and FFN width, SP splits the
norm/dropout regions over TP. All FLOP counts are per device for one micro-batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from npusim.workload.ops import Collective, Comm, Op, Pass

ACT_BYTES = 2


@dataclass(frozen=True)
class Shard:
    """How one micro-batch is split on one device (plan dependent)."""

    micro_batch: int
    seq_len: int
    """Full sequence length (attention spans all of it)."""
    tp: int
    cp: int
    sp: bool
    expert_ep: int
    expert_tp: int
    flash_attention: bool
    a2a: str = "flat"
    """EP all-to-all algorithm: 'flat' (one copy per routed expert) or 'hierarchical' (DeepEP-style: one copy per
    destination server across servers, then one per destination rank inside the server)."""
    ep_domains: int = 1
    """Scale-up domains (servers) one EP group spans."""
    dropped_fraction: float = 0.0
    """Routed token slots dropped by the capacity factor."""
    expert_spread: float = 0.0
    """Coefficient of variation of tokens per local expert (0 = every expert gets the mean)."""
    moe_dispatch: str = "alltoall"
    """EP token exchange: 'alltoall' (permute + all-to-all) or 'allgather' (all-gather + local gather)."""
    capacity_factor: float = 0.0
    """Per-expert token cap as a multiple of the mean (0 = dropless)."""
    pad_to_capacity: bool = False
    """Drop-and-pad: every expert's rows padded to its capacity (fixed shapes, no imbalance)."""

    @property
    def tokens(self) -> int:
        """Tokens of one micro-batch on one TP group member (before SP split)."""
        return self.micro_batch * self.seq_len // self.cp

    @property
    def norm_tokens(self) -> int:
        """Tokens a device normalises (split over TP with sequence parallelism)."""
        return self.tokens // self.tp if self.sp else self.tokens


def gemm(name: str, m: int, n: int, k: int, groups: int = 1, w_bytes: float = ACT_BYTES) -> Op:
    """A (grouped) GEMM [m,k] x [k,n] with its minimum HBM traffic."""
    flops = 2.0 * m * n * k * groups
    traffic = groups * ((m * k + m * n) * ACT_BYTES + k * n * w_bytes)
    return Op(name, "grouped_gemm" if groups > 1 and name.startswith("expert") else "gemm",
              flops, traffic, m, n, k, groups)


def elementwise(name: str, elems: float, passes: float = 2.0, flops_per_elem: float = 1.0) -> Op:
    """A memory-bound elementwise kernel reading/writing ``passes`` tensors of ``elems`` values."""
    return Op(name, "memory", flops_per_elem * elems, passes * elems * ACT_BYTES)


def tp_collective(name: str, sh: Shard, elems: float, after_row_parallel: bool) -> list[Comm]:
    """The TP collective after a row-parallel GEMM (all-reduce, or reduce-scatter with SP) or before
    a column-parallel GEMM with SP (all-gather)."""
    if sh.tp == 1:
        return []
    buf = elems * ACT_BYTES
    if sh.sp:
        kind: Collective = "reduce_scatter" if after_row_parallel else "all_gather"
        return [Comm(name, "tp", kind, "tp", sh.tp, buf, overlappable=True)]
    if after_row_parallel:
        return [Comm(name, "tp", "all_reduce", "tp", sh.tp, buf, overlappable=True)]
    return []


def attention_core(model, sh: Shard, heads_local: int, d_qk: int, d_v: int) -> list[Op]:
    """Score, softmax and context ops of causal self-attention (flash or materialised)."""
    b, sq, skv = sh.micro_batch, sh.seq_len // sh.cp, sh.seq_len
    window = model.sliding_window or 0
    if sh.flash_attention:
        # Causal: half of the sq x skv score matrix is computed (FLOP convention: causal halved).
        causal_frac = 0.5 if sh.cp == 1 else 0.5  # load-balanced CP keeps the causal half
        eff_kv = skv * causal_frac
        if window and model.sliding_window_every:
            frac_local = 1.0 / model.sliding_window_every
            eff_kv = (1 - frac_local) * eff_kv + frac_local * min(window, skv * causal_frac)
        flops = 2.0 * b * heads_local * sq * eff_kv * (d_qk + d_v)
        traffic = b * sq * heads_local * (2 * d_qk + 2 * d_v) * ACT_BYTES
        return [Op("flash_attention", "attention", flops, traffic, seq=skv)]
    # Materialised attention (Megatron before flash attention): the full score matrix is computed.
    g = b * heads_local
    scores = float(g) * sq * skv
    return [
        gemm("attn_scores", sq, skv, d_qk, groups=g),
        Op("softmax_mask", "memory", 5.0 * scores, scores * (2 * ACT_BYTES + 1)),
        Op("attn_dropout", "memory", scores, scores * (2 * ACT_BYTES + 1)),
        gemm("attn_context", sq, d_v, skv, groups=g),
    ]


def attention_pass(model, sh: Shard) -> Pass:
    """Forward of one attention block: norm, projections, core, output projection, residual."""
    h, T, t = model.hidden, sh.tokens, sh.tp
    p = Pass()
    p.add(elementwise("input_norm", sh.norm_tokens * h, passes=2.0, flops_per_elem=4))
    p.add(*tp_collective("sp_gather_attn", sh, T * h, after_row_parallel=False))
    heads_l = model.heads // t
    if model.attention == "mla":
        m = model.mla
        qk, dv = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
        if m.q_lora_rank:
            p.add(gemm("q_down", T, m.q_lora_rank, h))
            p.add(elementwise("q_norm", T * m.q_lora_rank))
            p.add(gemm("q_up", T, heads_l * qk, m.q_lora_rank))
        else:
            p.add(gemm("q_proj", T, heads_l * qk, h))
        p.add(gemm("kv_down", T, m.kv_lora_rank + m.qk_rope_head_dim, h))
        p.add(elementwise("kv_norm", T * m.kv_lora_rank))
        p.add(gemm("kv_up", T, heads_l * (m.qk_nope_head_dim + dv), m.kv_lora_rank))
        p.add(elementwise("rope", T * heads_l * m.qk_rope_head_dim * 2))
    else:
        d = model.d_head
        kv_l = max(1, model.n_kv_heads // t)
        qk, dv = d, d
        p.add(gemm("qkv_proj", T, (heads_l + 2 * kv_l) * d, h))
        p.add(elementwise("rope", T * (heads_l + kv_l) * d))
    if sh.cp > 1:
        kv_elems = sh.micro_batch * sh.seq_len * 2 * (model.n_kv_heads if model.attention != "mla" else model.heads) * dv // t
        p.add(Comm("cp_kv_gather", "cp", "all_gather", "cp", sh.cp, kv_elems * ACT_BYTES, overlappable=True))
    p.add(*attention_core(model, sh, heads_l, qk, dv))
    p.add(gemm("out_proj", T, h, heads_l * dv))
    p.add(*tp_collective("tp_attn_out", sh, T * h, after_row_parallel=True))
    p.add(elementwise("residual_dropout", sh.norm_tokens * h, passes=3.0))
    return p


def ffn_ops(model, T: int, width_local: int, prefix: str) -> list[Op]:
    """Up projection(s), activation and down projection of one dense FFN shard."""
    h = model.hidden
    up_n = width_local * (2 if model.mlp == "swiglu" else 1)
    act_passes = 3.0 if model.mlp == "swiglu" else 2.0
    return [gemm(f"{prefix}_up", T, up_n, h),
            elementwise(f"{prefix}_act", T * width_local, passes=act_passes, flops_per_elem=8),
            gemm(f"{prefix}_down", T, h, width_local)]


def dense_mlp_pass(model, sh: Shard) -> Pass:
    """Forward of one dense FFN block with its TP collectives."""
    h, T = model.hidden, sh.tokens
    p = Pass()
    p.add(elementwise("post_norm", sh.norm_tokens * h, passes=2.0, flops_per_elem=4))
    p.add(*tp_collective("sp_gather_mlp", sh, T * h, after_row_parallel=False))
    p.add(*ffn_ops(model, T, model.ffn_hidden // sh.tp, "mlp"))
    p.add(*tp_collective("tp_mlp_out", sh, T * h, after_row_parallel=True))
    p.add(elementwise("residual_dropout", sh.norm_tokens * h, passes=3.0))
    return p


def moe_pass(model, sh: Shard, load_factor: float = 1.0) -> Pass:
    """Forward of one MoE block, every kernel lowered: router GEMM, score function, top-k, aux loss,
    dispatch (token sort + permute + all-to-all, or all-gather + local gather; a hierarchical
    DeepEP-style dispatch needs only the local sort by expert after it), grouped expert GEMMs and
    activation, combine (unsort + all-to-all + weighted unpermute, or scatter-add + reduce-scatter;
    the hierarchical combine reduces the top-k outputs itself), shared experts.

    ``load_factor`` scales the routed tokens of this device (1 = perfectly balanced; the busiest
    device of an imbalanced router has > 1).
    """
    h = model.hidden
    p = Pass()
    p.add(elementwise("post_norm", sh.norm_tokens * h, passes=2.0, flops_per_elem=4))
    T_unique = sh.tokens // sh.tp  # tokens this device routes (TP ranks split the token set)
    p.add(*router_ops(model, T_unique))
    slots = T_unique * model.top_k * (1.0 - sh.dropped_fraction)
    assign = expert_slots(model, sh, slots * load_factor)
    eep, etp = sh.expert_ep, sh.expert_tp
    gathered = sh.moe_dispatch == "allgather" and eep > 1
    # DeepEP-style hierarchical dispatch reads the tokens and their top-k indices directly and its
    # combine kernel reduces the top-k outputs itself: no sort by destination before the dispatch
    # and no scatter-add after the combine, only a local permute by expert on each side.
    fused = not gathered and sh.a2a == "hierarchical" and sh.expert_ep > 1
    if gathered:
        p.add(*allgather_dispatch(model, sh, T_unique, assign))
    else:
        p.add(index_sort("permute_index", T_unique * model.top_k))
        if not fused:
            p.add(elementwise("permute", assign * h, passes=2.0))
    if etp > 1:
        p.add(Comm("etp_gather", "ep", "all_gather", "etp", etp, assign * etp * h * ACT_BYTES))
    a2a = [] if gathered else ep_all_to_all(model, sh, "dispatch", T_unique * load_factor, assign)
    p.add(*a2a)
    local_experts = model.experts // eep
    sort_chunks = not gathered and eep > 1 and (local_experts > 1 or fused)
    if sort_chunks:  # received chunks are ordered by source rank: regroup them by local expert
        p.add(elementwise("dispatch_sort", assign * etp * h, passes=2.0, flops_per_elem=0))
    p.add(*expert_ops(model, sh, assign * etp, local_experts))
    if sort_chunks:
        p.add(elementwise("combine_sort", assign * etp * h, passes=2.0, flops_per_elem=0))
    if etp > 1:
        p.add(Comm("etp_scatter", "ep", "reduce_scatter", "etp", etp, assign * etp * h * ACT_BYTES))
    p.add(*[replace(c, name=c.name.replace("dispatch", "combine")) for c in reversed(a2a)])
    if gathered:
        p.add(*allgather_combine(model, sh, T_unique, assign))
    elif not fused:
        # weighted scatter-add of the top-k expert outputs back into token order (zero-filled output)
        p.add(Op("unpermute", "memory", 2.0 * assign * h, (assign + 2.0 * T_unique) * h * ACT_BYTES))
    if model.shared_experts:
        p.add(*ffn_ops(model, sh.tokens, model.shared_experts * model.expert_ffn_hidden // sh.tp, "shared"))
        p.add(*tp_collective("tp_shared_out", sh, sh.tokens * h, after_row_parallel=True))
    p.add(elementwise("residual_dropout", sh.norm_tokens * h, passes=3.0))
    return p


ROUTER_BYTES = 4
"""Router probabilities are fp32 (Megatron-Core computes the score function in fp32)."""


def router_ops(model, T: int) -> list[Op]:
    """Router GEMM, score function (softmax or sigmoid: one fp32 pass over [T, E]), top-k
    selection and the load-balancing loss statistics (per-expert counts and mean probabilities)."""
    E, k = model.experts, model.top_k
    scores = float(T) * E
    return [gemm("router", T, E, model.hidden),
            Op("router_score", "memory", 5.0 * scores, scores * (ACT_BYTES + ROUTER_BYTES)),
            Op("router_topk", "memory", scores * max(1.0, math.log2(k)), scores * ROUTER_BYTES + T * k * 12.0),
            Op("router_aux_loss", "memory", 2.0 * scores, scores * (ROUTER_BYTES + 1) + E * 8.0)]


def index_sort(name: str, n: float) -> Op:
    """Stable sort of ``n`` routed (token, expert) int64 indices by expert: a radix sort reads and
    writes keys and values once per 8-bit digit of the expert id (two passes below 256 experts)."""
    return Op(name, "memory", 4.0 * n, 2 * 2.0 * 2 * n * 8.0)


def expert_slots(model, sh: Shard, slots: float) -> float:
    """Token rows this device's experts hold: the routed ``slots`` spread over EP ranks, or, with
    drop-and-pad (``capacity_factor``), every local expert padded to its capacity."""
    if sh.capacity_factor > 0 and sh.pad_to_capacity:
        mean_slots = sh.tokens // sh.tp * model.top_k  # the EP group's mean per rank: capacity base
        return sh.capacity_factor * mean_slots
    return slots


def expert_ops(model, sh: Shard, tokens: float, local_experts: int) -> list[Op]:
    """Grouped up/down GEMMs over the active local experts (tokens per expert spread by the router)
    and the expert activation, for ``tokens`` token rows on this device."""
    h, etp = model.hidden, sh.expert_tp
    padded = sh.capacity_factor > 0 and sh.pad_to_capacity
    active = local_experts if padded else max(1, round(active_experts(local_experts, tokens)))
    tok_per_expert = max(1, round(tokens / active))
    spread = 0.0 if padded else sh.expert_spread
    width = model.expert_ffn_hidden // etp
    up_n = width * (2 if model.mlp == "swiglu" else 1)
    # GEMM shapes take whole tokens per expert; FLOPs count the routed tokens exactly, so the
    # hardware FLOPs never fall below the model FLOPs by rounding
    up = gemm("expert_up", tok_per_expert, up_n, h, groups=active)
    down = gemm("expert_down", tok_per_expert, h, width, groups=active)
    return [replace(up, flops=2.0 * tokens * up_n * h, spread=spread),
            elementwise("expert_act", tokens * width, passes=3.0, flops_per_elem=8),
            replace(down, flops=2.0 * tokens * h * width, spread=spread)]


def allgather_dispatch(model, sh: Shard, T: int, assign: float) -> list:
    """All-gather dispatcher: every EP rank gathers all tokens and their top-k choices, masks the
    ones routed to its experts and gathers those rows (Megatron-Core MoEAllGatherTokenDispatcher)."""
    eep, h, k = sh.expert_ep, model.hidden, model.top_k
    return [Comm("ep_gather_tokens", "ep", "all_gather", "ep", eep, T * eep * h * ACT_BYTES, overlappable=True),
            Comm("ep_gather_routing", "ep", "all_gather", "ep", eep, T * eep * k * 12.0),
            Op("local_mask", "memory", 2.0 * T * eep * k, T * eep * k * 9.0),
            index_sort("permute_index", T * eep * k / eep),
            elementwise("permute", assign * h, passes=2.0, flops_per_elem=0)]


def allgather_combine(model, sh: Shard, T: int, assign: float) -> list:
    """All-gather combine: weighted scatter-add of the local expert outputs into a zero-filled
    buffer of all the EP group's tokens, then reduce-scatter back to the owners."""
    eep, h = sh.expert_ep, model.hidden
    return [Op("unpermute", "memory", 2.0 * assign * h, (T * eep + 2.0 * assign) * h * ACT_BYTES),
            Comm("ep_scatter_tokens", "ep", "reduce_scatter", "ep", eep, T * eep * h * ACT_BYTES, overlappable=True)]


def active_experts(local: int, routed_slots: float) -> float:
    """Expected distinct local experts that receive at least one of ``routed_slots`` tokens (uniform
    routing); only these are computed and have their weights read."""
    if local <= 1:
        return float(local)
    return local * (1.0 - (1.0 - 1.0 / local) ** max(0.0, routed_slots))


def expected_domains_touched(experts: int, top_k: int, domains: int, groups: int = 0,
                             groups_per_token: int = 0) -> float:
    """Expected number of ``domains`` (servers, or single ranks) that host at least one of a token's
    top-k experts (uniform routing, experts spread evenly over the domains; plan independent).

    With group-limited routing (DeepSeek-V2/V3: top_k / groups_per_token experts from each of
    ``groups_per_token`` of ``groups`` groups) a token reaches only the domains of its groups."""
    from math import comb

    def touched(pool: int, held: int, picks: int) -> float:
        """Of ``pool`` items, ``held`` sit in one domain: P(a domain holds >= 1 of ``picks``)."""
        return 1.0 - (comb(pool - held, picks) / comb(pool, picks) if pool - held >= picks else 0.0)

    if domains <= 1:
        return float(max(0, domains))
    g, D = groups_per_token, domains
    if groups and g and groups % D == 0:
        return D * touched(groups, groups // D, g)
    if groups and g and D % groups == 0 and top_k % g == 0:
        span, per_group = D // groups, experts // groups
        return g * span * touched(per_group, per_group // span, top_k // g)
    return D * touched(experts, experts // D, top_k)


def expected_remote_domains(experts: int, top_k: int, domains: int, groups: int = 0,
                            groups_per_token: int = 0) -> float:
    """Expected number of other domains hosting at least one of a token's top-k experts (uniform
    routing, experts spread evenly over ``domains``): (D - 1) / D x the expected domains touched.

    DeepSeek-V3's node-limited routing, 4 of 8 groups on 8 servers: 7 x (1 - C(7,4)/C(8,4)) = 3.5
    other servers instead of 4.6 for free top-8 of 256; on 16 servers each group spans two."""
    if domains <= 1:
        return 0.0
    return (domains - 1) / domains * expected_domains_touched(experts, top_k, domains, groups, groups_per_token)


def ep_all_to_all(model, sh: Shard, phase: str, tokens: float, assign: float) -> list[Comm]:
    """EP all-to-all of one phase as all-to-all-v: flat (one copy per routed expert, as Megatron's
    all-to-all dispatcher permutes by expert before sending), or hierarchical DeepEP-style (one copy
    per destination server across servers, then one copy per destination rank inside the server:
    DeepEP's dispatch layout marks each token once per rank, ``is_token_in_rank [tokens, ranks]``,
    and its combine returns one reduced row per token and rank; deepseek-ai/DeepEP
    ``deep_ep/buffer.py`` ``get_dispatch_layout`` / ``dispatch`` / ``combine``)."""
    eep, h = sh.expert_ep, model.hidden
    if eep <= 1:
        return []
    if sh.a2a == "hierarchical":
        ranks = expected_domains_touched(model.experts, model.top_k, eep, model.expert_groups,
                                         model.groups_per_token)
        intra = Comm(f"ep_{phase}_intra", "ep", "all_to_all_intra", "ep", eep, tokens * ranks * h * ACT_BYTES,
                     overlappable=True)
        if sh.ep_domains <= 1:
            return [intra]
        remote = expected_remote_domains(model.experts, model.top_k, sh.ep_domains, model.expert_groups,
                                         model.groups_per_token)
        return [Comm(f"ep_{phase}_inter", "ep", "all_to_all_inter", "ep", eep, tokens * remote * h * ACT_BYTES,
                     overlappable=True), intra]
    return [Comm(f"ep_{phase}", "ep", "all_to_all", "ep", eep, assign * h * ACT_BYTES, overlappable=True)]


def embedding_pass(model, sh: Shard) -> Pass:
    """Forward of the vocab-parallel input embedding."""
    h, T = model.hidden, sh.tokens
    p = Pass([elementwise("embedding_lookup", T * h, passes=1.0, flops_per_elem=0)])
    p.add(*tp_collective("tp_embedding", sh, T * h, after_row_parallel=True))
    return p


def head_pass(model, sh: Shard) -> Pass:
    """Forward of the final norm, vocab-parallel LM head and cross-entropy loss."""
    h, T, t = model.hidden, sh.tokens, sh.tp
    p = Pass([elementwise("final_norm", sh.norm_tokens * h, passes=2.0, flops_per_elem=4)])
    p.add(*tp_collective("sp_gather_head", sh, T * h, after_row_parallel=False))
    p.add(gemm("lm_head", T, model.vocab // t, h))
    p.add(Op("cross_entropy", "memory", 6.0 * T * model.vocab / t, 3.0 * T * model.vocab / t * 4))
    if t > 1:
        p.add(Comm("tp_loss_reduce", "tp", "all_reduce", "tp", t, T * 3 * 4))
    return p


def mtp_pass(model, sh: Shard) -> Pass:
    """Forward of one multi-token-prediction module: projection, one layer and a second LM head."""
    h, T = model.hidden, sh.tokens
    p = Pass([elementwise("mtp_norms", 2 * sh.norm_tokens * h, passes=2.0), gemm("mtp_proj", T, h // sh.tp, 2 * h)])
    p.extend(attention_pass(model, sh))
    p.extend(moe_pass(model, sh) if model.is_moe else dense_mlp_pass(model, sh))
    p.extend(head_pass(model, sh))
    return p
