"""`npusim plan --serve`: the fewest cards and instance layout serving a request rate within p99 SLOs."""
from __future__ import annotations

import json

from npusim.cli_util import int_in, positive_float, positive_int


def register_serve(p) -> None:
    """Add the --serve flags to the plan parser."""
    g = p.add_argument_group("serving capacity (--serve)")
    g.add_argument("--serve", action="store_true", help="plan serving capacity instead of training")
    g.add_argument("--qps", type=positive_float("--qps"), default=None, help="request rate to serve, requests/s")
    g.add_argument("--ttft-p99", type=positive_float("--ttft-p99"), default=None, help="p99 TTFT objective, seconds")
    g.add_argument("--tpot-p99", type=positive_float("--tpot-p99"), default=None, help="p99 TPOT objective, seconds")
    g.add_argument("--input-len", type=positive_int("--input-len"), default=2048, help="prompt tokens per request")
    g.add_argument("--output-len", type=positive_int("--output-len"), default=512, help="output tokens per request")
    g.add_argument("--duration", type=positive_float("--duration"), default=120.0,
                   help="arrival window of each simulated run, seconds")
    g.add_argument("--seed", type=int_in("--seed", 0, 2**31 - 1), default=0, help="seed of the arrivals")
    g.add_argument("--no-disagg", action="store_true", help="collocated layouts only")


def run_serve(args) -> int:
    """Answer the serving capacity question and print it."""
    from npusim.api import default_serving_plan
    from npusim.config.errors import ConfigError
    from npusim.config.hardware import load_profile
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan, parse_plan
    from npusim.serving.capacity import SIZES, Slo, plan_serving
    from npusim.serving.requests import poisson_requests

    for flag, v in (("--qps", args.qps), ("--ttft-p99", args.ttft_p99), ("--tpot-p99", args.tpot_p99)):
        if v is None:
            raise ConfigError(flag, flag[2:].replace("-", "_"), None, "required with --serve", "a positive number")
    for flag, v in (("--tokens", args.tokens), ("--days", args.days)):
        if v is not None:
            raise ConfigError(flag, flag[2:], v, "a training flag", "omit it with --serve")
    if args.plan is not None and args.devices is None:
        raise ConfigError("--plan", "plan", args.plan, "a fixed serving layout needs its --devices", "--devices N")
    model, hw = load_model(args.model), load_profile(args.hardware)
    if args.plan is not None:
        fixed = make_plan(parse_plan(args.plan))
        sizes = (args.devices,)

        def plan_for(d: int):
            """The given layout."""
            return fixed
    else:
        sizes = (args.devices,) if args.devices else SIZES

        def plan_for(d: int):
            """The default serving layout on ``d`` devices, W8A8 where the chip has int8."""
            fields = default_serving_plan(model, d)
            if "int8" in hw.chip.matrix_tflops:
                fields["precision"] = "int8"
            return make_plan(fields)

    requests = poisson_requests(args.qps, args.duration, args.input_len, args.output_len, args.seed)
    res = plan_serving(model, hw, requests, args.duration, Slo(args.ttft_p99, args.tpot_p99), plan_for, sizes,
                       disaggregated=not args.no_disagg)
    res.update({"model": model.name, "hardware": hw.name, "qps": args.qps, "ttft_p99_s": args.ttft_p99,
                "tpot_p99_s": args.tpot_p99, "input_len": args.input_len, "output_len": args.output_len})
    print(json.dumps(res, sort_keys=True, default=str) if args.json else format_serve_plan(res))
    return 0


def format_serve_plan(r: dict) -> str:
    """The serving capacity answer as text."""
    b = r["best"]
    lay = b["layout"]
    where = (f"{lay['prefill_instances']} prefill x {lay['prefill_devices_per_instance']} devices + "
             f"{lay['decode_instances']} decode x {lay['devices_per_instance']} devices" if lay["prefill_instances"]
             else f"{lay['instances']} instance(s) x {lay['devices_per_instance']} devices")
    plan = ",".join(f"{k}={v}" for k, v in sorted(lay["plan"].items()) if k in ("tp", "dp", "ep", "etp", "shared_tp",
                                                                               "moe_dispatch", "precision"))
    return "\n".join([
        f"{r['model']} on {r['hardware']}: {r['qps']:g} req/s of {r['input_len']} in / {r['output_len']} out, "
        f"p99 TTFT <= {r['ttft_p99_s'] * 1e3:g} ms, p99 TPOT <= {r['tpot_p99_s'] * 1e3:g} ms",
        f"  cards        {b['cards']:g}",
        f"  layout       {where} ({plan})",
        f"  p99          TTFT {b['ttft_s']['p99'] * 1e3:.1f} ms, TPOT {b['tpot_s']['p99'] * 1e3:.1f} ms",
        f"  throughput   {b['output_tokens_per_s']:.1f} output tokens/s ({b['output_tokens_per_s_per_card']:.1f} per card)",
        f"  searched     {len(r['tried'])} request-level runs"])
