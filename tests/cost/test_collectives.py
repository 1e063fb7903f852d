"""Collective times and group placement on the topology (npusim.cost.collectives / topology)."""
from __future__ import annotations

import networkx as nx
import pytest

from npusim.config.hardware import load_profile
from npusim.config.plan import ParallelPlan
from npusim.cost.algorithms import collective_plan, ring, stages_time
from npusim.cost.collectives import collective_time, group_layout, placements
from npusim.cost.topology import Placement, build_graph, place_group, tiers_of
from npusim.workload.ops import Comm

MB = 1e6


@pytest.fixture(scope="module")
def h100():
    return load_profile("nvidia-h100-sxm-80g")


@pytest.fixture(scope="module")
def a2():
    return load_profile("atlas-800t-a2")


def comm(kind: str, group: str, size: int, nbytes: float) -> Comm:
    return Comm("c", "tp", kind, group, size, nbytes)


def test_place_tp8_in_one_node():
    pl = place_group(8, 1, 8, 16, 8)
    assert pl == Placement(8, 8, 1, 1)


def test_place_dp_stride8_one_per_domain():
    pl = place_group(16, 8, 8, 16, 8)
    assert pl.per_domain == 1
    assert pl.domains == 16
    assert pl.leaves == 1  # 16 nodes fit under one 16-node leaf
    wide = place_group(64, 8, 8, 16, 8)
    assert wide.per_domain == 1 and wide.domains == 64 and wide.leaves == 4


def test_place_trivial_and_partial():
    assert place_group(1, 1, 8, 16, 8) == Placement(1, 1, 1, 1)
    pl = place_group(8, 2, 8, 16, 8)  # ranks 0,2,..,14: 4 per node over 2 nodes
    assert (pl.per_domain, pl.domains) == (4, 2)


def test_group_layout_megatron_order():
    plan = ParallelPlan(tp=2, cp=2, dp=4, pp=2)
    lay = group_layout(plan)
    assert lay["tp"] == (2, 1)
    assert lay["cp"] == (2, 2)
    assert lay["dp"] == (4, 4)
    assert lay["pp"][1] == 16
    assert lay["dp_cp"] == (8, 2)


def test_placements_of_plan(h100):
    pl = placements(ParallelPlan(tp=8, dp=4), h100)
    assert pl["tp"].domains == 1 and pl["tp"].per_domain == 8
    assert pl["dp"].per_domain == 1 and pl["dp"].domains == 4


@pytest.mark.parametrize("hwname", ["nvidia-h100-sxm-80g", "atlas-800t-a2"])
@pytest.mark.parametrize("size,stride", [(8, 1), (4, 1), (16, 8), (32, 1), (16, 2)])
def test_ring_all_reduce_is_twice_reduce_scatter(hwname, size, stride):
    hw = load_profile(hwname)
    pl = place_group(size, stride, hw.scale_up_devices, hw.cluster.nodes_per_leaf, hw.node.devices_per_node)
    t = tiers_of(hw)
    for nbytes in (1 * MB, 256 * MB):
        ar = stages_time(ring(comm("all_reduce", "x", size, nbytes), pl, t, hw)) + hw.derating.collective_launch_us * 1e-6
        rs = collective_time(comm("reduce_scatter", "x", size, nbytes), pl, hw)
        ag = collective_time(comm("all_gather", "x", size, nbytes), pl, hw)
        launch = hw.derating.collective_launch_us * 1e-6  # paid once per call
        assert rs > launch
        assert ar - launch == pytest.approx(2 * (rs - launch), rel=1e-12)
        assert ag == pytest.approx(rs, rel=1e-12)


def test_zero_size_or_single_rank_is_free(h100):
    pl = place_group(8, 1, 8, 32, 8)
    assert collective_time(comm("all_reduce", "tp", 8, 0.0), pl, h100) == 0.0
    assert collective_time(comm("all_reduce", "tp", 1, 1e9), place_group(1, 1, 8, 32, 8), h100) == 0.0


