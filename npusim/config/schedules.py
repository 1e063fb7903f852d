"""Pipeline schedules: one registry of their facts (the lowest layer, so the plan validator, the
engine, the fast tier and the reports all read the same table).

Each entry says how the schedule places chunks, whether it splits backwards into input- and
weight-gradient units, whether its order is fixed or chosen at run time, the ``vpp`` it needs, the
parameter copies it holds and whether the fast tier has a closed form for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Placement = Literal["loop", "v", "two_way"]


@dataclass(frozen=True)
class ScheduleFacts:
    """What the rest of npusim needs to know about one schedule."""

    name: str
    placement: Placement
    """'loop': stage j on rank j mod pp (vpp chunks per rank); 'v': two chunks per rank in a V;
    'two_way': two pipelines in opposite directions over the same stages (DualPipe)."""
    split_backward: bool
    """Some backwards run as input-gradient (B) and weight-gradient (W) units."""
    greedy: bool
    """The order is chosen at run time (zero-bubble policy) rather than fixed."""
    vpp: int | None
    """The vpp the schedule needs (None: any)."""
    copies: int = 1
    """Copies of each stage's parameters per pipeline."""
    closed_form: bool = False
    """The sweep's fast tier has a closed form for it (else it runs the event simulation)."""
    pairs_fb: bool = False
    """Runs overlapped forward + backward pairs by design (DualPipe's F&B)."""
    units_per_micro_batch: int = 2
    """Pipeline units per micro-batch and chunk (F, B; plus W when split)."""


SCHEDULES: dict[str, ScheduleFacts] = {s.name: s for s in (
    ScheduleFacts("1f1b", "loop", False, False, 1, closed_form=True),
    ScheduleFacts("interleaved", "loop", False, False, None, closed_form=True),
    ScheduleFacts("zb-h1", "loop", True, True, 1, units_per_micro_batch=3),
    ScheduleFacts("zb-v", "v", True, True, 2, units_per_micro_batch=3),
    ScheduleFacts("dualpipe", "two_way", True, False, 1, copies=2, pairs_fb=True, units_per_micro_batch=3),
    ScheduleFacts("dualpipev", "v", True, False, 2, pairs_fb=True, units_per_micro_batch=3),
)}
"""Training schedules by name (``schedule=`` in a plan)."""

INFERENCE_SCHEDULE = ScheduleFacts("forward", "loop", False, False, None)
"""Forward passes only, in order (prefill and decode)."""


def schedule_facts(name: str) -> ScheduleFacts:
    """The facts of a schedule by name ('forward' for inference)."""
    if name == "forward":
        return INFERENCE_SCHEDULE
    return SCHEDULES[name]


def names(**where) -> tuple[str, ...]:
    """Schedule names whose facts match every ``field=value`` given (e.g. ``split_backward=True``)."""
    return tuple(n for n, f in SCHEDULES.items() if all(getattr(f, k) == v for k, v in where.items()))
