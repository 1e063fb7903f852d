"""Serving capacity planning: the fewest cards, and their instance layout, that serve a request rate
within p99 TTFT and TPOT objectives.

Candidates: instance sizes of ``SIZES`` devices (or the one size and plan given), each with the
given plan or the default serving layout; collocated (``n`` instances) and disaggregated (``p``
prefill + ``d`` decode instances). More instances never raise latency (requests go to the least
loaded), so the fewest instances meeting an objective is found by doubling and bisection. For a
disaggregated layout the prefill pool sets TTFT and the decode pool TPOT: each pool is sized with
the other one generous, then the pair is checked together (and grown one instance at a time where
the pair misses). Every check is one request-level run (``npusim.serving.run``) on the same seeded
arrivals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from npusim.config.errors import ConfigError
from npusim.serving.requests import Request
from npusim.serving.run import simulate_requests
from npusim.serving.spec import ServeSpec
from npusim.serving.steps import StepModel

SIZES = (1, 2, 4, 8, 16, 32)
"""Devices per instance tried when none is given."""
MAX_INSTANCES = 256
"""Most instances of one pool the search tries."""


@dataclass(frozen=True)
class Slo:
    """The objective: p99 TTFT and TPOT (seconds), with every request finished."""

    ttft_p99_s: float
    tpot_p99_s: float

    def met(self, out: dict) -> bool:
        """True when a run's metrics meet the objective."""
        t, u = out["ttft_s"]["p99"], out["tpot_s"]["p99"]
        return out["unfinished"] == 0 and t is not None and t <= self.ttft_p99_s and (u is None or u <= self.tpot_p99_s)


def fewest(ok: Callable[[int], bool], limit: int = MAX_INSTANCES) -> Optional[int]:
    """Smallest n in 1..limit with ``ok(n)`` for a monotone ``ok`` (None when even ``limit`` fails)."""
    hi = 1
    while not ok(hi):
        if hi >= limit:
            return None
        hi = min(limit, hi * 2)
    lo = hi // 2  # ok(lo) is False (or lo = 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def candidates(model, hw, plan_for: Callable[[int], object], sizes) -> list[tuple[int, object]]:
    """(devices, plan) of every instance size whose plan is valid and whose weights leave KV room."""
    out = []
    for d in sizes:
        try:
            plan = plan_for(d)
            if StepModel(model, hw, plan, d).max_sequences(1) > 0:
                out.append((d, plan))
        except ConfigError:
            continue
    return out


def plan_serving(model, hw, requests: list[Request], window_s: float, slo: Slo, plan_for: Callable[[int], object],
                 sizes=SIZES, disaggregated: bool = True, base: Optional[ServeSpec] = None) -> dict:
    """The cheapest layout (fewest cards; ties: collocated, then fewer chips) meeting ``slo`` on
    ``requests`` over the instance sizes ``sizes``, and every layout tried; ConfigError when none does."""
    cands = candidates(model, hw, plan_for, sizes)
    if not cands:
        raise ConfigError("--plan", "devices", ",".join(map(str, sizes)), "no valid instance size fits the weights")
    return search_layouts(model, hw, requests, window_s, slo, cands, disaggregated, base)


