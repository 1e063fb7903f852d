"""npusim microbench: the kernel set, the CSV formats of data/calibration/h200, timing, and calibrate on the output."""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

import npusim.data
from npusim.cli import main
from npusim.config.errors import ConfigError
from npusim.validate import microbench as mb
from cli_helpers import cli

H200 = Path(npusim.data.__file__).parent / "calibration" / "h200"




def header(path: Path) -> tuple[str, ...]:
    with path.open(encoding="utf-8") as f:
        return tuple(next(csv.reader(f)))


@pytest.mark.parametrize("name", sorted(mb.COLUMNS))
def test_columns_are_the_h200_ones(name):
    assert mb.COLUMNS[name] == header(H200 / name)


def test_full_kernel_set_is_the_h200_set():
    shapes = mb.h200_shapes()
    assert len(shapes["gemm"]) == 99 and shapes["gemm"][0] == (1, 1024, 1024)
    assert len(shapes["grouped"]) == 8 and shapes["grouped"][0] == (8, 1024, 4096, 14336)
    assert len(shapes["attention"]) == 19 and shapes["attention"][-1] == (1, 64, 16384, 128)
    with (H200 / "memory.csv").open(encoding="utf-8") as f:
        copies = [int(r["bytes"]) for r in csv.DictReader(f) if r["kernel"] == "copy"]
    assert [2 * b for b in shapes["memory"]] == copies


def test_time_ms_is_the_median_after_warmup():
    calls = []
    times = iter([0.0] * 100)
    dev = mb.Device("cpu", None, None)
    assert mb.time_ms(lambda: calls.append(next(times)), dev, target_ms=0.0) >= 0.0
    # WARMUP calls, three single sizing calls, then ROUNDS rounds of at least one call
    assert len(calls) >= mb.WARMUP + 3 + mb.ROUNDS


def test_missing_torch_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ConfigError, match="npusim\\[bench\\]"):
        mb.import_torch()
    rc, out, err = cli(["microbench", "--out", str(tmp_path / "kb"), "--quick"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "pip install 'npusim[bench]'" in err


def test_out_must_be_a_folder(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, err = cli(["microbench", "--out", str(f), "--quick", "--device", "cpu"], capsys)
    assert rc == 2 and "is a file" in err


def test_unavailable_accelerator_is_refused(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, _, err = cli(["microbench", "--out", str(tmp_path / "kb"), "--device", "cuda", "--quick"], capsys)
    assert rc == 2 and "not available" in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def quick_dir(tmp_path_factory):
    """A --quick CPU microbench run (a few seconds)."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("kernels")
    assert main(["microbench", "--out", str(out), "--device", "cpu", "--quick"]) == 0
    return out


def test_quick_cpu_run_writes_the_h200_format(quick_dir):
    for name, cols in mb.COLUMNS.items():
        assert header(quick_dir / name) == cols
        with (quick_dir / name).open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert rows, name
        for r in rows:
            for c in cols:
                if c.endswith("ms") or c.endswith("tflops") or c == "gbps":
                    assert math.isfinite(float(r[c])) and float(r[c]) > 0, (name, c, r)
    env = json.loads((quick_dir / "env.json").read_text())
    assert env["device"] == "cpu" and env["quick"] is True and env["rounds"] == 3 and env["torch"]
    with (quick_dir / "memory.csv").open(encoding="utf-8") as f:
        mem = list(csv.DictReader(f))
    assert {r["kernel"] for r in mem} == set(mb.MEMORY_KERNELS)
    by = {(r["kernel"], i // len(mb.MEMORY_KERNELS)): int(r["bytes"]) for i, r in enumerate(mem)}
    assert by[("add", 0)] == 3 * by[("copy", 0)] // 2 and 4 * by[("silu_mul", 0)] == 3 * by[("copy", 0)]


def test_quick_run_feeds_calibrate(quick_dir, tmp_path, capsys):
    out = tmp_path / "cpu.yaml"
    rc, stdout, err = cli(["calibrate", "--hardware", "atlas-800t-a2", "--from", str(quick_dir), "--out", str(out)],
                          capsys)
    assert rc == 0, err
    res = yaml.safe_load(out.read_text())["calibration"]["residuals"]
    assert set(res) == {"memory_mape_pct", "gemm_mape_pct", "grouped_gemm_mape_pct", "attention_mape_pct"}
    assert all(math.isfinite(v) for v in res.values())
    rc, _, err = cli(["simulate", "--hardware", str(out), "--model", "llama2-7b", "--devices", "8", "--plan", "tp=8",
                      "--seq-len", "2048", "--global-batch", "8", "--json"], capsys)
    assert rc == 0, err
