"""The npusim command line (npusim.cli.main): JSON output, listers, and one-line errors with exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from npusim.config.hardware import PROFILE_DIR_ENV, load_profile
from cli_helpers import cli

SIM = ["simulate", "--model", "llama2-7b", "--hardware", "nvidia-a100-sxm-80g", "--devices", "8",
       "--plan", "tp=8", "--seq-len", "2048", "--global-batch", "8"]
KEYS = {"step_time_s", "tokens_per_s", "tokens_per_s_per_device", "mfu", "hfu", "model_flops_per_token",
        "peak_memory_GB", "fits_in_memory", "breakdown_s", "config"}


@pytest.fixture(autouse=True)
def _only_repo_presets(monkeypatch):
    monkeypatch.delenv(PROFILE_DIR_ENV, raising=False)




def assert_one_line_error(rc, out, err, *needles):
    assert rc == 2, (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("npusim: error:"), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_simulate_json(capsys):
    rc, out, err = cli(SIM + ["--json"], capsys)
    assert rc == 0, err
    assert err == ""
    assert len(out.strip().splitlines()) == 1
    d = json.loads(out)
    assert KEYS <= set(d)
    assert d["config"]["plan"]["tp"] == 8 and d["config"]["plan"]["dp"] == 1
    assert d["config"]["workload"] == {"seq_len": 2048, "global_batch": 8}
    assert 0 < d["mfu"] <= d["hfu"] <= 1
    assert sum(d["breakdown_s"].values()) == pytest.approx(d["step_time_s"], rel=1e-4)


def test_simulate_json_deterministic(capsys):
    _, a, _ = cli(SIM + ["--json"], capsys)
    _, b, _ = cli(SIM + ["--json"], capsys)
    assert a == b


def test_simulate_text(capsys):
    rc, out, err = cli(SIM, capsys)
    assert rc == 0, err
    assert out.strip()


def test_simulate_overrides(capsys):
    rc, out, _ = cli(SIM + ["--micro-batch", "2", "--recompute", "full", "--json"], capsys)
    assert rc == 0
    plan = json.loads(out)["config"]["plan"]
    assert plan["micro_batch"] == 2 and plan["recompute"] == "full"


@pytest.mark.parametrize("flag,value,needles", [
    ("--model", "llama2-7", ("llama2-7", "did you mean 'llama2-7b'")),
    ("--hardware", "nvidia-a200-sxm-80g", ("nvidia-a200-sxm-80g",)),
    ("--hardware", "no-such-box", ("no-such-box", "hardware")),
    ("--devices", "0", ("--devices",)),
    ("--devices", "abc", ("--devices", "abc")),
    ("--devices", "-8", ("--devices",)),
    ("--seq-len", "1.5", ("--seq-len",)),
    ("--plan", "tp=x", ("tp", "not an integer")),
    ("--plan", "zz=1", ("zz", "unknown plan key")),
    ("--plan", "tq=8", ("did you mean 'tp'",)),
    ("--plan", "tp=3", ("tp",)),  # 32 heads not divisible by 3; 8 devices not divisible either
    ("--plan", "tp=8,pp=2", ("devices",)),
    ("--plan", "ep=2", ("ep", "dense")),
])
def test_simulate_bad_flags(capsys, flag, value, needles):
    argv = list(SIM)
    i = argv.index(flag) if flag in argv else None
    if i is None:
        argv += [flag, value]
    else:
        argv[i + 1] = value
    rc, out, err = cli(argv, capsys)
    assert_one_line_error(rc, out, err, *needles)


def test_hardware_yaml_with_unknown_key(capsys, tmp_path: Path):
    data = load_profile("nvidia-a100-sxm-80g").model_dump(mode="json")
    data["chip"]["turbo_boost"] = True
    path = tmp_path / "bad-profile.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    argv = list(SIM)
    argv[argv.index("--hardware") + 1] = str(path)
    rc, out, err = cli(argv, capsys)
    assert_one_line_error(rc, out, err, "turbo_boost", "unknown key", str(path))


def test_hardware_yaml_valid_copy_works(capsys, tmp_path: Path):
    data = load_profile("nvidia-a100-sxm-80g").model_dump(mode="json")
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    argv = list(SIM)
    argv[argv.index("--hardware") + 1] = str(path)
    rc, _, err = cli(argv + ["--json"], capsys)
    assert rc == 0, err


def test_validate_missing_csv(capsys, tmp_path: Path):
    missing = tmp_path / "nope.csv"
    rc, out, err = cli(["validate", str(missing)], capsys)
    assert_one_line_error(rc, out, err, "nope.csv")


@pytest.mark.parametrize("argv", [["validate"], [], ["hw"], ["model", "show"], ["hw", "show"]])
def test_missing_required_argument(capsys, argv):
    rc, out, err = cli(argv, capsys)
    assert_one_line_error(rc, out, err, "required")


def test_unknown_subcommand_and_flag(capsys):
    assert_one_line_error(*cli(["simulat"], capsys))
    assert_one_line_error(*cli(SIM + ["--bogus"], capsys), "--bogus")


def test_hw_list(capsys):
    rc, out, _ = cli(["hw", "list"], capsys)
    assert rc == 0
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "atlas-800t-a2" in names and "nvidia-h200-sxm-141g" in names


def test_hw_show(capsys):
    rc, out, _ = cli(["hw", "show", "atlas-800t-a2"], capsys)
    assert rc == 0
    assert yaml.safe_load(out)["name"] == "atlas-800t-a2"
    assert_one_line_error(*cli(["hw", "show", "atlas-800t-a3"], capsys), "atlas-800t-a3")


def test_model_list(capsys):
    rc, out, _ = cli(["model", "list"], capsys)
    assert rc == 0
    names = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert "pangu-ultra-moe-718b" in names and "llama2-7b" in names


def test_model_show(capsys):
    rc, out, _ = cli(["model", "show", "pangu-pro-moe-72b"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["summary"]["total_params_B"] == pytest.approx(71.99, abs=0.01)
    assert d["config"]["experts"] == 64
    assert_one_line_error(*cli(["model", "show", "pangu-pro-moe-7b"], capsys), "did you mean")


def test_module_entry_point_subprocess():
    argv = [sys.executable, "-m", "npusim.cli"] + SIM
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "Traceback" not in proc.stderr


def test_cli_reference_page_is_current(monkeypatch):
    from pathlib import Path

    from npusim.cli import cli_reference

    monkeypatch.setenv("COLUMNS", "100")
    page = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    assert page.read_text(encoding="utf-8") == cli_reference(), \
        "regenerate: COLUMNS=100 python -c \"from npusim.cli import cli_reference; print(cli_reference(), end='')\" > docs/cli.md"
