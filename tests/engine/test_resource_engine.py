"""The resource-level event engine: fabric sharing, op graphs and the mechanisms of issue 13, each
against a hand-computed expectation."""
from __future__ import annotations

import pytest
import simpy

from npusim.api import run_simulation
from npusim.config.hardware import load_profile
from npusim.cost.algorithms import collective_plan, inter_rate
from npusim.cost.topology import Placement, place_group, tiers_of
from npusim.engine.fabric import Fabric
from npusim.engine.opgraph import Overlap, build_graph
from npusim.engine.unit import attribute, run_unit
from npusim.workload.ops import Comm


def test_fabric_shares_a_link_and_leaves_other_resources_alone():
    env = simpy.Environment()
    f = Fabric(env, {"nic": 10.0, "matrix": 1.0})
    a, b = f.run("a", 1.0, {"nic": 10.0}), f.run("b", 1.0, {"nic": 10.0})
    c = f.run("c", 1.0, {"matrix": 1.0})
    env.run()
    assert (a.value, b.value, c.value) == (2.0, 2.0, 1.0)
    assert f.used_s == pytest.approx({"nic": 2.0, "matrix": 1.0})


def test_fabric_max_min_fair_gives_the_unbottlenecked_task_the_rest():
    """Link 10: A wants 10 (alone 1 s), B wants 2 (alone 1 s) and also a full compute stream that C
    wants too. B is held to 1/2 by the stream, so A gets 10 - 1 = 9 until B ends."""
    env = simpy.Environment()
    f = Fabric(env, {"nic": 10.0, "matrix": 1.0})
    a = f.run("a", 1.0, {"nic": 10.0})
    b = f.run("b", 1.0, {"nic": 2.0, "matrix": 1.0})
    c = f.run("c", 1.0, {"matrix": 1.0})
    env.run()
    assert b.value == pytest.approx(2.0) and c.value == pytest.approx(2.0)
    assert a.value == pytest.approx(1.0 / 0.9)


def test_attribute_kernels_first_then_collectives():
    parts, fl = attribute([(0, 1, "compute", True), (0.5, 2, "ep_comm", False), (2, 3, "compute", True)], 3.0)
    assert parts == pytest.approx({"compute": 2.0, "ep_comm": 1.0})
    assert fl == pytest.approx({"ep_comm": 1.5})


@pytest.fixture(scope="module")
def h100():
    return load_profile("nvidia-h100-sxm-80g")


def _places(pl: Placement) -> dict:
    return {g: pl for g in ("ep", "dp_cp", "edp", "tp", "dp")}


def test_dp_reduce_scatter_and_ep_all_to_all_share_the_nic(h100):
    """Same bytes on one NIC at once: each gets half the NIC, so both end at launch + latency + 2 B/R
    (alone: launch + latency + B/R each)."""
    pl = Placement(16, 1, 16, 1)  # one rank per server: all traffic on the NIC
    B = 200e6
    ep = Comm("ep_dispatch_inter", "ep", "all_to_all_inter", "ep", 16, B, overlappable=True)
    dp = Comm("dp_grad_bucket_dp_cp", "dp", "reduce_scatter", "dp_cp", 16, B * 16 / 15, overlappable=True)
    rate = inter_rate(tiers_of(h100), pl, h100)
    launch = h100.derating.collective_launch_us * 1e-6
    ov = Overlap(ep=True)
    alone_ep = run_unit(build_graph([[ep]], ov), h100, "bf16", _places(pl), {})
    alone_dp = run_unit(build_graph([[dp]], ov), h100, "bf16", _places(pl), {})
    lat_ep = collective_plan(ep, pl, h100)[1][0][0].latency_s
    lat_dp = collective_plan(dp, pl, h100)[1][0][0].latency_s
    assert alone_ep.duration_s == pytest.approx(launch + lat_ep + B / rate)
    both = run_unit(build_graph([[ep], [dp]], ov), h100, "bf16", _places(pl), {})
    ends = {name: e for _, name, _, e in both.slices}
    # the two transfers overlap for the whole shorter one; the later finisher ends at ~ 2 B / R
    assert max(ends.values()) == pytest.approx(max(launch + lat_ep, launch + lat_dp) + 2 * B / rate, rel=1e-3)
    assert min(ends.values()) > max(alone_ep.duration_s, alone_dp.dp_tail_s + alone_dp.duration_s) + 0.9 * B / rate


def test_oversubscription_slows_cross_leaf_all_to_all_only():
    hw1 = load_profile("nvidia-h100-sxm-80g")
    hw4 = hw1.model_copy(update={"cluster": hw1.cluster.model_copy(update={"oversubscription": 4.0})})
    intra_leaf = place_group(16, 8, 8, 16, 8)   # 16 servers under one 16-server leaf
    cross_leaf = place_group(64, 8, 8, 16, 8)   # 64 servers over 4 leaves
    assert intra_leaf.leaves == 1 and cross_leaf.leaves == 4
    a2a = lambda n: Comm("ep_dispatch", "ep", "all_to_all", "ep", n, 1e9)  # noqa: E731

    def t(hw, pl):
        return run_unit(build_graph([[a2a(pl.size)]], Overlap(ep=True)), hw, "bf16", _places(pl), {}).duration_s

    assert t(hw4, intra_leaf) == pytest.approx(t(hw1, intra_leaf))
    ratio = t(hw4, cross_leaf) / t(hw1, cross_leaf)
    assert ratio == pytest.approx(4.0, rel=0.02)


