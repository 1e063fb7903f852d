"""Run a sweep: generate points, fast tier on all, full simulation on the best, rank, write, summarise."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from npusim.sweep.evaluate import PLAN_COLS, evaluate_fast, evaluate_full, metric_cols
from npusim.sweep.prune import REVISIT_FACTOR, cut_batches, revisit, stage_counts
from npusim.sweep.serving import SERVE_PLAN_COLS, WL_COLS, serving_columns
from npusim.sweep.store import ChunkStore, check_resume, locked, write_spec, write_summary, write_tables


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
           "max_batch": getattr(spec.workload, "max_batch", None),
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

    def update(self, rows: list[dict]) -> None:
        """Count a finished batch (and its best score)."""
        self.done += len(rows)
        for r in rows:
            sc = r.get("score", r.get("full_score"))
            if sc is not None and r.get("status", r.get("full_status")) == "ok" and (self.best is None or sc > self.best):
                self.best = sc
        if self.bar is not None:
            self.bar.update(len(rows))
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


def _run_tier(executor, fn, ctx: dict, store: ChunkStore, pending: list[dict], size: int, label: str,
              every: float | None = PROGRESS_EVERY_S) -> tuple[dict, float]:
    """Evaluate ``pending`` in batches, writing each finished batch; return (rows by id, wall seconds)."""
    t0 = time.perf_counter()
    rows: dict[str, dict] = {}
    bar = Progress(len(pending), label, every, ctx["objective"]["metric"])
    try:
        for _, batch_rows in executor.map(fn, ctx, _batches(pending, size, ctx.get("kind", "train"))):
            store.write(batch_rows)
            for r in batch_rows:
                rows[r["id"]] = r
            bar.update(batch_rows)
    finally:
        bar.close()
    return rows, time.perf_counter() - t0


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
    """The body of run_sweep, with ``out`` locked."""
    from npusim.sweep.executors import make_executor
    from npusim.sweep.report import rank, shapes, summarize

    check_resume(out, resolved, resume)
    write_spec(out, resolved)
    ids = {p["id"] for p in points}
    size = resolved["tiers"]["batch_size"]
    fast_store, full_store = ChunkStore(out, "fast"), ChunkStore(out, "full")
    fast_old = {k: v for k, v in fast_store.read().items() if k in ids}
    pending = [p for p in points if p["id"] not in fast_old]
    ex, finished = None, False
    try:
        fast_new, fast_s, full_new, full_s = {}, 0.0, {}, 0.0
        k = max(10, resolved["tiers"]["full_top"])
        if pending:
            ex = make_executor(executor, workers, address)
            fast_new, fast_s = _run_tier(ex, evaluate_fast, ctx, fast_store, pending, size, "fast tier",
                                         ctx.get("progress_every"))
        fast = {**fast_old, **fast_new}
        again = revisit(fast, points, REVISIT_FACTOR * k) if ctx["kind"] == "train" else []
        if again:  # the dominated siblings of the leaders: the top k then equals exhaustive search's
            ex = ex or make_executor(executor, workers, address)
            more, more_s = _run_tier(ex, evaluate_fast, {**ctx, "search": "exhaustive", "timed_stage": "revisited"}, fast_store, again, size,
                                     "fast tier (dominated siblings of the leaders)", ctx.get("progress_every"))
            fast_new, fast_s = {**fast_new, **more}, fast_s + more_s
            fast = {**fast_old, **fast_new}
        top = _full_candidates(fast, resolved["tiers"]["full_top"], resolved["tiers"]["full_per_model"],
                               ctx["vary_keys"], ctx["wl_cols"])
        full_old = {k: v for k, v in full_store.read().items() if k in top}
        by_id = {p["id"]: p for p in points}
        pending_full = [_for_full(by_id[i], fast[i], ctx) for i in top if i not in full_old]
        if pending_full:
            ex = ex or make_executor(executor, workers, address)
            full_new, full_s = _run_tier(ex, evaluate_full, ctx, full_store, pending_full,
                                         max(1, min(size, 8)), "full tier", ctx.get("progress_every"))
        full = {**full_old, **full_new}
        finished = True
    finally:
        if ex is not None:
            ex.close(abort=not finished)  # interrupted: stop the workers now, keep the chunks written
    frame = to_frame(points, fast, full, ctx)
    ranked = rank(frame)
    tokens = (resolved["model"].get("constraints") or {}).get("tokens")
    write_tables(out, frame, ranked, shapes(ranked, ctx["vary_keys"], ctx["wl_cols"], tokens))
    fast_store.compact()  # results.parquet now holds every row: the chunks would only duplicate it
    full_store.compact()
    timing = {"fast_new": len(fast_new), "fast_reused": len(fast_old), "fast_s": fast_s,
              "full_new": len(full_new), "full_reused": len(full_old), "full_s": full_s,
              "wall_s": time.perf_counter() - t_start, "executor": getattr(ex, "name", executor),
              "workers": getattr(ex, "workers", 1)}
    if ctx["kind"] == "train":
        timing["stages"] = stage_counts(frame["stage"].fillna("fast"))
    summary = summarize(resolved, frame, ranked, timing)
    write_summary(out, summary)
    return summary


def _for_full(p: dict, row: dict, ctx: dict) -> dict:
    """A point for the full tier; a serving point carries the batch and KV dtype its search found."""
    if ctx["kind"] == "train":
        return p
    return {**p, "found": {k: row[k] for k in ("batch", "kv_dtype", "bound")}}


def _full_candidates(fast: dict[str, dict], n: int, per_model: int = 0, vary: list | None = None,
                     wl_cols: list | None = None) -> list[str]:
    """Ids of the ``n`` best feasible fast-tier points (score descending, id ascending on ties), then
    the best ``per_model`` of every model variant x hardware x devices x workload not already in."""
    ok = [r for r in fast.values() if r["status"] == "ok" and r.get("score") is not None]
    ok.sort(key=lambda r: (-r["score"], r["id"]))
    out = [r["id"] for r in ok[:n]]
    if per_model:
        chosen, seen = set(out), {}
        for r in ok:
            key = (r["hardware"], r["devices"], tuple(r.get(k) for k in wl_cols or ["seq_len", "global_batch"]),
                   tuple(r.get(f"model_{k}") for k in vary or []))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= per_model and r["id"] not in chosen:
                out.append(r["id"])
                chosen.add(r["id"])
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


def to_frame(points: list[dict], fast: dict, full: dict, ctx: dict):
    """One row per point (generation order): inputs, status, fast metrics, full metrics, and the
    measured error of the point's kind of configuration. Built column by column through Arrow: a
    column of integers (with gaps) is Int64, of booleans boolean, of numbers float64, else object."""
    import pandas as pd
    import pyarrow as pa

    cols = columns(ctx) + ["error_frac"]
    moe = set(ctx.get("moe_shapes", ()))
    fracs = ctx.get("error_frac", {})
    serving = ctx.get("kind", "train") != "train"
    kinds: dict[int, str] = {}
    rows, errs = [], []
    for p in points:
        row = fast.get(p["id"]) or {"id": p["id"], "index": p["index"], "status": "error", "reason": "missing",
                                    "message": "no result"}
        extra = full.get(p["id"])
        rows.append({**row, **extra} if extra else row)
        kind = kinds.get(id(p["model"]))
        if kind is None:
            kind = kinds[id(p["model"])] = "serving" if serving else "moe" if _shape_key(p["model"]) in moe else "dense"
        errs.append(fracs.get(p["hardware"], {}).get(kind))
    data = {c: [r.get(c) for r in rows] for c in cols[:-1]}
    data["error_frac"] = errs
    table = pa.table({c: _column(v) for c, v in data.items()})
    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=mapping.get)


def _column(values: list):
    """An Arrow array of one column (numbers of mixed int and float as float64)."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(values, type=pa.float64()) if all(isinstance(v, (int, float)) or v is None for v in values) \
            else pa.array([None if v is None else str(v) for v in values])
