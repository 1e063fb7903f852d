"""--resume after a SIGKILL: a real `python -m npusim.cli sweep` is killed once some chunks are on
disk; the resumed run reuses them and its ranked.csv equals an uninterrupted run's byte for byte."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweep_helpers import CHUNKED, chunk_rows, write_spec

from npusim.sweep.run import run_sweep

SPEC = {**CHUNKED, "name": "resume"}
"""About 6,000 points in chunks of 40: a few seconds of work, so a kill lands mid-sweep."""


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "killed"
    chunks = out / "chunks"
    cmd = [sys.executable, "-m", "npusim.cli", "sweep", str(spec), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if chunks.is_dir() and len(list(chunks.glob("fast-*.parquet"))) >= 5:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the sweep finished before it could be killed: make SPEC bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "ranked.csv").exists()
    done = sum(len(chunk_rows(p)) for p in chunks.glob("fast-*.parquet"))
    assert done >= 5 * 40

    resumed = subprocess.run(cmd + ["--resume", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["fast"]["reused"] == done
    assert summary["fast"]["reused"] + summary["fast"]["evaluated"] == summary["points"]

    clean = run_sweep(spec, tmp_path / "clean", workers=1)
    assert clean["points"] == summary["points"] and clean["fast"]["reused"] == 0
    assert (out / "ranked.csv").read_bytes() == (Path(tmp_path / "clean") / "ranked.csv").read_bytes()
    assert not list(chunks.glob("*.tmp"))  # every chunk on disk is whole
