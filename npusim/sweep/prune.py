"""What the search need not evaluate: the stages a training point passes before (and instead of) the
fast tier's timing, and the blocks of points that decide each other.

Stages, in order (each point's ``stage`` column says where it stopped):

1. ``generation``: shapes the model schema rejects or outside the parameter budget (``space``).
2. ``divisibility``: plans the core's ``resolve_plan`` rejects.
3. ``memory_bound``: the busiest rank's weights, gradients and optimizer state alone exceed the
   limit. They do not depend on the recompute policy, the micro-batch size or the schedule, so the
   bound is computed once per plan family and ZeRO stage (below) and is a true lower bound of the
   exact peak (which adds activations >= 0 to the same state).
4. ``memory``: the exact peak (the core's memory model) exceeds the limit.
5. ``dominated``: a variant of the same plan with a lighter recompute policy and the same or a
   preferred ZeRO stage fits. Recompute only adds work (the recomputed forward) and only saves
   memory, so the heavier policy is slower at the same everything else and can never rank above
   it; it is evaluated only when every lighter one does not fit (``none`` < ``selective`` <
   ``full``). Likewise ZeRO-0 after ZeRO-1 (``ZERO_ORDER``).
6. ``fast``: timed by the fast tier (``revisited``: a dominated point timed afterwards, below).

Dominance is the fast tier's behaviour up to a hair: a longer backward hides a little more of
the DP reduction, so a heavier policy can come out a little faster (0.11 % at most on the
shipped specs; ZeRO-0 was never faster than ZeRO-1 there, tests/sweep/test_prune.py). A
dominated point can also rank just below its lighter sibling. So that the ranking's top ``k`` (the full tier's candidates, at least 10) equals
exhaustive search's, the dominated variants of every family with a member in the pruned top
``REVISIT_FACTOR x k`` are timed afterwards (``revisit``): a dominated point in the exhaustive
top ``k`` has a lighter sibling ranking above it or a hair below, hence in that wider set.

A block is the points that differ only in ZeRO stage, recompute, micro-batch size and option axes;
batches are cut at block boundaries, so a worker always sees a whole block.
"""
from __future__ import annotations

import json
from collections import Counter

from npusim.config.plan import ParallelPlan
from npusim.cost.memory import state_bytes
from npusim.sweep.fast import PARAM_READS, params_of, places_of, rank_groups
from npusim.sweep.memo import Reads, table, value_key

STAGES = ("generation", "divisibility", "memory_bound", "memory", "dominated", "refine", "fast", "revisited")
"""Where a point stopped, in search order (the ``stage`` column; counted in the summary)."""
STAGE_WHAT = {"generation": "shapes invalid or outside the budget", "divisibility": "plans resolve_plan rejects",
              "memory_bound": "weights, gradients and optimizer state alone over the memory limit",
              "memory": "exact peak memory over the limit",
              "dominated": "a lighter recompute policy or ZeRO-1 of the same plan fits",
              "refine": "not in the coarse grid nor next to the best (search: refine)"}
"""What each removing stage removes (summary and --dry-run)."""
REVISIT_FACTOR = 2
"""The dominated siblings of the families in the best REVISIT_FACTOR x k rows are timed afterwards."""
RECOMPUTE_ORDER = ("none", "selective", "full")
"""Recompute policies from the lightest (least work, most memory) to the heaviest."""
ZERO_ORDER = (1, 0)
"""ZeRO stages from the preferred: ZeRO-1 shards the optimizer step and its state (less time, less
memory) and moves the all-gather half of the gradient all-reduce into the next step's forward,
where it overlaps; so ZeRO-0 is timed only when ZeRO-1 of the same plan does not fit."""
BLOCK_FREE = ("zero", "recompute", "micro_batch", "schedule", "a2a", "ep_overlap", "recompute_modules",
              "offload_activations", "offload_optimizer")
"""Plan axes that vary inside a block (the innermost axes of the generation order)."""
_BOUND = table()
_SHAPES = table()
"""id(shape dict) -> (the dict, its canonical JSON): key parts of the points that share it."""
STATE_READS = PARAM_READS + Reads(ParallelPlan, "pp vpp zero precision master_weights offload_optimizer")
"""``state_GB`` besides the DP shard sizes (``state_bytes``, ``chunk_params``, ``rank_groups``)."""


def hashable(v):
    """A plan value as a hashable key part (lists, e.g. listed module tuples, by their repr)."""
    return v if isinstance(v, (int, float, str, type(None))) else repr(v)


def context_key(p: dict) -> tuple:
    """Hardware, devices, workload and model shape of a point as a key part (the shape's canonical
    JSON, computed once per shape dict)."""
    m = p["model"]
    hit = _SHAPES.get(id(m))
    if hit is None or hit[0] is not m:
        hit = _SHAPES[id(m)] = (m, json.dumps(m, sort_keys=True))
    return (p["hardware"], p["devices"], p.get("seq_len"), p.get("global_batch"), hit[1])


