"""Fit an Ascend profile's efficiency models from published 910B/910C figures (the format of
``shared/data/ascend``: one row per published point, with hardware, timing and source columns).

The data covers dense GEMM vs shape (910B2 ``torch.mm`` / ``torch.matmul`` / PTO GEMM), grouped
matmul (torch_npu ``grouped_matmul``) and forward flash attention vs sequence (torch_npu fused
attention) and one large HBM read; those quantities are fitted with the simulator's own ``op_time``
(as ``npusim.validate.calibrate`` does for the H200 data). Every other field keeps the profile's
``efficiency`` value (msModeling's static costs and link efficiencies); the written ``source``
names which is which.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from npusim.validate.calibrate import mape_pct, number, rounded, read_rows, fit_gemm, fit_grouped

GEMM_HARDWARE = ("910B2", "A3 (SoC flag Ascend910B1)")
"""Rows with a named 24-cube-core SoC (the README's advice: fit the 910B2 sweeps and cubes)."""
GEMM_OPS = ("torch.mm", "torch.matmul", "pto_gemm")
HOST_TIMED_FLOOR_US = 100.0
"""Host-timed rows faster than this carry torch_npu dispatch, not kernel time (README): dropped."""
ATTENTION_OPS = ("torch_npu_attention_fwd",)
"""The fused attention MindSpeed trains with (torch_npu), forward, with its batch and heads stated."""
FULL_TILES = 4 * 24
"""Query tiles (128 rows per batch-head) that fill the 24 cube cores four times over. The published
rows run one batch-head, so at short sequences they measure an under-filled chip, not the
sequence-length saturation of a training shape (many heads): only rows with at least this many
tiles fit the efficiency; the profile's seq_half is kept."""


def gemm_rows(rows: list[dict], src: str) -> list[dict]:
    """Dense 16-bit GEMM rows of a named SoC, in the ``M,N,K,ms,dtype`` form of the H200 data."""
    out = []
    for r in rows:
        if r["hardware"] not in GEMM_HARDWARE or r["op"] not in GEMM_OPS or r["dtype"] not in ("fp16", "bf16"):
            continue
        t_us = number(r, "time_us", src)
        if r["timing"] == "host-sync" and t_us < HOST_TIMED_FLOOR_US:
            continue
        out.append({"M": r["m"], "N": r["n"], "K": r["k"], "ms": t_us / 1e3, "dtype": r["dtype"]})
    return out


def grouped_rows(rows: list[dict], src: str) -> list[dict]:
    """torch_npu grouped_matmul rows with a group count; tokens split evenly over the groups (the
    source does not state the split)."""
    out = []
    for r in rows:
        if not r.get("groups"):
            continue
        groups = number(r, "groups", src)
        out.append({"experts": groups, "tokens_per_expert": max(1.0, number(r, "tokens", src) / groups),
                    "K": r["k"], "N": r["n"], "ms": number(r, "time_us", src) / 1e3, "dtype": r["dtype"]})
    return out


def fit_attention_forward(hw, rows: list[dict], src: str, base) -> dict:
    """Fit the fused-attention max fraction from forward timings of full-chip shapes (FLOPs
    4·s_q·s_kv·d per batch-head, the data's convention: no causal halving); seq_half is kept."""
    from scipy.optimize import least_squares

    from npusim.cost.compute import op_time
    from npusim.workload.ops import Op

    sel = [r for r in rows if r["op"] in ATTENTION_OPS and r["batch"] and r["heads"]
           and number(r, "batch", src) * number(r, "heads", src) * number(r, "seq_q", src) / 128 >= FULL_TILES]
    flops = [4.0 * number(r, "seq_q", src) * number(r, "seq_kv", src) * number(r, "head_dim", src)
             * number(r, "batch", src) * number(r, "heads", src) for r in sel]
    seqs = [int(number(r, "seq_kv", src)) for r in sel]
    t = np.array([number(r, "time_us", src) for r in sel]) * 1e-6

    def predict(x):
        d = base.model_copy(update={"attention": base.attention.model_copy(update={"max_fraction": float(x[0])})})
        h = hw.model_copy(update={"calibration": None, "efficiency": d})
        return np.array([op_time(Op("flash_attention", "attention", f, 0.0, seq=s), h, "bf16")
                         for f, s in zip(flops, seqs)])

    res = least_squares(lambda x: np.log(predict(x) / t), x0=[0.4], bounds=([0.05], [1.0]), diff_step=1e-3)
    return {"attention": {**base.attention.model_dump(), "max_fraction": float(res.x[0])},
            "residual_pct": mape_pct(predict(res.x), t), "n": len(sel)}


def hbm_fraction(hw, rows: list[dict], src: str) -> tuple[float, int]:
    """Achieved fraction of datasheet HBM bandwidth of the largest published reads (mean of rows)."""
    sel = [number(r, "bandwidth_GBps", src) for r in rows if r["op"] == "hbm_read" and r["bandwidth_GBps"]]
    return float(np.mean(sel)) / hw.chip.hbm_bandwidth_GBps, len(sel)


def calibrate_ascend(hw, d: Path) -> dict:
    """The calibration section of an Ascend profile fitted from the published figures in ``d``."""
    base = hw.efficiency
    gsrc, grsrc = str(d / "gemm.csv"), str(d / "grouped_gemm.csv")
    asrc, tsrc = str(d / "attention.csv"), str(d / "transfers.csv")
    mem_frac, n_mem = hbm_fraction(hw, read_rows(d / "transfers.csv", ("op", "bandwidth_GBps")), tsrc)
    base = base.model_copy(update={"memory": base.memory.model_copy(update={"max_fraction": min(1.0, mem_frac)})})
    g_rows = gemm_rows(read_rows(d / "gemm.csv", ("hardware", "op", "dtype", "m", "n", "k", "time_us", "timing")), gsrc)
    g = fit_gemm(hw, g_rows, gsrc, base)
    base = base.model_copy(update={"gemm": base.gemm.model_copy(update=g["gemm"])})
    gg_rows = grouped_rows(read_rows(d / "grouped_gemm.csv", ("tokens", "k", "n", "groups", "time_us", "dtype")), grsrc)
    gg = fit_grouped(hw, gg_rows, grsrc, base)
    base = base.model_copy(update={"grouped_gemm_tokens_half": gg["grouped_gemm_tokens_half"]})
    at = fit_attention_forward(hw, read_rows(d / "attention.csv", ("op", "seq_q", "seq_kv", "head_dim", "time_us")), asrc, base)
    out = base.model_dump(mode="json")
    out["attention"] = at["attention"]
    out["source"] = (
        f"npusim calibrate from {d.name}/ published figures (least squares on log time). Fitted: gemm "
        f"({len(g_rows)} 910B2/A3 rows), grouped_gemm_tokens_half ({len(gg_rows)} torch_npu grouped_matmul rows, "
        f"even split assumed), attention max_fraction ({at['n']} full-chip torch_npu forward rows), memory "
        f"max_fraction ({n_mem} 4 GiB HBM reads). Kept from the efficiency section (msModeling defaults or "
        "assumptions): memory half_bytes, vector_fraction, launch and collective costs, link fractions, "
        "overlap slowdowns, host fractions, attention seq_half and backward_factor.")
    out["fitted_from"] = str(d)
    out["command"] = f"npusim calibrate --hardware {hw.name} --from {d}"
    out["residuals"] = {"gemm_mape_pct": round(g["residual_pct"], 2), "grouped_gemm_mape_pct": round(gg["residual_pct"], 2),
                        "attention_mape_pct": round(at["residual_pct"], 2)}
    return rounded(out)
