"""`npusim plan`: capacity planning — smallest device count and plan that train a token budget in time."""
from __future__ import annotations

import json

from npusim.cli_util import plan_text, positive_float, positive_int
from npusim.commands.plan_serve import register_serve, run_serve


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("plan", help="capacity planning: devices and plan to train N tokens within a deadline, "
                                    "or cards and instance layout to serve a request rate (--serve)")
    p.add_argument("--model", required=True, help="preset name, model YAML or HF config.json")
    p.add_argument("--hardware", required=True, help="profile preset name or YAML path")
    p.add_argument("--tokens", default=None, help="training tokens, e.g. 10T, 500B, 1.5e12 (required for training)")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--days", type=positive_float("--days"), help="deadline: find the smallest device count")
    goal.add_argument("--devices", type=positive_int("--devices"),
                      help="training: device count, find the days it takes; --serve: devices of one instance")
    register_serve(p)
    p.add_argument("--seq-len", type=positive_int("--seq-len"), default=4096)
    p.add_argument("--global-batch", type=positive_int("--global-batch"), default=1536)
    p.add_argument("--plan", type=plan_text("--plan"), default=None,
                   help='fix plan fields, e.g. "zero=1,cp=1,a2a=hierarchical" (other axes enumerated)')
    p.add_argument("--headroom", type=float, default=0.0, help="fraction of HBM kept free (0..0.9)")
    p.add_argument("--full-top", type=positive_int("--full-top"), default=3,
                   help="best fast-tier plans per device count re-scored by the full simulation")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the +-20 %% bandwidth reruns")
    p.add_argument("--workers", type=positive_int("--workers"), default=None,
                   help="processes for the sensitivity reruns (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    """Answer the capacity question and print it."""
    from npusim.config.errors import ConfigError
    from npusim.config.hardware import load_profile
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan, parse_plan
    from npusim.config.workload import TrainWorkload
    from npusim.sweep.capacity import parse_tokens, plan_capacity

    if args.serve:
        return run_serve(args)
    if args.tokens is None or (args.days is None and args.devices is None):
        raise ConfigError("--tokens", "tokens", args.tokens, "training capacity needs --tokens and --days or --devices",
                          "--tokens N with --days D or --devices N; or --serve")
    if not 0.0 <= args.headroom < 0.9:
        raise ConfigError("--headroom", "headroom", args.headroom, "out of range", "0 <= headroom < 0.9")
    tokens = parse_tokens(args.tokens)
    fields = parse_plan(args.plan) if args.plan is not None else {}
    make_plan(fields)  # type-check the fixed fields (one-line error)
    if "dp" in fields:
        raise ConfigError("--plan", "dp", fields["dp"], "dp is derived from the device count", "omit dp")
    space = {k: [v] for k, v in fields.items()}
    res = plan_capacity(load_model(args.model), load_profile(args.hardware), tokens,
                        TrainWorkload(seq_len=args.seq_len, global_batch=args.global_batch), days=args.days,
                        devices=args.devices, space=space, headroom=args.headroom, full_top=args.full_top,
                        sensitivity=not args.no_sensitivity, workers=args.workers)
    print(json.dumps(res, sort_keys=True, default=str) if args.json else format_capacity(res))
    return 0


def format_capacity(r: dict) -> str:
    """The capacity answer as text."""
    a = r["answer"]
    goal = f"within {r['deadline_days']:g} days" if r["deadline_days"] else f"on {a.get('devices')} devices"
    lines = [f"{r['model']} on {r['hardware']}: {r['tokens']:.3g} tokens {goal} "
             f"(seq {r['seq_len']}, global batch {r['global_batch']})"]
    if a["devices"] is None and a.get("reason") == "deadline":
        lines.append(f"  no plan can meet the deadline: even at 100 % MFU it needs at least "
                     f"{a['min_devices_at_full_mfu']:,} devices, above the profile's limit of {a['max_devices']:,}")
    elif a["devices"] is None:
        lines.append("  no plan fits in memory on any device count tried")
    else:
        if a.get("meets_deadline") is False:
            lines.append("  NO device count up to the profile's limit meets the deadline; the fastest tried:")
        plan = ",".join(f"{k}={v}" for k, v in sorted(a["plan"].items()))
        lines += [f"  devices      {a['devices']}",
                  f"  plan         {plan} (dp={a['resolved_plan']['dp']})",
                  f"  throughput   {a['tokens_per_s']:,.0f} tokens/s, MFU {100 * a['mfu']:.1f} %, "
                  f"step {a['step_time_s']:.2f} s, memory {a['peak_memory_GB']:.1f} GB",
                  f"  expected     {a['days']:.1f} days, {a['device_hours']:,.0f} device-hours"]
    if r["tried"]:
        lines.append("  searched     " + ", ".join(f"{t['devices']} ({t['days']:.1f} d)" for t in r["tried"]))
    if r["sensitivity"]:
        lines.append("  sensitivity (the same search with one bandwidth changed):")
    for s in r["sensitivity"]:
        if s["devices"] is None:
            lines.append(f"    {s['change']:18s} no answer")
        else:
            miss = " (misses the deadline)" if s.get("meets_deadline") is False else ""
            lines.append(f"    {s['change']:18s} {s['devices']:>6} devices, {s['days']:.1f} days, "
                         f"{s['device_hours']:,.0f} device-hours, MFU {100 * s['mfu']:.1f} %{miss}")
    return "\n".join(lines)
