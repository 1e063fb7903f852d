"""``npusim sweep SPEC --dry-run``: what a sweep would do, without running it.

Points per axis and the total, counted without generating the points; how many the cheap checks
and the search stages remove (invalid or over-budget shapes exactly; plans ``resolve_plan``
rejects, the memory bound and exact memory, dominated recompute policies measured on the timing
sample and scaled to the sweep); and the estimated wall time on this machine from timing the fast
tier on that sample and the full simulation on one point. Nothing is written.
"""
from __future__ import annotations

import time
from pathlib import Path

from npusim.sweep.evaluate import evaluate_fast, evaluate_full
from npusim.sweep.executors import default_workers
from npusim.sweep.refine import REFINE_AXES, coarse, coords_of, in_grid, numeric_axes
from npusim.sweep.run import load
from npusim.sweep.space import contexts, count_plans, count_points, generate, sample_points, workload_keys

FAST_SAMPLE = 400
"""Points of the fast-tier timing sample (four contiguous blocks spread through the sweep; every
point of a sweep this small)."""
FULL_SAMPLE = 1
"""Feasible points of the full-simulation timing sample."""


def _values(points: list[dict], key) -> list:
    """Distinct values of one input across ``points`` (first-seen order)."""
    seen: dict = {}
    for p in points:
        v = key(p)
        if v is not None:
            seen.setdefault(repr(v), v)
    return list(seen.values())


