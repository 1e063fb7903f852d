"""Command line: load the three inputs, call the core, write the result. Imports stay lazy."""
from __future__ import annotations

import argparse
import json
import sys


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        self.exit(2, f"npusim: error: {self.prog}: {message}\n")


def _positive_int(flag: str):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} = {text!r}: not an integer (allowed: a positive integer)") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{flag} = {v}: must be positive (allowed: >= 1)")
        return v
    return conv


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="simulate one training step")
    p.add_argument("--model", default="pangu-ultra-moe-718b", help="preset name, model YAML or HF config.json")
    p.add_argument("--hardware", default="atlas-800t-a2", help="profile preset name or YAML path")
    p.add_argument("--devices", type=_positive_int("--devices"), default=6144)
    p.add_argument("--plan", default="tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2",
                   help='degrees and options, e.g. "tp=8,pp=16,vpp=2,ep=4" (dp derived when omitted)')
    p.add_argument("--seq-len", type=_positive_int("--seq-len"), default=4096)
    p.add_argument("--global-batch", type=_positive_int("--global-batch"), default=1536)
    p.add_argument("--micro-batch", type=_positive_int("--micro-batch"), default=None)
    p.add_argument("--recompute", choices=["none", "selective", "full"], default=None)
    p.add_argument("--flop-convention", choices=["npusim", "megatron", "palm"], default="npusim",
                   help="MFU numerator: npusim (causal attention halved), megatron (Korthikanti Eq. 7), palm")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="predict every row of a run-record CSV and compare")
    p.add_argument("runs", help="run-record CSV (schema: docs/formats.md)")
    p.add_argument("--json", action="store_true")


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="fit a profile's efficiency models from kernel timings")
    p.add_argument("--hardware", required=True, help="profile preset name or YAML path to start from")
    p.add_argument("--from", dest="data_dir", required=True, help="folder with gemm.csv, grouped_gemm.csv, attention.csv, memory.csv")
    p.add_argument("--out", required=True, help="profile YAML to write (may be the input file)")


def _add_listers(sub) -> None:
    hw = sub.add_parser("hw", help="hardware profiles").add_subparsers(dest="action", required=True,
                                                                        parser_class=_Parser)
    hw.add_parser("list", help="list presets")
    hw.add_parser("show", help="show one profile").add_argument("name")
    mo = sub.add_parser("model", help="model presets").add_subparsers(dest="action", required=True,
                                                                      parser_class=_Parser)
    mo.add_parser("list", help="list presets with parameter counts")
    mo.add_parser("show", help="show one model").add_argument("name")


def build_parser() -> argparse.ArgumentParser:
    """The ``npusim`` argument parser."""
    parser = _Parser(prog="npusim", description="Performance simulator for LLM training on Ascend NPUs and GPUs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_simulate(sub)
    _add_validate(sub)
    _add_calibrate(sub)
    _add_listers(sub)
    return parser


def cmd_simulate(args) -> int:
    """Run one simulation and print it."""
    from npusim.api import run_simulation

    fields: dict = {}
    if args.micro_batch is not None:
        fields["micro_batch"] = args.micro_batch
    if args.recompute is not None:
        fields["recompute"] = args.recompute
    res = run_simulation(args.model, args.hardware, args.plan, args.devices, args.seq_len, args.global_batch,
                         flop_convention=args.flop_convention, **fields)
    if args.json:
        print(json.dumps(res.to_dict(), sort_keys=True))
    else:
        from npusim.report.text import format_result

        print(format_result(res))
    return 0


def cmd_validate(args) -> int:
    """Predict every row of a run-record file."""
    from npusim.validate.compare import format_table, validate_runs
    from npusim.validate.predict import predict_record
    from npusim.validate.runs import read_runs

    result = validate_runs(read_runs(args.runs), predict_record)
    print(json.dumps(result, sort_keys=True) if args.json else format_table(result))
    return 0


def cmd_calibrate(args) -> int:
    """Fit the calibration section and write the profile."""
    from pathlib import Path

    from npusim.config.hardware import load_profile, profile_path
    from npusim.validate.calibrate import calibrate
    from npusim.validate.profile_io import write_calibrated_profile

    hw = load_profile(args.hardware)
    cal = calibrate(hw, args.data_dir)
    write_calibrated_profile(profile_path(args.hardware), cal, Path(args.out))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in cal["residuals"].items()))
    return 0


def cmd_hw(args) -> int:
    """List or show hardware profiles."""
    from npusim.config.hardware import list_profiles, load_profile

    if args.action == "list":
        for name in list_profiles():
            hw = load_profile(name)
            bf = hw.chip.matrix_tflops.get("bf16") or hw.chip.matrix_tflops.get("fp16")
            print(f"{name:24s} {hw.chip.name:34s} {bf:7.1f} TFLOPS  {hw.chip.hbm_capacity_GB:6.1f} GB  "
                  f"{hw.chip.hbm_bandwidth_GBps:6.0f} GB/s")
        return 0
    import yaml

    print(yaml.safe_dump(load_profile(args.name).model_dump(mode="json"), sort_keys=False), end="")
    return 0


def cmd_model(args) -> int:
    """List or show model presets."""
    from npusim.config.model import list_models, load_model

    if args.action == "list":
        print(f"{'name':24s} {'total_B':>9s} {'activated_B':>12s} {'layers':>6s} {'hidden':>6s} {'experts':>7s}")
        for name in list_models():
            s = load_model(name).summary()
            print(f"{name:24s} {s['total_params_B']:9.2f} {s['activated_params_B']:12.2f} {s['layers']:6d} "
                  f"{s['hidden']:6d} {s['experts']:7d}")
        return 0
    m = load_model(args.name)
    print(json.dumps({"summary": m.summary(), "config": m.model_dump(mode="json")}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``npusim`` console script."""
    args = build_parser().parse_args(argv)
    from npusim.config.errors import ConfigError

    handler = {"simulate": cmd_simulate, "validate": cmd_validate, "calibrate": cmd_calibrate, "hw": cmd_hw,
               "model": cmd_model}[args.command]
    try:
        return handler(args)
    except ConfigError as e:
        print(f"npusim: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
