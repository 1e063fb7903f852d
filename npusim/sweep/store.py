"""On-disk state of a sweep in ``--out``: append-only Parquet chunks, then results.parquet and ranked.csv.

Every finished batch is written as one new Parquet chunk file (npusim.outputs: a fresh temporary
name, fsynced and renamed), so a killed sweep leaves only whole chunks behind; ``--resume`` reads
them and skips the point ids they hold. New chunks are numbered above every chunk on disk, so a gap
never makes a new chunk replace an old one; a chunk that cannot be read is reported, set aside as
``NAME.damaged`` and its points recomputed. At the end the chunks are merged into results.parquet
and removed (``compact``): from then on results.parquet is the store that ``--resume`` reads, so
no row is kept twice. Batches travel and are kept as Arrow tables (``rows_table`` runs in the
workers); ``stack`` and ``latest`` put the tables of a tier together in the order of the points.
pyarrow is imported where a function needs it, so ``--dry-run`` never loads it.
A run holds ``OUT/.lock`` (``flock``) so two sweeps never share a folder; the kernel drops the lock
when its holder dies, so a stale file never blocks.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable

from npusim.config.errors import ConfigError
from npusim.outputs import atomic_path, remove_temporaries, write_text

CHUNK_DIR = "chunks"
CHUNK_SUFFIX = ".parquet"
RESULTS = "results.parquet"
FULL_PREFIX = "full_"
"""Columns of the full tier in results.parquet (the rest, but the derived ``error_frac``, are the fast tier's)."""
DERIVED = ("error_frac",)
"""Columns results.parquet adds to the tiers' rows (recomputed from the spec, never read back)."""
SPEC_FILE = "spec.resolved.json"
LOCK_FILE = ".lock"
DAMAGED = ".damaged"
"""Suffix given to a chunk file that could not be read (it is kept for inspection, never read again)."""
STORE_FILES = ("results.parquet", "ranked.csv", "shapes.csv", "summary.json", SPEC_FILE)
"""Files of a sweep folder besides ``chunks/``; any of them makes the folder a sweep store."""


_held_locks: set[int] = set()
"""File descriptors of the sweep locks this process holds (forked pool workers close their copies)."""


def close_inherited_locks() -> None:
    """In a forked worker: close the copies of the parent's lock descriptors, so the lock goes when the
    parent goes (it stays held by the parent's own descriptor)."""
    for fd in list(_held_locks):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


def _warn(line: str) -> None:
    print(f"npusim: warning: {line}", file=sys.stderr, flush=True)


class ChunkStore:
    """Chunk files of one tier (``fast`` or ``full``) under ``OUT/chunks``."""

    def __init__(self, out: Path, tier: str, warn: Callable[[str], None] = _warn):
        self.dir = Path(out) / CHUNK_DIR
        self.tier = tier
        self.warn = warn
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pattern = re.compile(rf"{re.escape(tier)}-(\d+){re.escape(CHUNK_SUFFIX)}(?:{re.escape(DAMAGED)})?")
        numbers = [int(m.group(1)) for m in map(self.pattern.fullmatch, os.listdir(self.dir)) if m]
        self.next = max(numbers, default=-1) + 1

    def _path(self, n: int) -> Path:
        return self.dir / f"{self.tier}-{n:06d}{CHUNK_SUFFIX}"

    def write(self, rows) -> Path:
        """Write one batch (rows, or their ``rows_table``) as a new chunk file (numbered above every chunk
        on disk), atomically."""
        import pyarrow.parquet as pq

        path = self._path(self.next)
        while path.exists() or path.with_name(path.name + DAMAGED).exists():  # never replace a chunk
            self.next += 1
            path = self._path(self.next)
        with atomic_path(path) as tmp:
            pq.write_table(rows if not isinstance(rows, list) else rows_table(rows), tmp, compression="lz4")
        self.next += 1
        return path

    def paths(self) -> list[Path]:
        """Whole chunk files of this tier, in number order."""
        found = [(int(m.group(1)), self.dir / m.group(0)) for m in map(self.pattern.fullmatch, os.listdir(self.dir))
                 if m and not m.group(0).endswith(DAMAGED)]
        return [p for _, p in sorted(found)]

    def tables(self) -> list:
        """Arrow tables of this tier's stored rows: those merged into results.parquet, then every readable
        chunk in number order (for a point stored twice, the later row wins). A chunk that cannot be
        read is reported in one line, renamed ``NAME.damaged`` and skipped (its points are recomputed)."""
        import pyarrow as pa

        committed = committed_table(self.dir.parent, self.tier, self.warn)
        out = [] if committed is None else [committed]
        for path in self.paths():
            try:
                out.append(_read_chunk(path))
            except (OSError, ValueError, pa.ArrowException) as e:
                reason = " ".join(str(e).split())[:120]
                self.warn(f"{path}: unreadable sweep chunk ({reason}); its points are recomputed")
                with contextlib.suppress(OSError):
                    os.replace(path, path.with_name(path.name + DAMAGED))
        return out

    def read(self) -> dict[str, dict]:
        """Rows of this tier by point id (``tables``; later rows win)."""
        return {r["id"]: r for t in self.tables() for r in t.to_pylist()}

    def compact(self) -> None:
        """Remove this tier's chunk files (called once results.parquet holds their rows)."""
        for path in self.paths():
            with contextlib.suppress(OSError):
                path.unlink()


def rows_table(rows: list[dict]):
    """A batch of rows as an Arrow table: one column per key (first-seen order), None as null."""
    import pyarrow as pa

    keys = dict.fromkeys(itertools.chain.from_iterable(rows))
    return pa.table({k: [r.get(k) for r in rows] for k in keys})


def _read_chunk(path: Path):
    """The table of one chunk file; ValueError when it has no string ``id`` column or a row lacks an id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "id" not in table.column_names or not pa.types.is_string(table.schema.field("id").type):
        raise ValueError("no string id column")
    if table.column("id").null_count:
        raise ValueError("a row without an id")
    return table


def committed_table(out: Path, tier: str, warn: Callable[[str], None] = _warn):
    """The table of one tier's rows already merged into ``out/results.parquet``: the fast tier's columns
    of every row with a status, the full tier's of every row with a ``full_status``; None when there
    are none or the file is unreadable (reported; its points are recomputed)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(out) / RESULTS
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        warn(f"{path}: unreadable ({' '.join(str(e).split())[:120]}); its points are recomputed")
        return None
    names = [n for n in table.column_names if n not in DERIVED]
    full = [n for n in names if n.startswith(FULL_PREFIX)]
    keep = ["id"] + full if tier == "full" else [n for n in names if n not in full]
    flag = "full_status" if tier == "full" else "status"
    if flag not in names:
        return None
    table = table.select(keep)
    return _plain(table.filter(pc.is_valid(table.column(flag))))


def committed_rows(out: Path, tier: str, warn: Callable[[str], None] = _warn) -> dict[str, dict]:
    """Rows of one tier already merged into ``out/results.parquet`` by id (``committed_table``)."""
    table = committed_table(out, tier, warn)
    return {} if table is None else {r["id"]: r for r in table.to_pylist()}


def _plain(table):
    """Dictionary-encoded columns decoded and large strings as strings (rows read back as the plain
    values ``rows_table`` stores)."""
    import pyarrow as pa

    def plain(c):
        c = c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c
        return c.cast(pa.string()) if pa.types.is_large_string(c.type) else c

    return pa.table({n: plain(c) for n, c in zip(table.column_names, table.columns)})


def column(values: list):
    """An Arrow array of one column's Python values (numbers of mixed int and float as float64; any other
    mix as text)."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(values, type=pa.float64()) if all(isinstance(v, (int, float)) or v is None for v in values) \
            else pa.array([None if v is None else str(v) for v in values])


def stack(tables: list, names: list[str]):
    """The tables one under another with the columns ``names`` (nulls where a table lacks one), each
    column of the type ``column`` gives its values: one type (beside nulls) as it is, integers with
    floats as float64, any other mix from the Python values."""
    import pyarrow as pa

    out = {}
    by_name = [dict(zip(t.column_names, t.columns)) for t in tables]  # a table's column_names is a new list per call
    for name in names:
        parts = [cols[name] if name in cols else pa.nulls(t.num_rows) for t, cols in zip(tables, by_name)]
        types = {p.type for p in parts} - {pa.null()}
        if len(types) > 1 and types <= {pa.int64(), pa.float64()}:
            types = {pa.float64()}
        if len(types) > 1:
            out[name] = column([v for p in parts for v in p.to_pylist()])
            continue
        kind = types.pop() if types else pa.null()
        chunks = [c for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
        out[name] = pa.chunked_array([c if c.type == kind else c.cast(kind) for c in chunks], type=kind)
    return pa.table(out) if out else pa.table({"id": pa.array([], pa.string())})


def align(tables: list, names: list[str], ids):
    """(one row per id of ``ids`` (an Arrow string array, the points in order) with the columns
    ``names`` (``stack``), taken from the last row of ``tables`` with that id, nulls where none has it;
    a numpy bool array: the ids found)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table = stack(tables, list(dict.fromkeys(["id", *names])))
    pos = pc.fill_null(pc.index_in(table.column("id"), value_set=ids), -1).to_numpy() if table.num_rows \
        else np.zeros(0, dtype=np.int64)
    rows = np.flatnonzero(pos >= 0)
    last = np.full(len(ids), -1, dtype=np.int64)
    if len(rows):
        found, first = np.unique(pos[rows][::-1], return_index=True)  # the last row of each id
        last[found] = rows[::-1][first]
    table = table.select(names)
    found = last >= 0
    starts = np.flatnonzero(np.diff(last, prepend=-2) != 1)
    if len(last) and found.all() and len(starts) <= max(1, len(last) // MAX_RUN_SHARE):
        # the rows are already in order but for a few runs (batches stacked in order, a few revisited
        # points): zero-copy slices instead of a gather of every value
        ends = np.append(starts[1:], len(last))
        parts = [table.slice(last[a], b - a) for a, b in zip(starts, ends)]
        return pa.concat_tables(parts).combine_chunks(), found
    table = table.combine_chunks()  # one chunk per column: take on hundreds of chunks is ~4x slower
    return table.take(pa.array(last, mask=~found)), found


MAX_RUN_SHARE = 50
"""``align`` slices instead of gathering when the rows form at most one run per this many rows."""


def store_contents(out: Path) -> list[str]:
    """Names of the sweep files ``out`` already holds (``chunks/`` when it holds any chunk)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [name for name in STORE_FILES if (out / name).exists()]
    d = out / CHUNK_DIR
    if d.is_dir() and any(d.iterdir()):
        found.append(CHUNK_DIR + "/")
    return found


def has_sweep(out: Path) -> bool:
    """True when ``out`` already holds files of a sweep (chunks, tables, summary or resolved spec)."""
    return bool(store_contents(out))


def check_resume(out: Path, resolved: dict, resume: bool) -> None:
    """Refuse to overwrite or mix sweeps: a folder holding any sweep file needs --resume, and --resume
    needs the same spec (its resolved spec on disk with the same key)."""
    out = Path(out)
    present = store_contents(out)
    if not present:
        return
    if not resume:
        raise ConfigError("--out", "out", str(out), f"already holds a sweep ({', '.join(present)}); not overwritten",
                          "--resume to continue it, or another --out folder")
    spec_path = out / SPEC_FILE
    if not spec_path.is_file():
        raise ConfigError("--resume", "out", str(out), f"holds {', '.join(present)} but no {SPEC_FILE}, "
                          "so it is not a resumable sweep", "another --out folder")
    try:
        old = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise ConfigError("--resume", SPEC_FILE, str(spec_path), "cannot be read", "another --out folder") from None
    key = old.get("key") if isinstance(old, dict) else None
    if key != resolved["key"]:
        raise ConfigError("--resume", "spec", resolved.get("name"), f"differs from the sweep in {out} (key {key} != {resolved['key']})",
                          "the same spec, or a new --out")
    remove_temporaries(out)  # writes cut short by a kill: only their temporary files remain


@contextlib.contextmanager
def locked(out: Path):
    """Hold ``OUT/.lock`` (an exclusive, non-blocking ``flock``) for the block; another sweep holding it
    is a one-line ConfigError. The file stays; the lock goes with the process (also on SIGKILL)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise ConfigError("--out", "out", str(out), f"cannot open {path}: {e.strerror}",
                          "a folder where npusim may create .lock") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise ConfigError("--out", "out", str(out), f"another npusim sweep{who} is running in this folder",
                              "wait for it to finish, or another --out folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held_locks.add(fd)
        try:
            yield
        except BaseException:  # interrupted mid-write: drop its temporary file while still holding the lock
            remove_temporaries(out)
            raise
    finally:
        _held_locks.discard(fd)
        os.close(fd)


def write_spec(out: Path, resolved: dict) -> None:
    """Write the resolved spec next to the results (JSON, key-sorted), atomically."""
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text(Path(out) / SPEC_FILE, json.dumps(resolved, indent=2, sort_keys=True) + "\n")


def write_summary(out: Path, summary: dict) -> None:
    """Write summary.json, atomically."""
    write_text(Path(out) / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")


def compact_frame(frame):
    """The results frame with its repetitive text columns (status, reasons, hardware, messages of
    infeasible points...) as categoricals, stored dictionary-encoded in Parquet."""
    from pandas import CategoricalDtype
    from pandas.api.types import infer_dtype

    cats = {}
    for c in frame.columns:
        if c != "id" and not isinstance(frame[c].dtype, CategoricalDtype) and infer_dtype(frame[c], skipna=True) == "string":
            if frame[c].nunique() <= max(1, frame[c].count() // 4):
                cats[c] = "category"
    return frame.astype(cats)


def write_tables(out: Path, frame, ranked, shapes=None) -> None:
    """Write results.parquet (every point), ranked.csv (feasible points, best first) and shapes.csv
    (each model shape's best plan), each atomically."""
    with atomic_path(Path(out) / RESULTS) as tmp:
        compact_frame(frame).to_parquet(tmp, index=False, compression="zstd")
    with atomic_path(Path(out) / "ranked.csv") as tmp:
        write_csv(ranked, tmp)
    if shapes is not None:
        with atomic_path(Path(out) / "shapes.csv") as tmp:
            write_csv(shapes, tmp)


def write_csv(frame, path: Path) -> None:
    """``frame`` as CSV through Arrow's writer (about 10x faster than pandas' on a 70,000-row
    ranking; the same numbers, shortest round-trip floats, strings quoted only where needed,
    booleans as true/false)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = pa.Table.from_pandas(frame, preserve_index=False)
    # dictionary-encoded (categorical) columns are written as their values
    table = table.cast(pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                                  for f in table.schema]))
    pcsv.write_csv(table, path, pcsv.WriteOptions(quoting_style="needed"))
