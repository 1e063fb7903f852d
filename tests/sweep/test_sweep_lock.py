"""Sweep folders against data loss: one sweep per --out at a time (flock on OUT/.lock), SIGINT/SIGTERM
end a sweep cleanly with the resume command, pool workers die with their parent, existing stores are
never overwritten without --resume, and --resume survives a missing or damaged chunk."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import CHUNKED, SMALL, chunk_rows, unfinished, write_spec

from cli_helpers import cli
from npusim.sweep.run import run_sweep
from npusim.sweep.store import LOCK_FILE

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
SPEC = {**CHUNKED, "name": "lock"}
"""About 6,000 points in chunks of 40 (as in test_sweep_resume): a few seconds, so signals land mid-sweep."""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and flock")


def _default_sigint() -> None:
    """Give the sweep the default SIGINT handling even when the test runner was started as a
    background job (which ignores SIGINT, and an ignored signal stays ignored across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(spec: Path, out: Path, workers: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "npusim.cli", "sweep", str(spec), "--out", str(out), "--workers", str(workers)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=_default_sigint)


def _wait_for_chunks(proc: subprocess.Popen, out: Path, n: int) -> None:
    """Wait until the running sweep has written ``n`` fast-tier chunks (so it holds the lock)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "chunks").glob("fast-*.parquet"))) >= n:
            return
        time.sleep(0.005)
    raise AssertionError(f"the sweep ended (rc {proc.poll()}) before writing {n} chunks: make SPEC bigger")


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    kids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _one_line(rc, err, *needles):
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (rc, err)
    assert err.startswith("npusim: error: ")
    for n in needles:
        assert n in err, (n, err)


def test_a_second_sweep_on_the_same_out_is_refused_and_the_first_completes(tmp_path, capsys):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "out"
    first = _start(spec, out)
    _wait_for_chunks(first, out, 2)
    for extra in ([], ["--resume"]):
        rc, _, err = cli(["sweep", str(spec), "--out", str(out), "--workers", "1", *extra], capsys)
        _one_line(rc, err, "--out", "another npusim sweep", f"pid {first.pid}", "(allowed: ")
    assert first.poll() is None, "the first sweep must still be running when the second is refused"
    stdout, stderr = first.communicate(timeout=120)
    noise = [line for line in stderr.splitlines() if not line.startswith(("npusim: fast tier:", "npusim: full tier:"))]
    assert first.returncode == 0 and noise == [], stderr  # progress lines (every 10 s off a terminal) only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fast"]["reused"] == 0 and summary["fast"]["evaluated"] == summary["points"]
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == summary["points"] and frame["id"].is_unique and not frame["status"].isna().any()
    assert not list((out / "chunks").glob("fast-*.parquet"))  # merged into results.parquet, not kept twice
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path, capsys):
    spec = write_spec(tmp_path, SMALL)
    out = tmp_path / "out"
    out.mkdir()
    hold = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d' % os.getpid()); print('locked', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    rc, _, err = cli(["sweep", str(spec), "--out", str(out), "--workers", "1"], capsys)
    _one_line(rc, err, "another npusim sweep", f"pid {holder.pid}")
    holder.kill()
    holder.wait(timeout=10)
    assert (out / LOCK_FILE).exists()  # the stale file stays; the kernel dropped the lock
    rc, _, err = cli(["sweep", str(spec), "--out", str(out), "--workers", "1"], capsys)
    assert rc == 0, err


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_keeps_the_chunks_and_prints_the_resume_command(tmp_path, sig, code):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "out"
    proc = _start(spec, out, workers=2)
    _wait_for_chunks(proc, out, 3)
    workers = _children(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, (proc.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"npusim: interrupted by {signal.Signals(sig).name}: ")
    assert lines[0].endswith(f"resume with: npusim sweep {spec} --out {out} --resume"), lines[0]
    chunks = sorted((out / "chunks").glob("fast-*.parquet"))
    assert len(chunks) >= 3 and f"{len(chunks)} finished chunks kept" in lines[0]
    rows = [r for c in chunks for r in chunk_rows(c)]  # every kept chunk is whole
    assert all(r["id"] for r in rows) and len(rows) == len({r["id"] for r in rows})
    assert not (out / "ranked.csv").exists() and not list(out.rglob("*.tmp"))
    assert workers and not [w for w in workers if _alive(w)], "pool workers outlived the sweep"


def test_pool_workers_die_with_a_killed_parent(tmp_path):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "out"
    proc = _start(spec, out, workers=2)
    _wait_for_chunks(proc, out, 2)
    workers = _children(proc.pid)
    assert workers
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)], "a worker outlived its parent by more than 5 s"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished SMALL sweep (about 300 points) and its ranked.csv."""
    tmp = tmp_path_factory.mktemp("finished")
    spec = write_spec(tmp, SMALL)
    run_sweep(spec, tmp / "out", workers=1)
    return spec, tmp / "out"


def test_resuming_a_finished_sweep_reads_results_parquet(finished, tmp_path):
    import shutil

    spec, done = finished
    out = tmp_path / "out"
    shutil.copytree(done, out)
    s = run_sweep(spec, out, workers=1, resume=True)
    assert s["fast"]["evaluated"] == 0 and s["fast"]["reused"] == s["points"] and s["full"]["simulated"] == 0
    assert (out / "ranked.csv").read_bytes() == (done / "ranked.csv").read_bytes()
    assert (out / "shapes.csv").read_bytes() == (done / "shapes.csv").read_bytes()


def test_a_missing_middle_chunk_never_makes_resume_overwrite_a_chunk(finished, tmp_path):
    spec, done = finished
    out = unfinished(done, tmp_path / "out", spec)
    chunks = sorted((out / "chunks").glob("fast-*.parquet"))
    missing = chunks[3]
    lost = len(chunk_rows(missing))
    missing.unlink()
    s = run_sweep(spec, out, workers=1, resume=True)
    assert s["fast"]["evaluated"] == lost and s["fast"]["reused"] == s["points"] - lost
    assert not list((out / "chunks").iterdir())  # merged into results.parquet at the end
    assert (out / "ranked.csv").read_bytes() == (done / "ranked.csv").read_bytes()


def test_a_new_chunk_is_numbered_above_every_chunk_on_disk(tmp_path):
    from npusim.sweep.store import ChunkStore

    store = ChunkStore(tmp_path, "fast")
    paths = [store.write([{"id": f"p{i}", "index": i}]) for i in range(5)]
    paths[3].unlink()
    paths[4].rename(paths[4].with_name(paths[4].name + ".damaged"))
    again = ChunkStore(tmp_path, "fast")
    assert again.write([{"id": "q", "index": 9}]).name == "fast-000005.parquet"
    assert set(again.read()) == {"p0", "p1", "p2", "q"}


def _parquet_bytes(tmp_path) -> bytes:
    """A valid Parquet file whose rows have no id column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"mfu": [0.4]}), tmp_path / "noid.parquet")
    return (tmp_path / "noid.parquet").read_bytes()


@pytest.mark.parametrize("damage", [b"{not json\n", b"\xff\xfe\x00garbage", b"PAR1\x00\x00PAR1", "no id"])
def test_a_damaged_chunk_is_reported_and_recomputed(finished, tmp_path, capsys, damage):
    spec, done = finished
    out = unfinished(done, tmp_path / "out", spec)
    damage = _parquet_bytes(tmp_path) if damage == "no id" else damage
    bad = out / "chunks" / "fast-000002.parquet"
    lost = len(chunk_rows(bad))
    bad.write_bytes(damage)
    rc, stdout, err = cli(["sweep", str(spec), "--out", str(out), "--workers", "1", "--resume", "--json"], capsys)
    assert rc == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(bad) in lines[0] and "unreadable" in lines[0] and "recomputed" in lines[0], lines[0]
    assert json.loads(stdout)["fast"]["evaluated"] == lost
    assert (out / "chunks" / "fast-000002.parquet.damaged").read_bytes() == damage  # kept for inspection
    assert (out / "ranked.csv").read_bytes() == (done / "ranked.csv").read_bytes()
    rc, _, err = cli(["sweep", str(spec), "--out", str(out), "--workers", "1", "--resume"], capsys)
    assert rc == 0 and err == ""  # reported once: the damaged file is set aside


@pytest.mark.parametrize("keep,resume,needles", [
    (["results.parquet"], False, ("already holds a sweep", "results.parquet", "--resume")),
    (["results.parquet", "ranked.csv", "summary.json", "spec.resolved.json"], False, ("already holds a sweep", "--resume")),
    (["spec.resolved.json"], False, ("already holds a sweep", "--resume")),
    (["results.parquet"], True, ("not a resumable sweep", "another --out")),
])
def test_an_existing_store_is_never_overwritten_without_resume(finished, tmp_path, capsys, keep, resume, needles):
    spec, done = finished
    out = tmp_path / "out"
    out.mkdir()
    for name in keep:
        (out / name).write_bytes((done / name).read_bytes())
    before = {name: (out / name).read_bytes() for name in keep}
    rc, _, err = cli(["sweep", str(spec), "--out", str(out), "--workers", "1"] + (["--resume"] if resume else []), capsys)
    _one_line(rc, err, *needles)
    assert {name: (out / name).read_bytes() for name in keep} == before
    assert not (out / "chunks").exists()
