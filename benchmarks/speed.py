"""Speed benchmark of npusim: CLI wall and CPU time, in-process simulate() time, events per step, and
how the cost grows with device count, pipeline depth x micro-batches and layers.

Usage: ``python benchmarks/speed.py [--quick]``. Prints the tables and writes docs/speed.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "speed.md"
PANGU_PLAN = "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,a2a=hierarchical,ep_overlap=1"
"""The published Pangu Ultra MoE recipe (issue 13's speed target)."""
CLI_ARGS = ["simulate", "--model", "pangu-ultra-moe-718b", "--hardware", "atlas-800t-a2", "--devices", "6144",
            "--plan", PANGU_PLAN, "--micro-batch", "2", "--seq-len", "4096", "--global-batch", "1536", "--json"]
CLI_TARGET_S = 1.0
"""CPU seconds of the whole CLI run (issue 13)."""
INPROC_TARGET_S = 0.3


def timed_runs(fn, repeats: int, warmup: int = 1) -> tuple[float, float, float]:
    """(first, median, min) seconds of ``fn()``: ``warmup`` untimed-for-stats calls, then ``repeats``."""
    first = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        first = first if first is not None else time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return (first if first is not None else times[0]), statistics.median(times), min(times)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (also readable as plain text)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


# ---------------------------------------------------------------- (a) CLI wall time

def cli_command() -> list[str]:
    """The ``npusim`` console script on PATH, else ``python -m npusim.cli``."""
    exe = shutil.which("npusim")
    return [exe] if exe else [sys.executable, "-m", "npusim.cli"]


def run_quiet(cmd: list[str]) -> float:
    """Run a process; return its CPU seconds (user + system, children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_cli(repeats: int) -> list[list[str]]:
    """Wall and CPU time of whole processes: the CLI run, the bare import of npusim.cli, a bare
    interpreter."""
    cases = [("npusim simulate … --json  (" + cli_command()[0] + ")", cli_command() + CLI_ARGS)]
    direct = Path(sys.executable).with_name("npusim")
    if direct.exists() and str(direct) != cli_command()[0]:
        cases.append((f"same, console script without shim ({direct})", [str(direct)] + CLI_ARGS))
    cases += [("python -m npusim.cli simulate … --json", [sys.executable, "-m", "npusim.cli"] + CLI_ARGS),
              ('python -c "import npusim.cli"', [sys.executable, "-c", "import npusim.cli"]),
              ('python -c "pass"  (interpreter start-up)', [sys.executable, "-c", "pass"])]
    rows = []
    for label, cmd in cases:
        cpu: list[float] = []
        _, med, lo = timed_runs(lambda: cpu.append(run_quiet(cmd)), repeats)
        cpu_med = statistics.median(cpu[1:] or cpu)
        verdict = ("yes" if cpu_med <= CLI_TARGET_S else "NO") if "simulate" in label else ""
        rows.append([label, ms(med), ms(lo), ms(cpu_med), verdict])
    return rows


def heavy_imports(top: int = 5) -> list[list[str]]:
    """Top-level imports of the CLI run with the largest cumulative time (``python -X importtime``)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "npusim.cli"] + CLI_ARGS, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or parts[2].startswith("  "):
            continue
        try:
            found.append((int(parts[1]), parts[2].strip()))
        except ValueError:  # the header line
            continue
    return [[name, f"{us / 1e3:.1f}"] for us, name in sorted(found, reverse=True)[:top]]


# ---------------------------------------------------------------- (b), (c) in-process simulate()

def prepare(model: str, hw: str, devices: int, seq_len: int, global_batch: int, **plan_fields):
    """Load presets and build the inputs of simulate() (not timed)."""
    from npusim.config.hardware import load_profile
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan
    from npusim.config.workload import TrainWorkload

    return (load_model(model), load_profile(hw), make_plan(plan_fields),
            TrainWorkload(seq_len=seq_len, global_batch=global_batch), devices)


