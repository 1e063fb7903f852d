"""Time of a forward or backward pass: op times plus the exposed part of its collectives."""
from __future__ import annotations

from npusim.cost.collectives import collective_time
from npusim.cost.topology import host_capacities
from npusim.cost.compute import op_time
from npusim.workload.ops import Pass

PART_NAMES = ("compute", "recompute", "tp_comm", "cp_comm", "ep_comm", "pp_comm", "dp_comm", "offload",
              "bubble", "imbalance", "optimizer", "other")
"""The named parts of a step; they add up to the step time."""


def named_sum(*terms: dict[str, float], step_s: float, residual: str = "other") -> dict[str, float]:
    """The step as its named sum: every part of ``PART_NAMES`` (in that order), the ``terms`` added
    part by part, and what the step holds beyond them charged to ``residual`` (never negative).
    The one place a breakdown is built (event simulation, serving, fast tier)."""
    out = dict.fromkeys(PART_NAMES, 0.0)
    for t in terms:
        for k, v in t.items():
            out[k] += v
    out[residual] += max(0.0, step_s - sum(out.values()))
    return out


def pass_parts(p: Pass, hw, plan, places: dict, cache: dict | None = None) -> dict[str, float]:
    """Named parts (seconds) of one pass on one device: compute, recompute and exposed comm."""
    cache = {} if cache is None else cache
    parts = {"compute": 0.0, "recompute": 0.0}
    gemm_s = attn_s = 0.0
    for op in p.ops:
        key = ("op", op)
        t = cache.get(key)
        if t is None:
            t = cache[key] = op_time(op, hw, plan.precision)
        parts["recompute" if op.recompute else "compute"] += t
        if op.kind in ("gemm", "grouped_gemm"):
            gemm_s += t
        elif op.kind == "attention" or op.name.startswith("attn_"):
            attn_s += t
    comm = comm_times(p, hw, places, cache)
    # Overlapped collectives share one budget of hideable kernel time, so two collectives are
    # never hidden behind the same GEMM twice; whatever the budget cannot cover stays exposed.
    budget = [gemm_s + attn_s]
    if "tp_comm" in comm and plan.tp_comm_overlap:
        comm["tp_comm"] = exposed_behind(comm["tp_comm"], budget, hw, parts)
    if "cp_comm" in comm:
        comm["cp_comm"] = exposed_behind(comm["cp_comm"], budget, hw, parts)
    if "dp_comm" in comm and plan.overlap_param_gather:
        comm["dp_comm"] = exposed_behind(comm["dp_comm"], budget, hw, parts)
    if "ep_comm" in comm and plan.ep_overlap:
        # Another micro-batch's compute hides this one's all-to-all (adaptive pipe overlap / DualPipe).
        budget[0] += parts["compute"] + parts["recompute"] - gemm_s - attn_s
        comm["ep_comm"] = exposed_behind(comm["ep_comm"], budget, hw, parts)
    for k, v in comm.items():
        parts[k] = parts.get(k, 0.0) + v
    return parts


def comm_times(p: Pass, hw, places: dict, cache: dict) -> dict[str, float]:
    """Full time of the pass's collectives per kind ('tp_comm', ...), memoised in ``cache``."""
    comm: dict[str, float] = {}
    for c in p.comms:
        if c.kind == "offload":  # activation swap over the host link (``npusim.engine.unit``)
            comm["offload"] = comm.get("offload", 0.0) + c.bytes / host_capacities(hw)["host_d2h"]
            continue
        key = ("comm", c, places[c.group])
        t = cache.get(key)
        if t is None:
            t = cache[key] = collective_time(c, places[c.group], hw)
        name = f"{c.kind}_comm"
        comm[name] = comm.get(name, 0.0) + t
    return comm


def exposed_behind(comm_s: float, budget: list[float], hw, parts: dict[str, float]) -> float:
    """Exposed remainder of a collective hidden behind the remaining ``budget`` of compute (which it
    consumes); the hidden part slows that compute by the profile's interference factor."""
    hidden = min(comm_s, max(0.0, budget[0]))
    budget[0] -= hidden
    parts["compute"] += hidden * hw.derating.overlap_compute_slowdown
    return comm_s - hidden
