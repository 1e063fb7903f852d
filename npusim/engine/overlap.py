"""Overlapped forward + backward units (DualPipe's F&B): each one's EP all-to-all is hidden behind
the other's compute, and the two interfere (hardware profile, ``efficiency.overlap_*``).

While a collective runs next to compute, the compute slows by ``matrix`` (matrix-unit work) or
``vector`` (vector- and memory-bound kernels; on Ascend HCCL runs on the AIV vector cores and uses
HBM bandwidth) and the collective by ``comm``. For a collective of ``c`` seconds (alone) hidden
behind ``k`` seconds of compute: it occupies ``w = min(c (1 + comm), k)`` seconds of that compute,
which slows by ``w x (f matrix + (1 - f) vector)`` (f: the compute's matrix share), and
``c - w / (1 + comm)`` seconds stay exposed after the compute, running alone at full speed.
"""
from __future__ import annotations

from dataclasses import dataclass

COVER_PARTS = ("compute", "recompute")
"""Parts of a unit that are kernel time on the device (what can hide the other unit's collectives)."""


@dataclass(frozen=True)
class Interference:
    """Slowdowns while communication and computation share a device (fractions, 0 = none)."""

    matrix: float = 0.0
    """Matrix-unit compute slowdown while a collective runs."""
    vector: float = 0.0
    """Vector/memory-bound compute slowdown while a collective runs."""
    comm: float = 0.0
    """Collective slowdown while compute runs."""

    def compute_slowdown(self, matrix_fraction: float) -> float:
        """Slowdown of compute whose time is ``matrix_fraction`` matrix-unit work."""
        return matrix_fraction * self.matrix + (1.0 - matrix_fraction) * self.vector


def hide(comm_s: float, cover_s: float, inter: Interference, matrix_fraction: float) -> tuple[float, float, float]:
    """(exposed comm s, hidden comm s, extra compute s) of ``comm_s`` hidden behind ``cover_s`` of compute."""
    if comm_s <= 0.0 or cover_s <= 0.0:
        return max(0.0, comm_s), 0.0, 0.0
    wall = min(comm_s * (1.0 + inter.comm), cover_s)
    exposed = max(0.0, comm_s - wall / (1.0 + inter.comm))
    return exposed, comm_s - exposed, wall * inter.compute_slowdown(matrix_fraction)


def fb_parts(f_parts: dict[str, float], f_matrix: float, b_parts: dict[str, float], b_matrix: float,
             inter: Interference) -> tuple[dict[str, float], float]:
    """Named parts of a forward and a backward run as one overlapped unit, and the EP seconds hidden.

    The forward's ``ep_comm`` hides behind the backward's compute and vice versa; every other part
    adds up as if the two ran back to back.
    """
    out = dict(f_parts)
    for k, v in b_parts.items():
        out[k] = out.get(k, 0.0) + v
    f_cover = sum(f_parts.get(k, 0.0) for k in COVER_PARTS)
    b_cover = sum(b_parts.get(k, 0.0) for k in COVER_PARTS)
    exp_f, hid_f, slow_b = hide(f_parts.get("ep_comm", 0.0), b_cover, inter, b_matrix)
    exp_b, hid_b, slow_f = hide(b_parts.get("ep_comm", 0.0), f_cover, inter, f_matrix)
    if "ep_comm" in out:
        out["ep_comm"] = exp_f + exp_b
    out["compute"] = out.get("compute", 0.0) + slow_b + slow_f
    return out, hid_f + hid_b
