"""Request-level serving of Pangu Pro MoE on Atlas 800I A2: p99 TTFT / TPOT against the request rate,
the low-load check against the step model, and a worked capacity plan.

Usage: ``python benchmarks/serving.py [--duration 300]``. Prints the tables, draws
docs/img/serving_qps.png and rewrites the generated section of docs/serving.md (between its
BEGIN/END markers).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from _common import machine, table, write_section  # noqa: E402

from npusim.api import default_serving_plan  # noqa: E402
from npusim.config.hardware import load_profile  # noqa: E402
from npusim.config.model import load_model  # noqa: E402
from npusim.config.plan import make_plan, parse_plan  # noqa: E402
from npusim.config.workload import InferenceWorkload  # noqa: E402
from npusim.engine.serve import simulate_serving  # noqa: E402
from npusim.serving.capacity import Slo, plan_serving  # noqa: E402
from npusim.serving.requests import poisson_requests  # noqa: E402
from npusim.serving.run import simulate_requests  # noqa: E402
from npusim.serving.spec import ServeSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "serving.md"
PNG = ROOT / "docs" / "img" / "serving_qps.png"
BEGIN, END = "<!-- BEGIN serving.py -->", "<!-- END serving.py -->"
MODEL, HW = "pangu-pro-moe-72b", "atlas-800i-a2"
PLAN = "tp=4,ep=4,etp=1,shared_tp=4,sp=1,moe_dispatch=allgather,precision=int8"
"""The 4-card layout npusim validates on rows P001-P003."""
IN_LEN, OUT_LEN = 2048, 512
QPS = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)
SLO = (1.0, 0.05)
"""p99 TTFT and TPOT objective of the worked example, seconds (the paper's 800I A2 TPOT limit is 50 ms)."""
PLAN_QPS = 10.0


def qps_sweep(model, hw, plan, duration: float) -> pd.DataFrame:
    """One request-level run per request rate on one 4-card instance."""
    rows = []
    for q in QPS:
        reqs = poisson_requests(q, duration, IN_LEN, OUT_LEN, 0)
        r = simulate_requests(model, hw, plan, 4, reqs, ServeSpec(ttft_slo_s=SLO[0], tpot_slo_s=SLO[1]), duration)
        rows.append({"qps": q, "requests": r["requests"], "unfinished": r["unfinished"],
                     "ttft_p50_s": r["ttft_s"]["p50"], "ttft_p99_s": r["ttft_s"]["p99"],
                     "tpot_p50_s": r["tpot_s"]["p50"], "tpot_p99_s": r["tpot_s"]["p99"],
                     "tokens_per_s_per_card": r["output_tokens_per_s_per_card"], "slo_attainment": r["slo_attainment"]})
    return pd.DataFrame(rows)


def plot_qps(df: pd.DataFrame):
    """p99 TTFT and TPOT (log scale) and throughput per card against the request rate; a Figure."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.semilogy(df["qps"], df["ttft_p99_s"] * 1e3, "o-", label="p99 TTFT")
    a.semilogy(df["qps"], df["tpot_p99_s"] * 1e3, "s-", label="p99 TPOT")
    a.axhline(SLO[0] * 1e3, ls="--", c="C0", lw=0.8)
    a.axhline(SLO[1] * 1e3, ls="--", c="C1", lw=0.8)
    a.set_xlabel("request rate (requests/s)")
    a.set_ylabel("ms")
    a.legend()
    a.set_title(f"{MODEL}, 4 x {HW}, {IN_LEN} in / {OUT_LEN} out")
    b.plot(df["qps"], df["tokens_per_s_per_card"], "o-")
    b.set_xlabel("request rate (requests/s)")
    b.set_ylabel("output tokens/s per card")
    b.set_title("throughput saturates")
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=300.0, help="arrival window per run, seconds")
    args = ap.parse_args()
    model, hw, plan = load_model(MODEL), load_profile(HW), make_plan(parse_plan(PLAN))
    t0 = time.perf_counter()
    df = qps_sweep(model, hw, plan, args.duration)
    sweep_s = time.perf_counter() - t0
    PNG.parent.mkdir(exist_ok=True)
    plot_qps(df).savefig(PNG, dpi=110)
    low = simulate_requests(model, hw, plan, 4, poisson_requests(0.02, 1000.0, IN_LEN, OUT_LEN, 0), ServeSpec(), 1000.0)
    one_pre = simulate_serving(model, hw, plan, InferenceWorkload(kind="prefill", batch=1, input_len=IN_LEN), 4).ttft_s
    one_dec = simulate_serving(model, hw, plan, InferenceWorkload(kind="decode", batch=1, input_len=IN_LEN), 4).tpot_s
    t1 = time.perf_counter()
    reqs = poisson_requests(PLAN_QPS, 120.0, IN_LEN, OUT_LEN, 0)

    def plan_for(d: int):
        """Default layout on d devices, W8A8."""
        return make_plan({**default_serving_plan(model, d), "precision": "int8"})

    cap = plan_serving(model, hw, reqs, 120.0, Slo(*SLO), plan_for)
    plan_s = time.perf_counter() - t1
    text = report(df, sweep_s, args.duration, low, one_pre, one_dec, cap, plan_s)
    print(text)
    write_section(DOC, BEGIN, END, text)


def report(df, sweep_s, duration, low, one_pre, one_dec, cap, plan_s) -> str:
    """The generated section of docs/serving.md."""
    rows = [[f"{r.qps:g}", r.requests, r.unfinished, f"{r.ttft_p50_s * 1e3:,.0f}", f"{r.ttft_p99_s * 1e3:,.0f}",
             f"{r.tpot_p50_s * 1e3:.1f}", f"{r.tpot_p99_s * 1e3:.1f}", f"{r.tokens_per_s_per_card:,.0f}",
             f"{100 * r.slo_attainment:.0f} %"] for r in df.itertuples()]
    b = cap["best"]
    lay = b["layout"]
    where = (f"{lay['prefill_instances']} prefill x {lay['prefill_devices_per_instance']} + {lay['decode_instances']} "
             f"decode x {lay['devices_per_instance']} devices" if lay["prefill_instances"]
             else f"{lay['instances']} collocated instance(s) x {lay['devices_per_instance']} devices")
    met = sorted((t for t in cap["tried"] if t["met"]), key=lambda t: t["cards"])[:6]
    tried = [[t["layout"], f"{t['cards']:g}", f"{t['ttft_p99_s'] * 1e3:,.0f}", f"{t['tpot_p99_s'] * 1e3:.1f}"] for t in met]
    return "\n".join([
        f"Generated by `python benchmarks/serving.py --duration {duration:g}` on {machine()}.", "",
        f"**Request rate sweep** ({MODEL}, one instance of 4 {HW} cards, `{PLAN}`, {IN_LEN} prompt / {OUT_LEN} "
        f"output tokens, Poisson arrivals seed 0 over {duration:g} s, chunked prefill 2048 tokens, SLO p99 TTFT "
        f"{SLO[0] * 1e3:g} ms and TPOT {SLO[1] * 1e3:g} ms; {sweep_s:.1f} s for {len(df)} runs):", "",
        table(["req/s", "requests", "unfinished", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms",
               "tok/s per card", "SLO met"], rows), "",
        "![p99 TTFT and TPOT against the request rate](img/serving_qps.png)", "",
        f"**Low load against the step model** (0.02 req/s for 1000 s, {low['requests']} requests): TTFT p50 "
        f"{low['ttft_s']['p50'] * 1e3:.1f} ms vs `simulate --workload prefill --batch 1` {one_pre * 1e3:.1f} ms; TPOT p50 "
        f"{low['tpot_s']['p50'] * 1e3:.2f} ms vs `simulate --workload decode --batch 1` at context {IN_LEN} "
        f"{one_dec * 1e3:.2f} ms (the served requests decode at contexts {IN_LEN}..{IN_LEN + OUT_LEN}).", "",
        f"**Capacity plan** (`npusim plan --serve --model {MODEL} --hardware {HW} --qps {PLAN_QPS:g} --ttft-p99 "
        f"{SLO[0]:g} --tpot-p99 {SLO[1]:g} --input-len {IN_LEN} --output-len {OUT_LEN} --duration 120`; "
        f"{len(cap['tried'])} request-level runs, {cap['step_model_calls']} step-model calls, {plan_s:.1f} s): "
        f"**{b['cards']:g} cards**, {where}; p99 TTFT {b['ttft_s']['p99'] * 1e3:,.0f} ms, p99 TPOT "
        f"{b['tpot_s']['p99'] * 1e3:.1f} ms, {b['output_tokens_per_s_per_card']:,.0f} output tokens/s per card. "
        "The cheapest layouts that met the SLO:", "",
        table(["layout", "cards", "TTFT p99 ms", "TPOT p99 ms"], tried),
    ])


if __name__ == "__main__":
    main()
