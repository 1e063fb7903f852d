"""`npusim simulate`: one training step, a prefill (TTFT) or a decode step (TPOT)."""
from __future__ import annotations

import json

from npusim.cli_util import int_in, plan_text, positive_float, positive_int


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("simulate", help="simulate one training step, prefill or decode step")
    p.add_argument("--workload", choices=["train", "prefill", "decode"], default="train")
    p.add_argument("--model", default="pangu-ultra-moe-718b", help="preset name, model YAML or HF config.json")
    p.add_argument("--hardware", default="atlas-800t-a2", help="profile preset name or YAML path")
    p.add_argument("--devices", type=positive_int("--devices"), default=None,
                   help="devices (default 6144 for train, 8 for serving)")
    p.add_argument("--plan", type=plan_text("--plan"), default=None,
                   help='degrees and options, e.g. "tp=8,pp=16,vpp=2,ep=4" (dp derived when omitted); default: '
                        f'train "{TRAIN_PLAN}", serving "{SERVE_PLAN}"')
    p.add_argument("--seq-len", type=positive_int("--seq-len"), default=4096)
    p.add_argument("--global-batch", type=positive_int("--global-batch"), default=1536)
    p.add_argument("--micro-batch", type=positive_int("--micro-batch"), default=None)
    p.add_argument("--recompute", choices=["none", "selective", "full"], default=None)
    serve = p.add_argument_group("serving (--workload prefill|decode)")
    serve.add_argument("--cards", type=positive_int("--cards"), default=None,
                       help="cards instead of --devices: devices = cards x the profile's chips_per_card "
                            "(an Atlas 300I Duo card holds 2 chips)")
    serve.add_argument("--batch", type=positive_int("--batch"), default=None, help="concurrent sequences (all devices)")
    serve.add_argument("--input-len", type=positive_int("--input-len"), default=2048,
                       help="prompt length (prefill) or context of the decode step")
    serve.add_argument("--output-len", type=positive_int("--output-len"), default=None,
                       help="generated tokens per sequence (sizes the KV cache)")
    serve.add_argument("--draft-tokens", type=int_in("--draft-tokens", 0, 16), default=0, help="speculative (MTP) tokens verified per step")
    serve.add_argument("--accepted-tokens", type=float, default=0.0, help="mean accepted draft tokens per step")
    serve.add_argument("--block-size", type=int_in("--block-size", 0, 10_000_000), default=0, help="block (diffusion-style) decoding: tokens per block")
    serve.add_argument("--denoise-steps", type=positive_float("--denoise-steps"), default=0.0,
                       help="block decoding: expected forward passes per block (1..block size; a confidence-threshold "
                            "sampler's mean may be fractional)")
    p.add_argument("--flop-convention", choices=["npusim", "megatron", "palm"], default="npusim",
                   help="MFU numerator: npusim (causal attention halved), megatron (Korthikanti Eq. 7), palm")
    p.add_argument("--trace", default=None, metavar="FILE.json",
                   help="also write the simulated step as a Chrome trace (Perfetto / chrome://tracing)")
    p.add_argument("--op-level", action="store_true",
                   help="with --trace: add the event engine's tracks (every kernel and collective of every unit)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


TRAIN_PLAN = "tp=8,pp=16,vpp=2,ep=4,tp_extend_ep=1,sp=1,zero=1,micro_batch=2"
SERVE_PLAN = "tp=N,ep=N,etp=1,shared_tp=N,sp=1,moe_dispatch=allgather (N = devices; dense: tp=N,sp=1)"


def run(args) -> int:
    """Run one simulation and print it."""
    if args.workload != "train":
        return _run_serving(args)
    if args.cards is not None:
        from npusim.config.errors import ConfigError

        raise ConfigError("--cards", "cards", args.cards, "a serving flag", "--devices for training")
    from npusim.api import run_simulation

    if args.trace is not None:
        from npusim.outputs import check_file

        check_file(args.trace, "--trace")
    args.devices = args.devices or 6144
    args.plan = TRAIN_PLAN if args.plan is None else args.plan
    fields: dict = {}
    if args.micro_batch is not None:
        fields["micro_batch"] = args.micro_batch
    if args.recompute is not None:
        fields["recompute"] = args.recompute
    res = run_simulation(args.model, args.hardware, args.plan, args.devices, args.seq_len, args.global_batch,
                         flop_convention=args.flop_convention, keep_timeline=args.trace is not None, **fields)
    if args.trace is not None:
        from npusim.report.chrome_trace import write_chrome_trace

        write_chrome_trace(res, args.trace, hardware=args.hardware, op_level=args.op_level)
    _print(res, args.json)
    return 0


def _run_serving(args) -> int:
    """Simulate a prefill or decode step."""
    from npusim.api import run_serving
    from npusim.config.errors import ConfigError

    if args.trace is not None:
        raise ConfigError("--trace", "trace", args.trace, "timelines are written for training steps only",
                          "--workload train")
    devices = serving_devices(args)
    res = run_serving(args.model, args.hardware, args.plan, devices, args.workload, batch=args.batch or devices,
                      input_len=args.input_len, output_len=args.output_len, draft_tokens=args.draft_tokens,
                      accepted_tokens=args.accepted_tokens, block_size=args.block_size,
                      denoise_steps=args.denoise_steps)
    _print(res, args.json)
    return 0


def serving_devices(args) -> int:
    """Devices (chips) of a serving run: ``--devices``, or ``--cards`` x the profile's chips per card
    (default 8 devices); one-line error when both are given."""
    from npusim.config.errors import ConfigError
    from npusim.config.hardware import load_profile

    if args.cards is not None and args.devices is not None:
        raise ConfigError("--cards", "cards", args.cards, "give --cards or --devices, not both",
                          "--cards N (cards) or --devices N (chips)")
    if args.cards is not None:
        return args.cards * load_profile(args.hardware).node.chips_per_card
    return args.devices or 8


def _print(res, as_json: bool) -> None:
    """Print a result as JSON or as the text report."""
    if as_json:
        print(json.dumps(res.to_dict(), sort_keys=True))
    else:
        from npusim.report.text import format_result

        print(format_result(res))
