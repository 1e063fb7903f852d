"""Run a sweep: generate points, fast tier on all, full simulation on the best, rank, write, summarise."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from npusim.sweep.evaluate import PLAN_COLS, evaluate_fast, evaluate_full, metric_cols, params_B, point_model
from npusim.sweep.prune import REVISIT_FACTOR, context_key, cut_batches, revisit, stage_counts
from npusim.sweep.refine import search as refine_search, skipped_row, timed_rows
from npusim.sweep.serving import SERVE_PLAN_COLS, WL_COLS, serving_columns
from npusim.sweep.store import (ChunkStore, align, check_resume, column, locked, rows_table, write_spec,
                                write_summary, write_tables)


def prepare(spec_path: str | Path, max_points: int | None = None) -> tuple[dict, dict, list, list]:
    """Load the spec; return (resolved spec, worker context, model variants, points). More points
    than ``max_points`` (default: the spec's ``max_points``) is a one-line ConfigError with the count."""
    from npusim.config.errors import ConfigError
    from npusim.sweep.space import TooManyPoints, generate

    spec, resolved, ctx, variants, profiles = load(spec_path)
    limit = max_points or spec.max_points
    try:
        points = generate(resolved, variants, profiles, limit=limit)
    except TooManyPoints as e:
        flag = "--max-points" if max_points else "max_points"
        err = ConfigError(str(spec_path), flag, limit, f"the spec has {e.count:,} points, over the limit",
                          f"raise max_points in the spec or pass --max-points {e.count}, or narrow the spec "
                          "(--dry-run shows the points per axis)")
        err.count = e.count
        raise err from None
    return resolved, ctx, variants, points


def load(spec_path: str | Path) -> tuple:
    """(spec, resolved spec, worker context, model variants, profiles by name) of a spec file,
    before any point is generated."""
    from npusim.config.hardware import load_profile
    from npusim.config.model import load_model
    from npusim.sweep.error_table import error_fraction
    from npusim.sweep.space import model_variants
    from npusim.sweep.spec import load_spec, spec_key

    spec, resolved = load_spec(spec_path)
    base = load_model(spec.model.base).model_dump(mode="json")
    profiles = {p.name: p for p in (load_profile(h) for h in spec.hardware)}
    dumps = {n: p.model_dump(mode="json") for n, p in profiles.items()}
    resolved["base_model"] = base
    resolved["profiles"] = {n: _digest(d) for n, d in dumps.items()}
    resolved["key"] = spec_key(resolved)
    variants = model_variants(base, spec.model.vary, spec.model.constraints, spec.model.derive)
    obj = resolved["objective"]
    kind = spec.workload.kind
    plan_cols = PLAN_COLS if kind == "train" else SERVE_PLAN_COLS
    ctx = {"key": resolved["key"], "base_model": base, "search": spec.search, "profiles": dumps, "objective": obj,
           "kind": kind, "memory_limit_frac": 1.0 - obj["memory_headroom"],
           "vary_keys": list(spec.model.vary) + list(spec.model.derive),
           "wl_cols": ["seq_len", "global_batch"] if kind == "train" else list(WL_COLS),
           "max_batch": getattr(spec.workload, "max_batch", None), "workload": resolved["workload"],
           "option_keys": [k for k in resolved["plan"] if k != "auto" and k not in plan_cols],
           "error_frac": {n: {k: error_fraction(n, p.chip.name, k) for k in ("dense", "moe", "serving")}
                          for n, p in profiles.items()},
           "moe_shapes": sorted({_shape_key(v.overrides) for v in variants if v.model is not None and v.model.is_moe})}
    return spec, resolved, ctx, variants, profiles


def _shape_key(overrides: dict) -> str:
    """A model variant's overrides as a canonical string."""
    return json.dumps(overrides, sort_keys=True)


def _digest(obj) -> str:
    """Short hash of a JSON-ready object."""
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=8).hexdigest()


