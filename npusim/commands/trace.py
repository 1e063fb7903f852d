"""`npusim trace`: write one simulated step as a Chrome trace (Perfetto, chrome://tracing)."""
from __future__ import annotations

import argparse
import json


TRAIN_FLAGS = ("model", "hardware", "devices", "plan", "seq_len", "global_batch", "micro_batch", "recompute",
               "flop_convention")
"""Flags of `npusim simulate` that describe a training step (the ones trace and plot take)."""
TRAIN_DEVICES = 6144
"""`npusim simulate`'s device count for a training step when --devices is not given."""


def simulation_flags() -> argparse.ArgumentParser:
    """A parent parser with `npusim simulate`'s training flags (same names, types, defaults and help)."""
    from npusim.commands import simulate

    holder = argparse.ArgumentParser(add_help=False).add_subparsers()
    simulate.register(holder)
    parent = argparse.ArgumentParser(add_help=False)
    for a in holder.choices["simulate"]._actions:
        if a.dest in TRAIN_FLAGS:
            parent.add_argument(*a.option_strings, dest=a.dest, type=a.type, default=a.default, choices=a.choices,
                                help=a.help, metavar=a.metavar)
    return parent


def default_plan() -> str:
    """`npusim simulate`'s training plan."""
    from npusim.commands import simulate

    return getattr(simulate, "TRAIN_PLAN", None) or simulation_flags().get_default("plan")


def inputs_from_args(args, plan: str | None = None):
    """The simulation inputs named by the simulate flags of ``args`` (``plan`` overrides --plan)."""
    from npusim.report.rebuild import load_inputs

    fields: dict = {}
    if args.micro_batch is not None:
        fields["micro_batch"] = args.micro_batch
    if args.recompute is not None:
        fields["recompute"] = args.recompute
    if plan is None:
        plan = default_plan() if args.plan is None else args.plan
    return load_inputs(args.model, args.hardware, plan, args.devices or TRAIN_DEVICES,
                       args.seq_len, args.global_batch, flop_convention=args.flop_convention, **fields)


def writable(path: str, flag: str = "--out") -> str:
    """``path`` when a file can be written there (npusim.outputs.check_file), else a one-line ConfigError."""
    from npusim.outputs import check_file

    check_file(path, flag)
    return path


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("trace", parents=[simulation_flags()],
                       help="simulate one training step and write it as a Chrome trace (JSON)",
                       description="Simulate one step (same flags as `npusim simulate`) and write a Chrome trace: "
                                   "one process per pipeline rank, one thread per resource. Open it in "
                                   "https://ui.perfetto.dev or chrome://tracing (docs/timeline.md).")
    p.add_argument("--out", required=True, help="trace file to write, e.g. step.json")
    p.add_argument("--op-level", action="store_true",
                   help="add the event engine's tracks (every kernel and collective of every unit)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args) -> int:
    """Simulate with the timeline kept, write the trace, print the result."""
    from npusim.report.chrome_trace import write_chrome_trace
    from npusim.report.rebuild import simulate_inputs

    writable(args.out, "--out")
    inp = inputs_from_args(args)
    res = simulate_inputs(inp, keep_timeline=True)
    path = write_chrome_trace(res, args.out, hardware=inp.hardware, op_level=args.op_level)
    if args.json:
        print(json.dumps(res.to_dict(), sort_keys=True))
    else:
        print(f"wrote {path}: {res.extra['pipeline_ranks']} pipeline ranks, step time {res.step_time_s:.3f} s "
              f"(open in https://ui.perfetto.dev or chrome://tracing)")
    return 0
