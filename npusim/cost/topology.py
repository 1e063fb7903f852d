"""The cluster as a networkx graph, and where a parallel group's ranks land on it.

Ranks are laid out Megatron-style: tp fastest, then cp, then dp, then pp; a group is a set of ranks
``base + i * stride``. The graph has one vertex per device, one per scale-up switch (or full-mesh
links between devices), one per leaf and spine switch; edge attribute ``GBps`` is the per-direction
capacity. The collective model asks the graph for per-device bandwidth of each tier.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from npusim.identity_cache import IdentityCache


@dataclass(frozen=True)
class Placement:
    """How a group of ``size`` ranks spreads over scale-up domains."""

    size: int
    per_domain: int
    """Group members inside one scale-up domain."""
    domains: int
    """Scale-up domains the group spans."""
    leaves: int
    """Leaf switches the group spans (1 = traffic stays under one leaf)."""
    cross_switch: bool = False
    """The members inside one domain sit under different first-level switches of a two-level
    scale-up fabric (``node.scale_up.second_level``), so their traffic crosses the second level."""
    planes: int = 1
    """Network planes the group's members have their NICs on (``cluster.planes``): traffic between
    members on different planes is forwarded over the scale-up fabric first."""


def place_group(size: int, stride: int, domain: int, nodes_per_leaf: int, devices_per_node: int,
                topology: str = "clos", *, first_level: int = 0, planes: int = 1) -> Placement:
    """Placement of ranks ``r, r+stride, ...`` (``size`` of them) over domains of ``domain`` devices.

    Leaf/spine (``clos``, ``fat_tree``: a fat tree is a folded Clos): a leaf holds all NICs of
    ``nodes_per_leaf`` servers, and traffic between servers under different leaves crosses the
    spine. ``rail_optimized``: NIC i of every server goes to rail switch i, which holds
    ``nodes_per_leaf x devices_per_node`` servers' NIC i (the same ports as a leaf): a group whose
    members share their local index (stride a multiple of the server size) stays on one rail over
    that many servers, while cross-rail traffic between servers crosses the spine.

    ``first_level`` (devices under one first-level scale-up switch group, 0 = one level) marks a
    group whose members in a domain span first-level groups. ``planes`` (independent network
    planes; NIC i on plane i mod planes) counts the planes the members' NICs are on; one plane's
    leaf holds its NICs of ``nodes_per_leaf x planes`` servers."""
    if size <= 1:
        return Placement(1, 1, 1, 1)
    per_domain = 1 if stride >= domain else min(size, max(1, domain // stride))
    domains = math.ceil(size / per_domain)
    span_devices = (size - 1) * stride + 1
    cross_switch = first_level > 0 and per_domain > 1 and (per_domain - 1) * stride + 1 > first_level
    if domains <= 1:
        return Placement(size, per_domain, 1, 1, cross_switch)
    on_planes = len({(i * stride) % devices_per_node % planes for i in range(min(size, planes * devices_per_node))})
    leaf_devices = nodes_per_leaf * devices_per_node
    if planes > 1:
        servers = math.ceil(span_devices / devices_per_node)
        leaves = max(1, math.ceil(servers / (nodes_per_leaf * planes)))
        return Placement(size, per_domain, domains, leaves, cross_switch, on_planes)
    if topology == "rail_optimized":
        same_rail = stride % devices_per_node == 0
        if same_rail:
            servers = math.ceil(span_devices / devices_per_node)
            leaves = max(1, math.ceil(servers / leaf_devices))
        else:
            leaves = max(2, math.ceil(span_devices / leaf_devices))
        return Placement(size, per_domain, domains, leaves, cross_switch)
    return Placement(size, per_domain, domains, max(1, math.ceil(span_devices / leaf_devices)), cross_switch)


def build_graph(hw, devices: int):
    """A networkx graph of ``devices`` devices built from the profile (capped at 4 leaves' worth of
    servers for display; tiers repeat beyond that). A two-level scale-up domain gets one
    first-level switch per group and one second-level switch; a multi-plane network gets leaves
    and a spine per plane, with no link between planes."""
    import networkx as nx

    g = nx.Graph()
    dpn = hw.node.devices_per_node
    su = hw.node.scale_up
    co = hw.cluster
    dom = hw.scale_up_devices
    n_dev = min(devices, max(dom, dpn * co.nodes_per_leaf * co.planes * 4))
    for dev in range(n_dev):
        g.add_node(("dev", dev), kind="device")
    for start in range(0, n_dev, dom):
        members = range(start, min(start + dom, n_dev))
        if su.topology == "full_mesh":
            link = su.bandwidth_GBps / max(1, dom - 1)
            for i in members:
                for j in members:
                    if i < j:
                        g.add_edge(("dev", i), ("dev", j), GBps=link, latency_us=su.latency_us, tier="scale_up")
        elif su.second_level is not None:
            lvl = su.second_level
            top = ("su_l2_switch", start // dom)
            for i in members:
                sw = ("su_switch", i // lvl.first_level_devices)
                g.add_edge(("dev", i), sw, GBps=su.bandwidth_GBps, latency_us=su.latency_us, tier="scale_up")
                g.add_edge(sw, top, GBps=lvl.bandwidth_GBps * lvl.first_level_devices,
                           latency_us=lvl.latency_us - su.latency_us, tier="scale_up_l2")
        else:
            sw = ("su_switch", start // dom)
            g.add_node(sw, kind="switch")
            for i in members:
                g.add_edge(("dev", i), sw, GBps=su.bandwidth_GBps, latency_us=su.latency_us, tier="scale_up")
    if n_dev > dom:
        nic = co.nic_bandwidth_GBps * co.nics_per_device
        leaf_ports = dpn * co.nodes_per_leaf
        for dev in range(n_dev):
            plane = dev % dpn % co.planes
            leaf = ("leaf", plane, dev // (leaf_ports * co.planes))
            g.add_edge(("dev", dev), leaf, GBps=nic, latency_us=co.latency_us, tier="scale_out")
        for plane in range(co.planes):
            leaves = sorted(n for n in g.nodes if n[0] == "leaf" and n[1] == plane)
            if len(leaves) > 1:
                up = nic * leaf_ports / co.oversubscription
                for leaf in leaves:
                    g.add_edge(leaf, ("spine", plane), GBps=up, latency_us=co.latency_us, tier="spine")
    return g


@dataclass(frozen=True)
class Tiers:
    """Per-device bandwidth (GB/s per direction) and latency of each network tier."""

    scale_up_GBps: float
    """All scale-up links of one device together."""
    scale_up_link_GBps: float
    """One scale-up link (full mesh: one peer; switch: the whole port)."""
    scale_up_latency_us: float
    full_mesh: bool
    scale_out_GBps: float
    scale_out_latency_us: float
    spine_GBps: float
    """Per-device share of leaf-to-spine capacity when every device sends across the spine."""
    scale_up_l2_GBps: float = 0.0
    """Per-device share of a two-level scale-up domain's second level (0: one level)."""
    scale_up_l2_latency_us: float = 0.0
    """Latency between devices under different first-level switches (0: one level)."""


