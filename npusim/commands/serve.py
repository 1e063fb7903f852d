"""`npusim serve`: request-level serving simulation (arrivals, continuous batching, disaggregation)."""
from __future__ import annotations

import json

from npusim.cli_util import int_in, plan_text, positive_float, positive_int


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("serve", help="request-level serving: TTFT/TPOT/E2E percentiles, throughput, SLO attainment")
    p.add_argument("--model", default="pangu-pro-moe-72b", help="preset name, model YAML or HF config.json")
    p.add_argument("--hardware", default="atlas-800i-a2", help="profile preset name or YAML path")
    p.add_argument("--devices", type=positive_int("--devices"), default=None,
                   help="devices (chips) of one instance (default 8; or --cards)")
    p.add_argument("--cards", type=positive_int("--cards"), default=None,
                   help="cards of one instance: devices = cards x the profile's chips_per_card")
    p.add_argument("--plan", type=plan_text("--plan"), default=None,
                   help="serving layout of one (decode) instance, as for simulate --workload decode")
    src = p.add_argument_group("requests (Poisson arrivals, or --trace)")
    src.add_argument("--qps", type=positive_float("--qps"), default=None, help="mean arrival rate, requests/s")
    src.add_argument("--input-len", type=positive_int("--input-len"), default=2048, help="prompt tokens")
    src.add_argument("--output-len", type=positive_int("--output-len"), default=512, help="generated tokens")
    src.add_argument("--duration", type=positive_float("--duration"), default=600.0, help="arrival window, seconds")
    src.add_argument("--seed", type=int_in("--seed", 0, 2**31 - 1), default=0, help="seed of the arrivals")
    src.add_argument("--trace", default=None, metavar="FILE.csv", help="requests: arrival_s,input_len,output_len")
    lay = p.add_argument_group("instances and scheduler")
    lay.add_argument("--instances", type=int_in("--instances", 1, 100_000), default=None,
                     help="collocated instances (default 1)")
    lay.add_argument("--prefill-instances", type=int_in("--prefill-instances", 1, 100_000), default=None,
                     help="disaggregated: prefill-only instances (with --decode-instances)")
    lay.add_argument("--decode-instances", type=int_in("--decode-instances", 1, 100_000), default=None,
                     help="disaggregated: decode-only instances")
    lay.add_argument("--prefill-plan", type=plan_text("--prefill-plan"), default=None,
                     help="disaggregated: layout of a prefill instance (default --plan)")
    lay.add_argument("--prefill-devices", type=positive_int("--prefill-devices"), default=None,
                     help="disaggregated: devices of a prefill instance (default --devices)")
    lay.add_argument("--chunk-tokens", type=positive_int("--chunk-tokens"), default=2048,
                     help="most prompt tokens prefilled per step (chunked prefill)")
    lay.add_argument("--max-batch", type=positive_int("--max-batch"), default=None,
                     help="most sequences decoding per instance (default: what the KV cache holds)")
    lay.add_argument("--drain", type=int_in("--drain", 0, 1_000_000), default=60,
                     help="seconds simulated after the last arrival")
    slo = p.add_argument_group("service-level objective")
    slo.add_argument("--ttft-slo", type=positive_float("--ttft-slo"), default=None, help="TTFT objective, seconds")
    slo.add_argument("--tpot-slo", type=positive_float("--tpot-slo"), default=None, help="TPOT objective, seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    """Load the inputs, simulate the requests, print the metrics."""
    from npusim.api import default_serving_plan
    from npusim.commands.simulate import serving_devices
    from npusim.config.errors import ConfigError
    from npusim.config.hardware import load_profile
    from npusim.config.loader import validate
    from npusim.config.model import load_model
    from npusim.config.plan import make_plan, parse_plan
    from npusim.serving.requests import poisson_requests, read_trace
    from npusim.serving.run import simulate_requests
    from npusim.serving.spec import ServeSpec

    if (args.qps is None) == (args.trace is None):
        raise ConfigError("--qps", "qps", args.qps, "give --qps (Poisson arrivals) or --trace, one of them",
                          "--qps N or --trace FILE.csv")
    disagg = args.prefill_instances is not None or args.decode_instances is not None
    spec = validate(ServeSpec, {
        "instances": 0 if disagg else (args.instances or 1), "prefill_instances": args.prefill_instances or 0,
        "decode_instances": args.decode_instances or 0, "prefill_chunk_tokens": args.chunk_tokens,
        "max_batch": args.max_batch or 0, "drain_s": float(args.drain), "ttft_slo_s": args.ttft_slo,
        "tpot_slo_s": args.tpot_slo}, "--instances/--prefill-instances/--decode-instances")
    if disagg and args.instances is not None:
        raise ConfigError("--instances", "instances", args.instances, "not with a disaggregated layout",
                          "--instances, or --prefill-instances with --decode-instances")
    if not disagg and (args.prefill_plan or args.prefill_devices):
        raise ConfigError("--prefill-plan", "prefill_plan", args.prefill_plan, "only with a disaggregated layout",
                          "--prefill-instances and --decode-instances")
    model, hw = load_model(args.model), load_profile(args.hardware)
    devices = serving_devices(args)
    plan = make_plan(default_serving_plan(model, devices) if args.plan is None else parse_plan(args.plan))
    pre_dev = args.prefill_devices or devices
    pre_plan = None
    if args.prefill_plan is not None:
        pre_plan = make_plan(parse_plan(args.prefill_plan, "--prefill-plan"), "--prefill-plan")
    elif disagg and pre_dev != devices:
        pre_plan = make_plan(default_serving_plan(model, pre_dev), "--prefill-plan")
    if args.trace is not None:
        requests = read_trace(args.trace)
        window = max(r.arrival_s for r in requests) or 1.0
    else:
        requests = poisson_requests(args.qps, args.duration, args.input_len, args.output_len, args.seed)
        window = args.duration
    out = simulate_requests(model, hw, plan, devices, requests, spec, window, pre_plan, pre_dev)
    out.update({"model": model.name, "hardware": hw.name, "qps": args.qps, "trace": args.trace,
                "window_s": window, "seed": args.seed})
    print(json.dumps(out, sort_keys=True) if args.json else format_serve(out))
    return 0


def format_serve(out: dict) -> str:
    """The text report of a serving run."""
    lay = out["layout"]
    where = (f"{lay['prefill_instances']} prefill x {lay['prefill_devices_per_instance']} + "
             f"{lay['decode_instances']} decode x {lay['devices_per_instance']} devices" if lay["prefill_instances"]
             else f"{lay['instances']} instance(s) x {lay['devices_per_instance']} devices")
    lines = [f"{out['model']} on {out['hardware']}: {where} = {out['cards']:g} cards",
             f"requests {out['requests']} (finished {out['finished']}, unfinished {out['unfinished']}), "
             f"simulated {out['simulated_s']:.1f} s"]
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        p = out[name]
        if p["p50"] is not None:
            lines.append(f"{name[:-2].upper():5s} ms  p50 {p['p50'] * 1e3:9.1f}  p90 {p['p90'] * 1e3:9.1f}  "
                         f"p99 {p['p99'] * 1e3:9.1f}")
    lines.append(f"output tokens/s {out['output_tokens_per_s']:.1f} ({out['output_tokens_per_s_per_card']:.1f} per card), "
                 f"utilization {out['utilization']:.2f}")
    if out["ttft_slo_s"] or out["tpot_slo_s"]:
        lines.append(f"SLO attainment {out['slo_attainment'] * 100:.1f} %")
    return "\n".join(lines)
