"""Capacity planning: the smallest device count (and its plan) that trains a token budget in time.

For a device count, every auto plan is scored by the fast tier (memory-pruned), the best few are
re-scored by the full event simulation, and the fastest wins. Device counts are whole servers on a
ladder of 2^a and 3 x 2^a servers; the search starts at the count that would need MFU = 100 %
(a strict lower bound) and climbs until the deadline is met. Sensitivity reruns the search from the
answer with +-20 % network (scale-up, scale-out) and HBM bandwidth.
"""
from __future__ import annotations

import math
import re

from npusim.config.errors import ConfigError

SENSITIVITY = (("scale_up_bw", 0.8), ("scale_up_bw", 1.2), ("scale_out_bw", 0.8), ("scale_out_bw", 1.2),
               ("hbm_bw", 0.8), ("hbm_bw", 1.2))
SHORTLIST = 48
"""Plans per device count the sensitivity reruns re-score (the base search's fast-tier best)."""
_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}


def parse_tokens(text: str, flag: str = "--tokens") -> float:
    """Parse a token count such as '10T', '500B', '1.5e12' (plan independent)."""
    from npusim.config.policy import MAX_TOKENS

    text = str(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGTP]?)\s*", text.upper()) if len(text) <= 100 else None
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(flag, "tokens", text, "not a positive token count", "e.g. 10T, 500B, 1.5e12")
    tokens = float(m.group(1)) * _SUFFIX[m.group(2)]
    if not math.isfinite(tokens) or tokens > MAX_TOKENS:
        raise ConfigError(flag, "tokens", text, "too many tokens", f"a finite count up to {MAX_TOKENS:.0e}")
    return tokens


