"""Capacity planning: token counts, the device ladder, the smallest count that meets a deadline, the
+-20 % sensitivity and the `npusim plan` command."""
from __future__ import annotations

import json

import pytest

from npusim.cli import main
from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.workload import TrainWorkload
from npusim.sweep.capacity import best_at, device_ladder, parse_tokens, plan_capacity

SPACE = {"cp": [1], "zero": [1], "recompute": ["none"], "vpp": [1]}
WL = TrainWorkload(seq_len=2048, global_batch=256)


def test_parse_tokens():
    assert parse_tokens("10T") == 1e13 and parse_tokens("500B") == 5e11 and parse_tokens("1.5e12") == 1.5e12
    assert parse_tokens("2k") == 2000
    for bad in ("ten", "-1T", "0", "5X"):
        with pytest.raises(ConfigError):
            parse_tokens(bad)


def test_device_ladder_is_whole_servers_up_to_the_limit():
    hw = load_profile("atlas-800t-a2")
    ladder = device_ladder(hw)
    assert ladder[:6] == [8, 16, 24, 32, 48, 64]
    assert all(n % 8 == 0 for n in ladder) and ladder[-1] <= hw.max_devices
    assert device_ladder(hw, 100)[0] == 128


def test_smallest_count_meets_the_deadline_and_the_next_one_down_does_not():
    model, hw = load_model("llama2-7b"), load_profile("atlas-800t-a2")
    tokens, days = 2e11, 20.0
    res = plan_capacity(model, hw, tokens, WL, days=days, space=dict(SPACE), full_top=1, sensitivity=False)
    a = res["answer"]
    assert a["meets_deadline"] and a["days"] <= days
    assert a["device_hours"] == pytest.approx(a["days"] * 24 * a["devices"])
    ladder = device_ladder(hw)
    below = ladder[ladder.index(a["devices"]) - 1]
    prev = best_at(model, hw, below, WL, {"auto": True, **SPACE}, full_top=1)
    assert prev is None or tokens / prev["tokens_per_s"] / 86400 > days
    assert [t["devices"] for t in res["tried"]][-1] == a["devices"]


def test_sensitivity_moves_with_bandwidth():
    model, hw = load_model("llama2-7b"), load_profile("atlas-800t-a2")
    res = plan_capacity(model, hw, 1e11, WL, devices=32, space=dict(SPACE), full_top=1, workers=1)
    days = {s["change"]: s["days"] for s in res["sensitivity"]}
    assert len(days) == 6
    assert days["hbm_bw x1.2"] <= res["answer"]["days"] <= days["hbm_bw x0.8"]
    assert days["scale_up_bw x1.2"] <= days["scale_up_bw x0.8"]


def test_cli_plan_json_and_errors(capsys):
    rc = main(["plan", "--model", "llama2-7b", "--hardware", "atlas-800t-a2", "--tokens", "100B", "--devices", "16",
               "--seq-len", "2048", "--global-batch", "256", "--plan", "cp=1,zero=1,recompute=none,vpp=1",
               "--no-sensitivity", "--json"])
    out, _ = capsys.readouterr()
    res = json.loads(out)
    assert rc == 0 and res["answer"]["devices"] == 16 and res["answer"]["days"] > 0
    rc = main(["plan", "--model", "llama2-7b", "--hardware", "atlas-800t-a2", "--tokens", "lots", "--days", "3"])
    _, err = capsys.readouterr()
    assert rc == 2 and len(err.splitlines()) == 1 and "--tokens" in err
