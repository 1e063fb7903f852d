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

from npusim.config.plan import ParallelPlan
from npusim.cost.algorithms import collective_plan
from npusim.cost.collectives import collective_time
from npusim.cost.compute import op_time
from npusim.cost.passes import exposed_behind
from npusim.engine.pipeline import StageCost
from npusim.engine.schedules import paired_fb
from npusim.cost.memory import recompute_set
from npusim.cost.topology import host_capacities
from npusim.engine.step import StepInputs, dp_comms, fp8_casts, layer_spec, make_shard, swap_comms
from npusim.workload.passes import ChunkSpec
from npusim.workload.layers import ACT_BYTES
from npusim.workload.ops import Comm, Pass
from npusim.workload.passes import backward_pass, extras_forward, layer_forward, recompute_of
from npusim.sweep.memo import Reads, clear_all, table, value_key

# Summary vector layout: time sums (kernels, GEMMs, attention, weight-gradient GEMMs, collectives by
# class), matrix FLOPs and the number of layers summed.
_C, _R, _G, _A, _TP, _CP, _EP, _PP, _DP, _FL, _W, _N, _NIC, _OFF = range(14)
_SLOTS = 14
_COMM_SLOT = {"tp": _TP, "cp": _CP, "ep": _EP, "pp": _PP, "dp": _DP, "offload": _OFF}
_MATRIX = ("gemm", "grouped_gemm", "attention")

_ONE = ChunkSpec(0, 0, 0, False, False, 0)
_OP_TIME = table()
"""(hardware, precision, op) -> seconds."""
_COMM_TIME = table()
"""(hardware, collective, placement) -> (seconds, NIC seconds)."""
_LAYER = table()
_STAGE = table()
_EXTRAS = table()
_SUMS = table()

LAYER_READS = Reads(ParallelPlan, "precision recompute recompute_modules offload_activations offload_modules sp")
"""Plan fields a layer's lowering and costs read besides its shard (``make_shard``) and placements."""
STAGE_READS = Reads(ParallelPlan, "tp_comm_overlap overlap_param_gather ep_overlap redundant_experts")
"""Plan fields a stage's overlap rules read on top of its layers' (``finish``; with ``paired_fb`` and
the ZeRO-3 degree, the rest of its key)."""


def clear_caches() -> None:
    """Drop every memo of the fast tier (tests; long-lived processes that load many profiles)."""
    clear_all()


def summarize(p: Pass, hw, precision: str, places: dict) -> list[float]:
    """Sums of one pass that ``pass_parts`` depends on (op and collective times memoised on hardware)."""
    h = value_key(hw)
    v = [0.0] * _SLOTS
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
        if "_wgrad" in op.name:
            v[_W] += t
    for c in p.comms:
        pl = places.get(c.group)
        key = (h, c, pl)
        hit = _COMM_TIME.get(key)
        if hit is None and c.kind == "offload":  # activation swap over the host link
            hit = _COMM_TIME[key] = (c.bytes / host_capacities(hw)["host_d2h"], 0.0)
        if hit is None:
            nic = 0.0
            if pl.size > 1 and c.bytes > 0:
                nic = sum(ph.bytes / ph.rate_Bps for st in collective_plan(c, pl, hw)[1] for ph in st
                          if ph.tier == "nic" and ph.bytes > 0)
            hit = _COMM_TIME[key] = (collective_time(c, pl, hw), nic)
        v[_COMM_SLOT[c.kind]] += hit[0]
        v[_NIC] += hit[1]
    return v


def combine(terms) -> list[float]:
    """Linear combination of summaries: ``terms`` is an iterable of (weight, summary)."""
    out = [0.0] * _SLOTS
    for w, s in terms:
        if w:
            for i in range(_SLOTS):
                out[i] += w * s[i]
    return out


def _pipelined(comm: float, cover: float, n: int) -> float:
    """Exposed seconds of ``comm`` split into ``n`` chunks pipelined with ``cover`` seconds of the
    kernel next to it (the event engine's chunk-by-chunk dependencies, in closed form)."""
    if comm <= 0.0:
        return 0.0
    n = max(1, n)
    return comm / n + max(0.0, comm - cover) * (n - 1) / n


