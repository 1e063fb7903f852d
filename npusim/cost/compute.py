"""Operator time: a roofline with shape-dependent efficiency (matrix vs vector unit vs HBM)."""
from __future__ import annotations

import math

from npusim.workload.ops import Op

_SPREAD_NODES = ((-2.0201828704560856, 0.019953242059045913), (-0.9585724646138185, 0.39361932315224116),
                 (0.0, 0.9453087204829419), (0.9585724646138185, 0.39361932315224116),
                 (2.0201828704560856, 0.019953242059045913))
"""Gauss-Hermite nodes and weights (5 points, weight exp(-x^2)) for expectations over a log-normal."""


def gemm_efficiency(d, m: float, n: float, k: float) -> float:
    """Fraction of matrix peak a GEMM of shape (m, n, k) reaches (plan independent)."""
    g = d.gemm
    return g.max_fraction * (m / (m + g.m_half)) * (n / (n + g.n_half)) * (k / (k + g.k_half))


def group_efficiency(d, rows: float, m: float, n: float, k: float, wgrad: bool = False) -> float:
    """Fraction of matrix peak one group (expert) of a grouped GEMM reaches when it holds ``rows``
    tokens: the dense GEMM surface at its shape (tokens are M, or K for a weight gradient) times the
    grouped kernel's own saturation in tokens per group (plan independent)."""
    h = d.grouped_gemm_tokens_half
    eff = gemm_efficiency(d, m, n, rows) if wgrad else gemm_efficiency(d, rows, n, k)
    return eff * (rows / (rows + h) if h else 1.0)


def grouped_gemm_efficiency(d, op: Op) -> float:
    """Fraction of matrix peak a grouped GEMM reaches when its groups' tokens have coefficient of
    variation ``op.spread`` around their mean: the groups run one after another on the matrix unit,
    so the kernel takes sum(tokens_g / eff(tokens_g)), tokens_g log-normal with the op's mean."""
    wgrad = op.name.endswith("_wgrad")
    mean = float(op.k if wgrad else op.m)
    if op.spread <= 0:
        return group_efficiency(d, mean, op.m, op.n, op.k, wgrad)
    s2 = math.log1p(op.spread * op.spread)
    s = math.sqrt(s2)
    time_per_token = 0.0
    for x, w in _SPREAD_NODES:
        rows = max(1.0, mean * math.exp(math.sqrt(2.0) * s * x - 0.5 * s2))
        time_per_token += w / math.sqrt(math.pi) * rows / group_efficiency(d, rows, op.m, op.n, op.k, wgrad)
    return mean / time_per_token


def memory_efficiency(d, nbytes: float) -> float:
    """Fraction of HBM bandwidth a kernel moving ``nbytes`` reaches."""
    mem = d.memory
    return mem.max_fraction * nbytes / (nbytes + mem.half_bytes) if nbytes > 0 else mem.max_fraction


def attention_efficiency(d, seq: float) -> float:
    """Fraction of matrix peak fused attention reaches at sequence length ``seq``."""
    a = d.attention
    return a.max_fraction * seq / (seq + a.seq_half)


def matrix_dtype(hw, precision: str) -> str:
    """The matrix dtype used for ``precision`` (falls back to fp16 where bf16 is absent)."""
    peaks = hw.chip.matrix_tflops
    if precision in peaks:
        return precision
    for alt in ("bf16", "fp16"):
        if alt in peaks:
            return alt
    return next(iter(peaks))


def vector_peak_flops(hw) -> float:
    """Vector-unit peak in FLOP/s for 16-bit work."""
    v = hw.chip.vector_tflops
    return 1e12 * (v.get("bf16") or v.get("fp16") or v.get("fp32") or min(hw.chip.matrix_tflops.values()) / 16)


def op_time(op: Op, hw, precision: str) -> float:
    """Seconds one device spends on ``op``: launch + max(compute time, memory time)."""
    d = hw.derating
    launch = d.launch_overhead_us * 1e-6
    bw = hw.chip.hbm_bandwidth_GBps * 1e9
    mem_t = op.bytes / (bw * memory_efficiency(d, op.bytes)) if op.bytes else 0.0
    if op.kind in ("gemm", "grouped_gemm"):
        peak = hw.matrix_peak_flops(matrix_dtype(hw, precision if op.name not in _ATTN_GEMMS else "bf16"))
        if op.kind == "grouped_gemm":
            eff = grouped_gemm_efficiency(d, op)
        else:
            eff = gemm_efficiency(d, op.m, op.n, op.k)
        comp_t = op.flops / (peak * eff) if op.flops else 0.0
        return launch + max(comp_t, mem_t)
    if op.kind == "attention":
        peak = hw.matrix_peak_flops(matrix_dtype(hw, "bf16"))
        comp_t = op.flops / (peak * attention_efficiency(d, op.seq))
        return launch + max(comp_t, mem_t)
    comp_t = op.flops / (vector_peak_flops(hw) * d.vector_fraction) if op.flops else 0.0
    if d.vector_launch_us is not None:
        launch = d.vector_launch_us * 1e-6
    return launch + max(comp_t, mem_t)


_ATTN_GEMMS = ("attn_scores", "attn_context", "attn_scores_dgrad", "attn_scores_dgrad2",
               "attn_context_dgrad", "attn_context_dgrad2")
