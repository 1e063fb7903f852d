"""On-disk state of a sweep in ``--out``: append-only JSONL chunks, then results.parquet and ranked.csv.

Every finished batch is written as one new chunk file (written to a temporary name, flushed,
fsynced and renamed), so a killed sweep leaves only whole chunks behind; ``--resume`` reads them
and skips the point ids they hold. The final tables are built from the chunks at the end.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

CHUNK_DIR = "chunks"
SPEC_FILE = "spec.resolved.json"


class ChunkStore:
    """Chunk files of one tier (``fast`` or ``full``) under ``OUT/chunks``."""

    def __init__(self, out: Path, tier: str):
        self.dir = Path(out) / CHUNK_DIR
        self.tier = tier
        self.dir.mkdir(parents=True, exist_ok=True)
        self.next = len(list(self.dir.glob(f"{tier}-*.jsonl")))

    def write(self, rows: list[dict]) -> Path:
        """Write one batch of rows as a new chunk file, atomically."""
        path = self.dir / f"{self.tier}-{self.next:06d}.jsonl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.next += 1
        return path

    def read(self) -> dict[str, dict]:
        """Rows of every whole chunk of this tier, by point id (later chunks win)."""
        rows: dict[str, dict] = {}
        for path in sorted(self.dir.glob(f"{self.tier}-*.jsonl")):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        rows[row["id"]] = row
        return rows


def has_sweep(out: Path) -> bool:
    """True when ``out`` already holds chunks of a sweep."""
    d = Path(out) / CHUNK_DIR
    return d.is_dir() and any(d.glob("*.jsonl"))


def check_resume(out: Path, resolved: dict, resume: bool) -> None:
    """Refuse to mix sweeps: a non-empty --out needs --resume, and --resume the same spec."""
    from npusim.config.errors import ConfigError

    out = Path(out)
    if not has_sweep(out):
        return
    if not resume:
        raise ConfigError("--out", "out", str(out), "already holds a sweep", "--resume to continue it, or a new --out")
    spec_path = out / SPEC_FILE
    old = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    if old.get("key") != resolved["key"]:
        raise ConfigError("--resume", "spec", resolved.get("name"), f"differs from the sweep in {out} (key {old.get('key')} != {resolved['key']})",
                          "the same spec, or a new --out")


def write_spec(out: Path, resolved: dict) -> None:
    """Write the resolved spec next to the results (JSON, key-sorted)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / SPEC_FILE).write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")


def write_tables(out: Path, frame, ranked) -> None:
    """Write results.parquet (every point) and ranked.csv (feasible points, best first)."""
    frame.to_parquet(Path(out) / "results.parquet", index=False)
    ranked.to_csv(Path(out) / "ranked.csv", index=False, lineterminator="\n")
