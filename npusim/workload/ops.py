"""Operators and collectives: what one device does for one micro-batch of one layer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

OpKind = Literal["gemm", "grouped_gemm", "attention", "memory", "vector"]
CommKind = Literal["tp", "cp", "ep", "pp", "dp"]
Collective = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "all_to_all_inter",
                     "all_to_all_intra", "send_recv"]


@dataclass(frozen=True)
class Op:
    """A kernel on one device. FLOPs and bytes are per device; GEMM shapes are per device."""

    name: str
    kind: OpKind
    flops: float = 0.0
    bytes: float = 0.0
    m: int = 0
    n: int = 0
    k: int = 0
    groups: int = 1
    """Independent GEMMs of shape (m, n, k) in one kernel (batched or grouped GEMM)."""
    seq: int = 0
    """Sequence length, for attention efficiency."""
    recompute: bool = False
    """True when this op is a recomputation in the backward pass."""


@dataclass(frozen=True)
class Comm:
    """A collective seen from one device. ``bytes`` is the full buffer (input of all-reduce and
    reduce-scatter, output of all-gather, total sent by all-to-all)."""

    name: str
    kind: CommKind
    collective: Collective
    group: str
    """Which group: 'tp', 'cp', 'ep', 'etp', 'dp', 'edp', 'pp'."""
    size: int
    bytes: float
    overlappable: bool = False
    recompute: bool = False


@dataclass
class Pass:
    """Ops and collectives of one pass (forward or backward) over a chunk for one micro-batch."""

    ops: list[Op] = field(default_factory=list)
    comms: list[Comm] = field(default_factory=list)

    def extend(self, other: "Pass") -> None:
        """Append another pass's ops and collectives."""
        self.ops.extend(other.ops)
        self.comms.extend(other.comms)
