"""Sweep benchmark: fast-tier and full-simulation rates (by wall time and by CPU time: the machine is
shared, so wall-time rates move with the load), wall and CPU time of sweeps (a), (b) and the
545k-point (d), agreement between the tiers, and where the published Pangu choices rank.

Usage: ``python benchmarks/sweep_speed.py [--workers 2] [--sample 300]``. Prints the tables and
rewrites the benchmark section of docs/sweep.md (between its BEGIN/END markers).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from _common import machine, table

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "sweep.md"
BEGIN, END = "<!-- BEGIN sweep_speed.py -->", "<!-- END sweep_speed.py -->"
ULTRA = ROOT / "sweeps" / "pangu-ultra-search.yaml"
PRO = ROOT / "sweeps" / "pangu-pro-search.yaml"
SHAPES = ROOT / "sweeps" / "pangu-ultra-shapes.yaml"
ULTRA_PLAN = "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2"
PRO_PLAN = "tp=8,pp=5,vpp=5,ep=2,sp=1,zero=1"


def capacity_example() -> tuple[float, str]:
    """Run the README's capacity question; return (wall seconds, its text output)."""
    cmd = [sys.executable, "-m", "npusim.cli", "plan", "--model", "pangu-ultra-moe-718b", "--hardware", "atlas-800t-a2",
           "--tokens", "10T", "--days", "90"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return time.perf_counter() - t0, out.rstrip()




def children_cpu_s() -> float:
    """CPU seconds (user + system) of every finished child process of this one, so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cli_sweep(spec: Path, out: Path, workers: int) -> tuple[float, dict]:
    """Run ``npusim sweep`` as a subprocess; return (wall seconds, summary); the summary gains
    ``cpu_s``, the CPU seconds of the sweep and its workers."""
    cmd = [sys.executable, "-m", "npusim.cli", "sweep", str(spec), "--out", str(out), "--workers", str(workers), "--json"]
    t0, c0 = time.perf_counter(), children_cpu_s()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    wall = time.perf_counter() - t0
    summary = json.loads(proc.stdout)
    summary["cpu_s"] = children_cpu_s() - c0
    summary["size_MB"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    return wall, summary


def tier_rates(spec: Path, out: Path, n: int, workers: int) -> dict:
    """Fast and full tier rates (points/s, ``workers`` processes) on ``n`` random feasible points of a
    finished sweep, and how the two tiers agree on them (Kendall tau of step times)."""
    import pandas as pd

    from npusim.sweep.evaluate import evaluate_fast, evaluate_full
    from npusim.sweep.executors import make_executor
    from npusim.sweep.run import prepare
    from npusim.validate.compare import kendall_tau

    _, ctx, _, points = prepare(spec)
    frame = pd.read_parquet(out / "results.parquet")
    ok = sorted(frame[frame["status"] == "ok"]["id"])
    by_id = {p["id"]: p for p in points}
    sample = [by_id[i] for i in random.Random(0).sample(ok, min(n, len(ok)))]
    batches = [(k, sample[i:i + 10]) for k, i in enumerate(range(0, len(sample), 10))]
    res = {}
    for name, fn in (("fast", evaluate_fast), ("full", evaluate_full)):
        ex = make_executor("local", workers)
        list(ex.map(fn, ctx, [(k, sample[k:k + 1]) for k in range(workers)]))  # start the workers first
        t0 = time.perf_counter()
        rows = [r for _, b in ex.map(fn, ctx, batches) for r in b]
        res[name] = (len(rows) / (time.perf_counter() - t0), {r["id"]: r for r in rows})
        ex.close()
    ids = [p["id"] for p in sample if res["full"][1][p["id"]].get("full_step_time_s")]
    fast_s = [res["fast"][1][i]["step_time_s"] for i in ids]
    full_s = [res["full"][1][i]["full_step_time_s"] for i in ids]
    errs = sorted(abs(a / b - 1) * 100 for a, b in zip(fast_s, full_s))
    return {"n": len(ids), "fast_pps": res["fast"][0], "full_pps": res["full"][0], "tau": kendall_tau(fast_s, full_s),
            "median_err": errs[len(errs) // 2], "p90_err": errs[int(0.9 * len(errs))], "max_err": errs[-1]}


def in_process_rate(spec: Path) -> tuple[float, float]:
    """Fast-tier points/s of one process (cold caches) over every point of a spec: by wall time and
    by CPU time."""
    from npusim.sweep import fast
    from npusim.sweep.evaluate import evaluate_fast
    from npusim.sweep.run import prepare

    fast.clear_caches()
    _, ctx, _, points = prepare(spec)
    t0, c0 = time.perf_counter(), time.process_time()
    evaluate_fast(ctx, points)
    return len(points) / (time.perf_counter() - t0), len(points) / (time.process_time() - c0)


def variant_bests(out: Path, keys: list[str], metric: str):
    """Each model variant's best fully simulated point, ranked by ``metric`` (full tier)."""
    import pandas as pd

    ranked = pd.read_csv(out / "ranked.csv", low_memory=False)
    full = ranked[ranked["tier"] == "full"].copy()
    cols = [f"model_{k}" for k in keys]
    best = full.sort_values(f"full_{metric}", ascending=False).groupby(cols, as_index=False).first()
    best = best.sort_values([f"full_{metric}", "id"], ascending=[False, True]).reset_index(drop=True)
    best.insert(0, "variant_rank", range(1, len(best) + 1))
    return best


def published_plan(model: str, devices: int, plan: str, seq: int, gb: int, **overrides) -> dict:
    """Full simulation of a published plan (model overrides applied)."""
    from npusim.config.hardware import load_profile
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan, parse_plan
    from npusim.config.workload import TrainWorkload
    from npusim.simulate import simulate

    r = simulate(load_model(model, **overrides), load_profile("atlas-800t-a2"), make_plan(parse_plan(plan)),
                 TrainWorkload(seq_len=seq, global_batch=gb), devices)
    return {"tokens_per_s": r.tokens_per_s, "mfu": r.mfu, "step_time_s": r.step_time_s, "mem": r.peak_memory_GB,
            "bubble": r.breakdown_s["bubble"]}


def fmt_variants(best, keys: list[str], mark: dict, n: int = 8) -> tuple[str, int | None]:
    """Table of the top ``n`` variants plus the marked (published) one; its rank."""
    hit = best
    for k, v in mark.items():
        hit = hit[hit[f"model_{k}"] == v]
    rank = int(hit["variant_rank"].iloc[0]) if len(hit) else None
    show = best[(best["variant_rank"] <= n) | (best["variant_rank"] == rank)]
    rows = []
    for _, r in show.iterrows():
        tag = " (published)" if r["variant_rank"] == rank else ""
        rows.append([f"{r['variant_rank']}{tag}", " ".join(f"{k}={int(r['model_' + k])}" for k in keys),
                     f"{r['total_params_B']:.1f}/{r['activated_params_B']:.1f}",
                     f"tp{r['tp']} pp{r['pp']} vpp{r['vpp']} dp{r['dp']} ep{r['ep']} {r['recompute']} mb{r['micro_batch']}",
                     f"{r['full_tokens_per_s'] / 1e6:.3f}", f"{100 * r['full_mfu']:.1f}", f"{r['full_step_time_s']:.2f}"])
    head = ["rank", "shape", "params B total/act", "best plan", "M tok/s", "MFU %", "step s"]
    return table(head, rows), rank


def agreement_row(name: str, s: dict) -> list:
    """A summary row: points, rate, top-10 overlap and tau of one sweep."""
    u = s["full"]
    return [name, f"{s['points']:,}", f"{s['fast']['points_per_s']:,.0f}", f"{u['simulated']}",
            f"{u['top10_overlap']}/{u['top_k']}", f"{u['kendall_tau']:.3f}", f"{u['median_step_error_pct']:.2f}"]


def main() -> None:
    """Run every measurement, print it, and rewrite the benchmark section of docs/sweep.md."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample", type=int, default=300)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="npusim-sweep-bench-"))
    load0 = os.getloadavg()[0]
    wall_a, sa = cli_sweep(ULTRA, tmp / "a", args.workers)
    wall_b, sb = cli_sweep(PRO, tmp / "b", args.workers)
    wall_d, sd = cli_sweep(SHAPES, tmp / "d", args.workers)
    rates = tier_rates(ULTRA, tmp / "a", args.sample, args.workers)
    single = in_process_rate(ULTRA)
    ua = variant_bests(tmp / "a", ["layers", "hidden", "experts"], "tokens_per_s")
    ua_tab, ua_rank = fmt_variants(ua, ["layers", "hidden", "experts"], {"layers": 61, "hidden": 7680, "experts": 256})
    pro_keys = ["hidden", "heads", "kv_heads", "layers", "experts"]
    pb = variant_bests(tmp / "b", pro_keys, "mfu")
    pb_tab, pb_rank = fmt_variants(pb, pro_keys, {"hidden": 5120, "heads": 40, "kv_heads": 8, "layers": 48, "experts": 64})
    pb_tps = variant_bests(tmp / "b", pro_keys, "tokens_per_s")
    _, pb_rank_tps = fmt_variants(pb_tps, pro_keys, {"hidden": 5120, "heads": 40, "kv_heads": 8, "layers": 48, "experts": 64})

    def best_of(layers: int) -> float:
        row = ua[(ua["model_layers"] == layers) & (ua["model_hidden"] == 7680) & (ua["model_experts"] == 256)]
        return float(row["full_tokens_per_s"].iloc[0])

    cap_s, cap_text = capacity_example()
    p61 = published_plan("pangu-ultra-moe-718b", 6144, ULTRA_PLAN, 4096, 1536)
    p66 = published_plan("pangu-ultra-moe-718b", 6144, ULTRA_PLAN, 4096, 1536, layers=66)
    ppro = published_plan("pangu-pro-moe-72b", 4000, PRO_PLAN, 4096, 1000)
    ppro1 = published_plan("pangu-pro-moe-72b", 4000, PRO_PLAN + ",etp=1", 4096, 1000)
    pro_best = pb[(pb["model_hidden"] == 5120) & (pb["model_heads"] == 40) & (pb["model_kv_heads"] == 8)
                  & (pb["model_layers"] == 48) & (pb["model_experts"] == 64)]
    lines = [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- Machine: {machine()}; sweeps run with `--workers {args.workers}`; 1-minute load average "
        f"{load0:.2f} at the start and {os.getloadavg()[0]:.2f} at the end (other jobs share the cores, so rates "
        f"move by tens of percent between runs)",
        "- Rerun: `python benchmarks/sweep_speed.py` (from the repository root)", "",
        "### Rates (points per second)", "",
        table(["measure", "points/s", "note"], [
            ["fast tier, sweep (a), 2 workers", f"{sa['fast']['points_per_s']:,.0f}",
             f"{sa['points']:,} points incl. memory-pruned ones; goal >= 1,000"],
            ["fast tier, sweep (b), 2 workers", f"{sb['fast']['points_per_s']:,.0f}", f"{sb['points']:,} points"],
            ["fast tier, sweep (d), 2 workers", f"{sd['fast']['points_per_s']:,.0f}", f"{sd['points']:,} points"],
            ["fast tier, one process, cold caches", f"{single[0]:,.0f}", "sweep (a), evaluate_fast in-process"],
            ["the same, by CPU time", f"{single[1]:,.0f}", "points / CPU seconds of the process"],
            [f"fast tier, {rates['n']} random feasible points, 2 workers", f"{rates['fast_pps']:,.0f}",
             "batches of 10, little cache reuse between random points"],
            [f"full simulation, the same {rates['n']} points, 2 workers", f"{rates['full_pps']:,.1f}",
             "SimPy pipeline per point"],
        ]), "",
        "### Wall time and tier agreement", "",
        f"Sweep (a) end to end (`npusim sweep sweeps/pangu-ultra-search.yaml`, process start to exit): "
        f"**{wall_a:.1f} s** for {sa['points']:,} points, full simulation on {sa['full']['simulated']} of them "
        f"(the top 100 plus each shape's best). Sweep (b): {wall_b:.1f} s for {sb['points']:,} points.", "",
        table(["sweep", "points", "wall s", "CPU s", "points/s by wall", "points/s by CPU", "out MB"],
              [[n, f"{s_['points']:,}", f"{w:.1f}", f"{s_['cpu_s']:.1f}", f"{s_['points'] / w:,.0f}",
                f"{s_['points'] / s_['cpu_s']:,.0f}", f"{s_['size_MB']:.1f}"]
               for n, w, s_ in (("(a) pangu-ultra-search", wall_a, sa), ("(b) pangu-pro-search", wall_b, sb),
                                ("(d) pangu-ultra-shapes", wall_d, sd))]), "",
        "Whole sweeps, process start to exit (generation, search, full tier, tables); CPU s = the sweep "
        "and its worker processes together.", "",
        table(["sweep", "points", "fast pts/s", "full-simulated", "top-10 overlap", "Kendall tau", "median |step err| %"],
              [agreement_row("(a) Pangu Ultra", sa), agreement_row("(b) Pangu Pro", sb)]), "",
        f"On {rates['n']} random feasible points of sweep (a) (not just the best), fast vs full step time: "
        f"Kendall tau {rates['tau']:.3f}, median |error| {rates['median_err']:.2f} %, p90 {rates['p90_err']:.2f} %, "
        f"max {rates['max_err']:.1f} %.", "",
        "### (a) Pangu Ultra MoE: shapes ranked by their best plan's throughput (full simulation)", "",
        ua_tab, "",
        f"The published shape (61 layers, hidden 7680, 256 experts) ranks **{ua_rank} of {len(ua)}** by tokens/s. "
        f"61 vs 66 layers at hidden 7680 and 256 experts, each with its best plan: "
        f"**{100 * (best_of(61) / best_of(66) - 1):+.1f} %** tokens/s for 61. With the published plan "
        f"({ULTRA_PLAN}) for both: 61 layers {p61['tokens_per_s'] / 1e6:.3f} M tok/s (MFU {100 * p61['mfu']:.1f} %, "
        f"bubble {p61['bubble']:.2f} s), 66 layers {p66['tokens_per_s'] / 1e6:.3f} M tok/s (bubble {p66['bubble']:.2f} s): "
        f"**{100 * (p61['tokens_per_s'] / p66['tokens_per_s'] - 1):+.1f} %** for 61 (paper: ~+15 %).", "",
        "### (b) Pangu Pro MoE: shapes in the 60-80B budget ranked by their best plan's MFU (full simulation)", "",
        pb_tab, "",
        f"The published shape (48 layers, hidden 5120, 40/8 heads, 64 experts) ranks **{pb_rank} of {len(pb)}** "
        f"by MFU and {pb_rank_tps} of {len(pb_tps)} by tokens/s. Its best plan: "
        + (f"MFU {100 * float(pro_best['full_mfu'].iloc[0]):.1f} %; " if len(pro_best) else "")
        + f"the published plan ({PRO_PLAN}, 4000 devices): MFU {100 * ppro['mfu']:.1f} %, "
        f"{ppro['tokens_per_s'] / 1e6:.3f} M tok/s, {ppro['mem']:.1f} GB with Megatron's default expert TP "
        f"(etp = tp = 8), MFU {100 * ppro1['mfu']:.1f} %, {ppro1['mem']:.1f} GB with etp = 1.", "",
        f"### Capacity planning example ({cap_s:.0f} s wall time)", "",
        "```text", "$ npusim plan --model pangu-ultra-moe-718b --hardware atlas-800t-a2 --tokens 10T --days 90",
        cap_text, "```",
    ]
    section = "\n".join(lines)
    print(section)
    text = DOC.read_text() if DOC.exists() else f"# Sweeps\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}")


if __name__ == "__main__":
    main()
