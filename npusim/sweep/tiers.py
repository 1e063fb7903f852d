"""Agreement between the sweep's two tiers: the closed-form fast tier and the event engine.

On a spec, every point is scored by the fast tier; the fast tier's ``top`` best feasible points plus
``sample`` other feasible points (a seeded draw) are simulated by the event engine. Reported: the
Kendall tau between the two tiers' scores over those points, and how many of the event engine's top
10 are in the fast tier's top 20 (ranked among the same points). ``benchmarks/tiers.py`` runs it on
every shipped training spec; ``tests/sweep/test_tiers.py`` gates it.
"""
from __future__ import annotations

import random
from pathlib import Path

from npusim.sweep.evaluate import evaluate_fast, evaluate_full
from npusim.sweep.run import prepare
from npusim.validate.compare import kendall_tau


def tier_agreement(spec: str | Path, top: int = 40, sample: int = 40, seed: int = 0, stride: int = 1) -> dict:
    """Scores of both tiers on the fast tier's best ``top`` and ``sample`` more feasible points
    (``stride`` > 1: of every stride-th point of the spec only, for a quicker check)."""
    _, ctx, _, points = prepare(spec)
    points = points[::stride]
    fast = [r for r in evaluate_fast(ctx, points) if r.get("status") == "ok"]
    fast.sort(key=lambda r: (-r["score"], r["id"]))
    chosen = fast[:top]
    rest = fast[top:]
    chosen += random.Random(seed).sample(rest, min(sample, len(rest)))
    by_id = {p["id"]: p for p in points}
    full = {r["id"]: r for r in evaluate_full(ctx, [by_id[r["id"]] for r in chosen])}
    rows = [(r["id"], r["score"], full[r["id"]]["full_score"]) for r in chosen
            if full[r["id"]].get("full_status") == "ok"]
    fast_rank = [i for i, _, _ in sorted(rows, key=lambda x: (-x[1], x[0]))]
    full_rank = [i for i, _, _ in sorted(rows, key=lambda x: (-x[2], x[0]))]
    return {"spec": Path(spec).name, "points": len(points), "feasible": len(fast), "compared": len(rows),
            "kendall_tau": kendall_tau([r[1] for r in rows], [r[2] for r in rows]),
            "top10_in_fast_top20": len(set(full_rank[:10]) & set(fast_rank[:20])),
            "median_score_error_pct": _median([abs(a / b - 1) * 100 for _, a, b in rows if b]),
            "fast_best": fast_rank[0] if fast_rank else None, "full_best": full_rank[0] if full_rank else None}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")
