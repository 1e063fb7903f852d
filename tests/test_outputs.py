"""Output policy (npusim/outputs.py): every writer checks its path before the work starts (one line,
exit 2) and writes atomically (a temporary name in the same folder, then os.replace), so a symlink
planted at the target is replaced, not written through, and no temporary file is left behind."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

import npusim.outputs as outputs
from npusim.validate.runs import published_path
from cli_helpers import cli

SIM = ["--model", "llama2-7b", "--hardware", "nvidia-a100-sxm-80g", "--devices", "8", "--plan", "tp=8",
       "--seq-len", "2048", "--global-batch", "8"]
CALIBRATION = Path(__file__).resolve().parents[1] / "npusim" / "data" / "calibration" / "h200"
SMALL_SPEC = {
    "name": "outputs", "hardware": "atlas-800t-a2", "devices": [16],
    "workload": {"seq_len": 2048, "global_batch": 32},
    "model": {"base": "llama2-7b"},
    "plan": {"auto": True, "cp": [1], "vpp": [1], "recompute": ["none"]},
    "objective": {"metric": "mfu"}, "tiers": {"full_top": 2, "batch_size": 40},
}


def _runs(tmp: Path) -> Path:
    """Two published dense A100 run records (fast to predict)."""
    lines = published_path().read_text(encoding="utf-8").splitlines()
    path = tmp / "runs.csv"
    path.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ln.split(",", 1)[0] in ("V001", "V002")]) + "\n")
    return path


def _spec(tmp: Path) -> Path:
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(SMALL_SPEC, sort_keys=False))
    return path


# Every writer: (flag it names, file or folder, argv for an output path, suffix of a good file name).
WRITERS = {
    "simulate --trace": ("--trace", "file", lambda t, p: ["simulate", *SIM, "--trace", p], ".json"),
    "trace --out": ("--out", "file", lambda t, p: ["trace", *SIM, "--out", p], ".json"),
    "plot gantt --out": ("--out", "file", lambda t, p: ["plot", "gantt", *SIM, "--out", p], ".svg"),
    "plot sweep --out": ("--out", "file", lambda t, p: ["plot", "sweep", str(t / "results.csv"), "--out", p], ".png"),
    "plot validate --out": ("--out", "file", lambda t, p: ["plot", "validate", str(_runs(t)), "--out", p], ".png"),
    "validate --plot": ("--plot", "file", lambda t, p: ["validate", str(_runs(t)), "--plot", p], ".svg"),
    "calibrate --out": ("--out", "file", lambda t, p: ["calibrate", "--hardware", "atlas-800t-a2", "--from",
                                                       str(CALIBRATION), "--out", p], ".yaml"),
    "sweep --out": ("--out", "dir", lambda t, p: ["sweep", str(_spec(t)), "--out", p, "--workers", "1"], ""),
    "microbench --out": ("--out", "dir", lambda t, p: ["microbench", "--out", p, "--quick", "--device", "cpu"], ""),
}


def _bad_path(tmp: Path, case: str, suffix: str, monkeypatch) -> tuple[str, str]:
    """A bad output path of kind ``case`` under ``tmp`` and the words the error must hold."""
    if case == "empty":
        return "", "is empty"
    if case == "existing folder":
        d = tmp / f"adir{suffix}"
        d.mkdir()
        return str(d), "is an existing folder"
    if case == "existing file":
        f = tmp / "afile"
        f.write_text("keep")
        return str(f), "is a file"
    if case == "missing parent":
        return str(tmp / "missing" / f"x{suffix}"), "folder does not exist"
    if case == "parent is a file":
        f = tmp / "plain"
        f.write_text("keep")
        return str(f / f"x{suffix}"), "is a file"
    if case == "unwritable parent":
        ro = tmp / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        if os.geteuid() == 0:  # root may write anywhere: make the check see what a user would
            real = outputs._writable
            monkeypatch.setattr(outputs, "_writable", lambda folder: Path(folder) != ro and real(folder))
        return str(ro / f"x{suffix}"), "not writable"
    raise AssertionError(case)


FILE_CASES = ["empty", "existing folder", "missing parent", "parent is a file", "unwritable parent"]
DIR_CASES = ["empty", "existing file", "parent is a file", "unwritable parent"]


@pytest.mark.parametrize("writer,case", [(w, c) for w, (_, kind, _, _) in WRITERS.items()
                                         for c in (FILE_CASES if kind == "file" else DIR_CASES)])
def test_bad_output_paths_are_refused_before_any_work(writer, case, tmp_path, capsys, monkeypatch):
    flag, kind, argv, suffix = WRITERS[writer]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a writer that fell back to "." would show up below
    path, needle = _bad_path(tmp_path, case, suffix, monkeypatch)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, out, err = cli(argv(work, path), capsys)
    assert rc == 2, (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"npusim: error: {flag}: "), lines[0]
    assert needle in lines[0] and "(allowed: " in lines[0], lines[0]
    assert repr(path) in lines[0] or path in lines[0], lines[0]
    created = sorted(p.name for p in tmp_path.rglob("*") if p.name not in ("runs.csv", "spec.yaml"))
    assert created == [n for n in before if n not in ("runs.csv", "spec.yaml")], "a refused command wrote something"


def _write_with(writer: str, tmp: Path, target: Path, capsys) -> None:
    """Produce ``target`` with one of the writers (CLI commands and the sweep store)."""
    if writer == "outputs.write_text":
        outputs.write_text(target, "new\n")
        return
    if writer == "sweep store":
        import pandas as pd

        from npusim.sweep.store import ChunkStore, write_spec, write_summary, write_tables

        frame = pd.DataFrame({"id": ["a", "b"], "mfu": [0.1, 0.2]})
        {"results.parquet": lambda: write_tables(tmp, frame, frame),
         "ranked.csv": lambda: write_tables(tmp, frame, frame),
         "summary.json": lambda: write_summary(tmp, {"points": 2}),
         "spec.resolved.json": lambda: write_spec(tmp, {"key": "k"})}[target.name]()
        ChunkStore(tmp, "fast").write([{"id": "a"}])
        return
    if writer == "microbench csv":
        from npusim.validate.microbench import write_csv

        write_csv(target, [])
        return
    _, _, argv, _ = WRITERS[writer]
    rc, _, err = cli(argv(tmp, str(target)), capsys)
    assert rc == 0, err


SYMLINK_CASES = [
    ("simulate --trace", "step.json"), ("trace --out", "step.json"), ("plot gantt --out", "gantt.svg"),
    ("validate --plot", "pv.svg"), ("calibrate --out", "cal.yaml"), ("outputs.write_text", "x.txt"),
    ("microbench csv", "gemm.csv"),
    ("sweep store", "results.parquet"), ("sweep store", "ranked.csv"), ("sweep store", "summary.json"),
    ("sweep store", "spec.resolved.json"),
]


@pytest.mark.parametrize("writer,name", SYMLINK_CASES)
def test_a_symlink_at_the_target_is_replaced_not_followed(writer, name, tmp_path, capsys):
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious\n")
    work = tmp_path / "work"
    work.mkdir()
    target = work / name
    target.symlink_to(victim)
    _write_with(writer, work, target, capsys)
    assert victim.read_text() == "precious\n", "the writer wrote through the planted symlink"
    assert not target.is_symlink() and target.is_file() and target.stat().st_size > 0
    assert not list(work.rglob(f"*{outputs.TMP_SUFFIX}"))


@pytest.mark.parametrize("case", ["cli writers", "sweep", "exception mid-write", "failing savefig"])
def test_atomic_writes_leave_no_temporary_files(case, tmp_path, capsys, monkeypatch):
    if case == "cli writers":
        for writer, name in [("trace --out", "a.json"), ("plot gantt --out", "g.png"), ("validate --plot", "v.pdf"),
                             ("calibrate --out", "c.yaml"), ("simulate --trace", "s.json")]:
            _write_with(writer, tmp_path, tmp_path / name, capsys)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["a.json", "c.yaml", "g.png", "runs.csv", "s.json", "v.pdf"]
        mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
        assert mode == 0o666 & ~_umask(), oct(mode)  # the umask, not mkstemp's 0600
        json.loads((tmp_path / "a.json").read_text())
        return
    if case == "sweep":
        rc, _, err = cli(WRITERS["sweep --out"][2](tmp_path, str(tmp_path / "out")), capsys)
        assert rc == 0, err
        leftovers = [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(outputs.TMP_SUFFIX)]
        assert not leftovers and (tmp_path / "out" / "results.parquet").is_file()
        return
    target = tmp_path / "keep.txt"
    target.write_text("old\n")
    if case == "exception mid-write":
        with pytest.raises(RuntimeError), outputs.atomic_open(target, "w") as f:
            f.write("half of the new ")
            raise RuntimeError("disk full")
    else:
        import matplotlib.figure

        def broken(self, fname, **kwargs):
            Path(fname).write_bytes(b"partial")
            raise OSError("no space left on device")

        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
        from npusim.report.plots import save_figure

        fig = matplotlib.figure.Figure()
        target = tmp_path / "keep.png"
        target.write_text("old\n")
        with pytest.raises(OSError):
            save_figure(fig, target)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"keep.txt", target.name})


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
