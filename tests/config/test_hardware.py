"""Hardware presets in hw_profiles/ and the one-line errors of npusim.config.hardware.load_profile."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from npusim.config.errors import ConfigError
from npusim.config.hardware import PROFILE_DIR_ENV, HardwareProfile, list_profiles, load_profile

PRESETS = [
    "atlas-300i-duo",
    "atlas-800i-a2",
    "atlas-800t-a2",
    "atlas-800t-a2-280t",
    "atlas-800t-a2-313t",
    "cloudmatrix-384",
    "nvidia-a100-sxm-80g",
    "nvidia-h100-sxm-80g",
    "nvidia-h200-sxm-141g",
    "nvidia-h800-sxm-80g",
]
GiB = 1024**3 / 1e9
TiB = 1024**4 / 1e9


@pytest.fixture(autouse=True)
def _only_repo_presets(monkeypatch):
    monkeypatch.delenv(PROFILE_DIR_ENV, raising=False)


def test_every_preset_is_listed():
    names = list_profiles()
    missing = [n for n in PRESETS if n not in names]
    assert not missing, f"presets not found: {missing}"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_cites_sources(name):
    hw = load_profile(name)
    assert isinstance(hw, HardwareProfile)
    assert hw.name == name
    assert hw.description.strip()
    for section in (hw.chip, hw.node, hw.node.scale_up, hw.cluster, hw.efficiency):
        assert section.source.strip(), f"{name}: {type(section).__name__} has no source"
    # derating never lives in the datasheet sections
    assert hw.derating is hw.efficiency or hw.calibration is not None
    assert hw.scale_up_devices % hw.node.devices_per_node == 0


def test_910b_376t_numbers():
    hw = load_profile("atlas-800t-a2")
    assert hw.chip.matrix_tflops["bf16"] == 353.9
    assert hw.chip.matrix_tflops["fp16"] == 376
    assert hw.chip.vector_tflops["fp32"] == hw.chip.vector_tflops["fp16"] / 2
    assert hw.chip.hbm_capacity_GB == pytest.approx(64 * GiB, abs=0.01)
    assert hw.chip.hbm_bandwidth_GBps == pytest.approx(1.6 * TiB, abs=0.05)
    assert hw.node.scale_up.topology == "full_mesh"
    assert hw.cluster.nic_bandwidth_GBps == 25
    assert hw.max_devices == 9216
    assert hw.efficiency.gemm.max_fraction == 0.7  # msModeling default compute efficiency


def test_910b_skus_share_memory():
    bf16 = {n: load_profile(n).chip.matrix_tflops["bf16"]
            for n in ("atlas-800t-a2", "atlas-800t-a2-313t", "atlas-800t-a2-280t")}
    assert bf16 == {"atlas-800t-a2": 353.9, "atlas-800t-a2-313t": 294.9, "atlas-800t-a2-280t": 245.8}
    for n in bf16:
        assert load_profile(n).chip.hbm_capacity_GB == 68.72
    assert load_profile("atlas-800i-a2").chip.matrix_tflops["int8"] == 752


def test_nvidia_numbers():
    a100 = load_profile("nvidia-a100-sxm-80g")
    assert a100.chip.matrix_tflops["bf16"] == 312
    assert a100.chip.matrix_tflops["fp16"] == 312
    assert "fp32" not in a100.chip.matrix_tflops and a100.chip.vector_tflops["fp32"] == 19.5
    assert a100.matrix_peak_flops("bf16") == 312e12
    h200 = load_profile("nvidia-h200-sxm-141g")
    assert h200.chip.hbm_capacity_GB == 141
    assert h200.chip.hbm_bandwidth_GBps == 4800
    h100 = load_profile("nvidia-h100-sxm-80g")
    h800 = load_profile("nvidia-h800-sxm-80g")
    assert h800.chip.matrix_tflops == h100.chip.matrix_tflops
    assert h800.node.scale_up.bandwidth_GBps < h100.node.scale_up.bandwidth_GBps


def test_300i_duo_is_one_chip_without_bf16():
    hw = load_profile("atlas-300i-duo")
    assert "bf16" not in hw.chip.matrix_tflops
    assert "bf16" not in hw.chip.vector_tflops
    assert hw.chip.matrix_tflops["int8"] == 140
    assert hw.chip.matrix_tflops["fp16"] == 70
    assert hw.chip.hbm_capacity_GB == 48
    assert hw.node.devices_per_node == 8
    assert hw.node.scale_up.type == "pcie"
    assert "2 devices" in hw.notes


def test_cloudmatrix_is_one_ub_domain():
    hw = load_profile("cloudmatrix-384")
    assert hw.scale_up_devices == 384
    assert hw.node.scale_up.type == "ub"
    assert hw.chip.matrix_tflops["bf16"] == pytest.approx(2 * 353.9)
    assert hw.chip.hbm_capacity_GB == pytest.approx(128 * GiB, abs=0.01)


def test_unknown_name_suggests_nearest():
    with pytest.raises(ConfigError) as err:
        load_profile("atlas-800t-a3")
    msg = str(err.value)
    assert "did you mean" in msg and "atlas-800t-a2" in msg
    assert "\n" not in msg


# --- defective files: each gives one line naming the file and the field -------------------------

def _valid() -> dict:
    return yaml.safe_load(_preset_path("atlas-800t-a2").read_text(encoding="utf-8"))


def _preset_path(name: str) -> Path:
    from npusim.config.hardware import profile_dirs

    for d in profile_dirs():
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    raise AssertionError(f"{name}.yaml not found")


def _write(tmp_path: Path, data: dict | None = None, raw: bytes | None = None) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_bytes(raw if raw is not None else yaml.safe_dump(data).encode())
    return p


def _expect(path: Path, field: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert field in msg
    assert err.value.field == field
    return msg


def test_unknown_key(tmp_path):
    data = _valid()
    data["chip"]["hbm_capacity_GiB"] = 64
    msg = _expect(_write(tmp_path, data), "chip.hbm_capacity_GiB")
    assert "unknown key" in msg


def test_negative_bandwidth(tmp_path):
    data = _valid()
    data["node"]["scale_up"]["bandwidth_GBps"] = -196
    msg = _expect(_write(tmp_path, data), "node.scale_up.bandwidth_GBps")
    assert "-196" in msg


def test_missing_chip_section(tmp_path):
    data = _valid()
    del data["chip"]
    msg = _expect(_write(tmp_path, data), "chip")
    assert "missing" in msg


def test_empty_file(tmp_path):
    msg = _expect(_write(tmp_path, raw=b"  \n"), "<file>")
    assert "empty" in msg


def test_invalid_utf8(tmp_path):
    msg = _expect(_write(tmp_path, raw=b"name: atlas\xff\xfe\n"), "<file>")
    assert "UTF-8" in msg
