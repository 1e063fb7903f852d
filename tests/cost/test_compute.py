"""Operator time model (npusim.cost.compute): GEMM efficiency, launch overhead, H200 measurements."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

import npusim
from npusim.config.hardware import load_profile
from npusim.cost.compute import gemm_efficiency, matrix_dtype, memory_efficiency, op_time
from npusim.workload.layers import gemm
from npusim.workload.ops import Op

GEMM_CSV = Path(npusim.__file__).resolve().parent / "data" / "calibration" / "h200" / "gemm.csv"
PROFILES = ["nvidia-h200-sxm-141g", "nvidia-a100-sxm-80g", "atlas-800t-a2", "cloudmatrix-384"]
DIMS = [1, 16, 64, 128, 512, 1024, 4096, 16384, 65536]


@pytest.fixture(scope="module")
def h200():
    return load_profile("nvidia-h200-sxm-141g")


@pytest.fixture(scope="module")
def measured():
    with GEMM_CSV.open(newline="") as f:
        return [{"M": int(r["M"]), "N": int(r["N"]), "K": int(r["K"]), "s": float(r["ms"]) * 1e-3,
                 "dtype": r["dtype"]} for r in csv.DictReader(f)]


@pytest.mark.parametrize("name", PROFILES)
def test_gemm_efficiency_monotone_and_bounded(name):
    d = load_profile(name).derating
    for axis in range(3):
        for other in (64, 4096):
            effs = []
            for x in DIMS:
                shape = [other, other, other]
                shape[axis] = x
                e = gemm_efficiency(d, *shape)
                assert 0 < e <= d.gemm.max_fraction
                effs.append(e)
            assert all(b > a for a, b in zip(effs, effs[1:])), (axis, effs)
    assert gemm_efficiency(d, 1e9, 1e9, 1e9) == pytest.approx(d.gemm.max_fraction, rel=1e-6)


@pytest.mark.parametrize("name", PROFILES)
def test_memory_efficiency_monotone(name):
    d = load_profile(name).derating
    effs = [memory_efficiency(d, b) for b in (1e3, 1e6, 1e8, 1e10)]
    assert all(b > a for a, b in zip(effs, effs[1:]))
    assert effs[-1] <= d.memory.max_fraction


@pytest.mark.parametrize("name", PROFILES)
def test_tiny_gemm_bounded_by_launch(name):
    hw = load_profile(name)
    launch = hw.derating.launch_overhead_us * 1e-6
    t = op_time(gemm("tiny", 1, 8, 8), hw, "bf16")
    assert t >= launch
    assert t < launch * 1.5 + 1e-6  # essentially all launch overhead
    # an empty memory op is exactly one vector-kernel launch (the matrix one unless set apart)
    vector = hw.derating.vector_launch_us
    assert op_time(Op("noop", "memory"), hw, "bf16") == pytest.approx(launch if vector is None else vector * 1e-6)


@pytest.mark.parametrize("name", PROFILES)
def test_gemm_time_monotone_in_size_and_bounded_by_peak(name):
    hw = load_profile(name)
    peak = hw.matrix_peak_flops(matrix_dtype(hw, "bf16"))
    prev = 0.0
    for n in (128, 512, 2048, 8192):
        op = gemm("g", n, n, n)
        t = op_time(op, hw, "bf16")
        assert t > prev
        assert op.flops / t <= peak * hw.derating.gemm.max_fraction
        prev = t


def test_fp8_faster_than_bf16_on_h200(h200):
    op = gemm("g", 8192, 8192, 8192)
    assert op_time(op, h200, "fp8") < op_time(op, h200, "bf16")


def _predict(hw, r) -> float:
    return op_time(gemm("g", r["M"], r["N"], r["K"]), hw, "bf16")


def test_large_gemm_matches_h200_measurement(h200, measured):
    """The measured set has no M=N=K=8192 row; use its largest shapes with M=8192 and an 8192 side,
    plus the largest square GEMM."""
    rows = [r for r in measured if r["M"] == 8192 and 8192 in (r["N"], r["K"])]
    cube = [r for r in measured if r["M"] == r["N"] == r["K"]]
    rows += [max(cube, key=lambda r: r["M"])]
    assert len(rows) >= 3
    for r in rows:
        assert r["dtype"] == "torch.bfloat16"
        pred = _predict(h200, r)
        assert abs(pred / r["s"] - 1) < 0.25, (r, pred)


def test_big_gemms_within_25pct_of_h200(h200, measured):
    big = [r for r in measured if r["M"] >= 4096 and r["N"] * r["K"] >= 4096 * 4096]
    assert len(big) >= 10
    worst = max(abs(_predict(h200, r) / r["s"] - 1) for r in big)
    assert worst < 0.25


def test_grouped_gemm_spread_costs_time_and_zero_spread_is_the_group_mean():
    from dataclasses import replace

    from npusim.cost.compute import group_efficiency, grouped_gemm_efficiency

    hw = load_profile("nvidia-h100-sxm-80g")
    d = hw.derating.model_copy(update={"grouped_gemm_tokens_half": 64.0})
    op = gemm("expert_up", 256, 2816, 2048, groups=8)
    assert grouped_gemm_efficiency(d, op) == pytest.approx(group_efficiency(d, 256, 256, 2816, 2048))
    effs = [grouped_gemm_efficiency(d, replace(op, spread=s)) for s in (0.0, 0.3, 0.8)]
    assert effs[0] > effs[1] > effs[2] > 0
    # weight gradient: the tokens are the reduction dimension K
    wgrad = replace(op, name="expert_up_wgrad", m=2048, n=2816, k=256)
    assert grouped_gemm_efficiency(d, wgrad) == pytest.approx(group_efficiency(d, 256, 2048, 2816, 256, True))
