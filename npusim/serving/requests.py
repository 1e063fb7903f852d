"""Requests of a serving run: seeded Poisson arrivals, or a trace CSV (arrival_s,input_len,output_len)."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npusim.config.errors import ConfigError
from npusim.config.policy import MAX_SEQ_LEN

TRACE_COLUMNS = ("arrival_s", "input_len", "output_len")
MAX_REQUESTS = 1_000_000
"""Most requests one run simulates."""


@dataclass
class Request:
    """One request and what happened to it (times in seconds from the start of the run)."""

    id: int
    arrival_s: float
    input_len: int
    output_len: int
    prefilled: int = 0
    """Prompt tokens whose prefill has run."""
    generated: int = 0
    """Output tokens produced so far (the first one by the prefill)."""
    first_token_s: float = math.nan
    done_s: float = math.nan

    @property
    def ttft_s(self) -> float:
        """Time to first token."""
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (0 for one-token outputs)."""
        return (self.done_s - self.first_token_s) / (self.output_len - 1) if self.output_len > 1 else 0.0

    @property
    def e2e_s(self) -> float:
        """Arrival to last token."""
        return self.done_s - self.arrival_s


def poisson_requests(qps: float, duration_s: float, input_len: int, output_len: int, seed: int) -> list[Request]:
    """Requests with exponential inter-arrival times of mean 1/qps over ``duration_s`` (seeded)."""
    expected = qps * duration_s
    if expected > MAX_REQUESTS:
        raise ConfigError("--qps", "qps x duration", expected, "too many requests to simulate", f"<= {MAX_REQUESTS:,}")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / qps, size=int(expected * 1.2 + 20 * math.sqrt(expected) + 10))
    times = np.cumsum(gaps)
    times = times[times < duration_s]
    return [Request(i, float(t), input_len, output_len) for i, t in enumerate(times)]


def read_trace(path: str) -> list[Request]:
    """Requests from a CSV with columns arrival_s,input_len,output_len (one-line ConfigError on a
    missing column, a bad value or arrivals out of order)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(path), "<file>", str(path), "no such file", "a CSV with " + ",".join(TRACE_COLUMNS))
    out: list[Request] = []
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(str(path), missing[0], None, "missing column", ",".join(TRACE_COLUMNS))
        last = 0.0
        for line, row in enumerate(reader, start=2):
            out.append(_row(path, line, row, last))
            last = out[-1].arrival_s
            if len(out) > MAX_REQUESTS:
                raise ConfigError(str(path), "rows", len(out), "too many requests", f"<= {MAX_REQUESTS:,}")
    if not out:
        raise ConfigError(str(path), "rows", 0, "no requests", "at least one row")
    return out


def _row(path: str, line: int, row: dict, last: float) -> Request:
    """One trace row as a Request."""
    where = f"{path}:{line}"
    try:
        t = float(row["arrival_s"])
    except (TypeError, ValueError):
        raise ConfigError(where, "arrival_s", row["arrival_s"], "not a number", "seconds >= 0") from None
    if not (math.isfinite(t) and t >= last):
        raise ConfigError(where, "arrival_s", row["arrival_s"], "negative, not finite or before the previous row",
                          f"finite, >= {last}")
    lens = []
    for col in ("input_len", "output_len"):
        try:
            v = int(row[col])
        except (TypeError, ValueError):
            raise ConfigError(where, col, row[col], "not an integer", f"1..{MAX_SEQ_LEN}") from None
        if not 1 <= v <= MAX_SEQ_LEN:
            raise ConfigError(where, col, v, "out of range", f"1..{MAX_SEQ_LEN}")
        lens.append(v)
    return Request(line - 2, t, lens[0], lens[1])
