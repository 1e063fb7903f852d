"""npusim microbench --steps: single-device training steps written as run records npusim validates."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest

from cli_helpers import cli
from npusim.validate import stepbench as sb
from npusim.validate.host_side import read_host_csv
from npusim.validate.runs import read_runs, record_model

torch = pytest.importorskip("torch")


def test_quick_steps_are_run_records_that_validate_predicts(tmp_path, capsys):
    rc, out, _ = cli(["microbench", "--out", str(tmp_path), "--quick", "--steps", "--device", "cpu"], capsys)
    assert rc == 0 and "training_steps.csv (3 rows)" in out
    recs = read_runs(tmp_path / "training_steps.csv")
    assert [r.id for r in recs] == ["V901-tiny-dense", "V902-tiny-moe", "V903-tiny-moe-dropless"]
    assert all(r.devices == 1 and r.workload == "train" and r.measured_step_time_s > 0 for r in recs)
    assert recs[1].routing == "balanced" and recs[1].experts == 4 and recs[0].hardware == "nvidia-h200-sxm-141g"
    assert recs[2].routing == "dropless" and recs[2].plan == "routing=uniform"
    host = read_host_csv(tmp_path / "training_steps_host.csv")
    assert [h.id for h in host] == [r.id for r in recs]
    for h, r in zip(host, recs):
        assert h.step_s == pytest.approx(r.measured_step_time_s, rel=1e-5)
        assert 0 < h.host_issue_s <= h.step_s and h.dispatched_ops > 0
    assert [h.host_syncs_per_step for h in host] == [0, 0, sb.QUICK[2].layers]
    # the per-expert loop dispatches more operators than the batched GEMMs of the same shape
    assert host[2].dispatched_ops > host[1].dispatched_ops
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


def balanced_choice(m, i, probs_row):
    """Forced balance: token i's j-th expert is (i*k + j) mod E, weighted by the router's probability."""
    return [(probs_row[e], e) for e in ((i * m.top_k + j) % m.experts for j in range(m.top_k))]


def top_k_choice(m, i, probs_row):
    """The router's own top-k."""
    return list(zip(*probs_row.topk(m.top_k)))


@pytest.mark.parametrize("m, choose", [(sb.QUICK[1], balanced_choice), (sb.QUICK[2], top_k_choice)],
                         ids=["balanced", "dropless"])
def test_expert_block_equals_a_per_token_loop(m, choose):
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
        for p, e in choose(m, i, probs[i]):
            a, g = (x @ experts.w_up[e] + experts.b_up[e, 0]).chunk(2)
            want[i] += p * ((torch.nn.functional.silu(a) * g) @ experts.w_down[e] + experts.b_down[e, 0])
    assert torch.allclose(got.reshape(-1, m.hidden), want, atol=1e-5)


@pytest.mark.parametrize("models", [sb.QUICK, sb.FULL], ids=["quick", "full"])
def test_every_dropless_model_has_a_batched_twin_of_the_same_shape(models):
    by_name = {m.name: m for m in models}
    dropless = [m for m in models if m.dropless]
    assert dropless
    for m in dropless:
        twin = by_name[m.name.removesuffix("-dropless")]
        assert not twin.dropless and replace(m, name=twin.name, dropless=False) == twin


def test_dropless_twin_has_the_same_parameters():
    assert sb.parameter_count(torch, sb.QUICK[2]) == sb.parameter_count(torch, sb.QUICK[1])


def test_dispatched_operators_include_backward():
    w = torch.randn(4, 4, requires_grad=True)
    forward = sb.count_dispatched_ops(torch, lambda: (w @ w).sum())
    both = sb.count_dispatched_ops(torch, lambda: (w @ w).sum().backward())
    assert 0 < forward < both


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
