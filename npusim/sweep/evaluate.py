"""Worker side of a sweep: turn a batch of points into result rows (fast tier or full simulation).

Workers receive a plain-JSON context (base model, hardware profiles, objective) so a Ray worker on
another machine needs nothing but npusim installed. A point that raises becomes an ``error`` row;
the batch carries on.
"""
from __future__ import annotations

from typing import Any

from npusim.cost.passes import PART_NAMES
from npusim.sweep.memo import table, value_key

PLAN_COLS = ("tp", "pp", "vpp", "cp", "dp", "ep", "etp", "tp_extend_ep", "sp", "zero", "recompute", "micro_batch")
MEM_PARTS = ("weights", "gradients", "optimizer", "activations")
STATUSES = ("ok", "infeasible", "pruned", "error")
REASONS = ("model", "constraint", "divisibility", "memory", "step_time", "tpot", "ttft", "dominated")

_STATE: dict[str, dict] = {}
"""Per-process state of each sweep context (by the spec's key): profiles and model variants."""
_PARAMS_B = table()


def worker_state(ctx: dict) -> dict:
    """Per-process objects of a sweep context: hardware profiles and model variants, built once."""
    st = _STATE.get(ctx["key"])
    if st is None:
        from npusim.config.hardware import HardwareProfile

        st = _STATE[ctx["key"]] = {"hw": {n: HardwareProfile.model_validate(d) for n, d in ctx["profiles"].items()},
                                   "models": {}}
    return st


def point_model(ctx: dict, overrides: dict):
    """The ModelConfig of a variant (memoised per process); None when invalid."""
    import json

    from npusim.sweep.space import build_variant

    st = worker_state(ctx)
    last = st.get("last")
    if last is not None and last[0] is overrides:  # a batch's points share their variant's dict
        return last[1]
    models = st["models"]
    key = json.dumps(overrides, sort_keys=True)
    if key not in models:
        models[key] = build_variant(ctx["base_model"], overrides).model
    st["last"] = (overrides, models[key])
    return models[key]


def params_B(model) -> tuple[float, float]:
    """(total, activated) parameters of a model in billions (memoised by value)."""
    key = value_key(model)
    hit = _PARAMS_B.get(key)
    if hit is None:
        hit = _PARAMS_B[key] = (model.total_params() / 1e9, model.activated_params() / 1e9)
    return hit


def one_line(exc: BaseException) -> str:
    """An exception as one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def input_row(ctx: dict, p: dict, model, plan) -> dict[str, Any]:
    """The input columns of a point: workload, model axes and sizes, plan degrees and options."""
    row: dict[str, Any] = {"id": p["id"], "index": p["index"], "hardware": p["hardware"], "devices": p["devices"],
                           "seq_len": p["seq_len"], "global_batch": p["global_batch"]}
    for k in ctx["vary_keys"]:
        row[f"model_{k}"] = p["model"].get(k)
    row["total_params_B"], row["activated_params_B"] = params_B(model) if model is not None else (None, None)
    for k in PLAN_COLS:
        v = getattr(plan, k, None) if plan is not None else p["plan"].get(k)
        row[k] = plan.expert_tp if (k == "etp" and plan is not None and model is not None and model.is_moe) else v
    for k in ctx["option_keys"]:
        row[k] = p["plan"].get(k)
    return row


def metric_cols(prefix: str = "") -> list[str]:
    """Names of the metric columns of one tier."""
    base = ["step_time_s", "tokens_per_s", "tokens_per_s_per_device", "tokens_per_s_per_card", "mfu", "hfu",
            "peak_memory_GB", "cost_per_Mtok", "score"]
    return ([prefix + k for k in base] + [f"{prefix}bd_{k}_s" for k in PART_NAMES]
            + [f"{prefix}mem_{k}_GB" for k in MEM_PARTS])


def _metrics(ctx: dict, p: dict, res: dict, prefix: str = "") -> dict[str, Any]:
    """Metric columns from a result dict (fast estimate or ``Result``): score by the objective."""
    out: dict[str, Any] = {prefix + "peak_memory_GB": res.get("peak_memory_GB")}
    for k in MEM_PARTS:
        out[f"{prefix}mem_{k}_GB"] = res.get("memory_GB", {}).get(k)
    if res.get("step_time_s") is None:
        return out
    from npusim.sweep.serving import per_hardware

    for k in ("step_time_s", "tokens_per_s", "tokens_per_s_per_device", "mfu", "hfu"):
        out[prefix + k] = res[k]
    out[prefix + "tokens_per_s_per_card"] = res["tokens_per_s_per_device"] * per_hardware(
        ctx["objective"]["devices_per_card"], p["hardware"], 1)
    for k in PART_NAMES:
        out[f"{prefix}bd_{k}_s"] = res["breakdown_s"].get(k, 0.0)
    price = per_hardware(ctx["objective"]["price_per_device_hour"], p["hardware"], 1.0)
    cost = price * p["devices"] / 3600.0 / res["tokens_per_s"] * 1e6
    out[prefix + "cost_per_Mtok"] = cost
    metric = ctx["objective"]["metric"]
    out[prefix + "score"] = -cost if metric == "cost" else out[prefix + metric]
    return out


def _status(ctx: dict, res: dict) -> tuple[str, str | None, str]:
    """(status, reason, message) of an evaluated point under the objective's limits."""
    if res.get("step_time_s") is None:
        return "infeasible", "memory", f"peak {res['peak_memory_GB']:.1f} GB > limit {ctx['memory_limit_frac'] * res['hbm_capacity_GB']:.1f} GB"
    if res["peak_memory_GB"] > ctx["memory_limit_frac"] * res["hbm_capacity_GB"]:
        return "infeasible", "memory", f"peak {res['peak_memory_GB']:.1f} GB over the limit"
    limit = ctx["objective"].get("max_step_time_s")
    if limit is not None and res["step_time_s"] > limit:
        return "infeasible", "step_time", f"step {res['step_time_s']:.2f} s > {limit} s"
    return "ok", None, ""


