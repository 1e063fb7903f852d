"""MoE report: Pangu Ultra MoE MFU band and mechanism attribution; MoGE vs top-k routing for Pangu Pro MoE.

Run: python benchmarks/moe_report.py     (writes docs/moe.md)
"""
from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path

from _common import merge_plan
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import TrainWorkload
from npusim.cost.compute import op_time
from npusim.simulate import simulate
from npusim.workload.layers import expected_domains_touched, gemm
from npusim.workload.routing import RoutingSpec, imbalance_score, load_stats

DOCS = Path(__file__).resolve().parents[1] / "docs" / "moe.md"
ULTRA = "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2"
MECHANISMS = [
    ("baseline: flat all-to-all, no overlap", ""),
    ("+ hierarchical all-to-all", ",a2a=hierarchical"),
    ("+ EP overlap (adaptive pipe overlap)", ",a2a=hierarchical,ep_overlap=1"),
]


def ultra_rows(devices: int, batches: list[int], extra: str) -> list[str]:
    """Markdown rows of Pangu Ultra MoE at several global batches."""
    m, hw = load_model("pangu-ultra-moe-718b"), load_profile("atlas-800t-a2")
    out = []
    for gb in batches:
        # Interleaving needs micro-batches divisible by pp: at 768 sequences use micro-batch 1 (16 of them).
        mb = ",micro_batch=1" if gb // (devices // 128) // 2 < 16 else ""
        r = simulate(m, hw, make_plan(parse_plan(merge_plan(ULTRA, extra, mb))), TrainWorkload(seq_len=4096, global_batch=gb), devices)
        b = r.breakdown_s
        out.append(f"| {devices} | {gb}{' (mb 1)' if mb else ''} | {r.step_time_s:.2f} | {100 * r.mfu:.1f} | {r.tokens_per_s / 1e6:.2f} | "
                   f"{b['compute'] + b['recompute']:.2f} | {b['ep_comm']:.2f} | {b['tp_comm']:.2f} | {b['bubble']:.2f} | "
                   f"{r.peak_memory_GB:.1f} |")
    return out


def ultra_section() -> list[str]:
    """Pangu Ultra MoE: band over global batch and the mechanism ladder."""
    head = ["| devices | global batch | step s | MFU % | M tokens/s | compute s | EP comm s | TP comm s | bubble s | memory GB |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    lines = ["## Pangu Ultra MoE on Atlas 800T A2\n",
             "Plan: TP8 PP16 VPP2 EP4 with TP-extend-EP (experts over 32 ranks), SP, ZeRO-1, micro-batch 2, "
             "seq 4096, balanced routing (the run used an EP-group auxiliary loss; `routing=` changes this). "
             "MFU uses npusim's convention (causal attention halved) against the 353.9 TFLOPS bf16 peak of the "
             "376T SKU; the paper's peak and convention are not public (see `shared/reference/pangu.md`).\n"]
    for title, extra in MECHANISMS:
        lines += [f"### {title}\n"] + head + ultra_rows(6144, [768, 1536, 3072], extra) + [""]
    lines += ["### Baseline vs system on the published device counts\n"] + head
    lines += ultra_rows(4096, [1024], "") + ultra_rows(6144, [1536], ",a2a=hierarchical,ep_overlap=1")
    lines += ["", "Published: 18.9 % MFU / 0.61 M tokens/s (baseline, 4K NPUs) and 30.0 % / 1.46 M tokens/s "
              "(6K NPUs) [reported]. Global batch and sequence length of those runs are not public.\n"]
    return lines + attribution()


