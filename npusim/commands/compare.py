"""`npusim compare`: a measured profiler trace of one training step vs the simulation, by operator class."""
from __future__ import annotations

import json


from npusim.cli_util import int_in


def register(sub) -> None:
    """Add this command's parser."""
    from npusim.commands.trace import simulation_flags

    p = sub.add_parser("compare", parents=[simulation_flags()],
                       help="compare a PyTorch profiler trace of one step with the simulation, by operator class",
                       description="Classify the kernels of a PyTorch profiler (Kineto) Chrome trace of one training "
                                   "step into GEMM, attention, elementwise, communication by kind and optimizer, and "
                                   "print measured vs predicted seconds per class for one device, largest gap first "
                                   "(rules: docs/calibration.md). Simulation flags as in `npusim simulate`.")
    p.add_argument("--trace", required=True, metavar="TRACE.json",
                   help="torch.profiler export_chrome_trace output (or torch_npu trace_view.json)")
    p.add_argument("--rank", type=int_in("--rank", 0, 1_000_000), default=0, help="pipeline rank the trace was taken on (default 0)")
    p.add_argument("--steps", type=int_in("--steps", 1, 10**9), default=None,
                   help="training steps in the trace (default: its ProfilerStep# annotations, else 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    """Summarise the trace, predict per class, print the comparison."""
    from npusim.commands.trace import inputs_from_args
    from npusim.config.errors import ConfigError
    from npusim.report.rebuild import simulate_inputs
    from npusim.validate.trace_compare import (compare_classes, format_comparison, predicted_by_class, read_trace,
                                               summarize_trace)

    if args.steps is not None and args.steps < 1:
        raise ConfigError("--steps", "steps", args.steps, "must be positive", ">= 1")
    summary = summarize_trace(read_trace(args.trace), args.steps)
    inp = inputs_from_args(args)
    predicted = predicted_by_class(inp, args.rank)
    res = simulate_inputs(inp, keep_timeline=False)
    rows = compare_classes(summary.by_class_s, predicted)
    if args.json:
        print(json.dumps({"rows": rows, "coverage": summary.coverage, "measured_total_s": summary.total_s,
                          "steps": summary.steps, "what": summary.what, "unclassified_s": summary.unclassified_s,
                          "predicted_step_time_s": res.step_time_s, "predicted_breakdown_s": res.breakdown_s},
                         sort_keys=True))
        return 0
    exposed = ", ".join(f"{k} {v:.3g}" for k, v in res.breakdown_s.items() if k.endswith("_comm") and v > 0)
    footer = (f"predicted: step {res.step_time_s:.4g} s on rank {args.rank} of {res.extra['pipeline_ranks']}; "
              f"collectives above are whole (exposed: {exposed or 'none'})")
    print(format_comparison(rows, summary, footer))
    return 0
