"""Step times of one serving instance from the step model, memoised on a grid and interpolated.

A decode step of ``b`` sequences at context ``c`` and a prefill of ``n`` prompt tokens are each one
``simulate_serving`` call. Calls are made only at grid points (every batch up to ``EXACT_BATCH``,
then geometric steps of ``BATCH_RATIO``; context and prompt tokens in steps of ``TOKEN_STEP``) and
memoised; between grid points the time is interpolated linearly (decode time is close to linear in
batch and context between neighbouring points). At a grid point the answer is the step model's own.

A mixed step of continuous batching with chunked prefill (decodes plus a prefill chunk) costs the
decode step plus the chunk's prefill minus one read of the weights that both passes stream (the
fused forward reads them once): ``t_dec + t_pre - t_weights``, where ``t_weights`` is the
batch-1 decode step at the shortest context, an upper bound on the shared weight read.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from npusim.config.workload import InferenceWorkload
from npusim.engine.serve import resolve_serving_plan, serving_memory, simulate_serving

EXACT_BATCH = 8
"""Batches simulated exactly; beyond, a geometric grid."""
BATCH_RATIO = 2 ** 0.25
"""Ratio between neighbouring batch grid points beyond EXACT_BATCH (about 19 %)."""
TOKEN_STEP = 256
"""Grid step of the decode context and of the prefill token count."""


@dataclass
class StepModel:
    """Step times of one instance (model, hardware, plan on ``devices`` devices), memoised."""

    model: object
    hw: object
    plan: object
    devices: int
    memo: dict = field(default_factory=dict)
    evals: int = 0

    def __post_init__(self):
        self.plan = resolve_serving_plan(self.plan, self.model, self.devices, self.devices)
        self._batches = _batch_grid(1 << 20)

    def _sim(self, kind: str, batch: int, tokens: int) -> float:
        """One step-model call at a grid point (memoised): prefill of ``batch`` x ``tokens`` prompt
        tokens (TTFT) or a decode step of ``batch`` sequences at context ``tokens`` (step time)."""
        key = (kind, batch, tokens)
        if key not in self.memo:
            dp = self.plan.dp
            wl = InferenceWorkload(kind=kind, batch=max(dp, -(-batch // dp) * dp), input_len=tokens)
            r = simulate_serving(self.model, self.hw, self.plan, wl, self.devices, strict_memory=False)
            self.memo[key] = r.step_time_s
            self.evals += 1
        return self.memo[key]

    def decode_s(self, batch: int, context: float) -> float:
        """Seconds of one decode step of ``batch`` sequences at mean context ``context``."""
        i = bisect.bisect_left(self._batches, batch)
        b_hi = self._batches[i]
        b_lo = self._batches[i - 1] if b_hi != batch and i > 0 else b_hi
        c_lo, c_hi, fc = _bracket(context)

        def at(b: int) -> float:
            """Context-interpolated step time at grid batch ``b``."""
            lo = self._sim("decode", b, c_lo)
            return lo if c_hi == c_lo else lo + fc * (self._sim("decode", b, c_hi) - lo)

        lo = at(b_lo)
        return lo if b_hi == b_lo else lo + (batch - b_lo) / (b_hi - b_lo) * (at(b_hi) - lo)

    def prefill_s(self, tokens: int) -> float:
        """Seconds of a prefill pass over ``tokens`` prompt tokens (one sequence)."""
        lo, hi, f = _bracket(tokens)
        t_lo = self._sim("prefill", 1, lo)
        return t_lo if hi == lo else t_lo + f * (self._sim("prefill", 1, hi) - t_lo)

    def weights_s(self) -> float:
        """The batch-1 decode step at the smallest context: the weight read a fused mixed step shares."""
        return self._sim("decode", 1, 1)

    def mixed_s(self, batch: int, context: float, prefill_tokens: int) -> float:
        """One continuous-batching step: ``batch`` decodes and a chunk of ``prefill_tokens``."""
        if prefill_tokens <= 0:
            return self.decode_s(batch, context)
        if batch <= 0:
            return self.prefill_s(prefill_tokens)
        pre = self.prefill_s(prefill_tokens)
        return self.decode_s(batch, context) + max(0.0, pre - self.weights_s())

    def max_sequences(self, kv_len: int) -> int:
        """Most sequences of ``kv_len`` tokens whose KV cache fits beside the weights (0: none)."""
        wl = InferenceWorkload(kind="decode", batch=self.plan.dp, input_len=kv_len)
        cap = self.hw.chip.hbm_capacity_GB * 1e9

        def mem(k: int) -> float:
            """Bytes per device with ``k`` sequences per attention-DP group."""
            return sum(serving_memory(self.model, self.plan, wl, k).values())

        base, per = mem(0), mem(1) - mem(0)
        if base + per > cap:
            return 0
        return int((cap - base) // per) * self.plan.dp if per > 0 else 1 << 20


def _batch_grid(limit: int) -> list[int]:
    """Batch grid points: 1..EXACT_BATCH, then rounded geometric steps up to ``limit``."""
    out = list(range(1, EXACT_BATCH + 1))
    x = float(EXACT_BATCH)
    while out[-1] < limit:
        x *= BATCH_RATIO
        out.append(max(out[-1] + 1, int(math.ceil(x))))
    return out


def _bracket(tokens: float) -> tuple[int, int, float]:
    """Grid points around ``tokens`` (multiples of TOKEN_STEP; below TOKEN_STEP every integer) and
    the interpolation fraction; a grid point gives (p, p, 0)."""
    if tokens <= TOKEN_STEP:
        p = max(1, int(math.ceil(tokens)))
        return p, p, 0.0
    lo = int(tokens // TOKEN_STEP) * TOKEN_STEP
    if lo == tokens:
        return lo, lo, 0.0
    return lo, lo + TOKEN_STEP, (tokens - lo) / TOKEN_STEP