def pangu(devices: int, global_batch: int, pp: int = 16, layers: int | None = None):
    from npusim.config.model import load_model

    inputs = prepare("pangu-ultra-moe-718b", "atlas-800t-a2", devices, 4096, global_batch, tp=8, pp=pp, vpp=2, ep=4,
                     tp_extend_ep=True, sp=True, zero=1, micro_batch=2, a2a="hierarchical", ep_overlap=True)
    if layers is not None:
        inputs = (load_model("pangu-ultra-moe-718b", layers=layers),) + inputs[1:]
    return inputs


def bench_case(label: str, make_inputs, repeats: int) -> list[str]:
    """One row: time per simulate() call and what it predicted, or the error it raised."""
    from npusim.simulate import simulate

    try:
        inputs = make_inputs()
        res = simulate(*inputs)
        cpu: list[float] = []

        def once():
            c0 = time.process_time()
            simulate(*inputs)
            cpu.append(time.process_time() - c0)

        first, med, lo = timed_runs(once, repeats, warmup=0)
    except Exception as e:  # noqa: BLE001 - reported in the table instead of crashing
        return [label, "error", "", "", "", "", "", f"{type(e).__name__}: {e}"]
    m = res.config["micro_batches"]
    x = res.extra
    events = f"{x.get('engine_unit_simulations', 0)} / {x.get('engine_op_events', 0)} / {x.get('engine_pipeline_units', 0)}"
    return [label, ms(med), ms(lo), ms(statistics.median(cpu)), events, f"{res.step_time_s:.3f}",
            f"{res.mfu * 100:.1f}", f"{m} micro-batch" + ("es" if m != 1 else "")]


def bench_configs(repeats: int) -> list[list[str]]:
    cases = [
        ("pangu-ultra-moe-718b, 6144 × atlas-800t-a2 (CLI config)", lambda: pangu(6144, 1536)),
        ("llama2-7b, 8 × nvidia-a100-sxm-80g, tp=8, seq 2048, gb 8, mb 1",
         lambda: prepare("llama2-7b", "nvidia-a100-sxm-80g", 8, 2048, 8, tp=8, micro_batch=1)),
        ("gpt3-175b, 1024 × nvidia-a100-sxm-80g, tp=8, pp=16 (dp=8), seq 2048, gb 1536, mb 1",
         lambda: prepare("gpt3-175b", "nvidia-a100-sxm-80g", 1024, 2048, 1536, tp=8, pp=16, micro_batch=1)),
    ]
    return [bench_case(label, make, repeats) for label, make in cases]


def bench_scaling(repeats: int) -> list[list[str]]:
    """Pangu Ultra MoE with 16 micro-batches at every size; llama3-8b pure DP, one sequence per device."""
    rows = []
    for devices in (128, 512, 1024, 6144, 24576, 98304):
        dp = devices // 128
        rows.append(bench_case(f"pangu-ultra-moe-718b, {devices} dev (dp={dp}, gb={dp * 2 * 16})",
                               lambda d=devices, g=dp * 2 * 16: pangu(d, g), repeats))
    for devices in (64, 1024, 8192, 65536, 100000):
        rows.append(bench_case(f"llama3-8b, {devices} × nvidia-h100-sxm-80g (dp={devices}, gb={devices})",
                               lambda d=devices: prepare("llama3-8b", "nvidia-h100-sxm-80g", d, 8192, d,
                                                         tp=1, pp=1, micro_batch=1), repeats))
    return rows


def bench_growth(repeats: int) -> list[list[str]]:
    """Pangu Ultra MoE (published recipe): cost against pp x micro-batches and against layers."""
    rows = []
    for pp, m in ((4, 8), (8, 16), (16, 16), (16, 32), (16, 64)):
        dp = 6144 // (8 * pp)
        gb = dp * 2 * m
        rows.append(bench_case(f"pp={pp}, {m} micro-batches (dp={dp}, gb={gb})", lambda p=pp, g=gb: pangu(6144, g, p),
                               repeats))
    for layers in (32, 61, 96, 128):
        rows.append(bench_case(f"{layers} layers, pp=16, 16 micro-batches", lambda n=layers: pangu(6144, 1536, 16, n),
                               repeats))
    return rows


