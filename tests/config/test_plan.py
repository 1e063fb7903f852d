"""Plan parsing, validation and resolution (npusim.config.plan) and their one-line ConfigErrors."""
from __future__ import annotations

import pytest

from npusim.config.errors import ConfigError
from npusim.config.model import ModelConfig, load_model
from npusim.config.plan import ParallelPlan, make_plan, parse_plan, resolve_plan


@pytest.fixture(scope="module")
def llama():
    return load_model("llama2-7b")  # 32 layers, 32 heads (MHA)


@pytest.fixture(scope="module")
def mixtral():
    return load_model("mixtral-8x7b")  # 8 experts


def test_parse_plan_basic():
    assert parse_plan("tp=8,pp=16,vpp=2,ep=4") == {"tp": 8, "pp": 16, "vpp": 2, "ep": 4}


def test_parse_plan_types_and_aliases():
    got = parse_plan(" tp=2 , sp=1, recompute=full, mb=4, tp_comm_overlap=off, schedule=1f1b ")
    assert got == {"tp": 2, "sp": True, "recompute": "full", "micro_batch": 4, "tp_comm_overlap": False,
                   "schedule": "1f1b"}
    assert parse_plan("") == {}
    plan = make_plan(parse_plan("tp=8,pp=16,vpp=2,ep=4"))
    assert isinstance(plan, ParallelPlan)
    assert (plan.tp, plan.pp, plan.vpp, plan.ep, plan.dp) == (8, 16, 2, 4, 0)
    assert plan.pipeline_schedule == "interleaved"


def _one_line(err: ConfigError) -> str:
    msg = str(err)
    assert "\n" not in msg
    return msg


def test_unknown_key_suggests():
    with pytest.raises(ConfigError) as ei:
        parse_plan("tq=2")
    msg = _one_line(ei.value)
    assert "tq" in msg
    assert "did you mean 'tp'" in msg


@pytest.mark.parametrize("text,field", [("tp=x", "tp"), ("pp=1.5", "pp"), ("zero=", "zero"), ("sp=maybe", "sp")])
def test_bad_values(text, field):
    with pytest.raises(ConfigError) as ei:
        parse_plan(text)
    msg = _one_line(ei.value)
    assert field in msg
    assert ei.value.field == field


def test_missing_equals():
    with pytest.raises(ConfigError) as ei:
        parse_plan("tp8")
    assert "key=value" in _one_line(ei.value)


@pytest.mark.parametrize("fields,field", [({"tp": 0}, "tp"), ({"zero": 4}, "zero"), ({"recompute": "some"}, "recompute"),
                                          ({"precision": "fp4"}, "precision")])
def test_make_plan_rejects(fields, field):
    with pytest.raises(ConfigError) as ei:
        make_plan(fields)
    assert field in _one_line(ei.value)


def _resolve_err(plan_text, model, devices, global_batch=64, seq_len=4096) -> ConfigError:
    plan = make_plan(parse_plan(plan_text))
    with pytest.raises(ConfigError) as ei:
        resolve_plan(plan, model, devices, global_batch, seq_len)
    _one_line(ei.value)
    return ei.value


def test_resolve_derives_dp(llama):
    plan = resolve_plan(make_plan(parse_plan("tp=2,pp=2")), llama, 16, 64, 4096)
    assert plan.dp == 4


def test_resolve_devices_not_divisible(llama):
    e = _resolve_err("tp=8,pp=2,cp=1", llama, 24)
    assert e.field == "devices" and "devices" in str(e) and "16" in str(e)


def test_resolve_explicit_dp_mismatch(llama):
    e = _resolve_err("tp=8,dp=2", llama, 8)
    assert "dp" in str(e)


def test_resolve_heads_not_divisible_by_tp():
    m = ModelConfig(layers=4, hidden=768, ffn_hidden=3072, heads=12, vocab=1000)
    e = _resolve_err("tp=8", m, 8, global_batch=8)
    assert e.field == "tp" and "heads" in str(e)


def test_resolve_kv_heads_incompatible():
    m = ModelConfig(layers=4, hidden=1536, ffn_hidden=4096, heads=12, kv_heads=6, vocab=1000)
    e = _resolve_err("tp=4", m, 4, global_batch=8)
    assert e.field == "tp" and "kv_heads" in str(e)


def test_resolve_too_many_chunks(llama):
    e = _resolve_err("pp=16,vpp=4", llama, 16, global_batch=64)
    assert "pp*vpp" in str(e) and "32" in str(e)


def test_resolve_vpp_without_pp(llama):
    e = _resolve_err("vpp=2", llama, 1, global_batch=4)
    assert "vpp" in str(e)


def test_resolve_global_batch_not_divisible(llama):
    e = _resolve_err("tp=2,micro_batch=2", llama, 8, global_batch=12)
    assert e.field == "global_batch" and "global_batch" in str(e) and "micro_batch*dp" in str(e)


def test_resolve_interleaved_needs_m_multiple_of_pp(llama):
    # dp = 2, m = 12 / 2 = 6, pp = 4
    e = _resolve_err("tp=1,pp=4,vpp=2", llama, 8, global_batch=12)
    assert e.field == "global_batch" and "pp" in str(e)
    # 1F1B with the same micro-batch count is fine
    plan = resolve_plan(make_plan(parse_plan("pp=4,vpp=2,schedule=1f1b")), llama, 8, 12, 4096)
    assert plan.dp == 2


def test_resolve_cp_and_sp_divisibility(llama):
    assert _resolve_err("cp=3", llama, 3, global_batch=4, seq_len=4096).field == "cp"
    assert _resolve_err("tp=8,sp=1", llama, 8, global_batch=4, seq_len=4100).field == "sp"


def test_resolve_ep_not_dividing_experts(mixtral):
    e = _resolve_err("ep=3", mixtral, 6, global_batch=6)
    assert e.field == "ep" and "experts" in str(e)


def test_resolve_ep_on_dense_model(llama):
    e = _resolve_err("ep=2", llama, 2, global_batch=4)
    assert e.field == "ep" and "dense" in str(e)


def test_resolve_moe_default_etp(mixtral):
    # tp*cp*dp = 8, ep*tp = 8 fits -> etp = tp
    p = resolve_plan(make_plan(parse_plan("tp=2,ep=4")), mixtral, 8, 8, 4096)
    assert p.expert_tp == 2 and p.dp == 4
    # tp*cp*dp = 4 and ep*tp = 8 does not fit -> etp = 1
    p = resolve_plan(make_plan(parse_plan("tp=2,ep=4")), mixtral, 4, 8, 4096)
    assert p.expert_tp == 1
