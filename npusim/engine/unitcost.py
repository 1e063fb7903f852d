"""Pipeline-unit costs from the op-level event engine: every forward, backward, input-gradient,
weight-gradient and overlapped forward+backward unit is its lowered ops and collectives run on the
device's resources (``npusim.engine.unit``), with overlap and contention emerging from data
dependencies and shared links (``npusim.engine.opgraph``).

Coalescing: units of identical layers are simulated once per chunk *shape*, and a chunk of more than
``EXACT_LAYERS`` layers of a kind is simulated with ``EXACT_LAYERS - 1`` and ``EXACT_LAYERS`` of them
and extended linearly (steady state: each further identical layer adds what the last one added);
``tests/engine/test_unitcost.py`` checks it against the full simulation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from npusim.engine.opgraph import Overlap, build_graph
from npusim.engine.unit import UnitRun, run_unit
from npusim.workload.passes import ChunkSpec

if TYPE_CHECKING:  # pragma: no cover
    from npusim.engine.step import StepInputs
    from npusim.workload.layers import Shard

EXACT_LAYERS = 3
"""Layers of one kind per chunk simulated exactly; beyond, the per-layer increment is replayed."""


def combine_runs(runs: list[tuple[float, UnitRun]]) -> UnitRun:
    """A linear combination of unit runs (coalescing)."""
    def mix(attr: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for w, r in runs:
            for k, v in getattr(r, attr).items():
                out[k] = out.get(k, 0.0) + w * v
        return {k: max(0.0, v) for k, v in out.items()}
    dur = sum(w * r.duration_s for w, r in runs)
    return UnitRun(max(0.0, dur), mix("parts"), mix("busy_s"), mix("in_flight_s"),
                   max(0.0, sum(w * r.dp_tail_s for w, r in runs)), runs[0][1].slices)


@dataclass
class UnitCoster:
    """Costs units of one step (plan dependent); memoised by chunk shape and role."""

    inp: "StepInputs"
    places: dict
    shard: "Shard"
    load_factor: float
    cache: dict
    exact: bool = False
    """Simulate every layer (no coalescing)."""

    def __post_init__(self):
        plan = self.inp.plan
        self.overlap = Overlap(tp=plan.tp_comm_overlap, ep=bool(plan.ep_overlap))
        self.memo: dict = {}
        self.simulations = 0
        """Unit simulations run (after memoisation and coalescing)."""
        self.op_events = 0
        """Ops and collectives simulated over all unit simulations."""

    def _items(self, spec: ChunkSpec, role: str, loaded: bool) -> list:
        """Items of one pass of ``spec``: role 'F', 'B', 'Bi', 'W' or 'Bdp' (backward with DP buckets)."""
        from npusim.engine.step import chunk_passes, split_weight_grad

        key = ("items", spec, role, loaded)
        hit = self.memo.get(key)
        if hit is None:
            lf = self.load_factor if loaded else 1.0
            fwd, bwd = chunk_passes(self.inp, self.shard, spec, lf, dp_buckets=role == "Bdp")
            if role == "F":
                hit = fwd.items
            elif role in ("B", "Bdp"):
                hit = bwd.items
            else:
                bi, w = split_weight_grad(bwd)
                hit = (bi if role == "Bi" else w).items
            self.memo[key] = hit
        return hit

    def _run(self, parts: list[tuple[ChunkSpec, str]], loaded: bool) -> UnitRun:
        """Simulate the passes ``parts`` (spec, role) together as one unit."""
        key = ("run", tuple(parts), loaded)
        hit = self.memo.get(key)
        if hit is None:
            nodes = build_graph([self._items(s, r, loaded) for s, r in parts], self.overlap)
            self.simulations += 1
            self.op_events += len(nodes)
            hit = self.memo[key] = run_unit(nodes, self.inp.hw, self.inp.plan.precision, self.places, self.cache)
        return hit

    def _coalesced(self, parts: list[tuple[ChunkSpec, str]], loaded: bool) -> UnitRun:
        """``_run`` with long chunks shortened and extended linearly (see the module docstring)."""
        if self.exact or len(parts) > 1:
            # Overlapped pairs: two chains drift against each other layer by layer, so a pair is
            # not a steady state of identical layers; it is always simulated whole.
            return self._run(parts, loaded)
        base = [(shrink_spec(s), r) for s, r in parts]
        extra = {(getattr(s, f) - getattr(b, f)) for (s, _), (b, _) in zip(parts, base) for f in ("dense_layers",)}
        extra_m = {(s.moe_layers - b.moe_layers) for (s, _), (b, _) in zip(parts, base)}
        if len(extra) > 1 or len(extra_m) > 1:
            return self._run(parts, loaded)  # passes of different lengths: no common steady state
        runs = [(1.0, self._run(base, loaded))]
        for field_, n in (("dense_layers", extra.pop()), ("moe_layers", extra_m.pop())):
            if n > 0:
                longer = [(replace(b, **{field_: getattr(b, field_) + 1}), r) for b, r in base]
                runs += [(n, self._run(longer, loaded)), (-n, runs[0][1])]
        return runs[0][1] if len(runs) == 1 else combine_runs(runs)

    def unit(self, parts: list[tuple[ChunkSpec, str]]) -> tuple[dict[str, float], UnitRun]:
        """(named parts with ``imbalance``, balanced run) of a unit; with an imbalanced router the
        busiest device's unit sets the time and its excess is ``imbalance``."""
        parts = [(replace(s, index=0), r) for s, r in parts]
        key = ("unit", tuple(parts))
        hit = self.memo.get(key)
        if hit is None:
            run = self._coalesced(parts, False)
            named = dict(run.parts)
            if self.load_factor != 1.0 and any(s.moe_layers for s, _ in parts):
                busiest = self._coalesced(parts, True)
                named["imbalance"] = max(0.0, busiest.duration_s - run.duration_s)
            hit = self.memo[key] = (named, run)
        return hit


def shrink_spec(spec: ChunkSpec) -> ChunkSpec:
    """The chunk with at most ``EXACT_LAYERS - 1`` layers of each kind when it has more than
    ``EXACT_LAYERS``."""
    d, m = spec.dense_layers, spec.moe_layers
    d = d if d <= EXACT_LAYERS else EXACT_LAYERS - 1
    m = m if m <= EXACT_LAYERS else EXACT_LAYERS - 1
    return replace(spec, dense_layers=d, moe_layers=m)


def hidden_of(run: UnitRun) -> dict[str, float]:
    """Communication seconds hidden behind other work, per class (in flight minus exposed)."""
    return {k: v - run.parts.get(k, 0.0) for k, v in run.in_flight_s.items() if v - run.parts.get(k, 0.0) > 1e-12}
