"""Report of the device check of the calibration issue: kernels against the shipped H200 data, and
single-device training steps against npusim's predictions with the calibrated H200 profile.

Run on a machine with the accelerator (benchmarks/device_session.sh does both steps):
    npusim microbench --out DIR --steps
    python benchmarks/device_session.py --from DIR      (writes docs/single_device.md)
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from _common import table

import npusim.data
from npusim.config.errors import ConfigError
from npusim.validate.compare import format_table, validate_runs
from npusim.validate.host_side import dropless_pairs, read_host_csv
from npusim.validate.kernel_diff import compare_kernel_dirs
from npusim.validate.predict import predict_record
from npusim.validate.runs import read_runs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "single_device.md"
REFERENCE = Path(npusim.data.__file__).parent / "calibration" / "h200"
TARGET_MAPE_PCT = 10.0
"""The issue's bar: single-device training steps predicted within 10 % on average."""


def kernel_section(measured: Path) -> list[str]:
    """Measured kernels against the shipped H200 folder, file by file."""
    rows = [[k, v["matched"], "-" if v["median_ratio"] is None else f"{v['median_ratio']:.3f}",
             "-" if v["mape_pct"] is None else f"{v['mape_pct']:.1f}"]
            for k, v in compare_kernel_dirs(measured, REFERENCE).items()]
    return ["## Kernels against the shipped H200 data\n",
            f"`{measured}` against `npusim/data/calibration/h200` (same shapes; ratio = measured / shipped time):\n",
            table(["file:column", "shapes", "median ratio", "mean |diff| %"], rows), ""]


def steps_section(measured: Path) -> tuple[list[str], dict, dict[str, float]]:
    """Training steps of training_steps.csv predicted with the preset each row names; also the
    predicted step time by id."""
    if not (measured / "training_steps.csv").is_file():
        return ["## Single-device training steps\n", f"`{measured}` has no training_steps.csv "
                "(run `npusim microbench --steps`).\n"], {"skipped": 1}, {}
    res = validate_runs(read_runs(measured / "training_steps.csv"), predict_record)
    s = res["summary"]
    verdict = "meets" if s["mape_pct"] is not None and s["mape_pct"] <= TARGET_MAPE_PCT else "misses"
    predicted = {r["id"]: r["predicted"] for r in res["rows"] if r["predicted"] is not None}
    return (["## Single-device training steps\n",
             "bf16 parameters, gradients and AdamW states, flash attention, no recompute; MoE experts as batched "
             "GEMMs with balanced routing, except the `-dropless` row (router top-k, expert row counts to the host "
             "in every MoE layer, a GEMM per expert; `npusim/validate/stepbench.py`); predicted with the preset each "
             "row names (for an H200: `nvidia-h200-sxm-141g`, calibrated from the shipped kernel data).\n",
             "```", format_table(res), "```\n",
             f"MAPE {s['mape_pct']} % against the issue's {TARGET_MAPE_PCT:.0f} %: {verdict} it.\n"], s, predicted)


def host_section(measured: Path, predicted: dict[str, float]) -> list[str]:
    """The host side of the steps (training_steps_host.csv) and the dropless / batched pairs."""
    path = measured / "training_steps_host.csv"
    if not path.is_file():
        return ["## Host side of the steps\n", f"`{measured}` has no training_steps_host.csv.\n"]
    rows = read_host_csv(path)
    lines = ["## Host side of the steps\n",
             "Issue = wall time until a step's last kernel was issued (before the final synchronisation); "
             "operators = dispatcher calls below autograd in one step (about one kernel each). A step that issues "
             "for about as long as it runs was paced by the host, which npusim does not model.\n",
             table(["id", "step ms", "issue ms", "issue / step", "operators", "issue us / operator", "syncs"],
                   [[r.id, f"{r.step_s * 1e3:.1f}", f"{r.host_issue_s * 1e3:.1f}", f"{r.issue_share:.2f}",
                     r.dispatched_ops, f"{r.issue_us_per_op:.1f}", r.host_syncs_per_step] for r in rows]), ""]
    pairs = dropless_pairs(rows, predicted)
    if pairs:
        lines += ["Dropless against batched experts, same shape (extra = dropless step - batched step):\n",
                  table(["dropless", "batched", "measured extra ms", "predicted extra ms", "unpriced ms",
                         "unpriced ms per MoE layer", "extra operators"],
                        [[p.dropless_id, p.batched_id, f"{p.measured_extra_s * 1e3:.1f}",
                          "-" if p.predicted_extra_s is None else f"{p.predicted_extra_s * 1e3:.1f}",
                          "-" if p.unpriced_s is None else f"{p.unpriced_s * 1e3:.1f}",
                          "-" if p.unpriced_per_sync_s is None else f"{p.unpriced_per_sync_s * 1e3:.2f}",
                          p.extra_ops] for p in pairs]), ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", required=True, help="output folder of `npusim microbench --steps`")
    ap.add_argument("--out", default=str(DOCS), help="Markdown file to write")
    args = ap.parse_args(argv)
    src = Path(args.src)
    env = json.loads((src / "env.json").read_text()) if (src / "env.json").is_file() else {}
    try:
        steps, summary, predicted = steps_section(src)
        host = host_section(src, predicted)
    except ConfigError as e:  # a malformed measured file: one line, exit 2
        print(f"device_session: error: {e}", file=sys.stderr)
        return 2
    text = "\n".join(["# Single-device check on a real accelerator\n",
                      f"Generated {datetime.date.today()} by `python benchmarks/device_session.py --from {src}` "
                      f"on {env.get('name', 'an unnamed device')} (torch {env.get('torch')}, CUDA {env.get('cuda')}).\n"]
                     + kernel_section(src) + steps + host)
    print(text)
    Path(args.out).write_text(text)
    return 0 if summary["skipped"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