KINDS = ["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "send_recv"]
GROUPS = [(8, 1), (16, 8), (16, 1), (4, 2)]


@pytest.mark.parametrize("hwname", ["nvidia-h100-sxm-80g", "atlas-800t-a2"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size,stride", GROUPS)
def test_time_grows_with_bytes_and_drops_with_bandwidth(hwname, kind, size, stride):
    hw = load_profile(hwname)
    dom = hw.scale_up_devices
    pl = place_group(size, stride, dom, hw.cluster.nodes_per_leaf, hw.node.devices_per_node)
    t = lambda h, nbytes: collective_time(comm(kind, "x", size, nbytes), pl, h)  # noqa: E731
    sizes = [1e3, 1e5, 1e7, 1e9]
    times = [t(hw, s) for s in sizes]
    assert all(b > a for a, b in zip(times, times[1:])), times
    big = 1e9
    base = t(hw, big)
    up = t(hw.with_changes(scale_up_bw=2.0), big)
    out = t(hw.with_changes(scale_out_bw=2.0), big)
    assert up <= base and out <= base
    if pl.domains == 1:
        assert up < base  # purely scale-up traffic
        assert out == pytest.approx(base)
    elif pl.per_domain == 1 or kind in ("send_recv", "all_to_all"):
        # one rank per domain, or a step bounded by the slower (scale-out) tier: max(intra, inter)
        assert out < base
    else:
        assert up < base and out < base  # hierarchical: both tiers on the critical path


def test_full_mesh_tp2_uses_one_link(a2):
    """HCCS full mesh: a TP2 group uses 1 of the device's 7 links, TP8 all 7."""
    nbytes = 1e9
    tp2 = collective_time(comm("reduce_scatter", "tp", 2, nbytes), place_group(2, 1, 8, 16, 8), a2)
    tp8 = collective_time(comm("reduce_scatter", "tp", 8, nbytes), place_group(8, 1, 8, 16, 8), a2)
    assert tp2 > tp8
    # algorithmic bandwidth per device: data each device moves over its links / time
    bw2 = (2 - 1) / 2 * nbytes / tp2
    bw8 = (8 - 1) / 8 * nbytes / tp8
    assert bw8 / bw2 == pytest.approx(7.0, rel=0.01)
    t = tiers_of(a2)
    assert t.full_mesh
    assert t.scale_up_link_GBps == pytest.approx(a2.node.scale_up.bandwidth_GBps / 7)


def test_switch_tp2_uses_full_port(h100):
    nbytes = 1e9
    tp2 = collective_time(comm("reduce_scatter", "tp", 2, nbytes), place_group(2, 1, 8, 32, 8), h100)
    tp8 = collective_time(comm("reduce_scatter", "tp", 8, nbytes), place_group(8, 1, 8, 32, 8), h100)
    bw2 = 0.5 * nbytes / tp2
    bw8 = 7 / 8 * nbytes / tp8
    assert bw8 / bw2 == pytest.approx(1.0, rel=0.01)


def test_inter_node_slower_than_intra_node(h100):
    nbytes = 1e9
    intra = collective_time(comm("all_reduce", "tp", 8, nbytes), place_group(8, 1, 8, 32, 8), h100)
    inter = collective_time(comm("all_reduce", "dp", 8, nbytes), place_group(8, 8, 8, 32, 8), h100)
    assert inter > intra


@pytest.mark.parametrize("hwname,devices", [("nvidia-h100-sxm-80g", 16), ("atlas-800t-a2", 16), ("atlas-800t-a2", 8)])
def test_build_graph(hwname, devices):
    hw = load_profile(hwname)
    g = build_graph(hw, devices)
    assert isinstance(g, nx.Graph)
    devs = [n for n, d in g.nodes(data=True) if d.get("kind") == "device"]
    assert sorted(devs) == [("dev", i) for i in range(devices)]
    assert g.number_of_edges() > 0
    for _, _, d in g.edges(data=True):
        assert d["GBps"] > 0
        assert d["tier"] in ("scale_up", "scale_out", "spine")
    dev0_up = [d for _, _, d in g.edges(("dev", 0), data=True) if d["tier"] == "scale_up"]
    assert sum(d["GBps"] for d in dev0_up) == pytest.approx(hw.node.scale_up.bandwidth_GBps)
    if hw.node.scale_up.topology == "full_mesh":
        assert len(dev0_up) == hw.scale_up_devices - 1
    has_out = any(d["tier"] == "scale_out" for _, _, d in g.edges(data=True))
    assert has_out == (devices > hw.scale_up_devices)
    assert nx.is_connected(g)


@pytest.mark.parametrize("hwname", ["nvidia-h100-sxm-80g", "atlas-800t-a2"])
def test_small_all_reduce_takes_a_latency_optimal_algorithm(hwname):
    """A small TP all-reduce (a decode step's 16 KiB) takes one step (one-shot), a large one the
    bandwidth-optimal ring/mesh; the time never exceeds the ring's."""
    hw = load_profile(hwname)
    pl = place_group(8, 1, hw.scale_up_devices, hw.cluster.nodes_per_leaf, hw.node.devices_per_node)
    small, large = comm("all_reduce", "tp", 8, 16384), comm("all_reduce", "tp", 8, 256 * MB)
    t = tiers_of(hw)
    assert collective_plan(large, pl, hw)[0] == "ring"
    for c in (small, large):
        _, st = collective_plan(c, pl, hw)
        assert stages_time(st) <= stages_time(ring(c, pl, t, hw)) + 1e-15
    if not t.full_mesh:  # NVSwitch ring: 14 latency steps vs one
        assert collective_plan(small, pl, hw)[0] == "one_shot"
        lat = t.scale_up_latency_us * 1e-6
        assert stages_time(ring(small, pl, t, hw)) - stages_time(collective_plan(small, pl, hw)[1]) > 10 * lat


def test_cross_domain_all_reduce_latency_grows_with_log_of_domains_under_tree(h100):
    """Across 64 domains a tiny all-reduce pays 2 log2(64) = 12 NIC latencies with the tree, not the
    ring's 2 x 63."""
    pl = place_group(64, 8, 8, 16, 8)
    c = comm("all_reduce", "dp", 64, 1024)
    name, st = collective_plan(c, pl, h100)
    assert name == "tree"
    lat = tiers_of(h100).scale_out_latency_us * 1e-6
    assert sum(p.latency_s for s_ in st for p in s_) == pytest.approx(12 * lat)


def test_tier_capacities_are_the_graphs():
    """The simulation's tier capacities are exactly what the networkx graph of each shipped profile
    puts on a device's edges (scale-up links, NIC, spine share)."""
    from npusim.config.hardware import list_profiles
    from npusim.cost.topology import read_tiers

    for name in list_profiles():
        hw = load_profile(name)
        assert tiers_of(hw) == read_tiers(hw), name
    hw = load_profile("nvidia-h100-sxm-80g")
    hw4 = hw.model_copy(update={"cluster": hw.cluster.model_copy(update={"oversubscription": 4.0})})
    assert tiers_of(hw4) == read_tiers(hw4)