# ---------------------------------------------------------------- report

SIM_HEADER = ["configuration", "median ms / simulate()", "min ms", "CPU ms", "unit sims / op events / pipeline units",
              "step time s", "MFU %", "note"]


def machine() -> str:
    return (f"{platform.platform()}, {platform.machine()}, Python {platform.python_version()} "
            f"({platform.python_implementation()}), os.cpu_count() = {os.cpu_count()}")


def write_doc(quick: bool, reps: dict, cli_rows, imports, cfg_rows, scale_rows, growth_rows) -> str:
    cmd = "python benchmarks/speed.py" + (" --quick" if quick else "")
    parts = [
        "# npusim speed", "",
        "Written by `benchmarks/speed.py`; do not edit by hand.", "",
        f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- Machine: {machine()}",
        f"- Rerun: `{cmd}` (from the repository root)", "",
        "## (a) CLI wall time (whole process, start-up included)", "",
        f"Median and min wall time of {reps['cli']} runs after 1 warm-up, and the median CPU time (user + "
        f"system of the child process; the machine is shared, so CPU time is the steadier number). Target: the "
        f"CLI simulate run ≤ {CLI_TARGET_S} s CPU. The simulate command is `{shlex.join(['npusim'] + CLI_ARGS)}`.", "",
        table(["command", "median ms", "min ms", "median CPU ms", f"≤ {CLI_TARGET_S} s CPU"], cli_rows), "",
        "Heaviest top-level imports of the CLI simulate run (`python -X importtime`, cumulative, one run):", "",
        table(["module", "cumulative ms"], imports), "",
        "## (b) In-process time of `simulate()` per configuration", "",
        f"Presets loaded beforehand (load time excluded); one untimed call, then median/min of {reps['cfg']} "
        f"calls timed with `time.perf_counter`, and their median CPU time (`time.process_time`). Target for the "
        f"Pangu Ultra recipe: ≤ {INPROC_TARGET_S} s. Events per step: unit simulations of the op-level engine "
        "(after memoisation and coalescing) / ops and collectives they ran / pipeline units the SimPy pipeline "
        "ran (`extra.engine_*` of `simulate --json`).", "",
        table(SIM_HEADER, cfg_rows), "",
        "## (c) Scaling with the device count", "",
        f"Median/min of {reps['scale']} calls per size. Pangu Ultra MoE on atlas-800t-a2 with `{PANGU_PLAN}`, "
        "micro-batch 2, seq 4096; tp·pp = 128 so devices are multiples of 128, and global batch = dp × 2 × 16 "
        "so every size runs 16 micro-batches. llama3-8b on nvidia-h100-sxm-80g with tp=1, pp=1 (dp = devices), "
        "seq 8192, micro-batch 1, global batch = devices (one sequence per device, 1 micro-batch). "
        "A configuration that raises shows its error.", "",
        table(SIM_HEADER, scale_rows), "",
        "## (d) Growth with pipeline depth x micro-batches and with layers", "",
        "Pangu Ultra MoE, published recipe, 6144 devices. Pipeline units grow with pp x m x vpp; unit "
        "simulations grow with the distinct chunk shapes and overlapped pairs, not with m; layers grow the "
        "op events per unit until a chunk holds more than 3 identical layers (coalesced, docs/engine.md).", "",
        table(SIM_HEADER, growth_rows), "",
    ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(parts))
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (fast check only)")
    quick = ap.parse_args().quick
    reps = {"cli": 3, "cfg": 3, "scale": 2} if quick else {"cli": 7, "cfg": 10, "scale": 5}
    cli_rows, imports = bench_cli(reps["cli"]), heavy_imports()
    cfg_rows, scale_rows = bench_configs(reps["cfg"]), bench_scaling(reps["scale"])
    growth_rows = bench_growth(reps["scale"])
    print(write_doc(quick, reps, cli_rows, imports, cfg_rows, scale_rows, growth_rows))
    print(f"\nwrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
