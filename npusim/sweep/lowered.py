"""Memoised lowering for the fast tier: per-layer pass summaries combined linearly into stage costs.

The core lowers every chunk op by op (``chunk_passes`` + ``pass_parts``) for each simulation. A
pass's named parts depend on its ops and collectives only through sums (compute, recompute, GEMM
and attention time, collective time per kind), and the overlap rules are applied to those sums,
so a chunk of ``n`` identical layers costs ``n`` x one layer's sums plus its extras. This module
lowers one layer of each kind once per (model, hardware, shard, placement) key, caches op and
collective times on (hardware, op) across points, and rebuilds exactly the parts ``pass_parts``
would give (up to float summation order).
"""
from __future__ import annotations

from npusim.cost.collectives import collective_time
from npusim.cost.compute import op_time
from npusim.cost.memory import chunk_params
from npusim.cost.passes import _exposed
from npusim.engine.pipeline import StageCost
from npusim.engine.step import fp8_casts, make_shard
from npusim.workload.layers import ACT_BYTES
from npusim.workload.ops import Comm, Pass
from npusim.workload.passes import backward_pass, extras_forward, layer_forward, recompute_of

# Summary vector layout: time sums plus matrix FLOPs.
_C, _R, _G, _A, _TP, _CP, _EP, _PP, _DP, _FL = range(10)
_COMM_SLOT = {"tp": _TP, "cp": _CP, "ep": _EP, "pp": _PP, "dp": _DP}
_MATRIX = ("gemm", "grouped_gemm", "attention")

_KEEP: dict[int, object] = {}
_OP_TIME: dict[tuple, float] = {}
_COMM_TIME: dict[tuple, float] = {}
_LAYER: dict[tuple, dict] = {}
_STAGE: dict[tuple, StageCost] = {}
_EXTRAS: dict[tuple, tuple] = {}


def oid(obj) -> int:
    """A memo key for a config object: its id, kept valid by holding a reference (plan independent)."""
    i = id(obj)
    if i not in _KEEP:
        _KEEP[i] = obj
    return i


def clear_caches() -> None:
    """Drop every memo of this module (tests; long-lived processes that load many profiles)."""
    for d in (_KEEP, _OP_TIME, _COMM_TIME, _LAYER, _STAGE, _EXTRAS):
        d.clear()


def summarize(p: Pass, hw, precision: str, places: dict) -> list[float]:
    """Sums of one pass that ``pass_parts`` depends on (op and collective times memoised on hardware)."""
    h = oid(hw)
    v = [0.0] * 10
    for op in p.ops:
        key = (h, precision, op)
        t = _OP_TIME.get(key)
        if t is None:
            t = _OP_TIME[key] = op_time(op, hw, precision)
        v[_R if op.recompute else _C] += t
        if op.kind in ("gemm", "grouped_gemm"):
            v[_G] += t
        elif op.kind == "attention" or op.name.startswith("attn_"):
            v[_A] += t
        if op.kind in _MATRIX:
            v[_FL] += op.flops
    for c in p.comms:
        pl = places[c.group]
        key = (h, c, pl)
        t = _COMM_TIME.get(key)
        if t is None:
            t = _COMM_TIME[key] = collective_time(c, pl, hw)
        v[_COMM_SLOT[c.kind]] += t
    return v


def combine(terms) -> list[float]:
    """Linear combination of summaries: ``terms`` is an iterable of (weight, summary)."""
    out = [0.0] * 10
    for w, s in terms:
        if w:
            for i in range(10):
                out[i] += w * s[i]
    return out


def finish(v: list[float], hw, plan) -> dict[str, float]:
    """Named parts of a pass from its sums, with the overlap rules of ``pass_parts``."""
    parts = {"compute": v[_C], "recompute": v[_R]}
    budget = [v[_G] + v[_A]]
    tp, cp, ep, pp, dp = v[_TP], v[_CP], v[_EP], v[_PP], v[_DP]
    if plan.tp_comm_overlap:
        tp = _exposed(tp, budget, hw, parts)
    cp = _exposed(cp, budget, hw, parts)
    if plan.overlap_param_gather:
        dp = _exposed(dp, budget, hw, parts)
    if plan.ep_overlap:
        budget[0] += v[_C] + v[_R] - v[_G] - v[_A]
        ep = _exposed(ep, budget, hw, parts)
    parts.update(tp_comm=tp, cp_comm=cp, ep_comm=ep, pp_comm=pp, dp_comm=dp)
    return parts


def _layer_key(model, hw, plan, sh, places, load_factor: float) -> tuple:
    """Memo key of one layer's summaries: everything the lowering and its costs read."""
    groups = tuple(places[g] for g in ("tp", "cp", "ep", "etp"))
    return (oid(model), oid(hw), sh, plan.precision, plan.recompute, groups, load_factor)