def attribution() -> list[str]:
    """Which mechanism buys what, at 6144 devices and global batch 1536 (computed, not written by hand)."""
    m, hw = load_model("pangu-ultra-moe-718b"), load_profile("atlas-800t-a2")
    wl = TrainWorkload(seq_len=4096, global_batch=1536)
    res = [simulate(m, hw, make_plan(parse_plan(merge_plan(ULTRA, extra))), wl, 6144) for _, extra in MECHANISMS]
    base, hier, ovl = res
    out = ["### Where the gain comes from (6144 devices, global batch 1536)\n",
           f"- Hierarchical all-to-all sends each token across the slow RoCE links once per destination server "
           f"instead of once per routed expert: exposed EP time {base.breakdown_s['ep_comm']:.2f} s -> "
           f"{hier.breakdown_s['ep_comm']:.2f} s, step {base.step_time_s:.2f} s -> {hier.step_time_s:.2f} s "
           f"(MFU {100 * base.mfu:.1f} % -> {100 * hier.mfu:.1f} %).",
           f"- EP overlap hides the remaining all-to-all behind another micro-batch's compute (paying "
           f"{100 * hw.derating.overlap_compute_slowdown:.0f} % compute interference while it runs): EP "
           f"{hier.breakdown_s['ep_comm']:.2f} s -> {ovl.breakdown_s['ep_comm']:.2f} s; shorter stages also shrink "
           f"the bubble {hier.breakdown_s['bubble']:.2f} s -> {ovl.breakdown_s['bubble']:.2f} s; step "
           f"{ovl.step_time_s:.2f} s, MFU {100 * ovl.mfu:.1f} %.",
           f"- Together: {base.step_time_s / ovl.step_time_s:.2f}x throughput at equal devices. The published "
           f"18.9 % -> 30.0 % (1.59x) also moved from 4K to 6K NPUs and added memory work (recompute, swapping) "
           f"and load balancing that the balanced-routing baseline here does not need.",
           "- Absolute MFU is lower than published by a roughly constant factor; the paper's implied peak "
           "(210-235 TFLOPS, `shared/reference/pangu.md`) is well below the 353.9 TFLOPS used here, so part of "
           "the gap is the FLOP/peak convention, not time.\n"]
    return out


def moge_section() -> list[str]:
    """Pangu Pro MoE: MoGE vs plain top-8 imbalance, GEMM spread and step time on 8 and 16 EP ranks."""
    m, hw = load_model("pangu-pro-moe-72b"), load_profile("atlas-800t-a2")
    paper = [imbalance_score(s, 64, 8, 8, 16, groups=8, trials=5000) for s in ("uniform", "grouped")]
    lines = ["## MoGE vs top-k routing (Pangu Pro MoE)\n",
             "Monte Carlo of the paper's setting (64 experts, top-8, 8 devices, 16 tokens, 5,000 trials, seed 0):\n",
             "| routing | mean IS | P(IS > 0) |", "|---|---|---|"]
    lines += [f"| {p['scheme']} | {p['mean_IS']:.3f} | {p['p_IS_gt_0']:.3f} |" for p in paper]
    lines += ["", "Training step (atlas-800t-a2, 256 devices, TP1 PP4 EP=8/16, ZeRO-1, micro-batch 1, seq 4096, "
              "global batch 512; tokens per EP group per micro-batch = 4096 x EP; 16 sampled micro-batches):\n",
              "| EP | routing | IS | busiest/mean load | expert GEMM spread ms (max-min device, one layer fwd) | step s | imbalance part s |",
              "|---|---|---|---|---|---|---|"]
    for ep in (8, 16):
        for scheme, param in (("grouped", 1.0), ("uniform", 1.0), ("learned", 1.0), ("zipf", 0.5), ("dirichlet", 5.0)):
            spec = RoutingSpec(scheme, param, samples=16)
            st = load_stats(spec, m, ep, 4096 * ep)
            spread = _gemm_spread(m, hw, ep, 4096, st)
            r = simulate(m, hw, make_plan(parse_plan(f"tp=1,pp=4,ep={ep},zero=1,routing={scheme},routing_param={param}")),
                         TrainWorkload(seq_len=4096, global_batch=512), 256)
            label = scheme if scheme in ("grouped", "uniform", "learned") else f"{scheme}({param})"
            lines.append(f"| {ep} | {label} | {st.imbalance_score:.4f} | {st.max_over_mean:.3f} | {spread * 1e3:.3f} | "
                         f"{r.step_time_s:.3f} | {r.breakdown_s['imbalance']:.3f} |")
    lines.append("")
    return lines


