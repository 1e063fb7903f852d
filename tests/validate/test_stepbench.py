"""npusim microbench --steps: single-device training steps written as run records npusim validates."""
from __future__ import annotations

import re

import pytest

from cli_helpers import cli
from npusim.validate import stepbench as sb
from npusim.validate.runs import read_runs, record_model

torch = pytest.importorskip("torch")


def test_quick_steps_are_run_records_that_validate_predicts(tmp_path, capsys):
    rc, out, _ = cli(["microbench", "--out", str(tmp_path), "--quick", "--steps", "--device", "cpu"], capsys)
    assert rc == 0 and "training_steps.csv (2 rows)" in out
    recs = read_runs(tmp_path / "training_steps.csv")
    assert [r.id for r in recs] == ["V901-tiny-dense", "V902-tiny-moe"]
    assert all(r.devices == 1 and r.workload == "train" and r.measured_step_time_s > 0 for r in recs)
    assert recs[1].routing == "balanced" and recs[1].experts == 4 and recs[0].hardware == "nvidia-h200-sxm-141g"
    rc, out, _ = cli(["validate", str(tmp_path / "training_steps.csv")], capsys)
    assert rc == 0 and "skipped=0" in out


@pytest.mark.parametrize("m", sb.QUICK, ids=lambda m: m.name)
def test_pytorch_model_is_the_model_the_record_describes(m, tmp_path):
    row = sb.record_row(0, m, "nvidia-h200-sxm-141g", 1.0, None, {})
    rec = read_runs_from_row(row, tmp_path)
    # npusim counts one vector for the final norm; the PyTorch LayerNorm also has its bias
    assert sb.parameter_count(torch, m) == record_model(rec).total_params() + m.hidden


@pytest.mark.parametrize("m", sb.FULL, ids=lambda m: m.name)
def test_full_model_names_state_their_parameter_count(m, tmp_path):
    rec = read_runs_from_row(sb.record_row(0, m, "nvidia-h200-sxm-141g", 1.0, None, {}), tmp_path)
    stated = float(re.search(r"(\d+\.\d+)b", m.name).group(1))
    assert record_model(rec).total_params() / 1e9 == pytest.approx(stated, abs=0.05)
    assert (m.micro_batch * m.seq_len * m.top_k) % max(1, m.experts) == 0  # balanced routing needs it


def test_balanced_expert_block_equals_a_per_token_loop():
    m = sb.QUICK[1]
    torch.manual_seed(0)
    experts = sb.build_model(torch, m).layers[0].ffn
    with torch.no_grad():
        experts.b_up.normal_()
        experts.b_down.normal_()
    y = torch.randn(2, 6, m.hidden)
    got = experts(y)
    flat = y.reshape(-1, m.hidden)
    probs = experts.router(flat).softmax(-1)
    want = torch.zeros_like(flat)
    for i, x in enumerate(flat):
        for j in range(m.top_k):
            e = (i * m.top_k + j) % m.experts
            a, g = (x @ experts.w_up[e] + experts.b_up[e, 0]).chunk(2)
            want[i] += probs[i, e] * ((torch.nn.functional.silu(a) * g) @ experts.w_down[e] + experts.b_down[e, 0])
    assert torch.allclose(got.reshape(-1, m.hidden), want, atol=1e-5)


def test_hardware_follows_the_device_name():
    assert sb.hardware_for({"name": "NVIDIA H200"}, None) == "nvidia-h200-sxm-141g"
    assert sb.hardware_for({"name": "NVIDIA H100 80GB HBM3"}, None) == "nvidia-h100-sxm-80g"
    assert sb.hardware_for({"name": "Ascend910B3"}, None) == "atlas-800t-a2"
    assert sb.hardware_for({"name": "NVIDIA H100"}, "nvidia-a100-sxm-80g") == "nvidia-a100-sxm-80g"


def test_unknown_hardware_preset_is_a_one_line_error(tmp_path, capsys):
    rc, _, err = cli(["microbench", "--out", str(tmp_path), "--quick", "--steps", "--hardware", "h9000"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--hardware" in err


def read_runs_from_row(row: dict, folder):
    """Parse one record row through the run-record reader (the same checks as a CSV file)."""
    import csv

    from npusim.validate.runs import COLUMNS

    path = folder / "row.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerow(row)
    return read_runs(path)[0]
