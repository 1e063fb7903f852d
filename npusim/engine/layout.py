"""Where a schedule places the layer chunks of the model on the pipeline ranks.

A *stage* is a chunk of consecutive layers (``npusim.workload.passes.chunk_specs`` index, and the
index into the ``StageCost`` list). Every micro-batch runs the stages in order 0, 1, ..., n-1 in
its forward pass and in reverse in its backward pass; the schedule decides which rank runs a stage:

- ``1f1b``, ``interleaved``, ``zb-h1``: stage j on rank j mod pp (vpp chunks per rank, looping);
- ``zb-v``, ``dualpipev``: V shape, 2 pp stages, rank r holds stages r and 2 pp - 1 - r;
- ``dualpipe``: two pipelines over the same pp stages in opposite directions; micro-batches
  0 .. m/2-1 enter at rank 0 (stage s on rank s), m/2 .. m-1 at rank pp-1 (stage s on rank
  pp-1-s), so every rank holds two stages' parameters (2x).
"""
from __future__ import annotations

from dataclasses import dataclass

from npusim.config.schedules import SCHEDULES, names, schedule_facts

STATIC_SCHEDULES = names(greedy=False) + ("forward",)
"""Schedules given as a fixed per-rank order of units."""
GREEDY_SCHEDULES = names(greedy=True)
"""Schedules decided at run time by the zero-bubble greedy policy (``npusim.engine.zerobubble``)."""
SPLIT_SCHEDULES = names(split_backward=True)
"""Schedules that split some backward passes into input-gradient (B) and weight-gradient (W) units."""
V_SCHEDULES = names(placement="v")
"""Schedules with the V-shaped placement (two chunks per rank, vpp = 2)."""
TWO_WAY_SCHEDULES = names(placement="two_way")
"""Schedules with two pipelines in opposite directions (DualPipe)."""
TRAINING_SCHEDULES = tuple(SCHEDULES)
"""Schedules a training plan may name (``npusim.config.schedules``)."""


@dataclass(frozen=True)
class Layout:
    """Placement of the stages of one pipeline on its ranks (see the module docstring)."""

    schedule: str
    pp: int
    stages: int
    """Layer chunks (StageCost entries) of the model."""
    rank_chunks: tuple[tuple[int, ...], ...]
    """Per rank, the stage each local chunk holds (local chunk index -> stage)."""
    copies: int = 1
    """Copies of each stage's parameters in the pipeline (2 for DualPipe)."""

    def rank_of(self, stage: int, mb: int, m: int) -> int:
        """The rank that runs ``stage`` for micro-batch ``mb`` (of ``m``)."""
        p = self.pp
        if self.schedule in V_SCHEDULES:
            return stage if stage < p else 2 * p - 1 - stage
        if self.schedule in TWO_WAY_SCHEDULES:
            return stage if mb < m // 2 else p - 1 - stage
        return stage % p

    def chunk_of(self, rank: int, stage: int) -> int:
        """Local chunk index of ``stage`` on ``rank``."""
        return self.rank_chunks[rank].index(stage)


def pipeline_layout(schedule: str, pp: int, vpp: int) -> Layout:
    """The placement a schedule uses for ``pp`` ranks and ``vpp`` chunks per rank (plan-dependent)."""
    if schedule in V_SCHEDULES:
        return Layout(schedule, pp, 2 * pp, tuple((r, 2 * pp - 1 - r) for r in range(pp)))
    if schedule_facts(schedule).placement == "two_way":
        return Layout(schedule, pp, pp, tuple((r, pp - 1 - r) for r in range(pp)),
                      copies=schedule_facts(schedule).copies)
    return Layout(schedule, pp, pp * vpp, tuple(tuple(c * pp + r for c in range(vpp)) for r in range(pp)))
