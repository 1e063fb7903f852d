"""Serving points of a sweep: the largest batch under a TPOT / TTFT limit that fits in memory.

A decode (or prefill) point is a model, hardware, device count and serving plan. With ``batch:
auto`` the sweep looks for the largest batch (a multiple of the attention DP size) whose TPOT
(TTFT) is within the objective's limit and whose memory fits, and reports its throughput; TPOT
grows with the batch, so the search is a bisection over sequences per DP group, each step one
``simulate_serving(strict_memory=False)`` call (about 1 ms with pp = 1).

``kv_precision: auto`` in a sweep lets the search choose the KV dtype per point: a 16-bit cache
while the batch fits, an int8 cache beyond (the core itself never switches: there ``auto`` is
16-bit at every batch, so its TPOT never falls as the batch grows). The int8 cache halves the KV
bytes, so TPOT drops where the cache changes dtype; the search therefore treats the two dtypes as
two batch ranges, each monotone, and takes the answer from the highest range whose smallest batch
meets the limit. The batch found meets the limit and
fits, and the next batch up (one more sequence per DP group) violates the limit or memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

SERVE_PLAN_COLS = ("tp", "pp", "dp", "ep", "etp", "shared_tp", "sp", "moe_dispatch", "precision", "kv_precision")
SERVE_MEM = ("weights", "kv_cache", "workspace")
WL_COLS = ("kind", "input_len", "output_len", "batch_spec")


@dataclass
class BatchSearch:
    """What the batch search found for one serving point."""

    result: Any
    """The core's Result at ``batch`` (None when not even one sequence per DP group fits)."""
    batch: Optional[int]
    kv_dtype: Optional[str]
    bound: Optional[str]
    """What stops a larger batch: 'tpot' / 'ttft' (the limit), 'memory', 'max_batch', or 'given' (a
    fixed batch); for an infeasible point the reason ('tpot', 'ttft', 'memory')."""
    ok: bool
    evals: int = 0
    message: str = ""
    tried: dict = field(default_factory=dict)
    """(sequences per DP group, KV dtype) -> Result of every simulation run."""


def per_hardware(value, hw_name: str, default=None):
    """A spec value given once or per hardware name."""
    return value.get(hw_name, default) if isinstance(value, dict) else (default if value is None else value)


def kv_choices(plan, hw) -> list[str]:
    """KV-cache dtypes in batch order: auto = 16-bit while it fits, then int8; else the plan's."""
    if plan.kv_precision != "auto":
        return [plan.kv_precision]
    return ["bf16" if "bf16" in hw.chip.matrix_tflops else "fp16", "int8"]


