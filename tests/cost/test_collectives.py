"""Collective times and group placement on the topology (npusim.cost.collectives / topology)."""
from __future__ import annotations

import networkx as nx
import pytest

from npusim.config.hardware import load_profile
from npusim.config.plan import ParallelPlan
from npusim.cost.algorithms import collective_plan, in_switch, ring, stages_time, wires
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
        c = comm("all_reduce", "x", size, nbytes)
        for _, w in wires(c, t, hw):  # under every protocol the profile allows
            ar = stages_time(ring(c, pl, t, hw, w))
            rs = stages_time(ring(comm("reduce_scatter", "x", size, nbytes), pl, t, hw, w))
            ag = stages_time(ring(comm("all_gather", "x", size, nbytes), pl, t, hw, w))
            assert rs > 0
            assert ar == pytest.approx(2 * rs, rel=1e-12)
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


@pytest.mark.parametrize("hwname", ["nvidia-h100-sxm-80g", "nvidia-a100-sxm-80g", "atlas-800t-a2"])
def test_small_all_reduce_takes_a_latency_optimal_algorithm(hwname):
    """A small TP all-reduce (a decode step's 16 KiB) takes one step (one-shot), a large one the
    bandwidth-optimal ring/mesh or the switch's in-network reduction; the time never exceeds the
    bulk ring's."""
    hw = load_profile(hwname)
    pl = place_group(8, 1, hw.scale_up_devices, hw.cluster.nodes_per_leaf, hw.node.devices_per_node)
    small, large = comm("all_reduce", "tp", 8, 16384), comm("all_reduce", "tp", 8, 256 * MB)
    t = tiers_of(hw)
    bulk = wires(small, t, hw)[0][1]
    assert collective_plan(large, pl, hw)[0] == ("in_switch" if hw.node.scale_up.in_switch_reduction_latency_us
                                                 else "ring")
    for c in (small, large):
        _, st = collective_plan(c, pl, hw)
        assert stages_time(st) <= stages_time(ring(c, pl, t, hw, bulk)) + 1e-15
    if not t.full_mesh:  # NVSwitch ring: 14 latency steps vs one
        assert collective_plan(small, pl, hw)[0].split(":")[0] == "one_shot"
        lat = t.scale_up_latency_us * 1e-6
        assert stages_time(ring(small, pl, t, hw, bulk)) - stages_time(collective_plan(small, pl, hw)[1]) > 10 * lat


def test_in_switch_reduction_moves_one_buffer_each_way(h100):
    """NVLS all-reduce of S over k=8: S (1 + 1/8) bytes through the port after the switch latency,
    against the ring's 2 (k-1)/k S = 1.75 S; a domain without it never picks it."""
    pl = place_group(8, 1, 8, 32, 8)
    t = tiers_of(h100)
    c = comm("all_reduce", "tp", 8, 256 * MB)
    (st,) = in_switch(c, pl, t, h100, wires(c, t, h100)[0][1])
    rate = 450e9 * h100.derating.scale_up_fraction
    assert stages_time([st]) == pytest.approx(25e-6 + 1.125 * 256 * MB / rate)
    ratio = stages_time(ring(c, pl, t, h100, wires(c, t, h100)[0][1])) / stages_time([st])
    assert 1.5 < ratio < 1.56  # (1.75 S / r + 14 x 2 us) / (1.125 S / r + 25 us)
    assert in_switch(c, pl, t, load_profile("nvidia-a100-sxm-80g"), wires(c, t, h100)[0][1]) is None
    across = place_group(16, 1, 8, 32, 8)  # two servers: the switch reduces inside one domain only
    assert in_switch(c, across, t, h100, wires(c, t, h100)[0][1]) is None


def test_low_latency_protocol_wins_only_mid_size_messages(h100):
    """LL (0.6 us per step, half the wire carries data) beats the bulk ring when steps dominate and
    loses when bytes do; a profile without protocols offers only the bulk one."""
    t = tiers_of(h100)
    pl = place_group(16, 8, 8, 32, 8)  # two servers, one rank each: ring with one NIC step
    a2 = load_profile("atlas-800t-a2")
    assert [n for n, _ in wires(comm("all_reduce", "tp", 8, 1024), tiers_of(a2), a2)] == [""]
    names = [n for n, _ in wires(comm("all_reduce", "tp", 8, 1024), t, h100)]
    assert names == ["", "LL", "LL128"]
    pl = place_group(8, 1, 8, 32, 8)
    for nbytes, expect in ((1 * MB, "ring:LL"), (512 * MB, "in_switch")):
        c = comm("reduce_scatter", "tp", 8, nbytes) if expect == "ring:LL" else comm("all_reduce", "tp", 8, nbytes)
        name, st = collective_plan(c, pl, h100)
        if expect == "ring:LL":  # 7 steps x 0.6 us + 2 x 7/8 MB / r  <  7 x 2 us + 7/8 MB / r
            rate = 450e9 * h100.derating.scale_up_fraction
            assert name == "ring:LL"
            assert stages_time(st) == pytest.approx(7 * 0.6e-6 + 2 * 7 / 8 * MB / rate)
        else:
            assert name == expect
    big = comm("reduce_scatter", "tp", 8, 512 * MB)
    assert collective_plan(big, pl, h100)[0] == "ring"


