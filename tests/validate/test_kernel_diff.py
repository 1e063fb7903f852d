"""npusim.validate.kernel_diff: shape-by-shape comparison of two kernel-timing folders."""
import csv
import shutil
from pathlib import Path

import pytest

import npusim.data
from npusim.validate.kernel_diff import KEYS, compare_kernel_dirs

H200 = Path(npusim.data.__file__).parent / "calibration" / "h200"


def test_a_folder_against_itself_matches_every_shape_exactly():
    result = compare_kernel_dirs(H200, H200)
    for name, (_, cols) in KEYS.items():
        with (H200 / name).open(encoding="utf-8") as f:
            n = sum(1 for _ in csv.DictReader(f))
        for col in cols:
            r = result[f"{name}:{col}"]
            assert r["matched"] == n and r["median_ratio"] == pytest.approx(1.0) and r["mape_pct"] == pytest.approx(0.0)


def test_slower_measurements_show_as_the_ratio(tmp_path):
    for name in KEYS:
        shutil.copy(H200 / name, tmp_path / name)
    with (H200 / "gemm.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with (tmp_path / "gemm.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "ms": float(r["ms"]) * 1.1} for r in rows[:50])
    r = compare_kernel_dirs(tmp_path, H200)["gemm.csv:ms"]
    assert r["matched"] == 50 and r["median_ratio"] == pytest.approx(1.1) and r["mape_pct"] == pytest.approx(10.0)


def test_missing_files_give_no_matches(tmp_path):
    assert all(v["matched"] == 0 and v["median_ratio"] is None for v in compare_kernel_dirs(tmp_path, H200).values())
