"""One resolved step: the object every consumer shares (simulate, serving, the reports, traces).

``resolve_step`` resolves a training plan against the model, devices and batch once and derives
what every later stage reads: the step inputs, the layer chunks, where each parallel group sits on
the topology, the MoE routing load, the schedule's placement and facts. ``ResolvedStep.stage_costs``
runs the op-level engine once per step and memoises it on the object. ``resolve_serving_step`` fills
the same object for a prefill or decode step (forward passes only; ``ResolvedStep.forward`` holds
what serving adds), which ``npusim.engine.serve.simulate_serving`` consumes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from npusim.config.plan import resolve_plan
from npusim.config.schedules import INFERENCE_SCHEDULE, ScheduleFacts, schedule_facts
from npusim.cost.collectives import placements
from npusim.engine.layout import Layout, pipeline_layout
from npusim.engine.serve_setup import comm_view, resolve_serving_plan, serve_shard, shard_load
from npusim.engine.step import StepInputs, moe_load, stage_costs
from npusim.workload.passes import ChunkSpec, chunk_specs
from npusim.workload.routing import LoadStats
from npusim.workload.serving import ServeShard

if TYPE_CHECKING:  # pragma: no cover
    from npusim.engine.pipeline import StageCost


@dataclass(frozen=True)
class ServingForward:
    """What a serving step adds to the resolved inputs (plan and workload dependent)."""

    shard: ServeShard
    """The per-device split of one forward pass (one micro-batch, one overlap half)."""
    micro_batches: int
    """Forward micro-batches in flight through the pipeline stages (min(pp, sequences per DP group))."""
    halves: int
    """Two-batch overlap: 2 when each stage runs its sequences as two halves, else 1."""
    seqs_per_group: int
    """Sequences of one attention-DP group in the step."""


@dataclass(frozen=True)
class ResolvedStep:
    """A step with its plan resolved (plan dependent throughout): a training step, or a serving
    step (``forward`` set) whose ``inputs.hw`` is the view of the profile its collectives see."""

    inputs: StepInputs
    specs: list[ChunkSpec]
    places: dict
    load: LoadStats
    layout: Layout
    facts: ScheduleFacts
    forward: Optional[ServingForward] = None
    _costs: list = field(default_factory=list, compare=False, repr=False)

    @property
    def plan(self):
        """The resolved ParallelPlan."""
        return self.inputs.plan

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step (serving: forward micro-batches in flight)."""
        return self.forward.micro_batches if self.forward else self.inputs.micro_batches

    def stage_costs(self) -> list["StageCost"]:
        """Per-stage unit costs of a training step from the op-level engine (computed once per
        step); a serving step's forward passes are costed by ``npusim.engine.serve``."""
        if self.forward is not None:
            raise ValueError("a serving step is costed by npusim.engine.serve.simulate_serving")
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


def resolve_serving_step(model, hardware, plan, workload, devices: int) -> ResolvedStep:
    """Resolve a serving ``plan`` for ``workload`` (an InferenceWorkload: prefill or decode of
    ``workload.batch`` sequences) on ``devices`` devices (chips) of ``hardware``: the serving plan
    (dp derived, ConfigError on a violation), the forward's per-device split and routing load, the
    stages' chunks and the collectives' placements on the profile's view for this instance."""
    plan = resolve_serving_plan(plan, model, devices, workload.batch)
    seqs_group = workload.batch // plan.dp
    m = max(1, min(plan.pp, seqs_group))
    seqs = max(1, seqs_group // m)
    # Two-batch overlap: each stage runs its sequences as two halves whose all-to-all hides behind
    # the other half's kernels (the halves each read the weights: that is the price).
    halves = 2 if plan.ep_overlap and model.is_moe and seqs >= 2 else 1
    sh = serve_shard(model, plan, workload, seqs // halves)
    view = comm_view(hardware, devices)
    inp = StepInputs(model, view, plan, workload.input_len, workload.batch, devices)
    return ResolvedStep(inp, chunk_specs(model, plan.pp, 1), placements(plan, view), shard_load(model, plan, sh),
                        pipeline_layout(INFERENCE_SCHEDULE.name, plan.pp, 1), INFERENCE_SCHEDULE,
                        ServingForward(sh, m, halves, seqs_group))
