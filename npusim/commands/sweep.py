"""`npusim sweep`: rank model shapes x parallel plans from a YAML spec (fast tier, then full simulation)."""
from __future__ import annotations

import json

from npusim.cli_util import positive_int


def non_negative_float(flag: str):
    """An argparse type: a finite number >= 0 (one-line error naming the flag)."""
    import argparse
    import math

    def conv(text: str) -> float:
        from npusim.config.errors import shown

        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} = {shown(text)}: not a number (allowed: seconds >= 0)") from None
        if not (math.isfinite(v) and v >= 0):
            raise argparse.ArgumentTypeError(f"{flag} = {shown(text)}: must be finite and >= 0 (allowed: seconds >= 0)")
        return v
    return conv


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("sweep", help="sweep model shapes and parallel plans from a YAML spec (docs/sweep.md)")
    p.add_argument("spec", help="sweep spec YAML (examples in sweeps/)")
    p.add_argument("--out", default=None,
                   help="output folder: results.parquet, ranked.csv, shapes.csv, spec, chunks (required unless --dry-run)")
    p.add_argument("--dry-run", action="store_true",
                   help="print points per axis, the total, what the cheap checks remove and the estimated time; run nothing")
    p.add_argument("--max-points", type=positive_int("--max-points"), default=None,
                   help="refuse a spec with more points than this (default: the spec's max_points, 250,000)")
    p.add_argument("--progress-every", type=non_negative_float("--progress-every"), default=10.0, metavar="S",
                   help="when stderr is not a terminal, a status line every S seconds (0 = none; default 10)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local process pool (default) or a Ray cluster")
    p.add_argument("--workers", type=positive_int("--workers"), default=None,
                   help="local worker processes (default: all cores; 1 = in this process); Ray: CPUs of a local cluster")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local one)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


NO_FEASIBLE = 3
"""Exit code of a sweep that finished with no feasible point (its reasons are printed by count)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived during a sweep (raised in the main thread by the handler)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals():
    """Turn SIGINT and SIGTERM into ``Interrupted`` (a second one exits at once); return a restore function.
    A signal this process was started ignoring (e.g. SIGINT of a background job) stays ignored."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread only
        return lambda: None

    def handler(signum, frame):
        if getattr(handler, "fired", False):
            os._exit(128 + signum)
        handler.fired = True
        raise Interrupted(signum)

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) in (signal.SIG_IGN, None):
            continue
        old[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in old.items():
            signal.signal(sig, h)
    return restore


def resume_command(spec: str, out: str) -> str:
    """The command line that continues this sweep."""
    import shlex

    return f"npusim sweep {shlex.quote(str(spec))} --out {shlex.quote(str(out))} --resume"


def run(args) -> int:
    """Run the sweep and print its summary; on SIGINT/SIGTERM keep the chunks and print how to resume."""
    import signal
    import sys
    from pathlib import Path

    from npusim.sweep.report import format_summary
    from npusim.sweep.run import run_sweep
    from npusim.sweep.store import CHUNK_DIR, CHUNK_SUFFIX

    if args.dry_run:
        from npusim.sweep.dryrun import dry_run, format_dry_run

        d = dry_run(args.spec, max_points=args.max_points, workers=args.workers)
        print(json.dumps(d, sort_keys=True, default=str) if args.json else format_dry_run(d))
        return 2 if d["over_limit"] else 0
    if args.out is None:
        from npusim.config.errors import ConfigError

        raise ConfigError("--out", "out", None, "required to run a sweep", "--out DIR, or --dry-run")
    restore = _stop_on_signals()
    try:
        summary = run_sweep(args.spec, args.out, executor=args.executor, workers=args.workers,
                            address=args.ray_address, resume=args.resume, max_points=args.max_points,
                            progress_every=args.progress_every)
    except (Interrupted, KeyboardInterrupt) as e:
        signum = getattr(e, "signum", signal.SIGINT)
        chunks = Path(args.out) / CHUNK_DIR
        kept = len(list(chunks.glob("*" + CHUNK_SUFFIX))) if chunks.is_dir() else 0
        print(f"npusim: interrupted by {signal.Signals(signum).name}: {kept} finished chunks kept in {args.out}; "
              f"resume with: {resume_command(args.spec, args.out)}", file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        restore()
    print(json.dumps(summary, sort_keys=True) if args.json else format_summary(summary))
    if summary["status"]["ok"] == 0:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(summary["infeasible_by_reason"].items(),
                                                             key=lambda kv: (-kv[1], kv[0])))
        errors = summary["status"]["error"]
        print(f"npusim: no feasible point among {summary['points']:,}: {reasons or 'none infeasible'}"
              + (f"; {errors:,} errors" if errors else ""), file=sys.stderr)
        return NO_FEASIBLE
    return 0
