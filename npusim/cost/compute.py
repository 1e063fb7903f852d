"""Operator time: a roofline with shape-dependent efficiency (matrix vs vector unit vs HBM)."""
from __future__ import annotations

from npusim.workload.ops import Op


def gemm_efficiency(d, m: float, n: float, k: float) -> float:
    """Fraction of matrix peak a GEMM of shape (m, n, k) reaches (plan independent)."""
    g = d.gemm
    return g.max_fraction * (m / (m + g.m_half)) * (n / (n + g.n_half)) * (k / (k + g.k_half))


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
        eff = gemm_efficiency(d, op.m, op.n, op.k)
        if op.kind == "grouped_gemm" and d.grouped_gemm_tokens_half:
            eff *= op.m / (op.m + d.grouped_gemm_tokens_half)
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
