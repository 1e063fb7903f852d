"""Assemble forward and backward passes of pipeline chunks (plan dependent)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from npusim.workload.layers import (Shard, attention_pass, dense_mlp_pass, embedding_pass, head_pass,
                                    moe_pass, mtp_pass)
from npusim.workload.ops import Comm, Op, Pass

_CONJUGATE = {"all_gather": "reduce_scatter", "reduce_scatter": "all_gather", "all_reduce": "all_reduce",
              "all_to_all": "all_to_all", "all_to_all_inter": "all_to_all_inter",
              "all_to_all_intra": "all_to_all_intra", "send_recv": "send_recv"}
_ATTN_CORE = ("flash_attention", "attn_scores", "softmax_mask", "attn_dropout", "attn_context")


def backward_op(op: Op) -> list[Op]:
    """Backward kernels of one forward op: dgrad + wgrad for GEMMs, 2.5x for flash attention."""
    if op.kind in ("gemm", "grouped_gemm"):
        n = f"{op.name}_dgrad"
        dgrad = replace(op, name=n, m=op.m, n=op.k, k=op.n)
        if op.name in ("attn_scores", "attn_context"):
            # Both operands are activations: two activation gradients, no weight gradient.
            return [dgrad, replace(op, name=f"{op.name}_dgrad2", m=op.k, n=op.n, k=op.m)]
        return [dgrad, replace(op, name=f"{op.name}_wgrad", m=op.k, n=op.n, k=op.m)]
    if op.kind == "attention":
        return [replace(op, name=f"{op.name}_bwd", flops=2.5 * op.flops, bytes=2.0 * op.bytes)]
    return [replace(op, name=f"{op.name}_bwd", flops=op.flops, bytes=1.5 * op.bytes)]


def backward_pass(fwd: Pass) -> Pass:
    """The backward pass of a forward pass: reversed items, backward kernels, conjugate collectives."""
    items: list = []
    for it in reversed(fwd.items):
        if isinstance(it, Op):
            items.extend(backward_op(it))
        else:
            items.append(replace(it, name=f"{it.name}_bwd", collective=_CONJUGATE[it.collective]))
    return Pass(items)


def as_recompute(p: Pass, only: tuple[str, ...] | None = None) -> Pass:
    """Mark a forward pass (or its attention-core ops only) as recomputation."""
    if only is not None:
        return Pass([replace(o, recompute=True) for o in p.ops if o.name in only])
    return Pass([replace(i, recompute=True) for i in p.items])


@dataclass(frozen=True)
class ChunkSpec:
    """What one pipeline chunk (virtual stage) holds."""

    index: int
    dense_layers: int
    moe_layers: int
    embedding: bool
    head: bool
    mtp: int

    @property
    def layers(self) -> int:
        """Transformer layers in the chunk."""
        return self.dense_layers + self.moe_layers


def split_layers(n_layers: int, chunks: int) -> list[int]:
    """Layers per chunk: as even as possible, with the first and last chunks taking fewer."""
    base, extra = divmod(n_layers, chunks)
    counts = [base] * chunks
    order = list(range(1, chunks - 1)) + [chunks - 1, 0] if chunks > 2 else list(range(chunks))
    for i in order[:extra]:
        counts[i] += 1
    return counts


def chunk_specs(model, pp: int, vpp: int) -> list[ChunkSpec]:
    """Chunks in virtual-stage order, with the layer kinds each holds."""
    n = pp * vpp
    counts = split_layers(model.layers, n)
    specs, start = [], 0
    for j, c in enumerate(counts):
        idx = range(start, start + c)
        dense = sum(1 for i in idx if not model.is_moe or i < model.dense_layers
                    or (i - model.dense_layers) % model.moe_layer_freq)
        specs.append(ChunkSpec(j, dense, c - dense, j == 0, j == n - 1, model.mtp_layers if j == n - 1 else 0))
        start += c
    return specs


def layer_forward(model, sh: Shard, moe: bool, load_factor: float = 1.0) -> Pass:  # noqa: D401
    """Forward pass of one transformer layer."""
    p = attention_pass(model, sh)
    p.extend(moe_pass(model, sh, load_factor) if moe else dense_mlp_pass(model, sh))
    return p


RECOMPUTE_OPS: dict[str, tuple[str, ...]] = {
    "core_attn": _ATTN_CORE,
    "layernorm": ("input_norm", "post_norm"),
    "mla_up_proj": ("q_up", "kv_up", "rope"),
    "moe_act": ("expert_act",),
    "mlp": ("mlp_up", "mlp_act", "mlp_down"),
    "shared_experts": ("shared_up", "shared_act", "shared_down"),
    "permute": ("permute", "unpermute"),
}
"""Forward kernels each recompute module re-runs (``moe``: the whole MoE block, below)."""


def _moe_block(items: list) -> set[int]:
    """Indices of a MoE layer's block from the router to the shared experts' output, collectives
    included (what ``recompute_modules=moe`` re-runs); empty for a dense layer."""
    names = [i.name for i in items]
    if "router" not in names:
        return set()
    a = names.index("router")
    b = len(names) - 1 - names[::-1].index("residual_dropout")
    return set(range(a, b))


def recompute_of(layer_fwd: Pass, recompute: str, modules: tuple[str, ...] | frozenset = ()) -> Pass:
    """Items re-run in the backward pass under a recompute policy (``full``: the whole layer) or,
    when ``modules`` is given, under fine-grained recompute of those modules (``selective`` alone =
    core_attn), in program order."""
    if recompute == "full":
        return as_recompute(layer_fwd)
    if not modules:
        modules = ("core_attn",) if recompute == "selective" else ()
    if not modules:
        return Pass()
    if "mla_up_proj" in modules and not any(o.name == "kv_up" for o in layer_fwd.ops):
        modules = tuple(m for m in modules if m != "mla_up_proj")  # MLA only
    names = {n for m in modules for n in RECOMPUTE_OPS.get(m, ())}
    block = _moe_block(layer_fwd.items) if "moe" in modules else set()
    return Pass([replace(it, recompute=True) for j, it in enumerate(layer_fwd.items)
                 if j in block or (isinstance(it, Op) and it.name in names)])


def extras_forward(model, sh: Shard, spec: ChunkSpec) -> Pass:
    """Forward of the non-layer parts of a chunk: embedding, MTP modules, LM head and loss."""
    p = Pass()
    if spec.embedding:
        p.extend(embedding_pass(model, sh))
    for _ in range(spec.mtp):
        p.extend(mtp_pass(model, sh))
    if spec.head:
        p.extend(head_pass(model, sh))
    return p


def comm_key(c: Comm) -> tuple:
    """Key that identifies collectives of equal cost."""
    return (c.kind, c.collective, c.group, c.size, c.bytes, c.overlappable)
