"""The NVIDIA profiles' kernel efficiencies are the H200 fit, reproducible from the shipped data."""
from pathlib import Path

import pytest

from npusim.config.hardware import load_profile
from npusim.validate.calibrate import calibrate

DATA = Path(__file__).resolve().parents[2] / "npusim" / "data" / "calibration" / "h200"
NVIDIA = ["nvidia-a100-sxm-80g", "nvidia-h100-sxm-80g", "nvidia-h800-sxm-80g", "nvidia-h200-sxm-141g"]


@pytest.fixture(scope="module")
def fit():
    return calibrate(load_profile("nvidia-h200-sxm-141g"), DATA)


def test_shipped_h200_calibration_is_reproducible(fit):
    cal = load_profile("nvidia-h200-sxm-141g").calibration
    assert cal is not None
    for key in ("max_fraction", "m_half", "n_half", "k_half"):
        assert getattr(cal.gemm, key) == pytest.approx(fit["gemm"][key], rel=0.02)
    assert cal.attention.max_fraction == pytest.approx(fit["attention"]["max_fraction"], rel=0.02)
    assert cal.launch_overhead_us == pytest.approx(fit["launch_overhead_us"], rel=0.02)
    assert fit["residuals"]["gemm_mape_pct"] < 15


@pytest.mark.parametrize("name", NVIDIA)
def test_transferred_efficiency_equals_the_fit(name, fit):
    eff = load_profile(name).efficiency
    for key in ("max_fraction", "m_half", "n_half", "k_half"):
        assert getattr(eff.gemm, key) == pytest.approx(fit["gemm"][key], rel=0.02)
    assert eff.attention.max_fraction == pytest.approx(fit["attention"]["max_fraction"], rel=0.02)
    assert eff.attention.seq_half == pytest.approx(fit["attention"]["seq_half"], rel=0.02)
    assert eff.memory.max_fraction == pytest.approx(fit["memory"]["max_fraction"], rel=0.02)