def test_protocol_size_limit_is_honoured(h100):
    """A protocol with ``max_message_bytes`` is not offered above it."""
    su = h100.node.scale_up
    capped = tuple(p.model_copy(update={"max_message_bytes": 4096}) for p in su.protocols)
    hw = h100.model_copy(update={"node": h100.node.model_copy(update={"scale_up": su.model_copy(update={"protocols": capped})})})
    t = tiers_of(hw)
    assert [n for n, _ in wires(comm("all_reduce", "tp", 8, 4096), t, hw)] == ["", "LL", "LL128"]
    assert [n for n, _ in wires(comm("all_reduce", "tp", 8, 8192), t, hw)] == [""]


def test_two_level_scale_up_slows_only_groups_across_first_level_switches():
    """CloudMatrix384: a TP group inside one node stays on the first level; one spread over nodes
    of the UB domain moves at the second level's rate and latency."""
    cm = load_profile("cloudmatrix-384")
    lvl = cm.node.scale_up.second_level
    inside = place_group(8, 1, 384, 16, 8, first_level=8)
    across = place_group(16, 1, 384, 16, 8, first_level=8)
    spread = place_group(8, 8, 384, 16, 8, first_level=8)
    assert not inside.cross_switch and across.cross_switch and spread.cross_switch
    c = comm("all_gather", "tp", 8, 64 * MB)
    t = tiers_of(cm)
    frac = cm.derating.scale_up_fraction
    (p_in,), = collective_plan(c, inside, cm)[1]
    (p_sp,), = collective_plan(c, spread, cm)[1]
    assert p_in.rate_Bps == pytest.approx(392e9 * frac) and p_in.latency_s == pytest.approx(7 * 0.5e-6)
    assert p_sp.rate_Bps == pytest.approx(lvl.bandwidth_GBps * 1e9 * frac)
    assert p_sp.latency_s == pytest.approx(7 * lvl.latency_us * 1e-6)
    assert t.scale_up_l2_GBps == lvl.bandwidth_GBps


def test_multi_plane_forwards_cross_plane_traffic_over_scale_up(h100):
    """On an 8-plane network (NIC i on plane i), a flat EP all-to-all across servers forwards the
    7/8 of its NIC bytes bound for other planes over NVLink; a DP group (one rank per server, same
    local index) and the hierarchical all-to-all's inter stage stay on their plane."""
    co = h100.cluster.model_copy(update={"planes": 8})
    mp = h100.model_copy(update={"cluster": co})
    ep = placements(ParallelPlan(tp=1, dp=16, ep=16), mp)["ep"]
    dp = placements(ParallelPlan(tp=8, dp=2), mp)["dp"]
    assert ep.planes == 8 and dp.planes == 1
    c = comm("all_to_all", "ep", 16, 64 * MB)
    (stage,) = collective_plan(c, ep, mp)[1]
    nic = [p for p in stage if p.tier == "nic"][0]
    su = [p for p in stage if p.tier == "su"]
    assert len(su) == 2  # the intra-server share and the forward
    assert sum(p.bytes for p in su) == pytest.approx(64 * MB * 7 / 16 + nic.bytes * 7 / 8)
    (flat,) = collective_plan(c, placements(ParallelPlan(tp=1, dp=16, ep=16), h100)["ep"], h100)[1]
    assert len([p for p in flat if p.tier == "su"]) == 1
    inter = comm("all_to_all_inter", "ep", 16, 64 * MB)
    assert all(p.tier == "nic" for st in collective_plan(inter, ep, mp)[1] for p in st)


def test_multi_plane_graph_has_no_link_between_planes(h100):
    """Each plane has its own leaves and spine: the only path between planes runs through a
    server's scale-up switch."""
    mp = h100.model_copy(update={"cluster": h100.cluster.model_copy(update={"planes": 8})})
    g = build_graph(mp, 8 * 32 * 8 * 2)
    spines = [n for n in g.nodes if n[0] == "spine"]
    assert len(spines) == 8
    for n in [n for n in g.nodes if n[0] == "su_switch"]:
        g.remove_node(n)
    parts = list(nx.connected_components(g))
    assert len(parts) == 8
    assert tiers_of(mp) == tiers_of(h100)


def test_planes_must_divide_the_server(h100):
    from npusim.config.hardware import HardwareProfile
    bad = h100.model_dump()
    bad["cluster"]["planes"] = 3
    with pytest.raises(ValueError, match="planes"):
        HardwareProfile.model_validate(bad)


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