def max_seqs(model, plan, wl, limit_bytes: float) -> int:
    """Largest sequences per attention-DP group whose serving memory is within ``limit_bytes``."""
    from npusim.engine.serve import serving_memory

    def mem(k: int) -> float:
        """Bytes per device at ``k`` sequences per group."""
        return sum(serving_memory(model, plan, wl, k).values())

    base = mem(0)
    per = mem(1) - base
    if base + per > limit_bytes:
        return 0
    k = int((limit_bytes - base) // per) if per > 0 else 1 << 20
    while k > 1 and mem(k) > limit_bytes:
        k -= 1
    while mem(k + 1) <= limit_bytes and k < 1 << 20:
        k += 1
    return k


def _ranges(model, hw, plan, wl, mem_limit_GB: float, max_batch: Optional[int]) -> list[tuple[str, int, int]]:
    """(KV dtype, first, last sequences per DP group) ranges that fit, in batch order."""
    out, lo = [], 1
    cap = max_batch // plan.dp if max_batch else None
    for kv in kv_choices(plan, hw):
        hi = max_seqs(model, plan.model_copy(update={"kv_precision": kv}), wl, mem_limit_GB * 1e9)
        hi = min(hi, cap) if cap is not None else hi
        if hi >= lo:
            out.append((kv, lo, hi))
        lo = max(lo, hi + 1)
    return out


def search_batch(model, hw, plan, wl, devices: int, *, limit_s: Optional[float], mem_limit_GB: float,
                 max_batch: Optional[int] = None) -> BatchSearch:
    """Largest batch of ``wl.kind`` with TPOT (decode) or TTFT (prefill) <= ``limit_s`` (None: no
    limit) and memory <= ``mem_limit_GB``; ``plan`` is a ParallelPlan (ConfigError if invalid)."""
    from npusim.engine.serve import resolve_serving_plan

    plan = resolve_serving_plan(plan, model, devices, devices, source="plan")
    attr = "tpot_s" if wl.kind == "decode" else "ttft_s"
    s = BatchSearch(None, None, None, None, False)
    run = _runner(model, hw, plan, wl, devices, s.tried)

    def ok(k: int, kv: str) -> bool:
        """True when ``k`` sequences per group with a ``kv`` cache meet the limit."""
        return limit_s is None or getattr(run(k, kv), attr) <= limit_s

    ranges = _ranges(model, hw, plan, wl, mem_limit_GB, max_batch)
    if not ranges:
        return _no_fit(s, model, plan, wl, mem_limit_GB)
    for kv, lo, hi in reversed(ranges):
        if not ok(lo, kv):
            continue
        if ok(hi, kv):
            capped = max_batch is not None and (hi + 1) * plan.dp > max_batch
            best, s.bound = hi, "max_batch" if capped else "memory"
        else:
            while hi - lo > 1:  # invariant: lo meets the limit, hi does not
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if ok(mid, kv) else (lo, mid)
            best, s.bound = lo, attr[:-2]
        s.result, s.batch, s.kv_dtype, s.ok = run(best, kv), best * plan.dp, kv, True
        break
    else:
        kv, lo, _ = ranges[0]
        s.result, s.batch, s.kv_dtype, s.bound = run(lo, kv), lo * plan.dp, kv, attr[:-2]
        s.message = (f"{attr[:-2].upper()} {getattr(s.result, attr) * 1e3:.1f} ms > {limit_s * 1e3:g} ms "
                     f"already at the smallest batch ({s.batch})")
    s.evals = len(s.tried)
    return s


def fixed_batch(model, hw, plan, wl, devices: int, *, limit_s: Optional[float], mem_limit_GB: float) -> BatchSearch:
    """One given batch: the KV dtype auto picks for it, then the memory and TPOT / TTFT checks."""
    from npusim.engine.serve import resolve_serving_plan

    plan = resolve_serving_plan(plan, model, devices, wl.batch, source="plan")
    attr = "tpot_s" if wl.kind == "decode" else "ttft_s"
    s = BatchSearch(None, wl.batch, None, None, False)
    k = wl.batch // plan.dp
    ranges = [r for r in _ranges(model, hw, plan, wl, mem_limit_GB, None) if r[1] <= k <= r[2]]
    if not ranges:
        return _no_fit(s, model, plan, wl, mem_limit_GB)
    s.kv_dtype = ranges[0][0]
    s.result = _runner(model, hw, plan, wl, devices, s.tried)(k, s.kv_dtype)
    value = getattr(s.result, attr)
    s.ok = limit_s is None or value <= limit_s
    s.bound = "given"
    if not s.ok:
        s.bound, s.message = attr[:-2], f"{attr[:-2].upper()} {value * 1e3:.1f} ms > {limit_s * 1e3:g} ms"
    s.evals = len(s.tried)
    return s


def _runner(model, hw, plan, wl, devices: int, tried: dict):
    """run(k, kv): the core's serving simulation at k sequences per DP group, memoised in ``tried``."""
    from npusim.engine.serve import simulate_serving

    def run(k: int, kv: str):
        """The Result at ``k`` sequences per group with a ``kv`` cache."""
        if (k, kv) not in tried:
            tried[(k, kv)] = simulate_serving(model, hw, plan.model_copy(update={"kv_precision": kv}),
                                              wl.model_copy(update={"batch": k * plan.dp}), devices,
                                              strict_memory=False)
        return tried[(k, kv)]
    return run


def _no_fit(s: BatchSearch, model, plan, wl, mem_limit_GB: float) -> BatchSearch:
    """Mark a search whose smallest batch does not fit (weights alone, or one sequence per DP group)."""
    from npusim.engine.serve import serving_memory

    mem = serving_memory(model, plan.model_copy(update={"kv_precision": "int8"}), wl, 1)
    s.bound = "memory"
    s.message = (f"batch {s.batch or plan.dp} does not fit: {sum(mem.values()) / 1e9:.1f} GB per device at least "
                 f"(weights {mem['weights'] / 1e9:.1f} GB) > limit {mem_limit_GB:.1f} GB")
    return s


def serving_metric_cols(prefix: str = "") -> list[str]:
    """Names of the metric columns of one tier of a serving sweep."""
    from npusim.cost.passes import PART_NAMES

    base = ["batch", "kv_dtype", "bound", "evals", "step_time_s", "tpot_s", "ttft_s", "tokens_per_s",
            "tokens_per_s_per_device", "tokens_per_s_per_card", "mfu", "hfu", "peak_memory_GB", "kv_cache_GB",
            "cost_per_Mtok", "score"]
    return ([prefix + k for k in base] + [f"{prefix}bd_{k}_s" for k in PART_NAMES]
            + [f"{prefix}mem_{k}_GB" for k in SERVE_MEM])


def serving_columns(ctx: dict) -> list[str]:
    """Every column of results.parquet of a serving sweep, in order (a serving-capacity sweep adds
    ``npusim.sweep.serving_capacity.CAPACITY_COLS`` to each tier)."""
    from npusim.sweep.serving_capacity import capacity_metric_cols

    inputs = ["id", "index", "hardware", "devices", *WL_COLS]
    inputs += [f"model_{k}" for k in ctx["vary_keys"]] + ["total_params_B", "activated_params_B"]
    inputs += list(SERVE_PLAN_COLS) + list(ctx["option_keys"])
    serve = ctx.get("kind") == "serve"
    fast = serving_metric_cols() + (capacity_metric_cols() if serve else [])
    full = serving_metric_cols("full_") + (capacity_metric_cols("full_") if serve else [])
    return inputs + ["status", "reason", "message"] + fast + ["full_status", "full_reason", "full_message"] + full


def serving_input_row(ctx: dict, p: dict, model, plan) -> dict[str, Any]:
    """The input columns of a serving point: workload, model axes and sizes, plan degrees and options."""
    row: dict[str, Any] = {"id": p["id"], "index": p["index"], "hardware": p["hardware"], "devices": p["devices"],
                           "kind": p["kind"], "input_len": p["input_len"], "output_len": p.get("output_len"),
                           "batch_spec": str(p["batch"])}
    for k in ctx["vary_keys"]:
        row[f"model_{k}"] = p["model"].get(k)
    row["total_params_B"] = model.total_params() / 1e9 if model is not None else None
    row["activated_params_B"] = model.activated_params() / 1e9 if model is not None else None
    for k in SERVE_PLAN_COLS:
        row[k] = getattr(plan, k) if plan is not None else p["plan"].get(k)
    if plan is not None and model is not None:
        if model.is_moe:
            row["shared_tp"] = plan.shared_tp or plan.tp
        else:
            row.update({"ep": None, "etp": None, "shared_tp": None, "moe_dispatch": None})
    for k in ctx["option_keys"]:
        row[k] = p["plan"].get(k)
    return row


def _metrics(ctx: dict, p: dict, s: BatchSearch, prefix: str = "") -> dict[str, Any]:
    """Metric columns of a finished search: throughput at the batch found, scored by the objective."""
    from npusim.cost.passes import PART_NAMES

    out: dict[str, Any] = {prefix + "batch": s.batch, prefix + "kv_dtype": s.kv_dtype, prefix + "bound": s.bound,
                           prefix + "evals": s.evals}
    r = s.result
    if r is None:
        return out
    obj = ctx["objective"]
    per_card = per_hardware(obj["devices_per_card"], p["hardware"], 1)
    price = per_hardware(obj["price_per_device_hour"], p["hardware"], 1.0)
    vals = {"step_time_s": r.step_time_s, "tpot_s": r.tpot_s, "ttft_s": r.ttft_s, "tokens_per_s": r.tokens_per_s,
            "tokens_per_s_per_device": r.tokens_per_s_per_device,
            "tokens_per_s_per_card": r.tokens_per_s_per_device * per_card, "mfu": r.mfu, "hfu": r.hfu,
            "peak_memory_GB": r.peak_memory_GB, "kv_cache_GB": r.kv_cache_GB,
            "cost_per_Mtok": price * p["devices"] / 3600.0 / r.tokens_per_s * 1e6}
    vals["score"] = -vals["cost_per_Mtok"] if obj["metric"] == "cost" else vals[obj["metric"]]
    out.update({prefix + k: v for k, v in vals.items()})
    out.update({f"{prefix}bd_{k}_s": r.breakdown_s.get(k, 0.0) for k in PART_NAMES})
    out.update({f"{prefix}mem_{k}_GB": r.memory_GB.get(k) for k in SERVE_MEM})
    return out


def _prepare(ctx: dict, p: dict):
    """(model, hardware, resolved plan, workload) of a serving point; ConfigError for an invalid plan."""
    from npusim.config.errors import ConfigError
    from npusim.config.plan import make_plan
    from npusim.config.workload import InferenceWorkload
    from npusim.engine.serve import resolve_serving_plan
    from npusim.sweep.evaluate import point_model, worker_state

    model = point_model(ctx, p["model"])
    hw = worker_state(ctx)["hw"][p["hardware"]]
    batch = p["batch"] if p["batch"] != "auto" else p["devices"]
    wl = InferenceWorkload(kind=p["kind"], batch=batch, input_len=p["input_len"], output_len=p.get("output_len"))
    plan = resolve_serving_plan(make_plan(p["plan"], source="plan"), model, p["devices"], batch, source="plan")
    cap = ctx.get("max_batch")
    if p["batch"] == "auto" and cap and cap < plan.dp:
        raise ConfigError("plan", "max_batch", cap, f"below the attention data-parallel size dp = {plan.dp}",
                          f">= {plan.dp}")
    return model, hw, plan, wl


def _search(ctx: dict, p: dict, model, hw, plan, wl) -> BatchSearch:
    """Run the batch search (auto) or the fixed-batch check of a point under the objective's limits."""
    obj = ctx["objective"]
    limit = per_hardware(obj["max_tpot_s"] if p["kind"] == "decode" else obj["max_ttft_s"], p["hardware"])
    mem = ctx["memory_limit_frac"] * hw.chip.hbm_capacity_GB
    if p["batch"] == "auto":
        return search_batch(model, hw, plan, wl, p["devices"], limit_s=limit, mem_limit_GB=mem,
                            max_batch=ctx.get("max_batch"))
    return fixed_batch(model, hw, plan, wl, p["devices"], limit_s=limit, mem_limit_GB=mem)


def infeasible_row(ctx: dict, p: dict, reason: str, message: str) -> dict:
    """The row of a point refused before any simulation (invalid shape or plan, outside a budget)."""
    from npusim.sweep.evaluate import point_model

    return {**serving_input_row(ctx, p, point_model(ctx, p["model"]), None), "status": "infeasible",
            "reason": reason, "message": message}


def evaluate_serving_fast(ctx: dict, points: list[dict]) -> list[dict]:
    """Rows of a batch of serving points: validity, then the batch search (the core's serving model)."""
    from npusim.sweep.evaluate import one_line

    if ctx.get("kind") == "serve":
        from npusim.sweep.serving_capacity import evaluate_capacity

        return evaluate_capacity(ctx, points)
    def evaluate(p: dict, prepared: tuple) -> dict:
        model, hw, plan, wl = prepared
        s = _search(ctx, p, model, hw, plan, wl)
        status = ("ok", None) if s.ok else ("infeasible", s.bound)
        return {**serving_input_row(ctx, p, model, plan), "status": status[0], "reason": status[1],
                "message": s.message, **_metrics(ctx, p, s)}

    def failed(p: dict, prepared: tuple | None, e: Exception) -> dict:
        model, plan = (prepared[0], prepared[2]) if prepared else (None, None)
        return {**serving_input_row(ctx, p, model, plan), "status": "error", "reason": type(e).__name__,
                "message": one_line(e)}

    return point_rows(ctx, points, _prepare, evaluate, failed)


def point_rows(ctx: dict, points: list[dict], prepare, evaluate, failed) -> list[dict]:
    """Rows of a batch of serving points, in order: a point refused at generation (``p["pre"]``) or
    whose plan the degrees do not divide (``prepare`` raises ConfigError) is an infeasible row;
    otherwise ``evaluate(p, prepare(ctx, p))``; a point that fails is ``failed(p, prepared or
    None, exception)``, never a crashed sweep."""
    from npusim.config.errors import ConfigError

    rows = []
    for p in points:
        prepared = None
        try:
            if "pre" in p:
                rows.append(infeasible_row(ctx, p, *p["pre"]))
                continue
            try:
                prepared = prepare(ctx, p)
            except ConfigError as e:
                rows.append(infeasible_row(ctx, p, "divisibility", str(e)))
                continue
            rows.append(evaluate(p, prepared))
        except Exception as e:  # a failing point is an error row, never a crashed sweep
            rows.append(failed(p, prepared, e))
    return rows


def evaluate_serving_full(ctx: dict, points: list[dict]) -> list[dict]:
    """Full-tier rows: each point re-simulated from scratch at the batch and KV dtype its search found
    (``p["found"]``), with the memory and limit checks repeated."""
    from npusim.sweep.evaluate import one_line

    if ctx.get("kind") == "serve":
        from npusim.sweep.serving_capacity import evaluate_capacity

        return evaluate_capacity(ctx, points, full=True)
    rows = []
    for p in points:
        try:
            found = p["found"]
            q = {**p, "batch": found["batch"]}
            model, hw, plan, wl = _prepare(ctx, q)
            plan = plan.model_copy(update={"kv_precision": found["kv_dtype"]})
            s = _search(ctx, q, model, hw, plan, wl)
            s.bound = found["bound"] if s.ok else s.bound
            rows.append({"id": p["id"], "full_status": "ok" if s.ok else "infeasible",
                         "full_reason": None if s.ok else s.bound, "full_message": s.message,
                         **_metrics(ctx, p, s, "full_")})
        except Exception as e:
            rows.append({"id": p["id"], "full_status": "error", "full_reason": type(e).__name__,
                         "full_message": one_line(e)})
    return rows


def plan_label(row) -> str:
    """A compact serving plan, e.g. 'tp4 dp2 ep4 etp2 stp8 allgather int8'."""
    moe = isinstance(row.get("moe_dispatch"), str) and row.get("moe_dispatch") != ""
    parts = [f"tp{row['tp']}", f"dp{row['dp']}"]
    if int(row.get("pp") or 1) > 1:
        parts.append(f"pp{row['pp']}")
    if moe:
        parts += [f"ep{row['ep']}", f"etp{row['etp']}", f"stp{row['shared_tp']}", str(row["moe_dispatch"])]
    parts.append(str(row["precision"]))
    return " ".join(parts)
