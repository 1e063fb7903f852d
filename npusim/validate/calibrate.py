"""Fit a profile's efficiency models from kernel measurements (the CSV format of data/calibration/h200).

Each fit minimises the squared log-ratio of predicted to measured kernel time, using the same
``op_time`` roofline the simulator uses, so the fitted numbers mean exactly what the simulator does
with them. Residuals (MAPE per kernel class) are returned with the fit.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from npusim.config.errors import ConfigError


def read_rows(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a calibration CSV, checking its columns."""
    if not path.is_file():
        raise ConfigError(str(path), "<file>", str(path), "calibration file not found")
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ConfigError(str(path), "<file>", "", "no data rows")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise ConfigError(str(path), missing[0], None, "missing column", ", ".join(required))
    return rows


def number(row: dict, key: str, src: str) -> float:
    try:
        v = float(row[key])
    except (TypeError, ValueError):
        raise ConfigError(src, key, row.get(key), "not a number") from None
    if not np.isfinite(v) or v < 0:
        raise ConfigError(src, key, v, "must be a finite non-negative number")
    return v


def mape_pct(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.mean(np.abs(pred / meas - 1.0)) * 100.0)


def fit_memory(hw, rows: list[dict], src: str) -> dict:
    """Fit launch overhead and achieved-bandwidth curve from copy/add kernels (single-pass traffic)."""
    from scipy.optimize import least_squares

    sel = [r for r in rows if r["kernel"] in ("copy", "add")]
    b = np.array([number(r, "bytes", src) for r in sel])
    t = np.array([number(r, "ms", src) for r in sel]) * 1e-3
    bw = hw.chip.hbm_bandwidth_GBps * 1e9

    def model(x):
        launch, frac, half = x
        return launch + (b + half) / (bw * frac)

    res = least_squares(lambda x: np.log(model(x) / t), x0=[5e-6, 0.9, 1e6],
                        bounds=([0, 0.05, 0], [1e-4, 1.0, 1e9]))
    launch, frac, half = res.x
    return {"launch_overhead_us": float(launch * 1e6), "memory": {"max_fraction": float(frac), "half_bytes": float(half)},
            "residual_pct": mape_pct(model(res.x), t)}


def fit_gemm(hw, rows: list[dict], src: str, base) -> dict:
    """Fit the GEMM efficiency surface (max fraction and M/N/K half-saturation sizes); a row's
    ``dtype`` (default bf16) picks the matrix peak it is measured against."""
    from scipy.optimize import least_squares

    from npusim.cost.compute import op_time
    from npusim.workload.layers import gemm

    ops = [gemm("g", int(number(r, "M", src)), int(number(r, "N", src)), int(number(r, "K", src))) for r in rows]
    t = np.array([number(r, "ms", src) for r in rows]) * 1e-3

    def predict(x):
        d = base.model_copy(update={"gemm": base.gemm.model_copy(update=dict(zip(("max_fraction", "m_half", "n_half", "k_half"), map(float, x))))})
        h = hw.model_copy(update={"calibration": None, "efficiency": d})
        return np.array([op_time(o, h, r.get("dtype") or "bf16") for o, r in zip(ops, rows)])

    res = least_squares(lambda x: np.log(predict(x) / t), x0=[0.8, 64, 64, 64],
                        bounds=([0.05, 0, 0, 0], [1.0, 4096, 4096, 4096]), diff_step=1e-3)
    keys = ("max_fraction", "m_half", "n_half", "k_half")
    return {"gemm": {k: float(v) for k, v in zip(keys, res.x)}, "residual_pct": mape_pct(predict(res.x), t)}


def fit_grouped(hw, rows: list[dict], src: str, base) -> dict:
    """Fit the grouped-GEMM penalty in tokens per expert on top of the dense GEMM surface."""
    from scipy.optimize import least_squares

    from npusim.cost.compute import op_time
    from npusim.workload.layers import gemm

    sel = [r for r in rows if r.get("impl", "grouped_mm") == "grouped_mm"]
    if not sel:  # no fused grouped kernel on this device: fit the per-expert loop timings
        sel = [{**r, "ms": r.get("loop_ms") or r["ms"]} for r in rows]
    ops = [gemm("expert_fc", int(number(r, "tokens_per_expert", src)), int(number(r, "N", src)), int(number(r, "K", src)),
                groups=int(number(r, "experts", src))) for r in sel]
    t = np.array([number(r, "ms", src) for r in sel]) * 1e-3

    def predict(x):
        d = base.model_copy(update={"grouped_gemm_tokens_half": float(x[0])})
        h = hw.model_copy(update={"calibration": None, "efficiency": d})
        return np.array([op_time(o, h, r.get("dtype") or "bf16") for o, r in zip(ops, sel)])

    res = least_squares(lambda x: np.log(predict(x) / t), x0=[16.0], bounds=([0.0], [4096.0]), diff_step=1e-3)
    return {"grouped_gemm_tokens_half": float(res.x[0]), "residual_pct": mape_pct(predict(res.x), t)}