def finish(v: list[float], hw, plan, ep_cover: float | None = None) -> dict[str, float]:
    """Named parts of a pass from its sums: the event engine's overlap rules in closed form.

    CP's KV exchange is pipelined with attention (cp blocks); TP collectives with
    ``tp_comm_overlap`` are pipelined with their GEMMs (tp chunks) and the weight gradients hide
    what is left; ZeRO-3 gathers run one layer ahead, so only the first layer's and what exceeds
    the compute are exposed; with ``ep_overlap`` the all-to-all hides behind another micro-batch's
    compute (the 1F1B / DualPipe pairs: ``ep_cover``, the kernel seconds of the pass it is paired
    with; its own otherwise). Hidden collectives slow the compute by the profile's share.
    """
    parts = {"compute": v[_C], "recompute": v[_R]}
    kernels = v[_C] + v[_R]
    tp, cp, ep, pp, dp = v[_TP], v[_CP], v[_EP], v[_PP], v[_DP]
    hidden = 0.0
    cp_x = _pipelined(cp, v[_A], plan.cp)
    hidden += cp - cp_x
    tp_x = tp
    if plan.tp_comm_overlap and tp > 0:
        tp_x = _pipelined(tp, v[_G] - v[_W], plan.tp)
        tp_x = max(tp / max(1, plan.tp), tp_x - v[_W])
        hidden += tp - tp_x
    dp_x = dp
    if dp > 0:
        n = max(1.0, v[_N])
        dp_x = dp / n + max(0.0, dp - kernels) * (n - 1) / n
        hidden += dp - dp_x
    ep_x = ep
    if plan.ep_overlap and ep > 0:
        budget = [kernels if ep_cover is None else ep_cover]
        ep_x = exposed_behind(ep, budget, hw, {"compute": 0.0})
        hidden += ep - ep_x
    off = v[_OFF]  # swaps run on the host link beside everything else (the last layer never swaps)
    off_x = max(0.0, off - kernels - tp_x - cp_x - ep_x - pp - dp_x)
    parts["compute"] += hidden * hw.derating.overlap_compute_slowdown
    parts.update(tp_comm=tp_x, cp_comm=cp_x, ep_comm=ep_x, pp_comm=pp, dp_comm=dp_x, offload=off_x)
    return parts


_COMM_PARTS = ("tp_comm", "cp_comm", "ep_comm", "pp_comm", "dp_comm")


def paired_parts(fp: dict[str, float], bp: dict[str, float], hw) -> tuple[dict[str, float], dict[str, float]]:
    """A forward and a backward run as one overlapped unit, in closed form: the pair takes the
    longest of both passes' kernels together and each pass alone with its exposed collectives;
    what the kernels do not cover stays exposed, shared out over the collectives in proportion."""
    kf, kb = fp["compute"] + fp["recompute"], bp["compute"] + bp["recompute"]
    xf = sum(fp.get(k, 0.0) for k in _COMM_PARTS)
    xb = sum(bp.get(k, 0.0) for k in _COMM_PARTS)
    if xf + xb <= 0.0:
        return fp, bp
    exposed = max(kf + kb, kf + xf, kb + xb) - kf - kb
    scale = exposed / (xf + xb)
    slow = (xf + xb - exposed) * hw.derating.overlap_compute_slowdown / 2.0
    fo, bo = dict(fp), dict(bp)
    for d in (fo, bo):
        for k in _COMM_PARTS:
            d[k] = d.get(k, 0.0) * scale
        d["compute"] += slow
    return fo, bo


def _layer_key(model, hw, plan, sh, places, load_factor: float) -> tuple:
    """Memo key of one layer's summaries: everything the lowering and its costs read."""
    groups = tuple(places[g] for g in ("tp", "cp", "ep", "etp"))
    return (value_key(model), value_key(hw), sh, groups, load_factor) + LAYER_READS(plan)


def layer_summaries(model, hw, plan, sh, places, moe: bool, load_factor: float = 1.0, zero3_inp=None) -> tuple:
    """(forward, backward with recompute) summaries of one dense or MoE layer (memoised), with its
    ZeRO-3 parameter gathers when ``zero3_inp`` (the point's StepInputs) is given."""
    z3 = (zero3_inp.plan.dp, zero3_inp.plan.cp, places["dp_cp"], places["edp"]) if zero3_inp is not None else None
    key = (_layer_key(model, hw, plan, sh, places, load_factor), moe, z3)
    hit = _LAYER.get(key)
    if hit is not None:
        return hit
    pr = plan.precision
    lf = layer_forward(model, sh, moe, load_factor)
    lb = backward_pass(lf)
    rc = recompute_of(lf, plan.recompute, recompute_set(plan))
    f = summarize(lf, hw, pr, places)
    b = combine([(1, summarize(rc, hw, pr, places)), (1, summarize(lb, hw, pr, places))])
    if pr == "fp8":
        f = combine([(1, f), (1, summarize(Pass(fp8_casts(lf.ops)), hw, pr, places))])
        b = combine([(1, b), (1, summarize(Pass(fp8_casts(rc.ops) + fp8_casts(lb.ops)), hw, pr, places))])
    swap_inp = StepInputs(model, hw, plan, sh.seq_len, 0, 0)
    out_c, in_c = swap_comms(swap_inp, sh, moe, load_factor)
    if out_c:  # every layer but a chunk's last swaps (``_chunk_sums`` takes one layer's swaps off)
        f = combine([(1, f), (1, summarize(Pass(out_c), hw, pr, places))])
        b = combine([(1, b), (1, summarize(Pass(in_c), hw, pr, places))])
    if zero3_inp is not None:
        g = summarize(Pass(dp_comms(zero3_inp, layer_spec(_ONE, moe), "zero3_param_gather", "all_gather", False)),
                      hw, pr, places)
        f, b = combine([(1, f), (1, g)]), combine([(1, b), (1, g)])
    f[_N] = b[_N] = 1.0
    out = _LAYER[key] = (f, b)
    return out


