"""Operators and collectives: what one device does for one micro-batch of one layer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OpKind = Literal["gemm", "grouped_gemm", "attention", "memory", "vector"]
CommKind = Literal["tp", "cp", "ep", "pp", "dp", "offload"]
"""``offload``: a device-host activation swap (``npusim.engine.opgraph.SWAP_OUT`` / ``SWAP_IN``)."""
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
    spread: float = 0.0
    """Grouped GEMMs: coefficient of variation of the rows per group (0 = equal groups)."""
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


@dataclass(frozen=True)
class Marker:
    """A position in a pass with no work (e.g. the start of a layer, where the event engine starts
    that layer's ZeRO-3 parameter gather)."""

    name: str


class Pass:
    """Ops and collectives of one pass (forward or backward) over a chunk for one micro-batch, in
    program order (``items``): the event engine derives data dependencies from that order."""

    __slots__ = ("items",)

    def __init__(self, items=(), comms=()):
        """A pass of ``items`` (ops and collectives in program order), then ``comms``."""
        self.items: list = list(items) + list(comms)

    @property
    def ops(self) -> list[Op]:
        """The kernels, in order."""
        return [i for i in self.items if isinstance(i, Op)]

    @property
    def comms(self) -> list[Comm]:
        """The collectives, in order."""
        return [i for i in self.items if isinstance(i, Comm)]

    def add(self, *items) -> None:
        """Append ops or collectives in program order."""
        self.items.extend(items)

    def extend(self, other: "Pass") -> None:
        """Append another pass's items."""
        self.items.extend(other.items)
