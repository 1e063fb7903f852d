"""Compare two kernel-timing folders (the format of npusim/data/calibration/h200) shape by shape.

Used to check that ``npusim microbench`` on a machine reproduces a reference folder (on an H200: the
shipped H200 data within run-to-run noise). Rows are matched on their shape columns; for each file
the result gives the number of matched shapes, the median of measured / reference time, and the
mean absolute percentage difference.
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

KEYS = {
    "gemm.csv": (("M", "N", "K"), ("ms",)),
    "grouped_gemm.csv": (("experts", "tokens_per_expert", "K", "N"), ("ms", "loop_ms")),
    "attention.csv": (("batch", "heads", "seq", "head_dim"), ("fwd_ms", "fwd_bwd_ms")),
    "memory.csv": (("kernel", "bytes"), ("ms",)),
}
"""Per file: the columns that identify a shape, and the time columns compared."""


def _rows(path: Path, key_cols: tuple[str, ...]) -> dict[tuple, dict]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        return {tuple(r[c] for c in key_cols): r for r in csv.DictReader(f)}


def compare_kernel_dirs(measured: str | Path, reference: str | Path) -> dict[str, dict]:
    """Per file and time column: matched shapes, median measured/reference ratio, MAPE in %."""
    out: dict[str, dict] = {}
    for name, (key_cols, time_cols) in KEYS.items():
        got, ref = _rows(Path(measured) / name, key_cols), _rows(Path(reference) / name, key_cols)
        shared = sorted(set(got) & set(ref))
        for col in time_cols:
            ratios = [float(got[k][col]) / float(ref[k][col]) for k in shared
                      if got[k].get(col) and ref[k].get(col) and float(ref[k][col]) > 0]
            out[f"{name}:{col}"] = {
                "matched": len(ratios),
                "median_ratio": statistics.median(ratios) if ratios else None,
                "mape_pct": 100 * statistics.fmean(abs(r - 1) for r in ratios) if ratios else None,
            }
    return out
