"""`npusim simulate`: one training step."""
from __future__ import annotations

import json

from npusim.cli_util import positive_int


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("simulate", help="simulate one training step")
    p.add_argument("--model", default="pangu-ultra-moe-718b", help="preset name, model YAML or HF config.json")
    p.add_argument("--hardware", default="atlas-800t-a2", help="profile preset name or YAML path")
    p.add_argument("--devices", type=positive_int("--devices"), default=6144)
    p.add_argument("--plan", default="tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2",
                   help='degrees and options, e.g. "tp=8,pp=16,vpp=2,ep=4" (dp derived when omitted)')
    p.add_argument("--seq-len", type=positive_int("--seq-len"), default=4096)
    p.add_argument("--global-batch", type=positive_int("--global-batch"), default=1536)
    p.add_argument("--micro-batch", type=positive_int("--micro-batch"), default=None)
    p.add_argument("--recompute", choices=["none", "selective", "full"], default=None)
    p.add_argument("--flop-convention", choices=["npusim", "megatron", "palm"], default="npusim",
                   help="MFU numerator: npusim (causal attention halved), megatron (Korthikanti Eq. 7), palm")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
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