def layer_summaries(model, hw, plan, sh, places, moe: bool, load_factor: float = 1.0) -> tuple:
    """(forward, backward with recompute) summaries of one dense or MoE layer (memoised)."""
    key = (_layer_key(model, hw, plan, sh, places, load_factor), moe)
    hit = _LAYER.get(key)
    if hit is not None:
        return hit
    pr = plan.precision
    lf = layer_forward(model, sh, moe, load_factor)
    lb = backward_pass(lf)
    rc = recompute_of(lf, plan.recompute)
    f = summarize(lf, hw, pr, places)
    b = combine([(1, summarize(rc, hw, pr, places)), (1, summarize(lb, hw, pr, places))])
    if pr == "fp8":
        f = combine([(1, f), (1, summarize(Pass(fp8_casts(lf.ops)), hw, pr, places))])
        b = combine([(1, b), (1, summarize(Pass(fp8_casts(rc.ops) + fp8_casts(lb.ops)), hw, pr, places))])
    out = _LAYER[key] = (f, b)
    return out


def _extras(model, hw, plan, sh, spec, places) -> tuple[list[float], list[float]]:
    """Forward and backward summaries of a chunk's embedding, MTP modules and head (memoised),
    plus its ZeRO-3 parameter all-gather."""
    key = (_layer_key(model, hw, plan, sh, places, 1.0), spec.embedding, spec.head, spec.mtp)
    hit = _EXTRAS.get(key)
    if hit is None:
        pr = plan.precision
        ex = extras_forward(model, sh, spec)
        bx = backward_pass(ex)
        f, b = summarize(ex, hw, pr, places), summarize(bx, hw, pr, places)
        if pr == "fp8":
            f = combine([(1, f), (1, summarize(Pass(fp8_casts(ex.ops)), hw, pr, places))])
            b = combine([(1, b), (1, summarize(Pass(fp8_casts(bx.ops)), hw, pr, places))])
        hit = _EXTRAS[key] = (f, b)
    f, b = hit
    if plan.zero >= 3 and plan.dp * plan.cp > 1:
        dense = chunk_params(model, plan, spec).dense
        g = Comm("zero3_param_gather", "dp", "all_gather", "dp_cp", plan.dp * plan.cp, dense * 2, overlappable=True)
        gz = summarize(Pass([], [g]), hw, plan.precision, places)
        f, b = combine([(1, f), (1, gz)]), combine([(1, b), (1, gz)])
    return f, b


def _chunk_sums(model, hw, plan, sh, spec, places, load_factor: float):
    """Forward and backward sums of one chunk for one micro-batch at a routing load factor."""
    ef, eb = _extras(model, hw, plan, sh, spec, places)
    terms_f, terms_b = [(1, ef)], [(1, eb)]
    for moe, n in ((False, spec.dense_layers), (True, spec.moe_layers)):
        if n:
            f, b = layer_summaries(model, hw, plan, sh, places, moe, load_factor)
            terms_f.append((n, f))
            terms_b.append((n, b))
    return combine(terms_f), combine(terms_b)


def stage_prefix(model, hw, plan, sh, places, load) -> tuple:
    """The part of a stage's memo key shared by every chunk of a point (everything but the chunk)."""
    z3 = plan.dp * plan.cp if plan.zero >= 3 else 0
    return (_layer_key(model, hw, plan, sh, places, 1.0), plan.tp_comm_overlap, plan.overlap_param_gather,
            plan.ep_overlap, z3, places["pp"], places["dp_cp"] if z3 else None, load.max_over_mean)


def stage_cost(model, hw, plan, seq_len: int, places, spec, load, prefix: tuple | None = None) -> StageCost:
    """Cost of one virtual stage per micro-batch, equal to ``npusim.engine.step.stage_costs``'s
    (``prefix``: the point's ``stage_prefix``, when the caller has it)."""
    sh = make_shard(model, plan, seq_len, places["ep"].domains, load.dropped_fraction)
    if prefix is None:
        prefix = stage_prefix(model, hw, plan, sh, places, load)
    key = (prefix, (spec.dense_layers, spec.moe_layers, spec.embedding, spec.head, spec.mtp))
    hit = _STAGE.get(key)
    if hit is not None:
        return hit
    f, b = _chunk_sums(model, hw, plan, sh, spec, places, 1.0)
    f_parts, b_parts = finish(f, hw, plan), finish(b, hw, plan)
    if spec.moe_layers and load.max_over_mean != 1.0:
        fx, bx = _chunk_sums(model, hw, plan, sh, spec, places, load.max_over_mean)
        f_parts["imbalance"] = max(0.0, sum(finish(fx, hw, plan).values()) - sum(f_parts.values()))
        b_parts["imbalance"] = max(0.0, sum(finish(bx, hw, plan).values()) - sum(b_parts.values()))
    p2p_s = 0.0
    if plan.pp > 1:
        p2p = Comm("pp_p2p", "pp", "send_recv", "pp", 2, sh.tokens * model.hidden * ACT_BYTES / plan.tp)
        p2p_s = collective_time(p2p, places["pp"], hw)
    out = _STAGE[key] = StageCost(f_parts, b_parts, p2p_s, f[_FL] + b[_FL])
    return out
