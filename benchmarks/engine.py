"""The resource-level event engine, shown and measured: a picture of one overlapped unit on its
resources, the mechanism checks with their numbers, and the agreement of the sweep's two tiers.

Usage: ``python benchmarks/engine.py [--quick]``. Prints the tables and rewrites the generated
section of docs/engine.md (between its BEGIN/END markers) and docs/img/engine_unit.png.
``--quick`` compares the tiers on every 8th point of each spec (the CI test's setting).
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import machine, table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "engine.md"
IMG = ROOT / "docs" / "img" / "engine_unit.png"
BEGIN, END = "<!-- BEGIN engine.py -->", "<!-- END engine.py -->"
ULTRA = "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2,a2a=hierarchical,ep_overlap=1"
SPECS = ["llama3-70b-cost.yaml", "pangu-pro-search.yaml", "pangu-ultra-search.yaml"]
TRACKS = ["matrix", "vector", "tp_comm", "ep_comm", "dp_comm", "pp_comm"]


def ultra_pair():
    """The steady-state forward + backward pair of a middle Pangu Ultra stage on the event engine."""
    from npusim.config.hardware import load_profile
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan, parse_plan, resolve_plan
    from npusim.cost.collectives import placements
    from npusim.engine.step import StepInputs, moe_load, stage_costs
    from npusim.workload.passes import chunk_specs

    model, hw = load_model("pangu-ultra-moe-718b"), load_profile("atlas-800t-a2")
    plan = resolve_plan(make_plan(parse_plan(ULTRA)), model, 6144, 1536, 4096)
    inp = StepInputs(model, hw, plan, 4096, 1536, 6144)
    places = placements(plan, hw)
    specs = chunk_specs(model, plan.pp, plan.vpp)
    st = stage_costs(inp, specs, places, {}, moe_load(inp, places))
    mid = st[len(st) // 2]
    coster = mid.pair_fn.args[0]
    _, run = coster.unit([(mid.spec, "F"), (mid.spec, "B")])
    return run, mid.spec


def draw(run, spec) -> None:
    """Gantt of a unit's slices, one row per resource track."""
    fig, ax = plt.subplots(figsize=(11, 3.2))
    colors = {"matrix": "#4c72b0", "vector": "#55a868", "tp_comm": "#c44e52", "ep_comm": "#8172b2",
              "dp_comm": "#ccb974", "pp_comm": "#64b5cd"}
    for track, name, s, e in run.slices:
        y = TRACKS.index(track) if track in TRACKS else len(TRACKS) - 1
        ax.broken_barh([(s * 1e3, (e - s) * 1e3)], (y - 0.4, 0.8), color=colors.get(track, "grey"), alpha=0.8)
    ax.set_yticks(range(len(TRACKS)), TRACKS)
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.set_title(f"Pangu Ultra MoE on 6144 Atlas 800T A2: one forward + one backward of a {spec.layers}-layer "
                 f"stage run as one overlapped unit ({run.duration_s * 1e3:.1f} ms)", fontsize=9)
    fig.tight_layout()
    IMG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG, dpi=110)
    plt.close(fig)


def mechanisms() -> list[list]:
    """The mechanism scenarios of tests/engine/test_resource_engine.py with their numbers."""
    from npusim.api import run_simulation

    rows = []
    off = run_simulation("mixtral-8x7b", "nvidia-h100-sxm-80g", "tp=1,ep=8,zero=1,ep_overlap=0", devices=8,
                         seq_len=4096, global_batch=8, micro_batch=1)
    on = run_simulation("mixtral-8x7b", "nvidia-h100-sxm-80g", "tp=1,ep=8,zero=1,ep_overlap=1", devices=8,
                        seq_len=4096, global_batch=8, micro_batch=1)
    rows.append(["ep_overlap=1, one micro-batch, pp 1, no shared expert (Mixtral, EP 8 over 8 servers)",
                 f"exposed EP {off.breakdown_s['ep_comm']:.3f} s -> {on.breakdown_s['ep_comm']:.3f} s; "
                 f"hidden {on.extra['hidden_comm_by_part_s'].get('ep_comm', 0.0):.3f} s (weight gradients only)"])
    z = []
    for dp in (8, 64, 512):
        r = run_simulation("llama2-7b", "nvidia-h100-sxm-80g", "tp=1,zero=3", devices=dp, seq_len=2048,
                           global_batch=dp, micro_batch=1)
        z.append(f"DP {dp}: {r.step_time_s:.3f} s (exposed DP {r.breakdown_s['dp_comm']:.3f} s)")
    rows.append(["ZeRO-3, Llama-2 7B, fixed work per device", "; ".join(z)])
    for name, plan in (("Pangu Ultra, flat all-to-all, no overlap", "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2"),
                       ("Pangu Ultra, published recipe (hierarchical, EP overlap)", ULTRA)):
        r = run_simulation("pangu-ultra-moe-718b", "atlas-800t-a2", plan, devices=6144, seq_len=4096, global_batch=1536)
        util = ", ".join(f"{k} {100 * v:.0f} %" for k, v in r.extra["resource_utilisation"].items() if v > 0)
        rows.append([name, f"{r.step_time_s:.2f} s, {r.tokens_per_s / 1e6:.3f} M tok/s (published 1.46); "
                           f"exposed EP {r.breakdown_s['ep_comm']:.2f} s, hidden EP "
                           f"{r.extra['hidden_comm_by_part_s'].get('ep_comm', 0.0):.2f} s; critical rank busy: {util}"])
    return rows


def tiers(stride: int) -> list[list]:
    """Tier agreement on every shipped training spec."""
    from npusim.sweep.tiers import tier_agreement

    rows = []
    for name in SPECS:
        t0, c0 = time.perf_counter(), time.process_time()
        a = tier_agreement(ROOT / "sweeps" / name, stride=stride)
        rows.append([name, f"{a['points']:,}", f"{a['feasible']:,}", a["compared"], f"{a['kendall_tau']:.3f}",
                     f"{a['top10_in_fast_top20']}/10", f"{a['median_score_error_pct']:.2f}",
                     f"{time.perf_counter() - t0:.0f} / {time.process_time() - c0:.0f}"])
    return rows


def main() -> None:
    """Measure, print, and rewrite the generated part of docs/engine.md."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    stride = 8 if args.quick else 1
    run, spec = ultra_pair()
    draw(run, spec)
    mech = table(["scenario", "result"], mechanisms())
    tier = table(["spec", "points", "feasible (fast)", "compared", "Kendall tau", "engine top 10 in fast top 20",
                  "median |score err| %", "wall / CPU s"], tiers(stride))
    busy = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in sorted(run.busy_s.items()) if v > 0)
    text = "\n".join([
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- Machine: {machine()}", f"- Rerun: `python benchmarks/engine.py{' --quick' if args.quick else ''}`", "",
        "![One overlapped forward + backward unit on its resources](img/engine_unit.png)", "",
        f"*The unit above: {run.duration_s * 1e3:.1f} ms; resource-seconds used: {busy}.*", "",
        "### Mechanisms", "", mech, "",
        "### Fast tier vs event engine on the shipped sweeps", "",
        "The fast tier's best 40 feasible points plus 40 more drawn with seed 0, ranked by both tiers"
        + (" (every 8th point of each spec)" if args.quick else " (all points of each spec)") + ".", "",
        tier])
    print(text)
    write_section(DOC, BEGIN, END, text)


if __name__ == "__main__":
    main()
