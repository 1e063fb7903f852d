"""One resolved training step: the object every consumer shares (simulate, the reports, traces).

``resolve_step`` resolves the plan against the model, devices and batch once and derives what every
later stage reads: the step inputs, the layer chunks, where each parallel group sits on the
topology, the MoE routing load, the schedule's placement and facts. ``ResolvedStep.stage_costs``
runs the op-level engine once per step and memoises it on the object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from npusim.config.plan import resolve_plan
from npusim.config.schedules import ScheduleFacts, schedule_facts
from npusim.cost.collectives import placements
from npusim.engine.layout import Layout, pipeline_layout
from npusim.engine.step import StepInputs, moe_load, stage_costs
from npusim.workload.passes import ChunkSpec, chunk_specs
from npusim.workload.routing import LoadStats

if TYPE_CHECKING:  # pragma: no cover
    from npusim.engine.pipeline import StageCost


@dataclass(frozen=True)
class ResolvedStep:
    """A training step with its plan resolved (plan dependent throughout)."""

    inputs: StepInputs
    specs: list[ChunkSpec]
    places: dict
    load: LoadStats
    layout: Layout
    facts: ScheduleFacts
    _costs: list = field(default_factory=list, compare=False, repr=False)

    @property
    def plan(self):
        """The resolved ParallelPlan."""
        return self.inputs.plan

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step."""
        return self.inputs.micro_batches

    def stage_costs(self) -> list["StageCost"]:
        """Per-stage unit costs from the op-level engine (computed once per step)."""
        if not self._costs:
            self._costs.extend(stage_costs(self.inputs, self.specs, self.places, {}, self.load,
                                           split_backward=self.facts.split_backward))
        return self._costs


def resolve_step(model, hardware, plan, workload, devices: int) -> ResolvedStep:
    """Resolve ``plan`` for ``model`` on ``devices`` of ``hardware`` with ``workload``'s batch."""
    plan = resolve_plan(plan, model, devices, workload.global_batch, workload.seq_len)
    inp = StepInputs(model, hardware, plan, workload.seq_len, workload.global_batch, devices)
    places = placements(plan, hardware)
    sched = plan.pipeline_schedule
    return ResolvedStep(inp, chunk_specs(model, plan.pp, plan.vpp), places, moe_load(inp, places),
                        pipeline_layout(sched, plan.pp, plan.vpp), schedule_facts(sched))