_TIERS = IdentityCache()
"""Profile -> its Tiers, for as long as the profile lives."""


def tiers_of(hw) -> Tiers:
    """Per-device capacity of each tier of the profile's topology graph (plan independent, cached
    on the profile object): the capacities ``build_graph`` puts on device 0's edges, computed
    directly so that a simulation need not build the graph (``tests/cost/test_collectives.py``
    checks them against ``read_tiers`` on every shipped profile)."""
    hit = _TIERS.get(hw)
    if hit is not None:
        return hit
    su, co = hw.node.scale_up, hw.cluster
    dom = hw.scale_up_devices
    mesh = su.topology == "full_mesh"
    if dom <= 1:
        total = link = 0.0
    elif mesh:
        link = su.bandwidth_GBps / (dom - 1)
        total = link * (dom - 1)
    else:
        total = link = su.bandwidth_GBps
    nic = co.nic_bandwidth_GBps * co.nics_per_device
    lvl = su.second_level
    l2 = (min(total, lvl.bandwidth_GBps), lvl.latency_us) if lvl is not None else (0.0, 0.0)
    tiers = Tiers(total, link, su.latency_us, mesh, nic, co.latency_us, min(nic, nic / co.oversubscription), *l2)
    return _TIERS.put(hw, tiers)


def read_tiers(hw) -> Tiers:
    """Build the profile's networkx graph and read each tier's per-device bandwidth off it."""
    dom = hw.scale_up_devices
    co = hw.cluster
    # Two leaves' worth of devices show every tier (scale-up, NIC, spine); larger clusters repeat them.
    g = build_graph(hw, min(hw.max_devices, max(dom * 2, hw.node.devices_per_node * co.nodes_per_leaf * 2)))
    dev0 = ("dev", 0)
    up = [d for _, _, d in g.edges(dev0, data=True) if d["tier"] == "scale_up"]
    out = [d for _, _, d in g.edges(dev0, data=True) if d["tier"] == "scale_out"]
    su_total = sum(e["GBps"] for e in up)
    su_link = max((e["GBps"] for e in up), default=0.0)
    so = out[0]["GBps"] if out else co.nic_bandwidth_GBps * co.nics_per_device
    spine = [d for _, _, d in g.edges(data=True) if d["tier"] == "spine"]
    per_leaf_devices = hw.node.devices_per_node * co.nodes_per_leaf
    spine_share = (spine[0]["GBps"] / per_leaf_devices) if spine else so / co.oversubscription
    l2 = [(u, v, d) for u, v, d in g.edges(data=True) if d["tier"] == "scale_up_l2"]
    l2_share, l2_lat = 0.0, 0.0
    if l2:  # a first-level switch's uplink over the devices under it; latency device-to-device
        u, v, d = next((u, v, d) for u, v, d in l2 if ("dev", 0) in g[u] or ("dev", 0) in g[v])
        sw = u if ("dev", 0) in g[u] else v
        under = sum(1 for n in g[sw] if n[0] == "dev")
        l2_share = min(su_total, d["GBps"] / under)
        l2_lat = g.edges[("dev", 0), sw]["latency_us"] + d["latency_us"]
    return Tiers(su_total, su_link, hw.node.scale_up.latency_us, hw.node.scale_up.topology == "full_mesh",
                 so, co.latency_us, min(so, spine_share), l2_share, l2_lat)


def host_capacities(hw) -> dict[str, float]:
    """Device-to-host and host-to-device link capacity (bytes/s; PCIe / host HCCS is full duplex):
    ``node.host.link_GBps x efficiency.host_link_fraction``; none without a host section."""
    host = hw.node.host
    if host is None:
        return {}
    bw = host.link_GBps * 1e9 * hw.derating.host_link_fraction
    return {"host_d2h": bw, "host_h2d": bw}
