"""Successive refinement (``search: refine``): time a coarse grid, then the neighbourhood of the best.

The unit is a block (``prune.block_key``: the points that differ only in ZeRO stage, recompute,
micro-batch size and options, which the pruned search settles inside one batch). A block's
coordinates are its values on the ordered numeric axes: every numeric ``model.vary`` field and the
plan axes ``REFINE_AXES``. Along each axis the values the sweep takes are sorted; the coarse grid
is the blocks whose value on every axis is one of every other value (the first, third, ... and the
last). The grid is timed first (with the pruned search's stages); then, round after round, the
neighbours of the blocks holding the ``k`` best points are timed: on each axis, the nearest block
below and above that differs from it on that axis alone. Refinement stops when a round brings no
new point into the top ``k`` (or no neighbour is left). Every block never timed is a row with stage
``refine`` (status ``pruned``).

Where it can miss: the space is not a product (pp's values depend on tp, vpp's on pp...), so a
block whose every one-axis neighbour is missing or worse than the top is a local optimum; a better
block reachable only through two axes changed at once, past a worse neighbour, is never timed.
``tests/sweep/test_refine.py`` compares it with exhaustive search on the shipped specs.
"""
from __future__ import annotations

from numbers import Real

from npusim.sweep.prune import BLOCK_FREE, context_key, hashable

REFINE_AXES = ("tp", "cp", "pp", "vpp", "etp", "ep")
"""Plan axes refined as ordered coordinates (those inside a block are always timed together)."""


class Refiner:
    """The blocks of a sweep's points, their coordinates, the coarse grid and each round's neighbours."""

    def __init__(self, points: list[dict], vary_keys: list[str], k: int):
        self.points, self.k = points, k
        shapes = list({id(p["model"]): p["model"] for p in points if "pre" not in p}.values())
        self.model_axes = numeric_axes(shapes, vary_keys)
        self.shapes: dict[tuple, dict] = {}
        """Model-axis values -> a shape dict with them (the variants of the sweep)."""
        self.blocks: dict[tuple, list[int]] = {}
        """Block signature -> positions of its points (contiguous, generation order)."""
        self.coords: dict[tuple, dict] = {}
        for i, p in enumerate(points):
            if "pre" in p:
                continue
            sig = self._sig(p)
            if sig not in self.blocks:
                self.blocks[sig] = []
                self.coords[sig] = coords_of(p, self.model_axes)
                self.shapes.setdefault(tuple(p["model"].get(a) for a in self.model_axes), p["model"])
            self.blocks[sig].append(i)
        self.values = {a: sorted({c[a] for c in self.coords.values() if c[a] is not None})
                       for a in [*self.model_axes, *REFINE_AXES]}
        self.expanded: set[tuple] = set()
        """Blocks whose neighbours have been taken."""
        self.timed: set[tuple] = set()
        """Blocks chosen for timing so far."""
        self.top: list[str] = []
        """Ids of the ``k`` best points after the last round."""

    def _sig(self, p: dict, axis: str | None = None, value=None) -> tuple:
        """A point's block signature (optionally with one axis set to ``value``)."""
        model = p["model"]
        if axis in self.model_axes:
            key = tuple(value if a == axis else model.get(a) for a in self.model_axes)
            model = self.shapes.get(key)
            if model is None:
                return ()
        ctx = context_key({**p, "model": model}) if model is not p["model"] else context_key(p)
        plan = tuple((k, hashable(value if k == axis else v)) for k, v in p["plan"].items() if k not in BLOCK_FREE)
        return ctx + plan

    def grid(self) -> list[dict]:
        """The points of the coarse grid (``coarse``)."""
        keep = coarse(self.values)
        return self._points([sig for sig, c in self.coords.items() if in_grid(c, keep)])

    def neighbours(self, sig: tuple) -> list[tuple]:
        """The blocks next to ``sig`` on each axis: the nearest value below and above at which a block
        differs from it on that axis alone."""
        first = self.points[self.blocks[sig][0]]
        c = self.coords[sig]
        out = []
        for axis, vals in self.values.items():
            if c[axis] is None:
                continue
            at = vals.index(c[axis])
            for step in (-1, 1):
                j = at + step
                while 0 <= j < len(vals):
                    other = self._sig(first, axis, vals[j])
                    if other in self.blocks:
                        out.append(other)
                        break
                    j += step
        return out

    def step(self, best: list[tuple[float, str, int]]) -> list[dict]:
        """The next round's points: the untimed neighbours of the blocks holding the ``k`` best points
        (``best``: (score, id, position) of every feasible timed point); none once the top ``k`` holds
        no new point."""
        best = sorted(best, key=lambda t: (-t[0], t[1]))[:self.k]
        top = [i for _, i, _ in best]
        if top == self.top:
            return []
        self.top = top
        out: list[tuple] = []
        for _, _, pos in best:
            sig = self._sig(self.points[pos])
            if sig in self.expanded:
                continue
            self.expanded.add(sig)
            out.extend(n for n in self.neighbours(sig) if n not in self.timed)
        return self._points(list(dict.fromkeys(out)))

    def _points(self, sigs: list[tuple]) -> list[dict]:
        """The points of blocks (marked timed), in generation order."""
        self.timed.update(sigs)
        return [self.points[i] for i in sorted(i for s in sigs for i in self.blocks[s])]


