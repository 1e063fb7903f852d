"""`npusim hw` and `npusim model`: list and show presets."""
from __future__ import annotations

import json

from npusim.cli_util import Parser


def register(sub) -> None:
    """Add this command's parser."""
    hw = sub.add_parser("hw", help="hardware profiles").add_subparsers(dest="action", required=True,
                                                                        parser_class=Parser)
    hw.add_parser("list", help="list presets")
    hw.add_parser("show", help="show one profile").add_argument("name")
    mo = sub.add_parser("model", help="model presets").add_subparsers(dest="action", required=True,
                                                                      parser_class=Parser)
    mo.add_parser("list", help="list presets with parameter counts")
    mo.add_parser("show", help="show one model").add_argument("name")


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


def run(args) -> int:
    """Dispatch to hw or model."""
    return cmd_hw(args) if args.command == "hw" else cmd_model(args)