def device_ladder(hw, lo: int = 1) -> list[int]:
    """Device counts to try: whole servers, 2^a or 3 x 2^a of them, from ``lo`` up to the profile's limit."""
    per = hw.node.devices_per_node
    out = set()
    k = 1
    while per * k <= hw.max_devices:
        for n in (k, 3 * k // 2 if k >= 2 else k):
            if per * n <= hw.max_devices:
                out.add(per * n)
        k *= 2
    if hw.max_devices % per == 0:
        out.add(hw.max_devices)
    return [n for n in sorted(out) if n >= lo]


def best_at(model, hw, devices: int, workload, space: dict, headroom: float = 0.0, full_top: int = 3,
            only: list[dict] | None = None) -> dict | None:
    """The fastest plan at ``devices``: fast tier over the plan space (or the plans ``only``), full
    simulation of the best ``full_top``; None when no plan fits in memory. The result's
    ``shortlist`` holds the fast tier's best SHORTLIST plans."""
    from npusim.config.plan import make_plan
    from npusim.simulate import simulate
    from npusim.sweep.fast import estimate
    from npusim.sweep.space import plans

    limit = (1.0 - headroom) * hw.chip.hbm_capacity_GB
    c = {"model": model, "devices": devices, "seq_len": workload.seq_len, "global_batch": workload.global_batch,
         "devices_per_node": hw.node.devices_per_node}
    scored = []
    n = 0
    for fields in (only if only is not None else plans(space, c)):
        n += 1
        try:
            plan = make_plan(fields)
            e = estimate(model, hw, plan, workload, devices, memory_limit_GB=limit)
        except ConfigError:
            continue
        if e["step_time_s"] is not None:
            scored.append((-e["tokens_per_s"], sorted(fields.items()), plan))
    scored.sort(key=lambda s: (s[0], str(s[1])))
    best = None
    for _, fields, plan in scored[:max(1, full_top)]:
        res = simulate(model, hw, plan, workload, devices)
        if res.peak_memory_GB <= limit and (best is None or res.tokens_per_s > best["tokens_per_s"]):
            best = {"devices": devices, "plan": dict(fields), "resolved_plan": res.config["plan"],
                    "tokens_per_s": res.tokens_per_s, "step_time_s": res.step_time_s, "mfu": res.mfu,
                    "peak_memory_GB": res.peak_memory_GB, "breakdown_s": res.breakdown_s}
    if best is not None:
        best["plans_scored"] = n
        best["shortlist"] = [dict(f) for _, f, _ in scored[:SHORTLIST]]
    return best


def _days(best: dict | None, tokens: float) -> float:
    """Days to train ``tokens`` at the best plan's throughput (inf when none fits)."""
    return tokens / best["tokens_per_s"] / 86400.0 if best else math.inf


def _lower_bound(model, hw, tokens: float, days: float, seq_len: int) -> int:
    """Devices needed at MFU = 100 % (no answer can be smaller)."""
    from npusim.cost.compute import matrix_dtype
    from npusim.flops import flops_per_token

    peak = hw.matrix_peak_flops(matrix_dtype(hw, "bf16"))
    need = tokens * flops_per_token(model, seq_len) / (days * 86400.0 * peak)
    return max(1, math.floor(need)) if math.isfinite(need) and need < 1e18 else 10**18


def smallest(model, hw, tokens: float, days: float, workload, space: dict, headroom: float, full_top: int,
             start: int | None = None, shortlists: dict | None = None) -> tuple[dict | None, list, dict]:
    """Smallest ladder count meeting the deadline (climbing from ``start`` or the MFU bound; from a
    ``start`` that already meets it, stepping down while it still does); at counts in ``shortlists``
    only those plans are scored. Returns (answer, tried, shortlist of every count tried)."""
    ladder = device_ladder(hw)
    lo = _lower_bound(model, hw, tokens, days, workload.seq_len)
    ladder = [n for n in ladder if n >= lo] or ladder[-1:]
    i = ladder.index(start) if start in ladder else 0
    tried, cache = [], {}

    def at(j: int) -> dict | None:
        """The best plan at ladder step ``j`` (memoised, recorded in ``tried``)."""
        if j not in cache:
            cache[j] = best_at(model, hw, ladder[j], workload, space, headroom, full_top,
                               (shortlists or {}).get(ladder[j]))
            tried.append({"devices": ladder[j], "days": _days(cache[j], tokens)})
        return cache[j]

    if _days(at(i), tokens) <= days:
        while i > 0 and _days(at(i - 1), tokens) <= days:
            i -= 1
        return {**cache[i], "meets_deadline": True}, tried, _shortlists(cache)
    for j in range(i + 1, len(ladder)):
        if _days(at(j), tokens) <= days:
            return {**cache[j], "meets_deadline": True}, tried, _shortlists(cache)
    fastest = min(cache.values(), key=lambda b: (_days(b, tokens), b["devices"] if b else 0))
    return (None if fastest is None else {**fastest, "meets_deadline": False}), tried, _shortlists(cache)


def _shortlists(cache: dict) -> dict[int, list]:
    """Device count -> the fast tier's best plans there, from a search's results."""
    return {b["devices"]: b["shortlist"] for b in cache.values() if b}


def plan_capacity(model, hw, tokens: float, workload, days: float | None = None, devices: int | None = None,
                  space: dict | None = None, headroom: float = 0.0, full_top: int = 3,
                  sensitivity: bool = True, workers: int | None = None) -> dict:
    """Answer a capacity question: with ``days``, the smallest device count and its plan; with
    ``devices``, the days at that count. Adds expected days, device-hours and the +-20 % sensitivity
    (its six searches run in a local process pool of ``workers``, default all cores)."""
    space = {"auto": True, **(space or {})}
    if devices is not None:
        best, tried = best_at(model, hw, devices, workload, space, headroom, full_top), []
        best = best and {**best, "meets_deadline": None}
        short = {devices: best["shortlist"]} if best else {}
    else:
        need = _lower_bound(model, hw, tokens, days, workload.seq_len)
        if need > hw.max_devices:
            # Even at MFU = 100 % the deadline needs more devices than the profile can be built with:
            # say so instead of searching (and blaming memory for the empty answer).
            answer = {**_answer(None, tokens), "meets_deadline": False, "reason": "deadline",
                      "min_devices_at_full_mfu": need, "max_devices": hw.max_devices}
            return {"model": model.name, "hardware": hw.name, "tokens": tokens, "deadline_days": days,
                    "seq_len": workload.seq_len, "global_batch": workload.global_batch, "answer": answer,
                    "tried": [], "sensitivity": []}
        best, tried, short = smallest(model, hw, tokens, days, workload, space, headroom, full_top)
    out = {"model": model.name, "hardware": hw.name, "tokens": tokens, "deadline_days": days,
           "seq_len": workload.seq_len, "global_batch": workload.global_batch, "answer": _answer(best, tokens),
           "tried": tried, "sensitivity": []}
    if sensitivity and best is not None:
        jobs = [(model, hw.with_changes(**{knob: f}), tokens, days, devices, workload, space, headroom, full_top,
                 best["devices"], short) for knob, f in SENSITIVITY]
        for (knob, f), b2 in zip(SENSITIVITY, _map(_rerun, jobs, workers)):
            out["sensitivity"].append({"change": f"{knob} x{f:g}", **_answer(b2, tokens)})
    return out


def _rerun(job: tuple) -> dict | None:
    """One sensitivity search: the days at fixed devices, or the smallest count from the answer
    (re-scoring only the base search's shortlisted plans at the counts it tried)."""
    model, hw, tokens, days, devices, workload, space, headroom, full_top, start, short = job
    if devices is not None:
        return best_at(model, hw, devices, workload, space, headroom, full_top, short.get(devices))
    return smallest(model, hw, tokens, days, workload, space, headroom, full_top, start, short)[0]


def _map(fn, jobs: list, workers: int | None) -> list:
    """``fn`` over ``jobs``: in a local process pool when more than one worker is allowed."""
    from npusim.sweep.executors import default_workers

    n = min(len(jobs), workers or default_workers())
    if n <= 1:
        return [fn(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, jobs))


def _answer(best: dict | None, tokens: float) -> dict:
    """Devices, plan, throughput, days and device-hours of a search result."""
    if best is None:
        return {"devices": None, "days": None, "device_hours": None, "reason": "memory"}
    d = _days(best, tokens)
    out = {k: v for k, v in best.items() if k != "shortlist"}
    return {**out, "days": d, "device_hours": d * 24.0 * best["devices"]}
