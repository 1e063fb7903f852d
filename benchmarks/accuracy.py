"""Accuracy benchmark: predict every published run and write docs/accuracy.md.

Run: python benchmarks/accuracy.py
"""
from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path

from npusim.validate.compare import format_table, validate_runs
from npusim.validate.predict import predict_record
from npusim.validate.runs import published_path, read_runs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "accuracy.md"
GROUP_DATA = Path(__file__).resolve().parents[1] / "npusim" / "data" / "accuracy" / "groups.json"
"""Each group's MAPE, read by the sweep's score intervals (``npusim.sweep.error_table``)."""
KEYS = {  # (hardware family, kind) the sweep's error table takes from each group
    "Dense A100 (Narayanan T1-2, Korthikanti T5) - the issue-2 gate": [["nvidia-a100", "dense"]],
    "H100 dense (Megatron-Bridge, NeMo 24.12, AutoModel)": [["nvidia", "dense"]],
    "H100 MoE (force-balanced benchmark routing)": [["nvidia", "moe"]],
    "Ascend 910B (MindSpeed-LLM)": [["ascend", "dense"], ["ascend", "moe"]],
    "Inference (Pangu Pro MoE)": [["ascend", "serving"]],
}
GROUPS = {
    "Dense A100 (Narayanan T1-2, Korthikanti T5) - the issue-2 gate": [f"V{i:03d}" for i in list(range(1, 17)) + list(range(23, 31))],
    "H100 dense (Megatron-Bridge, NeMo 24.12, AutoModel)": ["V071", "V072", "V073", "V089", "V090", "V091", "V092", "V093", "V094", "V095", "V101"],
    "H100 MoE (force-balanced benchmark routing)": ["V074", "V075", "V076", "V077", "V097", "V098", "V099", "V100"],
    "Ascend 910B (MindSpeed-LLM)": ["V114", "V115", "V116", "V118", "V121", "V124"],
    "Inference (Pangu Pro MoE)": ["P001", "P002", "P003", "P004"],
}


def main() -> int:
    recs = {r.id: r for r in read_runs(published_path())}
    out = ["# Accuracy on published runs\n",
           f"Generated {datetime.date.today()} by `python benchmarks/accuracy.py` on {platform.platform()}, "
           f"Python {platform.python_version()}. Metric: training step time (s). Error = predicted/measured - 1.\n",
           "Efficiency parameters: NVIDIA profiles use the H200 kernel fit (`npusim calibrate`), Ascend "
           "profiles their documented defaults; nothing is fitted to these rows. Rows without a published "
           "micro-batch use the fastest of {1, 2, 4, 8} that fits (see `npusim/validate/runs.py`).\n"]
    groups = []
    for title, ids in GROUPS.items():
        res = validate_runs([recs[i] for i in ids if i in recs], predict_record)
        groups.append({"group": title, "keys": KEYS[title], "n": res["summary"]["n"],
                       "mape_pct": res["summary"]["mape_pct"]})
        table = format_table(res)
        print(f"== {title}\n{table}\n")
        out += [f"## {title}\n", "```", table, "```\n"]
    res = validate_runs(list(recs.values()), predict_record)
    s = res["summary"]
    line = f"All rows: n={s['n']} MAPE={s['mape_pct']}% max={s['max_ape_pct']}% tau={s['kendall_tau']} skipped={s['skipped']}"
    print(line)
    out += ["## All rows\n", line + "\n"]
    DOCS.parent.mkdir(exist_ok=True)
    DOCS.write_text("\n".join(out))
    GROUP_DATA.parent.mkdir(exist_ok=True)
    GROUP_DATA.write_text(json.dumps({"source": "python benchmarks/accuracy.py (docs/accuracy.md)",
                                      "generated": str(datetime.date.today()), "groups": groups,
                                      "all": {"n": s["n"], "mape_pct": s["mape_pct"]}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
