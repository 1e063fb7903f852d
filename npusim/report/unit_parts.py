"""What one forward or backward unit of a virtual stage does on each resource of a device.

The engine keeps a unit's time as named parts (``compute``, ``recompute``, exposed ``tp_comm``...;
``npusim.cost.passes.PART_NAMES``). The trace splits every part onto the resource that spends it:
compute onto the matrix unit (GEMMs, attention) and the vector unit (norms, activations, elementwise)
in proportion to their kernels' times, exposed communication onto its link. The slices of a unit add
up to the unit's time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

RESOURCES = ("matrix", "vector", "tp", "cp", "ep", "pp", "dp")
"""Resources of one device, in the trace's thread order."""

MATRIX_KINDS = ("gemm", "grouped_gemm", "attention")
"""Op kinds that run on the matrix unit (cube / tensor cores); the rest run on the vector unit."""


@dataclass(frozen=True)
class Slice:
    """A piece of one unit spent on one resource."""

    resource: str
    name: str
    seconds: float
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StageDetail:
    """Forward and backward slices of one virtual stage (per micro-batch) and its p2p time."""

    forward: tuple[Slice, ...]
    backward: tuple[Slice, ...]
    p2p_s: float
    p2p_bytes: float = 0.0


def _num(x: float) -> float:
    """Six significant digits: stable, readable numbers in the trace's args."""
    return float(f"{x:.6g}")


def _compute_slices(seconds: float, ops, hw, precision: str, cache: dict, suffix: str) -> list[Slice]:
    """Split ``seconds`` of compute between the matrix and vector units by their kernels' times."""
    from npusim.cost.compute import op_time

    if seconds <= 0:
        return []
    t = {"matrix": 0.0, "vector": 0.0}
    flops = {"matrix": 0.0, "vector": 0.0}
    nbytes = {"matrix": 0.0, "vector": 0.0}
    kernels = {"matrix": 0, "vector": 0}
    for op in ops:
        unit = "matrix" if op.kind in MATRIX_KINDS else "vector"
        key = ("op", op)
        if key not in cache:
            cache[key] = op_time(op, hw, precision)
        t[unit] += cache[key]
        flops[unit] += op.flops
        nbytes[unit] += op.bytes
        kernels[unit] += 1
    total = t["matrix"] + t["vector"]
    share = {"matrix": 1.0, "vector": 0.0} if total <= 0 else {u: t[u] / total for u in t}
    names = {"matrix": "GEMM + attention", "vector": "vector ops"}
    out = []
    for u in ("matrix", "vector"):
        if share[u] > 0:
            args = {"flops": _num(flops[u]), "hbm_bytes": _num(nbytes[u]), "kernels": kernels[u]}
            out.append(Slice(u, names[u] + suffix, seconds * share[u], args))
    return out


def _comm_slice(kind: str, exposed: float, comms, places, hw, cache: dict) -> Slice:
    """The exposed part of one kind of collective, with its volume, groups and hidden time."""
    from npusim.cost.collectives import collective_time

    total_s = nbytes = 0.0
    calls: dict[str, int] = {}
    groups = set()
    for c in comms:
        key = ("comm", c, places[c.group])
        if key not in cache:
            cache[key] = collective_time(c, places[c.group], hw)
        total_s += cache[key]
        nbytes += c.bytes
        calls[c.collective] = calls.get(c.collective, 0) + 1
        pl = places[c.group]
        groups.add(f"{c.group} ({pl.size} ranks over {pl.domains} domain{'s' if pl.domains > 1 else ''})")
    args = {"bytes": _num(nbytes), "collectives": ", ".join(f"{k} x{v}" for k, v in sorted(calls.items())),
            "group": "; ".join(sorted(groups)), "total_s": _num(total_s),
            "hidden_s": _num(max(0.0, total_s - exposed))}
    return Slice(kind, f"{kind.upper()} comm", exposed, args)


def unit_slices(parts: dict[str, float], p=None, hw=None, plan=None, places=None, cache: dict | None = None,
                backward: bool = False) -> tuple[Slice, ...]:
    """Slices of one unit from its named parts; ``p`` (the lowered Pass) refines them when given."""
    cache = {} if cache is None else cache
    ops = list(p.ops) if p is not None else []
    out: list[Slice] = []
    for name in (("recompute", "compute") if backward else ("compute", "recompute")):
        sec = parts.get(name, 0.0)
        suffix = " (recompute)" if name == "recompute" else ""
        if p is None:
            if sec > 0:
                out.append(Slice("matrix", ("GEMM + attention" + suffix) if name == "compute" else "recompute", sec))
            continue
        chosen = [o for o in ops if o.recompute == (name == "recompute")]
        out += _compute_slices(sec, chosen, hw, plan.precision, cache, suffix)
    for name, sec in parts.items():
        if name in ("compute", "recompute") or sec <= 0:
            continue
        kind = name[: -len("_comm")] if name.endswith("_comm") else None
        if kind in RESOURCES:
            comms = [c for c in p.comms if c.kind == kind] if p is not None else []
            out.append(_comm_slice(kind, sec, comms, places, hw, cache) if comms else Slice(kind, f"{kind.upper()} comm", sec))
        elif name == "imbalance":
            out.append(Slice("matrix", "MoE imbalance wait", sec,
                             {"note": "the busiest device of the EP group sets the time"}))
        else:
            out.append(Slice("matrix", name, sec))
    return tuple(out)


def stage_details(sp, stage_costs=None) -> list[StageDetail]:
    """Slices of every virtual stage of the step described by ``sp`` (``rebuild.StepParts``).

    ``stage_costs`` (``npusim.engine.step.stage_costs`` output) is computed when not given; the
    lowered passes refine compute into matrix / vector work and add FLOPs and bytes."""
    from npusim.engine.step import chunk_passes, make_shard, stage_costs as engine_stage_costs
    from npusim.workload.layers import ACT_BYTES

    si, places = sp.inputs, sp.places
    cache: dict = {}
    if stage_costs is None:
        stage_costs = engine_stage_costs(si, sp.specs, places, cache, sp.load)
    sh = make_shard(si.model, si.plan, si.seq_len, places["ep"].domains, sp.load.dropped_fraction, sp.load.expert_spread)
    p2p_bytes = sh.tokens * si.model.hidden * ACT_BYTES / si.plan.tp if si.plan.pp > 1 else 0.0
    by_sig: dict[tuple, tuple] = {}
    out = []
    for spec, cost in zip(sp.specs, stage_costs):
        sig = (spec.dense_layers, spec.moe_layers, spec.embedding, spec.head, spec.mtp)
        if sig not in by_sig:
            by_sig[sig] = chunk_passes(si, sh, spec)
        fwd, bwd = by_sig[sig]
        out.append(StageDetail(unit_slices(cost.forward, fwd, si.hw, si.plan, places, cache),
                               unit_slices(cost.backward, bwd, si.hw, si.plan, places, cache, backward=True),
                               cost.p2p_s, p2p_bytes))
    return out


def details_from_costs(stage_costs) -> list[StageDetail]:
    """Coarse slices from StageCost parts alone (compute on the matrix unit, no FLOPs or bytes)."""
    return [StageDetail(unit_slices(c.forward), unit_slices(c.backward, backward=True), c.p2p_s)
            for c in stage_costs]