def block_key(p: dict) -> tuple:
    """What the points of one block share: everything but the axes that vary inside a block."""
    return context_key(p) + tuple(sorted((k, hashable(v)) for k, v in p["plan"].items() if k not in BLOCK_FREE))


def family_key(p: dict) -> tuple:
    """What the variants of one plan that may dominate each other share: everything but the recompute
    policy and (when it is 0 or 1) the ZeRO stage."""
    return context_key(p) + tuple(sorted((k, hashable(v)) for k, v in p["plan"].items()
                                      if k != "recompute" and not (k == "zero" and v in ZERO_ORDER)))


def lightness(p: dict) -> tuple[int, int]:
    """(recompute position from the lightest, ZeRO position from the preferred) of a point: a point
    dominates a member of its family that is at least as heavy on both."""
    r = p["plan"].get("recompute") or "none"
    z = p["plan"].get("zero", 0)
    return (RECOMPUTE_ORDER.index(r) if r in RECOMPUTE_ORDER else len(RECOMPUTE_ORDER),
            ZERO_ORDER.index(z) if z in ZERO_ORDER else 0)


def dominated_by(fits: list[tuple[tuple[int, int], str]], light: tuple[int, int]) -> str | None:
    """The fitting member (its description) that dominates a point of ``light``ness; None if none."""
    for (r, z), what in fits:
        if r <= light[0] and z <= light[1]:
            return what
    return None


def state_GB(model, hw, plan) -> float:
    """Weights, gradients and optimizer state of the busiest pipeline rank of a resolved plan (GB): a
    lower bound of its peak memory shared by every recompute policy and micro-batch size (memoised)."""
    places = places_of(plan, hw)
    dp_shard, edp_shard = places["dp_cp"].size, places["edp"].size
    key = (value_key(model), dp_shard, edp_shard) + STATE_READS(plan)
    hit = _BOUND.get(key)
    if hit is None:
        worst = 0.0
        for specs, _ in rank_groups(model, plan.pp, plan.vpp):
            dense = expert = 0.0
            for spec in specs:
                p = params_of(model, plan, spec)
                dense, expert = dense + p.dense, expert + p.expert
            worst = max(worst, sum(state_bytes(plan, dense, expert, dp_shard, edp_shard).values()))
        hit = _BOUND[key] = worst / 1e9
    return hit


def cut_batches(points: list[dict], size: int) -> list[tuple[int, list[dict]]]:
    """(batch number, points) pairs of about ``size`` points, never splitting a block (keys are only
    compared where a batch is full)."""
    out: list[tuple[int, list[dict]]] = []
    cur: list[dict] = []
    last = None
    for p in points:
        key = None
        if len(cur) >= size:
            key = block_key(p)
            if key != (last if last is not None else block_key(cur[-1])):
                out.append((len(out), cur))
                cur = []
        cur.append(p)
        last = key
    if cur:
        out.append((len(out), cur))
    return out


def stage_counts(stages) -> list[dict]:
    """Points removed per stage (``stages``: each point's stage), in search order, then those timed."""
    n = {k: int(v) for k, v in (stages.value_counts() if hasattr(stages, "value_counts") else Counter(stages)).items()}
    out = [{"stage": k, "removed": n.get(k, 0), "what": STAGE_WHAT[k]} for k in STAGES
           if k in STAGE_WHAT and (k != "refine" or n.get(k))]
    return out + [{"stage": "fast", "timed": n.get("fast", 0), "what": "timed by the fast tier"},
                  {"stage": "revisited", "timed": n.get("revisited", 0),
                   "what": "dominated siblings of the leaders, timed afterwards"}]


def revisit(fast, points: list[dict], k: int) -> list[dict]:
    """The dominated points whose plan family has a member among the ``k`` best feasible rows timed by
    the first pass (stage ``fast``: rows revisited before, e.g. by a sweep that is being resumed, do
    not count): what must be timed for the top ``k`` to equal exhaustive search's. ``fast`` is an
    Arrow table of the fast tier's rows lined up with ``points`` (row i is point i's; columns
    ``id``, ``status``, ``stage``, ``score``)."""
    import numpy as np
    import pyarrow.compute as pc

    def where(mask) -> np.ndarray:
        return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))

    stage = fast.column("stage")
    ok = where(pc.and_(pc.and_(pc.equal(fast.column("status"), "ok"), pc.equal(stage, "fast")),
                       pc.is_valid(fast.column("score"))))
    scores = fast.column("score").take(ok).to_pylist()
    ids = fast.column("id").take(ok).to_pylist()
    best = sorted(zip(scores, ids, ok.tolist()), key=lambda t: (-t[0], t[1]))[:k]
    fams = {family_key(points[i]) for _, _, i in best}
    near = {_near(points[i]) for _, _, i in best}
    return [points[i] for i in where(pc.equal(stage, "dominated")).tolist()
            if _near(points[i]) in near and family_key(points[i]) in fams]


def _near(p: dict) -> tuple:
    """A cheap part of a point's family key (its context and a few plan axes): a first test."""
    plan = p["plan"]
    return context_key(p) + (plan.get("pp"), plan.get("vpp"), plan.get("ep"), plan.get("micro_batch"))