def _prepare(ctx: dict, p: dict):
    """(model, hardware, resolved plan, workload) of a point; raises ConfigError for an invalid plan."""
    from npusim.config.plan import make_plan, resolve_plan
    from npusim.config.workload import TrainWorkload

    model = point_model(ctx, p["model"])
    hw = worker_state(ctx)["hw"][p["hardware"]]
    wl = TrainWorkload(seq_len=p["seq_len"], global_batch=p["global_batch"])
    plan = make_plan(p["plan"], source="plan")
    plan = resolve_plan(plan, model, p["devices"], wl.global_batch, wl.seq_len, source="plan")
    return model, hw, plan, wl


def evaluate_fast(ctx: dict, points: list[dict]) -> list[dict]:
    """Fast-tier rows of a batch (in the batch's order): the search stages of ``npusim.sweep.prune``
    (validity, memory bound, exact memory, recompute dominance), then the closed-form estimate and
    the limits. The recompute variants of a plan (a family) are visited lightest first, so a heavier
    one is only costed when every lighter one does not fit."""
    from npusim.sweep.prune import family_key, lightness

    if ctx.get("kind", "train") != "train":
        from npusim.sweep.serving import evaluate_serving_fast

        return evaluate_serving_fast(ctx, points)
    first: dict[str, int] = {}
    fams = [first.setdefault(family_key(p), i) for i, p in enumerate(points)]
    order = sorted(range(len(points)), key=lambda i: (fams[i], lightness(points[i]), i))
    known: dict[int, _Family] = {}
    rows: list = [None] * len(points)
    prune = ctx.get("search", "prune") != "exhaustive"
    for i in order:
        fam = known.get(fams[i]) if prune else None
        try:
            rows[i] = _family_row(ctx, points[i], fam) if fam is not None else None
            if rows[i] is None:
                rows[i] = _fast_row(ctx, points[i], known, fams[i], prune)
        except Exception as e:  # a failing point is an error row, never a crashed sweep
            rows[i] = {**input_row(ctx, points[i], None, None), "status": "error", "reason": type(e).__name__,
                       "message": one_line(e), "stage": "fast"}
    return rows


class _Family:
    """What the first resolved member of a plan family (points differing only in recompute and
    ZeRO-0/1, ``prune.family_key``) tells the others: its resolved inputs, the members that fit,
    and the ZeRO stages over the memory bound."""

    __slots__ = ("inputs", "fits", "out")

    def __init__(self, inputs: dict):
        self.inputs = inputs
        self.fits: list[tuple[tuple[int, int], str]] = []
        """(lightness, description) of the members that fit (those they dominate are pruned)."""
        self.out: dict = {}
        """ZeRO stage -> status columns of the members over the memory bound (the state does not
        depend on the recompute policy)."""


