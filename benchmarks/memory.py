"""Memory what-ifs on Pangu Ultra MoE (718B) on 6144 Atlas 800T A2: the ladder from no recompute to
full recompute, with fine-grained recompute and activation swapping in between -- peak memory per
rank, step time and which rungs fit in the 64 GiB of HBM.

Usage: ``python benchmarks/memory.py``. Prints the table and rewrites the generated section of
docs/memory.md (between its BEGIN/END markers).
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path

from _common import machine, table, write_section

from npusim.api import run_simulation

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "memory.md"
BEGIN, END = "<!-- BEGIN memory.py -->", "<!-- END memory.py -->"
ULTRA = "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2,a2a=hierarchical,ep_overlap=1"
FINE = "recompute_modules=core_attn+layernorm+mla_up_proj+moe_act"
LADDER = [
    ("no recompute", ""),
    ("selective (core_attn)", "recompute=selective"),
    ("fine-grained", FINE),
    ("fine-grained + permute", FINE + "+permute"),
    ("fine-grained + swap 50 %", FINE + ",offload_activations=0.5"),
    ("fine-grained + swap 100 %", FINE + ",offload_activations=1"),
    ("recompute moe", "recompute_modules=layernorm+moe"),
    ("full recompute", "recompute=full"),
    ("full + optimizer offload", "recompute=full,offload_optimizer=1"),
]


def rows() -> list[list]:
    """One row per rung."""
    out = []
    for name, keys in LADDER:
        t0 = time.time()
        r = run_simulation("pangu-ultra-moe-718b", "atlas-800t-a2", ULTRA + ("," + keys if keys else ""),
                           devices=6144, seq_len=4096, global_batch=1536)
        bd, mem = r.breakdown_s, r.extra["memory_breakdown_GB"]
        out.append([name, f"`{keys or '-'}`", f"{r.peak_memory_GB:.1f}", f"{mem['activations']:.1f}",
                    f"{mem['total_with_buffers']:.1f}", f"{r.step_time_s:.2f}", f"{100 * r.mfu:.1f}",
                    f"{bd['recompute']:.2f}", f"{bd['offload']:.2f}", f"{bd['optimizer']:.2f}",
                    "yes" if r.peak_memory_GB <= r.hbm_capacity_GB else "no", f"{time.time() - t0:.0f}"])
    return out


def main() -> None:
    """Measure, print, and rewrite the generated part of docs/memory.md."""
    tab = table(["rung", "plan keys (on the published recipe)", "peak GB", "activations GB", "+ buffers GB",
                 "step s", "MFU %", "recompute s", "offload s", "optimizer s", "fits 64 GiB", "wall s"], rows())
    text = "\n".join([
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- Machine: {machine()}", "- Rerun: `python benchmarks/memory.py`",
        f"- Published recipe: `{ULTRA}`, 6144 devices, seq 4096, global batch 1536", "", tab])
    print(text)
    write_section(DOC, BEGIN, END, text)


if __name__ == "__main__":
    main()