def _extras(model, hw, plan, sh, spec, places) -> tuple[list[float], list[float]]:
    """Forward and backward summaries of a chunk's embedding, MTP modules and head (memoised)."""
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
    return hit


def _chunk_sums(model, hw, plan, sh, spec, places, load_factor: float, seq_len: int = 0):
    """Forward and backward sums of one chunk for one micro-batch at a routing load factor (memoised
    on what its layers and extras read: a chunk's sums do not depend on the pipeline placement)."""
    z3 = (plan.dp, plan.cp, places["dp_cp"], places["edp"]) if plan.zero >= 3 and plan.dp * plan.cp > 1 else None
    key = (_layer_key(model, hw, plan, sh, places, load_factor), z3, seq_len, spec.dense_layers, spec.moe_layers,
           spec.embedding, spec.head, spec.mtp)
    hit = _SUMS.get(key)
    if hit is None:
        hit = _SUMS[key] = _sums(model, hw, plan, sh, spec, places, load_factor, seq_len)
    return hit


def _sums(model, hw, plan, sh, spec, places, load_factor: float, seq_len: int):
    """The body of ``_chunk_sums``."""
    ef, eb = _extras(model, hw, plan, sh, spec, places)
    terms_f, terms_b = [(1, ef)], [(1, eb)]
    z3 = None
    if plan.zero >= 3 and plan.dp * plan.cp > 1:
        z3 = StepInputs(model, hw, plan, seq_len, 0, 0)
    for moe, n in ((False, spec.dense_layers), (True, spec.moe_layers)):
        if n:
            f, b = layer_summaries(model, hw, plan, sh, places, moe, load_factor, z3)
            terms_f.append((n, f))
            terms_b.append((n, b))
    last_moe = bool(spec.moe_layers)
    if spec.layers and (plan.offload_activations or plan.offload_modules):  # the chunk's last layer stays
        out_c, in_c = swap_comms(StepInputs(model, hw, plan, seq_len, 0, 0), sh, last_moe, load_factor)
        if out_c:
            terms_f.append((-1, summarize(Pass(out_c), hw, plan.precision, places)))
            terms_b.append((-1, summarize(Pass(in_c), hw, plan.precision, places)))
    return combine(terms_f), combine(terms_b)


def stage_prefix(model, hw, plan, sh, places, load) -> tuple:
    """The part of a stage's memo key shared by every chunk of a point (everything but the chunk)."""
    z3 = plan.dp * plan.cp if plan.zero >= 3 else 0
    return (_layer_key(model, hw, plan, sh, places, 1.0), STAGE_READS(plan), paired_fb(model, plan), z3, places["pp"],
            places["dp_cp"] if z3 else None, load.max_over_mean)


def stage_cost(model, hw, plan, seq_len: int, places, spec, load, prefix: tuple | None = None) -> StageCost:
    """Cost of one virtual stage per micro-batch, equal to ``npusim.engine.step.stage_costs``'s
    (``prefix``: the point's ``stage_prefix``, when the caller has it)."""
    sh = make_shard(model, plan, seq_len, places["ep"].domains, load.dropped_fraction, load.expert_spread)
    if prefix is None:
        prefix = stage_prefix(model, hw, plan, sh, places, load)
    key = (prefix, (spec.dense_layers, spec.moe_layers, spec.embedding, spec.head, spec.mtp))
    hit = _STAGE.get(key)
    if hit is not None:
        return hit
    f, b = _chunk_sums(model, hw, plan, sh, spec, places, 1.0, seq_len)
    pair = paired_fb(model, plan)

    def parts_of(f_, b_):
        """Forward and backward parts; paired passes hide each other's communication."""
        fp, bp = finish(f_, hw, plan, 0.0 if pair else None), finish(b_, hw, plan, 0.0 if pair else None)
        return paired_parts(fp, bp, hw) if pair else (fp, bp)

    f_parts, b_parts = parts_of(f, b)
    if spec.moe_layers and load.max_over_mean != 1.0:
        fx, bx = _chunk_sums(model, hw, plan, sh, spec, places, load.max_over_mean, seq_len)
        fpx, bpx = parts_of(fx, bx)
        f_parts["imbalance"] = max(0.0, sum(fpx.values()) - sum(f_parts.values()))
        b_parts["imbalance"] = max(0.0, sum(bpx.values()) - sum(b_parts.values()))
    p2p_s = 0.0
    if plan.pp > 1:
        p2p = Comm("pp_p2p", "pp", "send_recv", "pp", 2, sh.tokens * model.hidden * ACT_BYTES / plan.tp)
        p2p_s = collective_time(p2p, places["pp"], hw)
    out = _STAGE[key] = StageCost(f_parts, b_parts, p2p_s, f[_FL] + b[_FL], busy_s={"B": {"nic": b[_NIC]}})
    return out
