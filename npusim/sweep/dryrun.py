"""``npusim sweep SPEC --dry-run``: what a sweep would do, without running it.

Points per axis, the total, how many the cheap checks remove (invalid or over-budget shapes, plans
the core's ``resolve_plan`` rejects), and the estimated wall time on this machine from timing the
fast tier on a sample of points and the full simulation on two. Nothing is written.
"""
from __future__ import annotations

import time
from pathlib import Path

CHECK_ALL_UP_TO = 50_000
"""Up to this many points the divisibility check runs on every point; above, on an even sample."""
FAST_SAMPLE = 400
"""Points of the fast-tier timing sample (four contiguous blocks spread through the sweep)."""
FULL_SAMPLE = 2
"""Feasible points of the full-simulation timing sample."""


def _values(points: list[dict], key) -> list:
    """Distinct values of one input across ``points`` (first-seen order)."""
    seen: dict = {}
    for p in points:
        v = key(p)
        if v is not None:
            seen.setdefault(repr(v), v)
    return list(seen.values())


def axes(points: list[dict], resolved: dict) -> dict[str, list]:
    """Input name -> the distinct values the points take (hardware, devices, workload, model, plan)."""
    from npusim.sweep.space import workload_keys

    out = {"hardware": _values(points, lambda p: p["hardware"]), "devices": _values(points, lambda p: p["devices"])}
    for k in workload_keys(resolved["workload"]):
        out[k] = _values(points, lambda p, k=k: p.get(k))
    for k in list(resolved["model"]["vary"]) + list(resolved["model"].get("derive", {})):
        out[f"model.{k}"] = _values(points, lambda p, k=k: p["model"].get(k))
    keys: dict[str, None] = {}
    for p in points:
        keys.update(dict.fromkeys(p["plan"]))
    for k in keys:
        out[f"plan.{k}"] = _values([p for p in points if "pre" not in p], lambda p, k=k: p["plan"].get(k))
    return out


def dry_run(spec_path: str | Path, max_points: int | None = None, workers: int | None = None) -> dict:
    """The dry-run report of a spec (see the module docstring); over the limit it says so and stops
    after counting (``over_limit`` true, no estimate)."""
    from npusim.config.errors import ConfigError
    from npusim.sweep.evaluate import evaluate_fast, evaluate_full
    from npusim.sweep.executors import default_workers
    from npusim.sweep.run import prepare
    from npusim.sweep.spec import load_spec

    spec, _ = load_spec(spec_path)
    limit = max_points or spec.max_points
    try:
        resolved, ctx, variants, points = prepare(spec_path, max_points=limit)
    except ConfigError as e:
        count = getattr(e, "count", None)
        if count is None:
            raise
        return {"name": spec.name, "points": count, "max_points": limit, "over_limit": True}
    pre: dict[str, int] = {}
    for p in points:
        if "pre" in p:
            pre[p["pre"][0]] = pre.get(p["pre"][0], 0) + 1
    live = [p for p in points if "pre" not in p]
    div, checked = _divisibility(ctx, live)
    n_workers = workers or default_workers()
    est = _estimate(ctx, resolved, live, points, n_workers, evaluate_fast, evaluate_full)
    return {"name": resolved["name"], "points": len(points), "max_points": limit, "over_limit": False,
            "axes": axes(points, resolved), "removed": {**pre, "divisibility": div},
            "divisibility_checked": checked,
            "to_evaluate": len(live) - div, "workers": n_workers, "estimate_s": est}


