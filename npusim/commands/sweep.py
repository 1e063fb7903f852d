"""`npusim sweep`: rank model shapes x parallel plans from a YAML spec (fast tier, then full simulation)."""
from __future__ import annotations

import json

from npusim.cli_util import positive_int


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("sweep", help="sweep model shapes and parallel plans from a YAML spec (docs/sweep.md)")
    p.add_argument("spec", help="sweep spec YAML (examples in sweeps/)")
    p.add_argument("--out", required=True, help="output folder: results.parquet, ranked.csv, spec, chunks")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local process pool (default) or a Ray cluster")
    p.add_argument("--workers", type=positive_int("--workers"), default=None,
                   help="local worker processes (default: all cores; 1 = in this process); Ray: CPUs of a local cluster")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local one)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args) -> int:
    """Run the sweep and print its summary."""
    from npusim.sweep.report import format_summary
    from npusim.sweep.run import run_sweep

    summary = run_sweep(args.spec, args.out, executor=args.executor, workers=args.workers,
                        address=args.ray_address, resume=args.resume)
    print(json.dumps(summary, sort_keys=True) if args.json else format_summary(summary))
    return 0