def _batches(points: list[dict], size: int, kind: str = "train"):
    """(batch number, points) pairs of about ``size`` points (training: never splitting a block of
    points that decide each other, ``prune.cut_batches``)."""
    if kind == "train":
        return cut_batches(points, size)
    return [(i // size, points[i:i + size]) for i in range(0, len(points), size)]


PROGRESS_EVERY_S = 10.0
"""Seconds between status lines when stderr is not a terminal (``--progress-every``)."""


class Progress:
    """Progress of one tier: a tqdm bar when stderr is a terminal, else (``every`` > 0) one status line
    every ``every`` seconds: points done, rate, ETA, best score so far."""

    def __init__(self, total: int, label: str, every: float | None = PROGRESS_EVERY_S, metric: str = "score",
                 stream=None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.total, self.label, self.every, self.metric, self.clock = total, label, every, metric, clock
        self.done, self.best = 0, None
        self.t0 = self.last = clock()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="pt", file=self.stream, leave=False)

    def update(self, rows) -> None:
        """Count a finished batch (an Arrow table of rows, ``rows_table``) and its best score."""
        import pyarrow.compute as pc

        names = rows.column_names
        score, status = ("score", "status") if "score" in names or "status" in names else ("full_score", "full_status")
        self.done += rows.num_rows
        if score in names and status in names:
            ok = pc.fill_null(pc.equal(rows.column(status), "ok"), False)
            best = pc.max(rows.column(score).filter(ok)).as_py()
            if best is not None and (self.best is None or best > self.best):
                self.best = best
        if self.bar is not None:
            self.bar.update(rows.num_rows)
            return
        now = self.clock()
        if self.every and now - self.last >= self.every:
            self.last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        """The status line."""
        el = max(now - self.t0, 1e-9)
        rate = self.done / el
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        best = "none feasible yet" if self.best is None else f"{self.metric} {abs(self.best):.4g}"
        return (f"npusim: {self.label}: {self.done:,}/{self.total:,} points ({100 * self.done / max(1, self.total):.0f} %), "
                f"{rate:,.0f} points/s, ETA {eta:,.0f} s, best {best}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fast_batch(ctx: dict, points: list[dict]):
    """The fast tier's rows of a batch as an Arrow table (built in the worker: the parent only writes
    and stacks tables)."""
    return rows_table(evaluate_fast(ctx, points))


def full_batch(ctx: dict, points: list[dict]):
    """The full tier's rows of a batch as an Arrow table."""
    return rows_table(evaluate_full(ctx, points))


def _shape_of(batch: list[dict]) -> tuple:
    """What a batch's memos depend on most: hardware, devices, workload and model shape of its first point."""
    return context_key(batch[0])


def _run_tier(executor, fn, ctx: dict, store: ChunkStore, pending: list[dict], size: int, label: str,
              every: float | None = PROGRESS_EVERY_S) -> tuple[list, float]:
    """Evaluate ``pending`` in batches, writing each finished batch; return (the batches' Arrow tables,
    wall seconds)."""
    t0 = time.perf_counter()
    tables: list = []
    bar = Progress(len(pending), label, every, ctx["objective"]["metric"])
    try:
        for n, table in executor.map(fn, ctx, _batches(pending, size, ctx.get("kind", "train")), group=_shape_of):
            store.write(table)
            tables.append((n, table))
            bar.update(table)
    finally:
        bar.close()
    # in batch order, so the rows come in the points' order (``align`` then slices instead of gathering)
    return [t for _, t in sorted(tables, key=lambda x: x[0])], time.perf_counter() - t0


def run_sweep(spec_path: str | Path, out: str | Path, executor: str = "local", workers: int | None = None,
              address: str | None = None, resume: bool = False, max_points: int | None = None,
              progress_every: float | None = PROGRESS_EVERY_S) -> dict:
    """Run (or resume) the sweep of ``spec_path`` into ``out``; return the summary dict.

    ``out`` is checked before any work (npusim.outputs.check_dir) and locked for the whole run
    (store.locked): a second sweep on the same folder is refused, not interleaved."""
    from npusim.outputs import check_dir

    t_start = time.perf_counter()
    check_dir(out, "--out")  # before Path(): Path("") is "."
    out = Path(out)
    resolved, ctx, variants, points = prepare(spec_path, max_points)
    ctx["progress_every"] = progress_every
    with locked(out):
        return _run_locked(out, resolved, ctx, points, executor, workers, address, resume, t_start)


def _run_locked(out: Path, resolved: dict, ctx: dict, points: list, executor: str, workers: int | None,
                address: str | None, resume: bool, t_start: float) -> dict:
    """The body of run_sweep, with ``out`` locked. The tiers' rows stay Arrow tables (one per batch,
    stored rows first; for a point stored twice the later row wins), lined up with ``points`` by id."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from npusim.sweep.executors import make_executor
    from npusim.sweep.report import rank, shapes, summarize

    check_resume(out, resolved, resume)
    write_spec(out, resolved)
    ids = pa.array([p["id"] for p in points], pa.string())
    size = resolved["tiers"]["batch_size"]
    fast_store, full_store = ChunkStore(out, "fast"), ChunkStore(out, "full")
    refining = ctx["search"] == "refine" and ctx["kind"] == "train"
    fast_old = [timed_rows(t) for t in fast_store.tables()] if refining else fast_store.tables()
    done = _stored_ids(fast_old, ids)
    pending = [p for p in points if p["id"] not in done]
    fast_names = [c for c in columns(ctx) if not c.startswith("full_")]
    ex, finished, refined = None, False, None
    try:
        fast_new, fast_s, full_new, full_s = [], 0.0, [], 0.0
        k = max(10, resolved["tiers"]["full_top"])
        if refining:
            def pool():
                nonlocal ex
                ex = ex or make_executor(executor, workers, address)
                return ex
            fast_new, fast_s, refined = _refine(pool, ctx, fast_store, points, fast_old, done, size, k)
        elif pending:
            ex = make_executor(executor, workers, address)
            fast_new, fast_s = _run_tier(ex, fast_batch, ctx, fast_store, pending, size, "fast tier",
                                         ctx.get("progress_every"))
        skipped = [refined.pop("rows")] if refined else []
        fast, found = align(fast_old + fast_new + [t for t in skipped if t is not None], fast_names, ids)
        again = revisit(fast, points, REVISIT_FACTOR * k) if ctx["kind"] == "train" else []
        if again:  # the dominated siblings of the leaders: the top k then equals exhaustive search's
            ex = ex or make_executor(executor, workers, address)
            more, more_s = _run_tier(ex, fast_batch, {**ctx, "search": "exhaustive", "timed_stage": "revisited"}, fast_store, again, size,
                                     "fast tier (dominated siblings of the leaders)", ctx.get("progress_every"))
            fast_new, fast_s = fast_new + more, fast_s + more_s
            fast, found = align([fast] + more, fast_names, ids)
        best = _full_candidates(fast, resolved["tiers"]["full_top"], resolved["tiers"]["full_per_model"],
                                ctx["vary_keys"], ctx["wl_cols"], ctx["kind"])
        top = pa.array(list(best), pa.string())
        full_old = [t.filter(pc.is_in(t.column("id"), value_set=top)) for t in full_store.tables()]
        full_done = _stored_ids(full_old, top)
        by_id = {p["id"]: p for p in points}
        pending_full = [_for_full(by_id[i], best[i], ctx) for i in best if i not in full_done]
        if pending_full:
            ex = ex or make_executor(executor, workers, address)
            full_new, full_s = _run_tier(ex, full_batch, ctx, full_store, pending_full,
                                         max(1, min(size, 8)), "full tier", ctx.get("progress_every"))
        finished = True
    finally:
        if ex is not None:
            ex.close(abort=not finished)  # interrupted: stop the workers now, keep the chunks written
    frame = to_frame(points, _found(fast, found, points), full_old + full_new, ctx)
    ranked = rank(frame)
    tokens = (resolved["model"].get("constraints") or {}).get("tokens")
    write_tables(out, frame, ranked, shapes(ranked, ctx["vary_keys"], ctx["wl_cols"], tokens))
    fast_store.compact()  # results.parquet now holds every row: the chunks would only duplicate it
    full_store.compact()
    timing = {"fast_new": _distinct_ids(fast_new), "fast_reused": len(done), "fast_s": fast_s,
              "full_new": sum(t.num_rows for t in full_new), "full_reused": len(full_done), "full_s": full_s,
              "wall_s": time.perf_counter() - t_start, "executor": getattr(ex, "name", executor),
              "workers": getattr(ex, "workers", 1)}
    if ctx["kind"] == "train":
        timing["stages"] = stage_counts(frame["stage"].fillna("fast"))
    if refined:
        timing["refine"] = refined
    summary = summarize(resolved, frame, ranked, timing)
    write_summary(out, summary)
    return summary


def _refine(pool, ctx: dict, store: ChunkStore, points: list[dict], old: list, done: set, size: int,
            k: int) -> tuple[list, float, dict]:
    """``search: refine`` (``refine.search``), timing each round's points not stored yet; return (the
    timed batches' tables, seconds, {k, grid, rounds, timed, skipped, rows: the table of the points
    never timed})."""
    secs = [0.0]

    def evaluate(todo: list[dict], label: str) -> list:
        pending = [p for p in todo if p["id"] not in done]
        if not pending:
            return []
        tables, s = _run_tier(pool(), fast_batch, ctx, store, pending, size, label, ctx.get("progress_every"))
        secs[0] += s
        return tables

    new, info, never = refine_search(points, ctx["vary_keys"], k, old, evaluate)
    sizes: dict[int, tuple] = {}
    for p in never:
        if id(p["model"]) not in sizes:
            sizes[id(p["model"])] = params_B(point_model(ctx, p["model"]))
    rows = [skipped_row(p, ctx["vary_keys"], PLAN_COLS, sizes) for p in never]
    return new, secs[0], {**info, "rows": rows_table(rows) if rows else None}


def _stored_ids(tables: list, ids) -> set[str]:
    """The ids of ``ids`` (an Arrow string array) that rows of ``tables`` hold."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not tables:
        return set()
    held = pa.chunked_array([t.column("id") for t in tables], pa.string())
    return set(held.filter(pc.is_in(held, value_set=ids)).to_pylist())


def _distinct_ids(tables: list) -> int:
    """How many distinct ids the rows of ``tables`` hold."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.count_distinct(pa.chunked_array([t.column("id") for t in tables], pa.string())).as_py() if tables else 0


def _found(fast, found, points: list[dict]):
    """The fast tier's table lined up with ``points`` (``align``), a point without a row given an
    ``error`` row (reason ``missing``)."""
    if found.all():
        return fast
    fill = {"id": lambda p: p["id"], "index": lambda p: p["index"], "status": lambda p: "error",
            "reason": lambda p: "missing", "message": lambda p: "no result"}
    for name, value in fill.items():
        vals = fast.column(name).to_pylist()
        for n in (~found).nonzero()[0]:
            vals[n] = value(points[n])
        fast = fast.set_column(fast.column_names.index(name), name, column(vals))
    return fast


def _for_full(p: dict, row: dict, ctx: dict) -> dict:
    """A point for the full tier; a serving point carries the batch and KV dtype its search found."""
    if ctx["kind"] == "train":
        return p
    return {**p, "found": {k: row[k] for k in ("batch", "kv_dtype", "bound")}}


def _full_candidates(fast, n: int, per_model: int = 0, vary: list | None = None,
                     wl_cols: list | None = None, kind: str = "train") -> dict[str, dict]:
    """The ``n`` best feasible points of the fast tier's table (score descending, id ascending on
    ties), then the best ``per_model`` of every model variant x hardware x devices x workload not
    already in: their rows (the columns that choose them, and a serving point's batch) by id."""
    import pyarrow.compute as pc

    wl_cols = wl_cols or ["seq_len", "global_batch"]
    keep = ["id", "score", "hardware", "devices", *wl_cols, *[f"model_{k}" for k in vary or []]]
    keep += [] if kind == "train" else ["batch", "kv_dtype", "bound"]
    ok = pc.fill_null(pc.and_(pc.equal(fast.column("status"), "ok"), pc.is_valid(fast.column("score"))), False)
    rows = fast.select([c for c in dict.fromkeys(keep) if c in fast.column_names]).filter(ok).to_pylist()
    rows.sort(key=lambda r: (-r["score"], r["id"]))
    out = {r["id"]: r for r in rows[:n]}
    if per_model:
        seen: dict = {}
        for r in rows:
            key = (r["hardware"], r["devices"], tuple(r.get(k) for k in wl_cols),
                   tuple(r.get(f"model_{k}") for k in vary or []))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= per_model and r["id"] not in out:
                out[r["id"]] = r
    return out


def columns(ctx: dict) -> list[str]:
    """Every column of results.parquet, in order."""
    if ctx.get("kind", "train") != "train":
        return serving_columns(ctx)
    inputs = ["id", "index", "hardware", "devices", "seq_len", "global_batch"]
    inputs += [f"model_{k}" for k in ctx["vary_keys"]] + ["total_params_B", "activated_params_B"]
    inputs += list(PLAN_COLS) + list(ctx["option_keys"])
    full = ["full_status", "full_reason", "full_message"] + metric_cols("full_")
    return inputs + ["status", "reason", "message", "stage"] + metric_cols() + full


def to_frame(points: list[dict], fast, full: list, ctx: dict):
    """One row per point (generation order): inputs, status, fast metrics (``fast``: the fast tier's
    table lined up with ``points``), full metrics (``full``: the full tier's tables) and the measured
    error of the point's kind of configuration. Built column by column through Arrow: a column of
    integers (with gaps) is Int64, of booleans boolean, of numbers float64, else object."""
    import pandas as pd
    import pyarrow as pa

    cols = columns(ctx)
    moe = set(ctx.get("moe_shapes", ()))
    fracs = ctx.get("error_frac", {})
    serving = ctx.get("kind", "train") != "train"
    kinds: dict[int, str] = {}
    errs = []
    for p in points:
        kind = kinds.get(id(p["model"]))
        if kind is None:
            kind = kinds[id(p["model"])] = "serving" if serving else "moe" if _shape_key(p["model"]) in moe else "dense"
        errs.append(fracs.get(p["hardware"], {}).get(kind))
    full_names = [c for c in cols if c.startswith("full_")]
    full_t, _ = align(full, full_names, pa.array([p["id"] for p in points], pa.string()))
    data = {c: fast.column(c) for c in cols if not c.startswith("full_")}
    data.update({c: full_t.column(c) for c in full_names})
    data["error_frac"] = column(errs)
    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return pa.table(data).to_pandas(types_mapper=mapping.get)
