"""Worker side of a sweep: turn a batch of points into result rows (fast tier or full simulation).

Workers receive a plain-JSON context (base model, hardware profiles, objective) so a Ray worker on
another machine needs nothing but npusim installed. A point that raises becomes an ``error`` row;
the batch carries on.
"""
from __future__ import annotations

from typing import Any

from npusim.cost.passes import PART_NAMES

PLAN_COLS = ("tp", "pp", "vpp", "cp", "dp", "ep", "etp", "tp_extend_ep", "sp", "zero", "recompute", "micro_batch")
MEM_PARTS = ("weights", "gradients", "optimizer", "activations")
STATUSES = ("ok", "infeasible", "error")
REASONS = ("model", "constraint", "divisibility", "memory", "step_time", "tpot", "ttft")

_STATE: dict[str, dict] = {}


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

    models = worker_state(ctx)["models"]
    key = json.dumps(overrides, sort_keys=True)
    if key not in models:
        models[key] = build_variant(ctx["base_model"], overrides).model
    return models[key]


def one_line(exc: BaseException) -> str:
    """An exception as one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def input_row(ctx: dict, p: dict, model, plan) -> dict[str, Any]:
    """The input columns of a point: workload, model axes and sizes, plan degrees and options."""
    row: dict[str, Any] = {"id": p["id"], "index": p["index"], "hardware": p["hardware"], "devices": p["devices"],
                           "seq_len": p["seq_len"], "global_batch": p["global_batch"]}
    for k in ctx["vary_keys"]:
        row[f"model_{k}"] = p["model"].get(k)
    row["total_params_B"] = model.total_params() / 1e9 if model is not None else None
    row["activated_params_B"] = model.activated_params() / 1e9 if model is not None else None
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
    """Fast-tier rows of a batch: validity, memory prune, closed-form estimate, limits."""
    from npusim.config.errors import ConfigError
    from npusim.sweep.fast import estimate

    if ctx.get("kind", "train") != "train":
        from npusim.sweep.serving import evaluate_serving_fast

        return evaluate_serving_fast(ctx, points)
    rows = []
    for p in points:
        model = plan = None
        try:
            if "pre" in p:
                model = point_model(ctx, p["model"])
                rows.append({**input_row(ctx, p, model, None), "status": "infeasible", "reason": p["pre"][0],
                             "message": p["pre"][1]})
                continue
            try:
                model, hw, plan, wl = _prepare(ctx, p)
            except ConfigError as e:
                rows.append({**input_row(ctx, p, model, None), "status": "infeasible", "reason": "divisibility",
                             "message": str(e)})
                continue
            limit = ctx["memory_limit_frac"] * hw.chip.hbm_capacity_GB
            res = estimate(model, hw, plan, wl, p["devices"], memory_limit_GB=limit)
            status, reason, msg = _status(ctx, res)
            rows.append({**input_row(ctx, p, model, plan), "status": status, "reason": reason, "message": msg,
                         **_metrics(ctx, p, res)})
        except Exception as e:  # a failing point is an error row, never a crashed sweep
            rows.append({**input_row(ctx, p, model, plan), "status": "error", "reason": type(e).__name__,
                         "message": one_line(e)})
    return rows


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