def search_layouts(model, hw, requests: list[Request], window_s: float, slo: Slo, cands: list[tuple[int, object]],
                   disaggregated: bool = True, base: Optional[ServeSpec] = None) -> dict:
    """The cheapest layout of the instance candidates ``cands`` ((devices, plan) pairs) meeting
    ``slo``: {"best": the run's metrics, "tried": every layout run, "step_model_calls"}. ``base``
    carries the scheduler options (chunk, max batch, drain); its instance counts are replaced.
    ConfigError when no layout up to MAX_INSTANCES instances per pool meets ``slo``."""
    base = base or ServeSpec()
    tried: list[dict] = []
    steps: dict = {}
    done: dict = {}

    def run(spec: ServeSpec, dec, pre=None) -> dict:
        """One request-level run of a layout (memoised), recorded in ``tried``."""
        key = (spec, dec[0], dec[1], pre[0] if pre else None, pre[1] if pre else None)
        if key in done:
            return done[key]
        out = done[key] = simulate_requests(model, hw, dec[1], dec[0], requests, spec, window_s,
                                            pre[1] if pre else None, pre[0] if pre else None, steps)
        tried.append({"layout": _layout_text(spec, dec, pre), "cards": out["cards"], "met": slo.met(out),
                      "ttft_p99_s": out["ttft_s"]["p99"], "tpot_p99_s": out["tpot_s"]["p99"]})
        return out

    def together(k: int) -> ServeSpec:
        """``k`` collocated instances with ``base``'s options."""
        return base.model_copy(update={"instances": k, "prefill_instances": 0, "decode_instances": 0})

    def apart(p: int, d: int) -> ServeSpec:
        """``p`` prefill and ``d`` decode instances with ``base``'s options."""
        return base.model_copy(update={"instances": 0, "prefill_instances": p, "decode_instances": d})

    best: Optional[dict] = None
    for dec in cands:
        n = fewest(lambda k: slo.met(run(together(k), dec)))
        if n is not None:
            best = _better(best, run(together(n), dec), 0)
    if disaggregated:
        found = _disaggregated(run, apart, slo, cands)
        if found is not None:
            best = _better(best, found, 1)
    if best is None:
        raise ConfigError("--qps", "qps", None, f"no layout up to {MAX_INSTANCES} instances per pool meets the SLO",
                          "a lower rate or looser objectives")
    best.pop("_rank")
    return {"best": best, "tried": tried, "step_model_calls": sum(m.evals for m in steps.values())}


def _disaggregated(run, apart: Callable[[int, int], ServeSpec], slo: Slo, cands: list) -> Optional[dict]:
    """The cheapest prefill + decode pools meeting ``slo``: each instance size's prefill pool sized
    for TTFT beside a generous decode pool and each size's decode pool sized for TPOT beside a
    generous prefill pool; the cheapest of each, then grown together until the pair meets ``slo``."""
    big = MAX_INSTANCES // 8
    ttft_only, tpot_only = Slo(slo.ttft_p99_s, float("inf")), Slo(float("inf"), slo.tpot_p99_s)
    pres = [(n * c[0], n, c) for c in cands
            if (n := fewest(lambda k: ttft_only.met(run(apart(k, big), cands[-1], c)), big)) is not None]
    decs = [(n * c[0], n, c) for c in cands
            if (n := fewest(lambda k: tpot_only.met(run(apart(big, k), c, cands[-1])), big)) is not None]
    if not pres or not decs:
        return None
    _, p, pre = min(pres, key=lambda x: (x[0], x[2][0]))
    _, d, dec = min(decs, key=lambda x: (x[0], x[2][0]))
    for _ in range(8):
        out = run(apart(p, d), dec, pre)
        if slo.met(out):
            return out
        if out["ttft_s"]["p99"] is None or out["ttft_s"]["p99"] > slo.ttft_p99_s:
            p += 1
        else:
            d += 1
    return None


def _layout_text(spec: ServeSpec, dec, pre) -> str:
    """A layout in words."""
    if spec.disaggregated:
        return f"{spec.prefill_instances} prefill x {pre[0]} + {spec.decode_instances} decode x {dec[0]} devices"
    return f"{spec.instances} x {dec[0]} devices"


def _better(best: Optional[dict], out: dict, kind: int) -> dict:
    """Keep the cheaper of two runs that meet the SLO (fewest cards, then collocated, then fewer chips)."""
    out = {**out, "_rank": (out["cards"], kind, out["layout"]["chips"])}
    if best is None or out["_rank"] < best["_rank"]:
        return out
    return best