def kernel_section() -> list[str]:
    """Every kernel of one Pangu Ultra MoE layer next to a dense layer of the same model, forward and
    backward, on one 800T A2 NPU under the published plan (balanced and learned routing)."""
    from npusim.engine.step import make_shard
    from npusim.workload.layers import attention_pass, dense_mlp_pass, moe_pass
    from npusim.workload.passes import backward_pass

    m, hw = load_model("pangu-ultra-moe-718b"), load_profile("atlas-800t-a2")
    from npusim.config.plan import resolve_plan

    plan = resolve_plan(make_plan(parse_plan(merge_plan(ULTRA, ",a2a=hierarchical,ep_overlap=1"))), m, 6144, 1536, 4096)
    st = load_stats(RoutingSpec("learned"), m, plan.expert_ep, 2 * 4096 // plan.tp * plan.expert_ep)
    sh = make_shard(m, plan, 4096, 1, 0.0, 0.0)
    skew = make_shard(m, plan, 4096, 1, 0.0, st.expert_spread)

    def rows(fwd, fwd_skew) -> tuple[list[str], float, float]:
        out, tot, tot_s = [], 0.0, 0.0
        for p, q in ((fwd, fwd_skew), (backward_pass(fwd), backward_pass(fwd_skew))):
            for a, b in zip(p.items, q.items):
                if hasattr(a, "kind") and not hasattr(a, "collective"):
                    ta, tb = op_time(a, hw, plan.precision), op_time(b, hw, plan.precision)
                    tot, tot_s = tot + ta, tot_s + tb
                    out.append(f"| {a.name} | {a.kind} | {a.flops / 1e9:.2f} | {a.bytes / 1e6:.2f} | {ta * 1e6:.1f} | {tb * 1e6:.1f} |")
                else:
                    out.append(f"| {a.name} ({a.collective}, {a.group}) | collective | - | {a.bytes / 1e6:.2f} | engine | engine |")
        return out, tot, tot_s

    head = ["| kernel | kind | GFLOP | MB moved | us (balanced) | us (learned) |", "|---|---|---|---|---|---|"]
    moe, mt, ms = rows(moe_pass(m, sh), moe_pass(m, skew, st.max_over_mean))
    dense, dt, _ = rows(dense_mlp_pass(m, sh), dense_mlp_pass(m, sh))
    attn, at, _ = rows(attention_pass(m, sh), attention_pass(m, sh))
    return (["## One Pangu Ultra MoE layer, kernel by kernel (800T A2)\n",
             f"Plan {ULTRA},a2a=hierarchical,ep_overlap=1; seq 4096; one micro-batch on one NPU; forward then "
             "backward. Kernel time = launch (5 us matrix, 2 us vector on this profile) + roofline with the "
             "calibrated efficiency. Collectives are timed by the event engine on the topology (not here). "
             f"`learned`: the busiest EP rank under `routing=learned` (max/mean {st.max_over_mean:.3f}, "
             f"tokens-per-expert CV {st.expert_spread:.3f}).\n",
             f"### MoE block: {mt * 1e3:.2f} ms of kernels balanced, {ms * 1e3:.2f} ms learned\n"] + head + moe
            + ["", f"### Dense FFN block of the same model: {dt * 1e3:.2f} ms of kernels\n"] + head + dense
            + ["", f"### Attention block (both layer kinds): {at * 1e3:.2f} ms of kernels\n"] + head + attn + [""])


def routing_section() -> list[str]:
    """Balanced vs dropless (learned) routing, drop-and-pad, redundant experts and dynamic placement on
    one configuration (DeepSeek-V2-Lite, V124's layout: 8 x 800T A2, EP 8, full recompute)."""
    m, hw = load_model("deepseek-v2-lite"), load_profile("atlas-800t-a2")
    wl = TrainWorkload(seq_len=8192, global_batch=8)
    base = "tp=1,pp=1,ep=8,zero=1,micro_batch=1,recompute=full,moe_dispatch=allgather"
    cases = [("balanced (forced)", ",routing=balanced"), ("uniform random top-k", ",routing=uniform"),
             ("learned (dropless default)", ",routing=learned"),
             ("learned, drop-and-pad cf 1.25", ",routing=learned,capacity_factor=1.25,pad_to_capacity=1"),
             ("learned, 8 redundant experts", ",routing=learned,redundant_experts=8"),
             ("learned, re-placed every 100 steps", ",routing=learned,placement_interval=100")]
    out = ["## Routing load on one configuration\n",
           "DeepSeek-V2-Lite on 8 Atlas 800T A2 (V124's layout: EP 8, all-gather dispatcher, full recompute, "
           "seq 8192, one micro-batch). `learned` gives expert popularity a log-normal spread whose busiest "
           "expert carries 1.52x the mean (MaxVio_global 0.52 of an auxiliary-loss-balanced 3B MoE, arXiv 2408.15664 Table 2; "
           "`npusim/workload/routing.py`); the step pays it twice: the busiest EP rank's extra rows "
           "(`imbalance`) and the slower grouped GEMM of unequal experts (each expert's GEMM at its own row "
           "count). Drop-and-pad computes every expert at its capacity; redundant experts cost weights, "
           "gradients, optimizer states and a pair all-reduce of their gradients; dynamic placement re-places "
           "experts from the counted load (no drift between re-placements assumed).\n",
           "| routing | step s | imbalance s | dp comm s | busiest/mean | expert CV | memory GB |", "|---|---|---|---|---|---|---|"]
    for label, extra in cases:
        plan = make_plan(parse_plan(base + extra))
        r = simulate(m, hw, plan, wl, 8)
        spec = RoutingSpec(plan.routing, capacity_factor=plan.capacity_factor, redundant_experts=plan.redundant_experts,
                           placement_interval=plan.placement_interval)
        st = load_stats(spec, m, 8, 8192 * 8)
        b = r.breakdown_s
        out.append(f"| {label} | {r.step_time_s:.3f} | {b.get('imbalance', 0.0):.3f} | {b['dp_comm']:.3f} | "
                   f"{st.max_over_mean:.3f} | {st.expert_spread:.3f} | {r.peak_memory_GB:.1f} |")
    return out + [""]


def _gemm_spread(m, hw, ep: int, tokens: int, st) -> float:
    """Grouped-GEMM time difference between the busiest and the idlest device (one layer, forward)."""
    local = m.experts // ep
    mean = tokens * m.top_k / ep
    def t(load: float) -> float:
        per = max(1, round(mean * load / local))
        return sum(op_time(gemm(n, per, w, k, groups=local), hw, "bf16")
                   for n, w, k in (("expert_up", 2 * m.expert_ffn_hidden, m.hidden), ("expert_down", m.hidden, m.expert_ffn_hidden)))
    return t(st.max_over_mean) - t(st.min_over_mean)


MOE_ROWS = ["V074", "V075", "V076", "V077", "V097", "V098", "V099", "V100", "V121", "V124"]
GAPS = [
    "V077 / V097 / V098 (DeepSeek-V3 on 1024 / 1024 / 256 H100): the all-to-all is hierarchical (DeepEP) "
    "and group-limited (4 of 8 groups). With EP 64 over 8 servers a group is a server, so a token crosses to "
    "3.5 other servers on average; with expert TP 2 (V077) EP spans 16 servers and a group two of them "
    "(5.7 servers). V097 and V098 run the same work per micro-batch, yet V098 is measured {meas:.0%} faster per "
    "micro-batch than V097; npusim predicts them within {pred:.0%} of each other.",
    "V076 (gpt-oss-120b, Megatron-Bridge): npusim chooses full recompute (the only policy that fits its memory "
    "model at micro-batch 4) and still predicts 20 % fast; sliding-window attention with sinks is modelled as "
    "ordinary windowed flash attention.",
]


def accuracy_section() -> list[str]:
    """Measured vs predicted on all the MoE training rows (none set aside), and what is known about the gaps."""
    from npusim.validate.compare import format_table, validate_runs
    from npusim.validate.predict import predict_record
    from npusim.validate.runs import published_path, read_runs

    recs = {r.id: r for r in read_runs(published_path())}
    res = validate_runs([recs[i] for i in MOE_ROWS], predict_record)
    return (["## Accuracy on the published MoE training rows\n",
             f"Target (issues 3 and 14): MAPE <= 15 % over all {len(MOE_ROWS)} rows, none excluded. Measured: "
             f"{res['summary']['mape_pct']} % (max {res['summary']['max_ape_pct']} %), asserted in "
             "`tests/validate/test_accuracy_other.py`; the target is not met. Dropless rows (V121, V124) run with "
             "`routing=learned`, force-balanced benchmark rows with `routing=balanced` (the `routing` column). "
             "The second measurements that disagree with V074, V121 and V124 are in [crosscheck.md](crosscheck.md).\n",
             "```", format_table(res), "```\n", "The gaps:\n"]
            + [f"- {g}".format(**per_micro_batch_gap(recs, res)) for g in GAPS] + [
                "- DeepEP (the `a2a=hierarchical` rows) sends a token once per destination rank and its combine "
                "returns one reduced row per rank, where Megatron's flat all-to-all sends one row per routed "
                f"expert: Qwen3-30B-A3B's top-8 of 128 experts on 8 GPUs reach "
                f"{expected_domains_touched(128, 8, 8):.2f} ranks per token, DeepSeek-V3's group-limited top-8 on "
                f"EP 64 {expected_domains_touched(256, 8, 64, 8, 4):.2f}.",
                "- V121 / V124 (MindSpeed-LLM MoE on 910B): see the sensitivity table below; no candidate "
                "mechanism moves them by more than a fraction of the gap, and the README's own GPU reference "
                "for V121 shows the same gap ([crosscheck.md](crosscheck.md)).", ""])


HOST_FLOOR_US = 75.0
"""torch_npu per-call floor with an aarch64 host (host-synchronised flash-attention demo on 910B2,
shared/data/ascend/README.md): an upper bound for what any one kernel's launch could cost."""
SENSITIVITY = [
    ("as predicted", {}, ""),
    (f"every kernel pays the {HOST_FLOOR_US:.0f} us torch_npu host floor",
     {"launch_overhead_us": HOST_FLOOR_US, "vector_launch_us": HOST_FLOOR_US}, ""),
    ("HCCS link fraction halved (0.7 -> 0.35)", {"scale_up_fraction": 0.35}, ""),
    ("learned routing skew x2 (MaxVio 1.04)", {}, "routing_param=2"),
    ("learned routing skew x3 (MaxVio 1.56)", {}, "routing_param=3"),
]
"""Candidate mechanisms for the Ascend MoE rows, each pushed past what the data supports."""


def sensitivity_section() -> list[str]:
    """How far each candidate mechanism moves the two Ascend MoE rows, and V077 under the recipe's
    expert TP: bounds that show which mechanisms cannot close the gaps (nothing here is fitted)."""
    from dataclasses import replace

    from npusim.validate.convert import record_hardware
    from npusim.validate.predict import predict_result
    from npusim.validate.runs import published_path, read_runs

    recs = {r.id: r for r in read_runs(published_path())}
    lines = ["## What the candidate mechanisms could add (Ascend MoE rows)\n",
             "Each line pushes one mechanism beyond what the data supports and re-predicts the row "
             "(error = predicted / measured - 1). A mechanism that cannot close a 50 % gap even at these "
             "values is not the missing one.\n",
             "| change | V121 step s | V121 error | V124 step s | V124 error |", "|---|---|---|---|---|"]
    for name, upd, plan in SENSITIVITY:
        cells = []
        for rid in ("V121", "V124"):
            rec = recs[rid]
            hw = record_hardware(rec)
            key = "calibration" if hw.calibration is not None else "efficiency"
            hw = hw.model_copy(update={key: hw.derating.model_copy(update=upd)})
            if plan:
                rec = replace(rec, plan=",".join(p for p in (rec.plan, plan) if p))
            v, _ = predict_result(rec, hw)
            cells.append(f"{v:.3f} | {100 * (v / rec.measured_step_time_s - 1):+.1f} %")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    v77 = recs["V077"]
    a, _ = predict_result(v77)
    b, _ = predict_result(replace(v77, etp=1))
    lines += ["", f"V077 with expert TP 1 (what the current Megatron-Bridge H100 DeepSeek-V3 recipe sets, "
              f"`expert_tensor_parallel_size = 1`; the 25.09 table does not print it, so the row keeps "
              f"Megatron's default of TP): {b:.2f} s ({100 * (b / v77.measured_step_time_s - 1):+.1f} %) "
              f"instead of {a:.2f} s ({100 * (a / v77.measured_step_time_s - 1):+.1f} %).", ""]
    return lines


def per_micro_batch_gap(recs, res) -> dict:
    """V097 vs V098 (same model, plan and micro-batch): relative step time per micro-batch, measured and predicted."""
    pred = {r["id"]: r["predicted"] for r in res["rows"]}
    def per(rid: str, step: float) -> float:
        r = recs[rid]
        return step / (r.global_batch // (r.dp * r.micro_batch))
    m97, m98 = per("V097", recs["V097"].measured_step_time_s), per("V098", recs["V098"].measured_step_time_s)
    p97, p98 = per("V097", pred["V097"]), per("V098", pred["V098"])
    return {"meas": 1 - m98 / m97, "pred": abs(p98 / p97 - 1)}


def main() -> int:
    text = ["# MoE: load imbalance, all-to-all and overlap\n",
            f"Generated {datetime.date.today()} by `python benchmarks/moe_report.py` on {platform.platform()}, "
            f"Python {platform.python_version()}.\n"] + ultra_section() + kernel_section() + routing_section()
    text += moge_section() + accuracy_section() + sensitivity_section()
    DOCS.write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