def search(points: list[dict], vary_keys: list[str], k: int, old: list, evaluate) -> tuple[list, dict, list[dict]]:
    """Refine over ``points``: ``evaluate(points, label)`` times points and returns their rows as Arrow
    tables; ``old`` holds tables of rows stored before (a resumed sweep). Return (the new tables,
    {k, grid, rounds, timed, skipped}, the points never timed)."""
    pos = {p["id"]: i for i, p in enumerate(points)}
    ref = Refiner(points, vary_keys, k)
    best = feasible(old, pos)
    todo = sorted(ref.grid() + [p for p in points if "pre" in p], key=lambda p: p["index"])
    new, rounds = [], []
    while todo:
        rounds.append(len(todo))
        label = "fast tier (coarse grid)" if len(rounds) == 1 else f"fast tier (refinement round {len(rounds) - 1})"
        tables = evaluate(todo, label)
        new += tables
        best += feasible(tables, pos)
        todo = ref.step(best)
    timed = {i for sig in ref.timed for i in ref.blocks[sig]}
    never = [p for i, p in enumerate(points) if i not in timed and "pre" not in p]
    return new, {"k": k, "grid": rounds[0] if rounds else 0, "rounds": rounds[1:], "timed": sum(rounds),
                 "skipped": len(never)}, never


def feasible(tables: list, pos: dict) -> list[tuple[float, str, int]]:
    """(score, id, position in the points) of the feasible rows of ``tables``."""
    import pyarrow.compute as pc

    out = []
    for t in tables:
        if "score" not in t.column_names:
            continue
        ok = pc.fill_null(pc.and_(pc.equal(t.column("status"), "ok"), pc.is_valid(t.column("score"))), False)
        sel = t.select(["id", "score"]).filter(ok)
        out += [(s, i, pos[i]) for i, s in zip(sel.column("id").to_pylist(), sel.column("score").to_pylist()) if i in pos]
    return out


def timed_rows(table):
    """A stored fast-tier table without the rows of points refinement never timed (they are rebuilt)."""
    import pyarrow.compute as pc

    if "stage" not in table.column_names:
        return table
    return table.filter(pc.fill_null(pc.not_equal(table.column("stage"), "refine"), True))


def numeric_axes(shapes: list[dict], vary_keys: list[str]) -> list[str]:
    """The ``model.vary`` fields whose every value (over the usable shapes) is a number."""
    return [a for a in vary_keys if shapes and all(isinstance(m.get(a), Real) and not isinstance(m.get(a), bool)
                                                   for m in shapes)]


def coarse(values: dict[str, list]) -> dict[str, set]:
    """Axis -> the values of the coarse grid: every other one of its sorted values, and the last."""
    return {a: set(vals[::2]) | set(vals[-1:]) for a, vals in values.items()}


def in_grid(coords: dict, keep: dict[str, set]) -> bool:
    """True when a point's coordinates lie on the coarse grid (an axis it does not set is no bar)."""
    return all(coords.get(a) is None or coords[a] in vals for a, vals in keep.items())


def coords_of(p: dict, model_axes: list[str]) -> dict:
    """A point's coordinates: its model-axis and ``REFINE_AXES`` values."""
    return {**{a: p["model"].get(a) for a in model_axes}, **{a: p["plan"].get(a) for a in REFINE_AXES}}


def skipped_row(p: dict, vary_keys: list[str], plan_cols: tuple, sizes: dict) -> dict:
    """The row of a point refinement never timed (stage ``refine``; ``sizes``: shape dict id ->
    (total, activated) parameters in billions)."""
    row = {"id": p["id"], "index": p["index"], "hardware": p["hardware"], "devices": p["devices"],
           "seq_len": p["seq_len"], "global_batch": p["global_batch"]}
    row.update({f"model_{k}": p["model"].get(k) for k in vary_keys})
    row["total_params_B"], row["activated_params_B"] = sizes.get(id(p["model"]), (None, None))
    row.update({k: p["plan"].get(k) for k in plan_cols})
    return {**row, "status": "pruned", "reason": "refine", "message": "not in the coarse grid nor next to the best",
            "stage": "refine"}
