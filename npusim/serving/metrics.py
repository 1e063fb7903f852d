"""What a serving run reports: latency percentiles, throughput per card, SLO attainment."""
from __future__ import annotations

import math

import numpy as np

from npusim.serving.requests import Request

PERCENTILES = (50, 90, 99)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 / p90 / p99 / mean of ``values`` (None when empty), seconds."""
    if not values:
        return {f"p{q}": None for q in PERCENTILES} | {"mean": None}
    arr = np.asarray(values, dtype=float)
    out: dict[str, float | None] = {f"p{q}": float(np.percentile(arr, q)) for q in PERCENTILES}
    out["mean"] = float(arr.mean())
    return out


def summarize(requests: list[Request], cards: float, window_s: float, out_tokens: int, in_tokens: int,
              end_s: float, busy_s: float, instance_seconds: float, ttft_slo_s: float | None = None,
              tpot_slo_s: float | None = None) -> dict:
    """Metrics of a finished run. Latency percentiles are over finished requests; throughput is the
    tokens produced within the arrival window ``window_s`` (so it saturates when the instances cannot
    keep up); SLO attainment is over all requests (unfinished ones miss)."""
    done = [r for r in requests if not math.isnan(r.done_s)]
    ok = [r for r in done if (ttft_slo_s is None or r.ttft_s <= ttft_slo_s)
          and (tpot_slo_s is None or r.tpot_s <= tpot_slo_s)]
    n = len(requests)
    return {
        "requests": n, "finished": len(done), "unfinished": n - len(done),
        "ttft_s": percentiles([r.ttft_s for r in done]),
        "tpot_s": percentiles([r.tpot_s for r in done if r.output_len > 1]),
        "e2e_s": percentiles([r.e2e_s for r in done]),
        "output_tokens_per_s": out_tokens / window_s if window_s > 0 else 0.0,
        "output_tokens_per_s_per_card": out_tokens / window_s / cards if window_s > 0 else 0.0,
        "input_tokens_per_s": in_tokens / window_s if window_s > 0 else 0.0,
        "slo_attainment": len(ok) / n if n else 1.0,
        "ttft_slo_s": ttft_slo_s, "tpot_slo_s": tpot_slo_s,
        "utilization": busy_s / instance_seconds if instance_seconds > 0 else 0.0,
        "simulated_s": end_s, "cards": cards,
    }
