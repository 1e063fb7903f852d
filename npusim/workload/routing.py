"""MoE routing load as an input: tokens per expert per micro-batch, sampled with a seed.

Schemes: ``balanced`` (forced uniform load), ``uniform`` (random top-k, multinomial), ``learned``
(the skew of a trained, auxiliary-loss-balanced router: see :data:`LEARNED_MAX_VIOLATION`), ``zipf``
(expert popularity ~ rank^-s), ``dirichlet`` (popularity ~ Dirichlet(alpha) per micro-batch),
``grouped`` (MoGE: top_k/expert_groups experts from every group, so every group gets the same
load), and ``histogram`` (measured tokens per expert from a CSV). Expert counts for large token
counts are drawn as a multinomial over experts (the top-k without-replacement constraint is ignored
there; :func:`imbalance_score` samples tokens exactly).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

Scheme = Literal["balanced", "uniform", "learned", "zipf", "dirichlet", "grouped", "histogram"]
SCHEMES: tuple[str, ...] = ("balanced", "uniform", "learned", "zipf", "dirichlet", "grouped", "histogram")

LEARNED_MAX_VIOLATION = 0.52
"""Busiest expert's load / mean load - 1 of a trained router balanced by an auxiliary loss:
MaxVio_global of the auxiliary-loss-controlled 3B MoE (64 routed experts, top-6, 2 shared, sigmoid
gate, aux coefficient 1e-3) in Wang et al., "Auxiliary-Loss-Free Load Balancing Strategy for
Mixture-of-Experts", arXiv 2408.15664 (2024), Table 2 (main results; 0.72 for the 1B model, 0.04
with loss-free balancing; 0.937 for a 1B softmax-gate baseline in its appendix table). Verified
against the paper's LaTeX source. MaxVio_global counts load over the whole ~71M-token validation
set and is averaged over layers; per training batch the paper only plots it (Figures 3-4, not read
off), and states the aux-loss baseline's per-computation-batch violation stays roughly constant
as that batch grows, so a fixed popularity skew per micro-batch is its stated behaviour.
``routing=learned`` spreads expert popularity log-normally with this max/mean; ``routing_param``
!= 1 scales the violation."""


@dataclass(frozen=True)
class RoutingSpec:
    """How tokens are routed to experts in the simulated step."""

    scheme: Scheme = "balanced"
    param: float = 1.0
    """Zipf exponent s, or Dirichlet concentration alpha."""
    histogram: Optional[str] = None
    """CSV with columns expert,tokens (measured load) for scheme 'histogram'."""
    seed: int = 0
    samples: int = 16
    """Micro-batch routings sampled to estimate the expected busiest-device load."""
    capacity_factor: float = 0.0
    """Tokens per expert capped at capacity_factor x mean (0 = dropless)."""
    redundant_experts: int = 0
    """Hot experts replicated onto the least-loaded devices (EPLB-style), per EP group."""
    placement_interval: int = 0
    """Dynamic placement: experts re-placed every this many steps from the load counted since the
    last re-placement (0 = static contiguous placement)."""


def learned_popularity(experts: int, max_violation: float) -> np.ndarray:
    """Expert popularity of a trained router, sorted descending: log-normal over experts (normal
    quantiles), its spread solved so that the busiest expert carries (1 + max_violation) x the mean."""
    from statistics import NormalDist

    z = np.array([NormalDist().inv_cdf((e + 0.5) / experts) for e in range(experts)])[::-1]

    def ratio(sigma: float) -> float:
        w = np.exp(sigma * z)
        return float(w[0] / w.mean())

    lo, hi = 0.0, 8.0
    if max_violation <= 0 or experts <= 1:
        return np.full(experts, 1.0 / max(1, experts))
    target = min(1.0 + max_violation, experts * 0.999)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(mid) < target else (lo, mid)
    w = np.exp(lo * z)
    return w / w.sum()


def expert_popularity(spec: RoutingSpec, experts: int, rng: np.random.Generator) -> np.ndarray:
    """Probability that a routed slot lands on each expert, for one micro-batch."""
    if spec.scheme in ("balanced", "uniform", "grouped"):
        return np.full(experts, 1.0 / experts)
    if spec.scheme == "learned":
        return learned_popularity(experts, LEARNED_MAX_VIOLATION * spec.param)[rng.permutation(experts)]
    if spec.scheme == "zipf":
        p = 1.0 / np.arange(1, experts + 1) ** spec.param
        p = p[rng.permutation(experts)]
    elif spec.scheme == "dirichlet":
        p = rng.dirichlet(np.full(experts, spec.param))
    else:
        p = load_histogram(spec.histogram, experts)
    return p / p.sum()


def load_histogram(path: Optional[str], experts: int) -> np.ndarray:
    """Measured tokens per expert from ``path`` (CSV: expert,tokens). Errors name the file, the line
    and the bad cell (a short prefix), never the whole line."""
    import csv
    import math

    from npusim.config.errors import ConfigError
    from npusim.config.policy import read_text

    if not path or not Path(path).is_file():
        raise ConfigError("--routing", "histogram", path, "histogram file not found", "a CSV with expert,tokens")
    text = read_text(path, str(path))
    counts = np.zeros(experts)
    try:
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None or not {"expert", "tokens"} <= {str(f).strip() for f in reader.fieldnames}:
            raise ConfigError(str(path), "<header>", None, "missing columns", "a header line expert,tokens")
        for i, row in enumerate(reader, start=2):
            row = {str(k).strip(): v for k, v in row.items()}
            cell, field = row.get("expert"), "expert"
            try:
                e = int(str(cell).strip())
                cell, field = row.get("tokens"), "tokens"
                t = float(str(cell).strip())
            except ValueError:
                raise ConfigError(f"{path}:{i}", field, cell, "not a number",
                                  "an integer expert and a non-negative number of tokens") from None
            if not math.isfinite(t) or t < 0:
                raise ConfigError(f"{path}:{i}", "tokens", t, "not a finite non-negative number", ">= 0")
            if not 0 <= e < experts:
                raise ConfigError(f"{path}:{i}", "expert", e, "out of range", f"0..{experts - 1}")
            counts[e] += t
    except csv.Error as e:
        raise ConfigError(str(path), "<csv>", None, f"cannot parse: {' '.join(str(e).split())[:80]}") from None
    total = float(counts.sum())
    if not math.isfinite(total) or total <= 0:
        raise ConfigError(str(path), "tokens", total, "histogram has no tokens or an infinite total",
                          "a positive finite total")
    return counts


def sample_expert_tokens(spec: RoutingSpec, experts: int, top_k: int, groups: int, tokens: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Tokens routed to each expert for ``tokens`` tokens of one micro-batch (before capacity)."""
    slots = tokens * top_k
    if spec.scheme == "balanced":
        return np.full(experts, slots / experts)
    p = expert_popularity(spec, experts, rng)
    if spec.scheme == "grouped" and groups > 0:
        return per_group_counts(p, groups, tokens * (top_k // groups), rng)
    return rng.multinomial(slots, p).astype(float)


def per_group_counts(p: np.ndarray, groups: int, per_group_slots: int, rng: np.random.Generator) -> np.ndarray:
    """Tokens per expert when every token picks ``per_group_slots / tokens`` experts in each of
    ``groups`` equal groups (MoGE): each group gets exactly its slots, spread by the popularity
    ``p`` inside the group."""
    per = len(p) // groups
    out = np.empty(len(p))
    for g in range(groups):
        pg = p[g * per:(g + 1) * per]
        out[g * per:(g + 1) * per] = rng.multinomial(per_group_slots, pg / pg.sum())
    return out


def apply_capacity(counts: np.ndarray, capacity_factor: float) -> tuple[np.ndarray, float]:
    """Cap tokens per expert; return (kept counts, dropped fraction)."""
    if capacity_factor <= 0:
        return counts, 0.0
    cap = capacity_factor * counts.mean()
    kept = np.minimum(counts, cap)
    total = counts.sum()
    return kept, float((total - kept.sum()) / total) if total else 0.0


def device_experts(counts: np.ndarray, devices: int, redundant: int = 0) -> np.ndarray:
    """Tokens per expert copy on each device [devices, copies]: experts laid out contiguously, then
    ``redundant`` hot experts replicated greedily (the busiest device's hottest expert gets a copy on
    the least-loaded device and the two copies split its tokens)."""
    per = counts.reshape(devices, -1).astype(float)
    extra = np.zeros((devices, redundant))
    for i in range(redundant):
        loads = per.sum(axis=1) + extra.sum(axis=1)
        src, dst = int(loads.argmax()), int(loads.argmin())
        e = int(per[src].argmax())
        half = per[src, e] / 2.0
        per[src, e] -= half
        extra[dst, i] = half
    return np.concatenate([per, extra], axis=1) if redundant else per


def balanced_placement(estimate: np.ndarray, devices: int) -> np.ndarray:
    """Expert order that puts experts/devices experts on each device with near-equal estimated load:
    hottest first, each to the least-loaded device that still has a free slot (greedy LPT with equal
    expert counts, as load-aware placement does)."""
    per = len(estimate) // devices
    loads = np.zeros(devices)
    slots: list[list[int]] = [[] for _ in range(devices)]
    for e in np.argsort(-estimate, kind="stable"):
        free = [d for d in range(devices) if len(slots[d]) < per]
        d = min(free, key=lambda i: loads[i])
        slots[d].append(int(e))
        loads[d] += estimate[e]
    return np.array([e for s in slots for e in s])


def device_loads(counts: np.ndarray, devices: int, redundant: int = 0) -> np.ndarray:
    """Tokens per device with experts laid out contiguously; hot experts replicated greedily."""
    return device_experts(counts, devices, redundant).sum(axis=1)


@dataclass(frozen=True)
class LoadStats:
    """Expected routing load seen by one EP group over sampled micro-batches."""

    max_over_mean: float
    """Expected busiest-device load / mean device load (1 = balanced)."""
    min_over_mean: float
    dropped_fraction: float
    imbalance_score: float
    """Expected (max - min) / tokens over devices (Pangu Pro MoE's IS)."""
    expert_spread: float = 0.0
    """Expected coefficient of variation of tokens per expert on the busiest device (sets the
    grouped-GEMM efficiency of unequal groups)."""


def load_stats(spec: RoutingSpec, model, ep_devices: int, tokens: int) -> LoadStats:
    """Sample routings of ``tokens`` tokens over an EP group of ``ep_devices`` (seeded, deterministic)."""
    if spec.scheme == "balanced":
        return LoadStats(1.0, 1.0, 0.0, 0.0)
    rng = np.random.default_rng(spec.seed)
    mx, mn, drop, score, cv = [], [], [], [], []
    for _ in range(spec.samples):
        if spec.placement_interval > 0 and ep_devices > 1:
            counts = placed_counts(spec, model, ep_devices, tokens, rng)
        else:
            counts = sample_expert_tokens(spec, model.experts, model.top_k, model.expert_groups, tokens, rng)
        counts, d = apply_capacity(counts, spec.capacity_factor)
        per = device_experts(counts, ep_devices, spec.redundant_experts)
        loads = per.sum(axis=1)
        mean = loads.mean()
        busiest = per[int(loads.argmax())]
        mx.append(loads.max() / mean)
        mn.append(loads.min() / mean)
        drop.append(d)
        score.append((loads.max() - loads.min()) / tokens)
        busy = busiest[busiest > 0]
        cv.append(float(busy.std() / busy.mean()) if busy.size else 0.0)
    return LoadStats(float(np.mean(mx)), float(np.mean(mn)), float(np.mean(drop)), float(np.mean(score)),
                     float(np.mean(cv)))


def placed_counts(spec: RoutingSpec, model, devices: int, tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Tokens per expert of one micro-batch, reordered by a dynamic placement: the placement is
    computed from the tokens counted over the last ``placement_interval`` steps (one micro-batch of
    ``tokens`` per step, the least a step routes), under the same expert popularity (no drift between
    re-placements: an assumption). What it leaves is the estimation noise, the indivisibility of
    experts and this micro-batch's own sampling noise."""
    p = expert_popularity(spec, model.experts, rng)
    slots = tokens * model.top_k
    if spec.scheme == "balanced":
        return np.full(model.experts, slots / model.experts)
    seen = rng.multinomial(slots * spec.placement_interval, p).astype(float)
    order = balanced_placement(seen, devices)
    return rng.multinomial(slots, p).astype(float)[order]


def imbalance_score(scheme: str, experts: int, top_k: int, devices: int, tokens: int, groups: int = 0,
                    trials: int = 10_000, seed: int = 0) -> dict:
    """Monte-Carlo imbalance score IS = (max - min tokens per device) / tokens with exact per-token
    top-k sampling (MoGE: top_k/groups experts per group, one group per device)."""
    rng = np.random.default_rng(seed)
    per_dev = experts // devices
    scores = np.empty(trials)
    for t in range(trials):
        keys = rng.random((tokens, experts))
        if scheme == "grouped":
            g = groups or devices
            size = experts // g
            kg = top_k // g
            picks = np.argsort(keys.reshape(tokens, g, size), axis=2)[:, :, :kg] + np.arange(g)[None, :, None] * size
            picks = picks.reshape(tokens, -1)
        else:
            picks = np.argsort(keys, axis=1)[:, :top_k]
        dev = np.bincount((picks // per_dev).ravel(), minlength=devices)
        scores[t] = (dev.max() - dev.min()) / tokens
    return {"scheme": scheme, "experts": experts, "top_k": top_k, "devices": devices, "tokens": tokens,
            "trials": trials, "mean_IS": float(scores.mean()), "p_IS_gt_0": float((scores > 0).mean()),
            "p95_IS": float(np.quantile(scores, 0.95))}