def dry_run(spec_path: str | Path, max_points: int | None = None, workers: int | None = None) -> dict:
    """The dry-run report of a spec (see the module docstring); over the limit it says so and stops
    after counting (``over_limit`` true, no estimate). Points are counted, not generated
    (``space.count_points``); what the search stages remove is measured on the timing sample."""
    spec, resolved, ctx, variants, profiles = load(spec_path)
    limit = max_points or spec.max_points
    total, pre, plan_axes = count_points(resolved, variants, profiles)
    if total > limit:
        return {"name": spec.name, "points": total, "max_points": limit, "over_limit": True}
    live_n = total - sum(pre.values())
    if live_n <= FAST_SAMPLE:  # a small sweep: every point is the sample
        sample = [p for p in generate(resolved, variants, profiles) if "pre" not in p]
    else:
        sample = sample_points(resolved, variants, profiles, 4, FAST_SAMPLE // 4)
    n_workers = workers or default_workers()
    est, stages = _estimate(ctx, resolved, sample, live_n, total, n_workers, evaluate_fast, evaluate_full)
    scale = live_n / max(1, len(sample))
    removed = {**pre, **{k: round(n * scale) for k, n in stages.items() if k != "fast"}}
    out = {"name": resolved["name"], "points": total, "max_points": limit, "over_limit": False,
           "axes": axes_of(resolved, variants, profiles, plan_axes), "removed": removed,
           "sampled": len(sample) < live_n, "sample": len(sample),
           "to_evaluate": total - sum(removed.values()), "workers": n_workers, "estimate_s": est}
    if spec.search == "refine" and ctx["kind"] == "train":
        out["refine"] = refine_grid(resolved, ctx, variants, profiles, plan_axes, max(10, resolved["tiers"]["full_top"]))
    return out


def refine_grid(resolved: dict, ctx: dict, variants: list, profiles: dict, plan_axes: dict, k: int) -> dict:
    """``search: refine``: the points of the coarse grid (``refine.coarse`` over the values every axis
    takes in the sweep), counted; the rounds after it depend on the scores."""
    shapes = [v.overrides for v in variants if v.reason is None]
    model_axes = numeric_axes(shapes, ctx["vary_keys"])
    values = {a: sorted({m.get(a) for m in shapes}) for a in model_axes}
    values.update({a: sorted(plan_axes[a]) for a in REFINE_AXES if plan_axes.get(a)})
    keep = coarse(values)
    plan_keep = {a: keep[a] for a in REFINE_AXES if a in keep}
    n = sum(count_plans(resolved["plan"], c, keep_only=plan_keep) for common, _, c in
            contexts(resolved, variants, profiles) if c is not None and in_grid(coords_of({**common, "plan": {}}, model_axes), keep))
    return {"k": k, "grid_points": n, "axes": list(values)}


def axes_of(resolved: dict, variants: list, profiles: dict, plan_axes: dict) -> dict[str, list]:
    """Input name -> the distinct values the points take (hardware, devices, workload, model, plan)."""
    ctxs = [common for common, _, _ in contexts(resolved, variants, profiles)]
    out = {"hardware": _values(ctxs, lambda p: p["hardware"]), "devices": _values(ctxs, lambda p: p["devices"])}
    for k in workload_keys(resolved["workload"]):
        out[k] = _values(ctxs, lambda p, k=k: p.get(k))
    for k in list(resolved["model"]["vary"]) + list(resolved["model"].get("derive", {})):
        out[f"model.{k}"] = _values(ctxs, lambda p, k=k: p["model"].get(k))
    for k, vals in plan_axes.items():
        out[f"plan.{k}"] = vals
    return out


def _estimate(ctx, resolved, sample, live_n, total, workers, evaluate_fast, evaluate_full) -> tuple[dict, dict]:
    """(seconds for the fast tier (timed on the sample) and the full tier (on FULL_SAMPLE points),
    the sample's points by search stage)."""
    if not sample:
        return {"fast_s": 0.0, "full_s": 0.0, "total_s": 0.0, "fast_sample": 0, "full_sample": 0}, {}
    t0 = time.perf_counter()
    rows = evaluate_fast(ctx, sample)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_fast(ctx, sample)  # again, memos warm: the rate of a long sweep
    warm = time.perf_counter() - t0
    stages: dict[str, int] = {}
    for r in rows:
        stages[r.get("stage", "fast")] = stages.get(r.get("stage", "fast"), 0) + 1
    ok = [(p, r) for p, r in zip(sample, rows) if r.get("status") == "ok"][:FULL_SAMPLE]
    full_pt = 0.0
    if ok:
        t0 = time.perf_counter()
        evaluate_full(ctx, [p if ctx.get("kind", "train") == "train" else
                            {**p, "found": {k: r[k] for k in ("batch", "kv_dtype", "bound")}} for p, r in ok])
        full_pt = (time.perf_counter() - t0) / len(ok)
    tiers = resolved["tiers"]
    shapes = len({repr(p["model"]) for p in sample})
    n_full = min(live_n, tiers["full_top"] + tiers["full_per_model"] * shapes)
    # A real sweep reuses memos between neighbouring points more than four sampled blocks do, and less
    # than a second pass over the same points: the fast tier's time lies between the two rates.
    fast_s = total * warm / len(sample) / workers + max(0.0, cold - warm)  # + building the memos once
    fast_high_s = total * cold / len(sample) / workers
    full_s = n_full * full_pt / min(workers, max(1, n_full))
    return ({"fast_s": round(fast_s, 2), "fast_high_s": round(max(fast_s, fast_high_s), 2),
             "full_s": round(full_s, 2), "total_s": round(fast_s + full_s, 2),
             "total_high_s": round(max(fast_s, fast_high_s) + full_s, 2),
             "fast_sample": len(sample), "full_sample": len(ok), "full_points": n_full}, stages)


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
    sampled = f" (search stages estimated from {d['sample']:,} sampled points)" if d["sampled"] else ""
    lines.append(f"cheap checks and the search remove {sum(d['removed'].values()):,}: {removed}{sampled}; "
                 f"{d['to_evaluate']:,} left for the fast tier")
    if "refine" in d:
        r = d["refine"]
        lines.append(f"search refine: coarse grid of {r['grid_points']:,} points over {', '.join(r['axes'])} "
                     f"(every other value and the last), then rounds of the neighbours of the best {r['k']} until "
                     "the top holds (their size depends on the scores; the estimate below times every point)")
    e = d["estimate_s"]
    lines.append(f"estimated time with {d['workers']} workers: {e['total_s']:.1f} to {e.get('total_high_s', e['total_s']):.1f} s "
                 f"(fast tier {e['fast_s']:.1f} s with its memos warm to {e.get('fast_high_s', e['fast_s']):.1f} s "
                 f"cold, timed on {e['fast_sample']} points; full simulation of {e.get('full_points', 0)} points "
                 f"{e['full_s']:.1f} s, timed on {e['full_sample']}; writing the tables comes on top)")
    return "\n".join(lines)