def test_rail_optimized_changes_only_the_cross_rail_case():
    """Same-rail groups (stride = server size: DP, EP across servers) fit one rail switch either way;
    a cross-rail group spanning servers under one leaf crosses the spine only when rail-optimized."""
    same_rail = (32, 8)     # 32 servers, local index fixed
    cross_rail = (16, 4)    # ranks 0, 4, 8, ...: local indices 0 and 4 over 8 servers
    for size, stride in (same_rail,):
        assert place_group(size, stride, 8, 16, 8, "clos").leaves == 2
        assert place_group(size, stride, 8, 16, 8, "rail_optimized").leaves == 1
    size, stride = cross_rail
    assert place_group(size, stride, 8, 16, 8, "clos").leaves == 1
    assert place_group(size, stride, 8, 16, 8, "rail_optimized").leaves == 2
    # within one server nothing changes
    assert place_group(8, 1, 8, 16, 8, "clos") == place_group(8, 1, 8, 16, 8, "rail_optimized")


def _moe_step(ep_overlap: int):
    """Mixtral-8x7B (no shared expert), one micro-batch, pp = 1, EP 8 over 8 servers (1 per server)."""
    return run_simulation("mixtral-8x7b", "nvidia-h100-sxm-80g", f"tp=1,ep=8,zero=1,ep_overlap={ep_overlap}",
                          devices=8, seq_len=4096, global_batch=8, micro_batch=1)


def _wgrad_seconds(res) -> float:
    """Weight-gradient GEMM seconds of the step's one backward (the W unit, alone)."""
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan, resolve_plan
    from npusim.cost.collectives import placements
    from npusim.engine.step import StepInputs, stage_costs
    from npusim.workload.passes import chunk_specs

    hw, model = load_profile("nvidia-h100-sxm-80g"), load_model("mixtral-8x7b")
    plan = resolve_plan(make_plan(res.config["plan"]), model, 8, 8, 4096)
    inp = StepInputs(model, hw, plan, 4096, 8, 8)
    places = placements(plan, hw)
    st = stage_costs(inp, chunk_specs(model, 1, 1), places, {}, split_backward=True)
    return sum(st[0].backward_weight.values())


def test_ep_overlap_with_one_micro_batch_hides_only_what_weight_gradients_cover():
    """With one micro-batch and no shared expert nothing else is independent of the all-to-all: the
    forward's EP traffic stays exposed, and the backward hides at most its weight-gradient GEMMs."""
    off, on = _moe_step(0), _moe_step(1)
    assert on.config["micro_batches"] == 1
    saved = off.step_time_s - on.step_time_s
    assert saved > 0
    hidden = on.extra["hidden_comm_by_part_s"].get("ep_comm", 0.0)
    assert hidden > 0
    # weight-gradient GEMM time of the step (MoE experts and dense GEMMs)
    wgrad = _wgrad_seconds(on)
    assert saved <= wgrad * 1.001
    assert on.breakdown_s["ep_comm"] >= off.breakdown_s["ep_comm"] - wgrad * 1.001


def test_zero3_step_grows_with_dp_once_gathers_are_latency_bound():
    """Fixed work per device (micro-batch 1, one micro-batch each): ZeRO-3 gathers every layer's
    parameters over the DP group, a ring of n - 1 latency steps, so the step grows with DP."""
    steps = []
    for dp in (8, 64, 512):
        r = run_simulation("llama2-7b", "nvidia-h100-sxm-80g", "tp=1,zero=3", devices=dp, seq_len=2048,
                           global_batch=dp, micro_batch=1)
        steps.append(r.step_time_s)
    assert steps[0] < steps[1] < steps[2]
    assert steps[2] > 1.2 * steps[0]


def test_multi_plane_forwarding_loads_the_scale_up_link(h100):
    """On an 8-plane network a flat EP all-to-all over two servers forwards 7/8 of its NIC bytes over
    NVLink (PXN): the scale-up link is busy for exactly those bytes longer, and a TP all-gather
    running beside it ends later than on a one-plane network; the NIC is as busy as before."""
    mp = h100.model_copy(update={"cluster": h100.cluster.model_copy(update={"planes": 8})})
    ep_pl = place_group(16, 1, 8, 32, 8, planes=8)
    one_pl = place_group(16, 1, 8, 32, 8)
    tp_pl = place_group(8, 1, 8, 32, 8)
    B = 256e6
    a2a = Comm("ep_dispatch", "ep", "all_to_all", "ep", 16, B, overlappable=True)
    ag = Comm("tp_ag", "tp", "all_gather", "tp", 8, B, overlappable=True)
    ov = Overlap(ep=True, tp=True)
    runs = {}
    for name, hw, pl in (("planes", mp, ep_pl), ("flat", h100, one_pl)):
        places = {"ep": pl, "tp": tp_pl}
        runs[name] = run_unit(build_graph([[a2a], [ag]], ov), hw, "bf16", places, {})
    nic_bytes = B * 8 / 16
    su_cap = 450e9 * h100.derating.scale_up_fraction
    extra = runs["planes"].busy_s["su"] - runs["flat"].busy_s["su"]
    assert extra == pytest.approx(nic_bytes * 7 / 8 / su_cap, rel=1e-6)
    assert runs["planes"].busy_s["nic"] == pytest.approx(runs["flat"].busy_s["nic"])
    end = {k: max(e for _, n, _, e in r.slices if n == "tp_ag") for k, r in runs.items()}
    assert end["planes"] > end["flat"] * 1.05
