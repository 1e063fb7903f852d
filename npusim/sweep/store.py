"""On-disk state of a sweep in ``--out``: append-only Parquet chunks, then results.parquet and ranked.csv.

Every finished batch is written as one new Parquet chunk file (npusim.outputs: a fresh temporary
name, fsynced and renamed), so a killed sweep leaves only whole chunks behind; ``--resume`` reads
them and skips the point ids they hold. New chunks are numbered above every chunk on disk, so a gap
never makes a new chunk replace an old one; a chunk that cannot be read is reported, set aside as
``NAME.damaged`` and its points recomputed. At the end the chunks are merged into results.parquet
and removed (``compact``): from then on results.parquet is the store that ``--resume`` reads, so
no row is kept twice.
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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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

    def write(self, rows: list[dict]) -> Path:
        """Write one batch of rows as a new chunk file (numbered above every chunk on disk), atomically."""
        path = self._path(self.next)
        while path.exists() or path.with_name(path.name + DAMAGED).exists():  # never replace a chunk
            self.next += 1
            path = self._path(self.next)
        with atomic_path(path) as tmp:
            pq.write_table(rows_table(rows), tmp, compression="zstd")
        self.next += 1
        return path

    def paths(self) -> list[Path]:
        """Whole chunk files of this tier, in number order."""
        found = [(int(m.group(1)), self.dir / m.group(0)) for m in map(self.pattern.fullmatch, os.listdir(self.dir))
                 if m and not m.group(0).endswith(DAMAGED)]
        return [p for _, p in sorted(found)]

    def read(self) -> dict[str, dict]:
        """Rows of this tier by point id: those merged into results.parquet, then every readable chunk
        (later chunks win). A chunk that cannot be read is reported in one line, renamed
        ``NAME.damaged`` and skipped (its points are recomputed)."""
        rows = committed_rows(self.dir.parent, self.tier, self.warn)
        for path in self.paths():
            try:
                got = _read_chunk(path)
            except (OSError, ValueError, pa.ArrowException) as e:
                reason = " ".join(str(e).split())[:120]
                self.warn(f"{path}: unreadable sweep chunk ({reason}); its points are recomputed")
                with contextlib.suppress(OSError):
                    os.replace(path, path.with_name(path.name + DAMAGED))
                continue
            for row in got:
                rows[row["id"]] = row
        return rows


    def compact(self) -> None:
        """Remove this tier's chunk files (called once results.parquet holds their rows)."""
        for path in self.paths():
            with contextlib.suppress(OSError):
                path.unlink()


def rows_table(rows: list[dict]) -> pa.Table:
    """A batch of rows as an Arrow table: one column per key (first-seen order), None as null."""
    keys = dict.fromkeys(itertools.chain.from_iterable(rows))
    return pa.table({k: [r.get(k) for r in rows] for k in keys})


def _read_chunk(path: Path) -> list[dict]:
    """Rows of one chunk file; ValueError when it has no string ``id`` column or a row lacks an id."""
    table = pq.read_table(path)
    if "id" not in table.column_names or not pa.types.is_string(table.schema.field("id").type):
        raise ValueError("no string id column")
    rows = table.to_pylist()
    if any(r["id"] is None for r in rows):
        raise ValueError("a row without an id")
    return rows


def committed_rows(out: Path, tier: str, warn: Callable[[str], None] = _warn) -> dict[str, dict]:
    """Rows of one tier already merged into ``out/results.parquet`` (by id): the fast tier's columns of
    every row with a status, the full tier's of every row with a ``full_status``; an unreadable file
    is reported and nothing is taken from it (its points are recomputed)."""
    path = Path(out) / RESULTS
    if not path.is_file():
        return {}
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        warn(f"{path}: unreadable ({' '.join(str(e).split())[:120]}); its points are recomputed")
        return {}
    names = [n for n in table.column_names if n not in DERIVED]
    full = [n for n in names if n.startswith(FULL_PREFIX)]
    keep = ["id"] + full if tier == "full" else [n for n in names if n not in full]
    flag = "full_status" if tier == "full" else "status"
    if flag not in names:
        return {}
    table = table.select(keep)
    table = table.filter(pc.is_valid(table.column(flag)))
    return {r["id"]: r for r in _plain(table).to_pylist()}


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns decoded (rows read back as plain values)."""
    cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.table(dict(zip(table.column_names, cols)))


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
        ranked.to_csv(tmp, index=False, lineterminator="\n")
    if shapes is not None:
        with atomic_path(Path(out) / "shapes.csv") as tmp:
            shapes.to_csv(tmp, index=False, lineterminator="\n")