def _divisibility(ctx: dict, live: list[dict]) -> tuple[int, int]:
    """(points resolve_plan rejects, points checked): every point up to CHECK_ALL_UP_TO, else an even
    sample scaled to the whole."""
    from npusim.config.errors import ConfigError
    from npusim.sweep.evaluate import _prepare

    if ctx.get("kind", "train") != "train":
        return 0, 0
    step = max(1, -(-len(live) // CHECK_ALL_UP_TO))
    sample = live[::step]
    bad = 0
    for p in sample:
        try:
            _prepare(ctx, p)
        except ConfigError:
            bad += 1
    return (bad if step == 1 else round(bad * len(live) / max(1, len(sample)))), len(sample)


def _estimate(ctx, resolved, live, points, workers, evaluate_fast, evaluate_full) -> dict:
    """Seconds for the fast tier (timed on FAST_SAMPLE points) and the full tier (on FULL_SAMPLE)."""
    if not live:
        return {"fast_s": 0.0, "full_s": 0.0, "total_s": 0.0, "fast_sample": 0, "full_sample": 0}
    # contiguous blocks, as a worker's batches are: the fast tier's memos make neighbours cheap
    blocks = 4
    step = max(1, len(live) // blocks)
    sample = [p for i in range(0, len(live), step) for p in live[i:i + FAST_SAMPLE // blocks]][:FAST_SAMPLE]
    t0 = time.perf_counter()
    rows = evaluate_fast(ctx, sample)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_fast(ctx, sample)  # again, memos warm: the rate of a long sweep
    warm = time.perf_counter() - t0
    ok = [p for p, r in zip(sample, rows) if r.get("status") == "ok"][:FULL_SAMPLE]
    full_pt = 0.0
    if ok:
        t0 = time.perf_counter()
        evaluate_full(ctx, ok if ctx.get("kind", "train") == "train" else
                      [{**p, "found": {k: r[k] for k in ("batch", "kv_dtype", "bound")}}
                       for p, r in zip(sample, rows) if r.get("status") == "ok"][:FULL_SAMPLE])
        full_pt = (time.perf_counter() - t0) / len(ok)
    tiers = resolved["tiers"]
    shapes = len({repr(p["model"]) for p in live})
    n_full = min(len(live), tiers["full_top"] + tiers["full_per_model"] * shapes)
    fast_s = len(points) * warm / len(sample) / workers + max(0.0, cold - warm)  # + building the memos once
    full_s = n_full * full_pt / min(workers, max(1, n_full))
    return {"fast_s": round(fast_s, 2), "full_s": round(full_s, 2), "total_s": round(fast_s + full_s, 2),
            "fast_sample": len(sample), "full_sample": len(ok), "full_points": n_full}


def format_dry_run(d: dict) -> str:
    """The dry-run report as text."""
    if d["over_limit"]:
        return (f"sweep {d['name']}: {d['points']:,} points, over max_points {d['max_points']:,}: it would be "
                f"refused (raise max_points in the spec or pass --max-points)")
    lines = [f"sweep {d['name']}: {d['points']:,} points (max_points {d['max_points']:,})",
             "points per axis:"]
    for k, vals in d["axes"].items():
        shown = ", ".join(str(v) for v in vals[:12]) + (", ..." if len(vals) > 12 else "")
        lines.append(f"  {k:<24} {len(vals):>4}  {shown}")
    removed = ", ".join(f"{k} {v:,}" for k, v in d["removed"].items() if v) or "none"
    sampled = "" if d["divisibility_checked"] >= d["points"] - sum(v for k, v in d["removed"].items()
                                                                   if k != "divisibility") \
        else f" (divisibility estimated from {d['divisibility_checked']:,} points)"
    lines.append(f"cheap checks remove {sum(d['removed'].values()):,}: {removed}{sampled}; "
                 f"{d['to_evaluate']:,} left for the fast tier")
    e = d["estimate_s"]
    lines.append(f"estimated time with {d['workers']} workers: {e['total_s']:.1f} s (fast tier {e['fast_s']:.1f} s, "
                 f"timed on {e['fast_sample']} points; full simulation of {e.get('full_points', 0)} points "
                 f"{e['full_s']:.1f} s, timed on {e['full_sample']})")
    return "\n".join(lines)