def fit_attention(hw, rows: list[dict], src: str, base) -> dict:
    """Fit fused-attention efficiency vs sequence length from forward+backward timings."""
    from scipy.optimize import least_squares

    from npusim.cost.compute import op_time
    from npusim.workload.ops import Op

    fwd_flops = np.array([2.0 * number(r, "batch", src) * number(r, "heads", src) * number(r, "seq", src) ** 2
                          * number(r, "head_dim", src) for r in rows])
    seqs = [int(number(r, "seq", src)) for r in rows]
    t = np.array([number(r, "fwd_bwd_ms", src) for r in rows]) * 1e-3

    def predict(x):
        d = base.model_copy(update={"attention": base.attention.model_copy(update={"max_fraction": float(x[0]), "seq_half": float(x[1])})})
        h = hw.model_copy(update={"calibration": None, "efficiency": d})
        out = []
        for f, s in zip(fwd_flops, seqs):
            fwd = Op("flash_attention", "attention", f, 0.0, seq=s)
            bwd = Op("flash_attention_bwd", "attention", d.attention.backward_factor * f, 0.0, seq=s)
            out.append(op_time(fwd, h, "bf16") + op_time(bwd, h, "bf16"))
        return np.array(out)

    res = least_squares(lambda x: np.log(predict(x) / t), x0=[0.5, 512.0], bounds=([0.05, 0.0], [1.0, 65536.0]),
                        diff_step=1e-3)
    return {"attention": {"max_fraction": float(res.x[0]), "seq_half": float(res.x[1]), "backward_factor": 2.5},
            "residual_pct": mape_pct(predict(res.x), t)}


def calibrate(hw, data_dir: str | Path) -> dict:
    """Fit every efficiency model from ``data_dir`` and return the calibration section as a dict
    (a folder of published Ascend figures, with ``constants.csv``, goes to :func:`calibrate_ascend`)."""
    d = Path(data_dir)
    if (d / "constants.csv").is_file():
        from npusim.validate.calibrate_ascend import calibrate_ascend

        return calibrate_ascend(hw, d)
    mem = fit_memory(hw, read_rows(d / "memory.csv", ("kernel", "bytes", "ms")), str(d / "memory.csv"))
    base = hw.efficiency.model_copy(update={"launch_overhead_us": mem["launch_overhead_us"],
                                            "memory": hw.efficiency.memory.model_copy(update=mem["memory"])})
    g = fit_gemm(hw, read_rows(d / "gemm.csv", ("M", "N", "K", "ms")), str(d / "gemm.csv"), base)
    base = base.model_copy(update={"gemm": base.gemm.model_copy(update=g["gemm"])})
    gg = fit_grouped(hw, read_rows(d / "grouped_gemm.csv", ("experts", "tokens_per_expert", "K", "N", "ms")),
                     str(d / "grouped_gemm.csv"), base)
    base = base.model_copy(update={"grouped_gemm_tokens_half": gg["grouped_gemm_tokens_half"]})
    at = fit_attention(hw, read_rows(d / "attention.csv", ("batch", "heads", "seq", "head_dim", "fwd_bwd_ms")),
                       str(d / "attention.csv"), base)
    out = base.model_dump(mode="json")
    out.update(at["attention"] and {"attention": at["attention"]})
    out["source"] = f"fitted by npusim calibrate from {d.name}/ kernel timings (least squares on log time)"
    out["fitted_from"] = str(d)
    out["command"] = f"npusim calibrate --hardware {hw.name} --from {d}"
    out["residuals"] = {"memory_mape_pct": round(mem["residual_pct"], 2), "gemm_mape_pct": round(g["residual_pct"], 2),
                        "grouped_gemm_mape_pct": round(gg["residual_pct"], 2),
                        "attention_mape_pct": round(at["residual_pct"], 2)}
    return rounded(out)


def rounded(x):
    """Round floats to 4 significant digits for a readable, stable YAML."""
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    return x