def _family_row(ctx: dict, p: dict, fam: _Family) -> dict | None:
    """The row of a point known to be dominated or over the memory bound from its family (its inputs
    are the family's with its own recompute policy and ZeRO stage: ``resolve_plan`` reads
    neither); None when it must be evaluated."""
    from npusim.sweep.prune import dominated_by, lightness

    zero = p["plan"].get("zero", fam.inputs["zero"])
    by = dominated_by(fam.fits, lightness(p))
    if by is None and zero not in fam.out:
        return None
    row = {**fam.inputs, "id": p["id"], "index": p["index"], "recompute": p["plan"].get("recompute", "none"),
           "zero": zero}
    if by is not None:
        return {**row, "status": "pruned", "reason": "dominated", "message": f"{by} fits, no slower and no larger",
                "stage": "dominated"}
    return {**row, **fam.out[zero]}


def _fast_row(ctx: dict, p: dict, known: dict, fam_id: int, prune: bool = True) -> dict:
    """The fast-tier row of one point, evaluated; records what its family learns in ``known``
    (without ``prune`` neither dominance nor the memory bound applies)."""
    from npusim.config.errors import ConfigError
    from npusim.sweep.fast import estimate
    from npusim.sweep.prune import state_GB

    model = plan = None
    if "pre" in p:
        model = point_model(ctx, p["model"])
        return {**input_row(ctx, p, model, None), "status": "infeasible", "reason": p["pre"][0],
                "message": p["pre"][1], "stage": "generation"}
    try:
        model, hw, plan, wl = _prepare(ctx, p)
    except ConfigError as e:
        return {**input_row(ctx, p, model, None), "status": "infeasible", "reason": "divisibility",
                "message": str(e), "stage": "divisibility"}
    inputs = input_row(ctx, p, model, plan)
    fam = known.setdefault(fam_id, _Family(inputs))
    limit = ctx["memory_limit_frac"] * hw.chip.hbm_capacity_GB
    bound = state_GB(model, hw, plan) if prune else 0.0
    if bound > limit:
        fam.out[plan.zero] = {"status": "infeasible", "reason": "memory", "stage": "memory_bound",
                              "message": f"weights, gradients and optimizer state {bound:.1f} GB > limit {limit:.1f} GB"}
        return {**inputs, **fam.out[plan.zero]}
    try:
        res = estimate(model, hw, plan, wl, p["devices"], memory_limit_GB=limit)
    except Exception as e:  # a failing point is an error row, never a crashed sweep
        return {**inputs, "status": "error", "reason": type(e).__name__, "message": one_line(e), "stage": "fast"}
    status, reason, msg = _status(ctx, res)
    if prune and (status == "ok" or reason == "step_time"):  # what it dominates is slower still
        from npusim.sweep.prune import lightness

        fam.fits.append((lightness(p), f"recompute={plan.recompute} zero={plan.zero}"))
    return {**inputs, "status": status, "reason": reason, "message": msg,
            "stage": "memory" if reason == "memory" else ctx.get("timed_stage", "fast"), **_metrics(ctx, p, res)}


def evaluate_full(ctx: dict, points: list[dict]) -> list[dict]:
    """Full-tier rows of a batch: the SimPy event simulation of each point (``full_*`` columns)."""
    from npusim.simulate import simulate

    if ctx.get("kind", "train") != "train":
        from npusim.sweep.serving import evaluate_serving_full

        return evaluate_serving_full(ctx, points)
    rows = []
    for p in points:
        try:
            model, hw, plan, wl = _prepare(ctx, p)
            res = simulate(model, hw, plan, wl, p["devices"]).to_dict()
            status, reason, msg = _status(ctx, res)
            rows.append({"id": p["id"], "full_status": status, "full_reason": reason, "full_message": msg,
                         **_metrics(ctx, p, res, "full_")})
        except Exception as e:
            rows.append({"id": p["id"], "full_status": "error", "full_reason": type(e).__name__,
                         "full_message": one_line(e)})
    return rows
