"""Ranking, tier agreement and the end-of-sweep summary (dict and text)."""
from __future__ import annotations

import math

from npusim.cost.passes import PART_NAMES
from npusim.sweep.error_table import SOURCE


def _sorted(df, score: str):
    """Rows by ``score`` descending, ties by id ascending (deterministic)."""
    return df.assign(_neg=-df[score].astype(float)).sort_values(["_neg", "id"], kind="mergesort").drop(columns="_neg")


def rank(frame):
    """Feasible points, best first: fully simulated ones by the full score, then the rest by the fast
    score; columns ``rank``, ``tier`` and ``fast_rank`` (rank among all fast-tier feasible points)."""
    import pandas as pd

    ok = frame[frame["status"] == "ok"]
    fast_order = _sorted(ok, "score")
    fast_rank = {i: n + 1 for n, i in enumerate(fast_order["id"])}
    full = _sorted(ok[ok["full_status"] == "ok"], "full_score").assign(tier="full")
    rest = _sorted(ok[ok["full_status"].isna()], "score").assign(tier="fast")
    out = pd.concat([full, rest], ignore_index=True)
    out.insert(0, "rank", range(1, len(out) + 1))
    out.insert(1, "tier", out.pop("tier"))
    out.insert(2, "fast_rank", [fast_rank[i] for i in out["id"]])
    return with_intervals(out)


def with_intervals(ranked):
    """Add ``score_lo``/``score_hi`` (the row's score ± |score| x ``error_frac``, npusim's measured
    error for its kind of configuration) and ``tie_with_best``: the interval overlaps the winner's
    (the winner itself is not counted)."""
    import pandas as pd

    used = ranked["full_score"].where(ranked["tier"] == "full", ranked["score"]).astype(float) \
        if len(ranked) else pd.Series([], dtype=float)
    err = ranked["error_frac"].astype(float).fillna(0.0) if "error_frac" in ranked else 0.0 * used
    lo, hi = used - used.abs() * err, used + used.abs() * err
    ranked = ranked.assign(score_lo=lo, score_hi=hi)
    ties = (hi >= lo.iloc[0]) if len(ranked) else hi.astype(bool)
    if len(ranked):
        ties.iloc[0] = False
    return ranked.assign(tie_with_best=ties.astype(bool))


def shapes(ranked, vary: list[str], wl_cols: list[str], tokens: float | None = None):
    """The best plan of every model shape (per hardware, devices and workload), best first: one row
    per shape with its rank, plan, tier metrics, score interval and tie flag (and ``train_days`` for
    ``constraints.tokens``)."""
    import pandas as pd

    keys = ["hardware", "devices", *wl_cols, *[f"model_{k}" for k in vary]]
    cols = keys + ["total_params_B", "activated_params_B", "rank", "tier", "plan", "score", "score_lo", "score_hi",
                   "tie_with_best", "step_time_s", "tokens_per_s", "mfu", "peak_memory_GB"]
    if tokens:
        cols.append("train_days")
    if not len(ranked):
        return pd.DataFrame(columns=cols)
    best = ranked.drop_duplicates(subset=[k for k in keys if k in ranked], keep="first")
    rows = []
    for _, r in best.iterrows():
        pre = "full_" if r["tier"] == "full" else ""
        serve = "tpot_s" in r
        from npusim.sweep import serving

        row = {k: r.get(k) for k in keys + ["total_params_B", "activated_params_B", "rank", "tier"]}
        row.update({"plan": serving.plan_label(r) if serve else plan_label(r), "score": r[pre + "score"],
                    "score_lo": r["score_lo"], "score_hi": r["score_hi"], "tie_with_best": bool(r["tie_with_best"]),
                    **{k: r.get(pre + k) for k in ("step_time_s", "tokens_per_s", "mfu", "peak_memory_GB")}})
        if tokens:
            tps = _num(r.get(pre + "tokens_per_s"))
            row["train_days"] = tokens / tps / 86400 if tps else None
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def agreement(frame) -> dict:
    """How the fast tier's ranking agrees with the full simulation on the points both scored."""
    from npusim.validate.compare import kendall_tau

    both = frame[(frame["status"] == "ok") & (frame["full_status"] == "ok")]
    n = len(both)
    if n == 0:
        return {"n": 0, "top10_overlap": None, "top_k": 0, "kendall_tau": None, "median_step_error_pct": None}
    k = min(10, n)
    top_fast = set(_sorted(both, "score")["id"][:k])
    top_full = set(_sorted(both, "full_score")["id"][:k])
    tau = kendall_tau(list(both["score"].astype(float)), list(both["full_score"].astype(float))) if n > 1 else None
    err = (both["step_time_s"].astype(float) / both["full_step_time_s"].astype(float) - 1.0).abs() * 100
    return {"n": n, "top_k": k, "top10_overlap": len(top_fast & top_full),
            "kendall_tau": None if tau is None else round(tau, 4),
            "median_step_error_pct": round(float(err.median()), 3), "max_step_error_pct": round(float(err.max()), 3)}


