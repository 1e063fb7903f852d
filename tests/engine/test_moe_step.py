"""MoE mechanisms in the training step: imbalance part, hierarchical all-to-all, EP overlap, memory."""
import pytest

from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import TrainWorkload
from npusim.simulate import simulate

ULTRA = "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2"


def ultra(extra="", devices=6144, gb=1536):
    return simulate(load_model("pangu-ultra-moe-718b"), load_profile("atlas-800t-a2"),
                    make_plan(parse_plan(ULTRA + extra)), TrainWorkload(seq_len=4096, global_batch=gb), devices)


def pro(extra, devices=256):
    return simulate(load_model("pangu-pro-moe-72b"), load_profile("atlas-800t-a2"),
                    make_plan(parse_plan("tp=1,pp=4,ep=8,zero=1" + extra)), TrainWorkload(seq_len=4096, global_batch=512),
                    devices)


def total(r):
    return sum(r.breakdown_s.values())


def test_hierarchical_all_to_all_cuts_cross_node_ep_time():
    flat, hier = ultra(), ultra(",a2a=hierarchical")
    assert hier.breakdown_s["ep_comm"] < 0.8 * flat.breakdown_s["ep_comm"]
    assert hier.step_time_s < flat.step_time_s
    assert total(hier) == pytest.approx(hier.step_time_s, rel=1e-9)


def test_ep_overlap_hides_all_to_all_behind_the_other_micro_batch():
    """EP overlap pairs steady-state forwards and backwards (1F1B all-to-all overlap): each hides
    the other's all-to-all, and the collectives take their share of the compute units meanwhile."""
    base, ovl = ultra(",a2a=hierarchical"), ultra(",a2a=hierarchical,ep_overlap=1")
    assert ovl.breakdown_s["ep_comm"] < base.breakdown_s["ep_comm"]
    assert ovl.extra["hidden_comm_by_part_s"]["ep_comm"] > base.extra["hidden_comm_by_part_s"].get("ep_comm", 0.0)
    assert ovl.step_time_s < base.step_time_s


def test_skewed_routing_adds_an_imbalance_part_and_memory():
    bal, skew = pro(""), pro(",routing=zipf,routing_param=1.0")
    assert bal.breakdown_s["imbalance"] == 0.0
    assert skew.breakdown_s["imbalance"] > 0.0
    assert skew.step_time_s >= bal.step_time_s + skew.breakdown_s["imbalance"]  # slower stages also lengthen the bubble
    assert skew.peak_memory_GB > bal.peak_memory_GB
    assert total(skew) == pytest.approx(skew.step_time_s, rel=1e-9)


def test_moge_is_balanced_and_faster_than_skewed_topk():
    assert pro(",routing=grouped").breakdown_s["imbalance"] == 0.0
    assert pro(",routing=grouped").step_time_s < pro(",routing=dirichlet,routing_param=2").step_time_s


def test_same_seed_same_answer_and_seed_matters():
    a = pro(",routing=dirichlet,routing_param=2,routing_seed=3")
    b = pro(",routing=dirichlet,routing_param=2,routing_seed=3")
    assert a.to_dict() == b.to_dict()


def test_capacity_factor_drops_work():
    dropless = pro(",routing=zipf,routing_param=1.0")
    capped = pro(",routing=zipf,routing_param=1.0,capacity_factor=1.0")
    assert capped.extra["moe_dropped_fraction"] > 0
    assert capped.step_time_s < dropless.step_time_s


def test_grouped_routing_on_model_without_groups_is_an_error():
    with pytest.raises(ConfigError) as e:
        simulate(load_model("mixtral-8x7b"), load_profile("atlas-800t-a2"),
                 make_plan(parse_plan("tp=8,ep=1,routing=grouped")), TrainWorkload(seq_len=2048, global_batch=8), 8)
    assert "expert groups" in str(e.value)


def test_redundant_experts_cost_memory_and_a_gradient_sync_and_cut_imbalance():
    m, hw = load_model("deepseek-v2-lite"), load_profile("atlas-800t-a2")
    wl = TrainWorkload(seq_len=4096, global_batch=8)
    base = "tp=1,pp=1,ep=8,zero=1,routing=learned,micro_batch=1,recompute=full"
    plain = simulate(m, hw, make_plan(parse_plan(base)), wl, 8)
    extra = simulate(m, hw, make_plan(parse_plan(base + ",redundant_experts=8")), wl, 8)
    assert extra.peak_memory_GB > plain.peak_memory_GB
    assert extra.breakdown_s["dp_comm"] >= plain.breakdown_s["dp_comm"]
    assert extra.breakdown_s["imbalance"] < plain.breakdown_s["imbalance"]


def test_pad_to_capacity_needs_a_capacity():
    from npusim.config.plan import resolve_plan

    m = load_model("deepseek-v2-lite")
    with pytest.raises(ConfigError, match="capacity_factor"):
        resolve_plan(make_plan(parse_plan("ep=8,pad_to_capacity=1")), m, 8, 8, 4096)
    padded = simulate(m, load_profile("atlas-800t-a2"), make_plan(parse_plan(
        "ep=8,zero=1,recompute=full,routing=learned,capacity_factor=1.25,pad_to_capacity=1")),
        TrainWorkload(seq_len=4096, global_batch=8), 8)
    dropless = simulate(m, load_profile("atlas-800t-a2"), make_plan(parse_plan(
        "ep=8,zero=1,recompute=full,routing=learned")), TrainWorkload(seq_len=4096, global_batch=8), 8)
    # padding computes 1.25x the mean rows on every rank; dropless the busiest rank's (< 1.25x) load
    assert padded.breakdown_s.get("imbalance", 0.0) == pytest.approx(0.0, abs=1e-9)
    assert padded.breakdown_s["compute"] > dropless.breakdown_s["compute"]
