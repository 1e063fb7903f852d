"""Collective time on the topology: ring / mesh / hierarchical algorithms per tier.

Model: a collective of ``n`` ranks whose members sit ``k`` to a scale-up domain over ``n/k``
domains. Inside a domain, a switch gives each device its full port; a full mesh gives a group of
``k`` only ``k-1`` of the device's links (HCCL's mesh algorithm sends to every peer at once).
Across domains the collective is hierarchical: reduce-scatter inside the domain, the inter-domain
step on 1/k of the data over every member's own NIC at once, then all-gather inside the domain.
Concurrent groups of other ranks use their own NICs and mesh links, so they do not contend unless
the profile shares NICs (``nics_per_device`` < 1) or oversubscribes the spine.
"""
from __future__ import annotations

from npusim.cost.algorithms import collective_plan, stages_time
from npusim.cost.topology import Placement, place_group
from npusim.workload.ops import Comm


def collective_time(c: Comm, pl: Placement, hw) -> float:
    """Seconds one device spends in collective ``c`` placed as ``pl``, alone on its links: launch
    plus the stages of the fastest algorithm (``npusim.cost.algorithms``; plan dependent)."""
    if pl.size <= 1 or c.bytes <= 0:
        return 0.0
    return hw.derating.collective_launch_us * 1e-6 + stages_time(collective_plan(c, pl, hw)[1])


def group_layout(plan) -> dict[str, tuple[int, int]]:
    """(size, stride) in global rank order of every group kind (tp fastest, then cp, dp, pp)."""
    tp, cp, dp = plan.tp, plan.cp, plan.dp
    eep, etp = plan.expert_ep, plan.expert_tp
    edp = max(1, tp * cp * dp // (eep * etp))
    return {"tp": (tp, 1), "cp": (cp, tp), "dp": (dp, tp * cp), "pp": (2, tp * cp * dp),
            "etp": (etp, 1), "ep": (eep, etp), "edp": (edp, eep * etp), "dp_cp": (dp * cp, tp),
            "instance": (tp * cp * dp, 1)}


def placements(plan, hw) -> dict[str, Placement]:
    """Placement of every group kind of the plan on the profile's topology."""
    dom = hw.scale_up_devices
    lvl = hw.node.scale_up.second_level
    first_level = lvl.first_level_devices if lvl is not None else 0
    out = {}
    for name, (size, stride) in group_layout(plan).items():
        out[name] = place_group(size, stride, dom, hw.cluster.nodes_per_leaf, hw.node.devices_per_node,
                                hw.cluster.topology, first_level=first_level, planes=hw.cluster.planes)
    return out