def plan_label(row) -> str:
    """A compact plan string of a row, e.g. 'tp8 pp16 vpp2 cp1 dp48 ep4x etp1 z1 none mb2'."""
    moe = row.get("etp") not in (None, 0) and row.get("ep") is not None
    ep = f"ep{row['ep']}" + ("x" if row.get("tp_extend_ep") is True else "") if moe else ""
    parts = [f"tp{row['tp']}", f"pp{row['pp']}", f"vpp{row['vpp']}", f"cp{row['cp']}", f"dp{row['dp']}", ep,
             f"etp{row['etp']}" if ep else "", f"z{row['zero']}", str(row["recompute"]), f"mb{row['micro_batch']}"]
    return " ".join(p for p in parts if p and p != "None")


def _num(x):
    """A float for JSON (None for NaN / missing)."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return x
    return None if math.isnan(f) else f


def option_label(row, options: list[str]) -> str:
    """The swept plan options of a row, e.g. 'schedule=zb-v a2a=hierarchical ep_overlap=1'."""
    out = []
    for k in options:
        v = row.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out.append(f"{k}={int(v) if isinstance(v, bool) or type(v).__name__ == 'bool_' else v}")
    return " ".join(out)


def _top(ranked, vary: list[str], n: int = 10, options: list[str] | None = None) -> list[dict]:
    """The best ``n`` ranked rows with their metrics and breakdown (full tier where simulated)."""
    from npusim.sweep import serving

    out = []
    for _, r in ranked.head(n).iterrows():
        pre = "full_" if r["tier"] == "full" else ""
        serve = "tpot_s" in r
        label = serving.plan_label(r) if serve else plan_label(r)
        opts = option_label(r, options or [])
        out.append({"rank": int(r["rank"]), "tier": r["tier"], "fast_rank": int(r["fast_rank"]), "id": r["id"],
                    "hardware": r["hardware"], "devices": int(r["devices"]),
                    "model": {k: _num(r[f"model_{k}"]) for k in vary},
                    "plan": label + (" " + opts if opts else ""),
                    "step_time_s": _num(r[pre + "step_time_s"]), "mfu": _num(r[pre + "mfu"]),
                    "tokens_per_s": _num(r[pre + "tokens_per_s"]), "peak_memory_GB": _num(r[pre + "peak_memory_GB"]),
                    "cost_per_Mtok": _num(r[pre + "cost_per_Mtok"]),
                    "score_interval": [_num(r["score_lo"]), _num(r["score_hi"])],
                    "tie_with_best": bool(r["tie_with_best"]),
                    "breakdown_s": {k: _num(r[f"{pre}bd_{k}_s"]) for k in PART_NAMES}})
        if serve:
            out[-1].update({k: _num(r[pre + k]) for k in ("batch", "tpot_s", "ttft_s", "tokens_per_s_per_device",
                                                          "tokens_per_s_per_card")})
            out[-1].update({k: r[pre + k] for k in ("kv_dtype", "bound")})
        if "cards" in r:
            out[-1].update({"cards": _num(r[pre + "cards"]), "layout": r[pre + "layout"],
                            "slo_attainment": _num(r[pre + "slo_attainment"])})
    return out


def option_keys(resolved: dict) -> list[str]:
    """Plan options the spec lists (columns of their own), e.g. schedule, a2a, ep_overlap."""
    from npusim.sweep.evaluate import PLAN_COLS
    from npusim.sweep.serving import SERVE_PLAN_COLS

    cols = PLAN_COLS if resolved["workload"].get("kind", "train") == "train" else SERVE_PLAN_COLS
    return [k for k in resolved["plan"] if k != "auto" and k not in cols]


def summarize(resolved: dict, frame, ranked, timing: dict) -> dict:
    """The summary of a finished sweep: counts by status and reason, tier rates, agreement, top 10."""
    status = frame["status"].value_counts().to_dict()
    inf = frame[frame["status"] == "infeasible"]["reason"].value_counts().to_dict()
    errs = frame[frame["status"] == "error"]
    fast_rate = timing["fast_new"] / timing["fast_s"] if timing["fast_s"] > 0 else None
    full_rate = timing["full_new"] / timing["full_s"] if timing["full_s"] > 0 else None
    vary = list(resolved["model"]["vary"])
    return {
        "name": resolved["name"], "objective": resolved["objective"]["metric"], "points": len(frame),
        "kind": resolved["workload"].get("kind", "train"),
        "status": {k: int(status.get(k, 0)) for k in ("ok", "infeasible", "pruned", "error")},
        "infeasible_by_reason": {k: int(v) for k, v in sorted(inf.items())},
        "errors": [{"id": r["id"], "message": r["message"]} for _, r in errs.head(5).iterrows()],
        "fast": {"evaluated": timing["fast_new"], "reused": timing["fast_reused"], "wall_s": round(timing["fast_s"], 3),
                 "points_per_s": None if fast_rate is None else round(fast_rate, 1),
                 "costed": int(frame["step_time_s"].notna().sum())},
        "full": {"simulated": timing["full_new"], "reused": timing["full_reused"], "wall_s": round(timing["full_s"], 3),
                 "points_per_s": None if full_rate is None else round(full_rate, 2), **agreement(frame)},
        "executor": timing["executor"], "workers": timing["workers"], "wall_s": round(timing["wall_s"], 3),
        "top": _top(ranked, vary, options=option_keys(resolved)),
        "options": {k: resolved["plan"][k] for k in option_keys(resolved)},
        "ties_with_best": int(ranked["tie_with_best"].sum()) if len(ranked) else 0,
        "best_interval": ([_num(ranked["score_lo"].iloc[0]), _num(ranked["score_hi"].iloc[0])]
                          if len(ranked) else None),
        "error_source": SOURCE,
        **({"stages": timing["stages"]} if timing.get("stages") else {}),
        **({"refine": timing["refine"]} if timing.get("refine") else {}),
    }


def format_summary(s: dict) -> str:
    """The summary as text: counts, rates, agreement, then the top 10 with breakdowns."""
    f, u = s["fast"], s["full"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in s["infeasible_by_reason"].items()) or "none"
    lines = [f"sweep {s['name']}: {s['points']:,} points in {s['wall_s']:.1f} s on {s['executor']} "
             f"({s['workers']} workers); objective {s['objective']}",
             f"  feasible {s['status']['ok']:,}, infeasible {s['status']['infeasible']:,} ({reasons}), "
             f"pruned {s['status'].get('pruned', 0):,}, errors {s['status']['error']:,}",
             f"  fast tier: {f['evaluated']:,} evaluated in {f['wall_s']:.2f} s"
             + (f" ({f['points_per_s']:,.0f} points/s)" if f["points_per_s"] else "")
             + f", {f['reused']:,} reused from --out; {f['costed']:,} costed after the memory prune",
             f"  full tier: {u['simulated']:,} simulated in {u['wall_s']:.2f} s"
             + (f" ({u['points_per_s']:,.1f} points/s)" if u["points_per_s"] else "") + f", {u['reused']:,} reused"]
    if u["n"]:
        lines.append(f"  fast vs full on {u['n']} points: top-{u['top_k']} overlap {u['top10_overlap']}/{u['top_k']}, "
                     f"Kendall tau {u['kendall_tau']}, median |step error| {u['median_step_error_pct']} %")
    for e in s["errors"]:
        lines.append(f"  error {e['id']}: {e['message']}")
    if s.get("options"):
        lines.append("  swept options: " + ", ".join(f"{k} {v}" for k, v in s["options"].items()))
    for st in s.get("stages", []):
        done = f"timed {st['timed']:,}" if "timed" in st else f"removed {st['removed']:,}"
        lines.append(f"  stage {st['stage']}: {done} points ({st['what']})")
    if s.get("refine"):
        r = s["refine"]
        lines.append(f"  search refine: coarse grid {r['grid']:,} points, then {len(r['rounds'])} rounds of the "
                     f"neighbours of the best {r['k']} ({', '.join(f'{n:,}' for n in r['rounds']) or 'none'}); "
                     f"{r['timed']:,} points chosen, {r['skipped']:,} never timed")
    if s["top"]:
        lo, hi = s["best_interval"]
        lines.append(f"  winner's score interval [{lo:.4g}, {hi:.4g}] from npusim's measured error "
                     f"({s['error_source']}); {s['ties_with_best']:,} ranked rows overlap it (tie_with_best)")
        lines.append(f"top {len(s['top'])}:")
    for t in s["top"]:
        model = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["model"].items())
        cost = f" cost {t['cost_per_Mtok']:.4g}/Mtok" if s["objective"] == "cost" else ""
        tie = " =" if t.get("tie_with_best") else ""
        head = f"  {t['rank']:>2}{tie} [{t['tier']}, fast #{t['fast_rank']}] {t['hardware']} x{t['devices']}" + \
            f"{' ' + model if model else ''} | {t['plan']} | "
        if "cards" in t:
            lines.append(head + f"{t['cards']:g} cards: {t['layout']}, p99 TTFT {1e3 * t['ttft_s']:.0f} ms TPOT "
                         f"{1e3 * t['tpot_s']:.1f} ms, {t['tokens_per_s_per_card']:,.0f} tok/s/card, SLO met "
                         f"{100 * t['slo_attainment']:.0f} %{cost}")
        elif "batch" in t:
            lat = f"TPOT {1e3 * t['tpot_s']:.1f} ms" if t.get("tpot_s") else f"TTFT {1e3 * t['ttft_s']:.1f} ms"
            lines.append(head + f"batch {t['batch']:.0f} ({t['bound']}) {lat} {t['tokens_per_s_per_device']:,.0f} "
                         f"tok/s/device {t['tokens_per_s_per_card']:,.0f} tok/s/card KV {t['kv_dtype']} "
                         f"mem {t['peak_memory_GB']:.1f} GB{cost}")
        else:
            lines.append(head + f"MFU {100 * t['mfu']:.1f} % {t['tokens_per_s']:,.0f} tok/s "
                         f"step {t['step_time_s']:.3f} s mem {t['peak_memory_GB']:.1f} GB{cost}")
        bd = ", ".join(f"{k} {v:.3f}" for k, v in t["breakdown_s"].items() if v)
        if bd:
            lines.append(f"       breakdown s: {bd}")
    return "\n".join(lines)
