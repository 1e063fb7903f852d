"""`npusim moe-score`: Monte-Carlo imbalance score of a routing scheme (Pangu Pro MoE's IS)."""
from __future__ import annotations

import json

from npusim.cli_util import int_in, positive_int

MAX_CELLS = 10_000_000
"""Largest tokens x experts of one trial (its random keys and argsort take 16 bytes per cell)."""


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("moe-score", help="Monte-Carlo imbalance score IS = (max - min tokens per device) / tokens")
    p.add_argument("--routing", choices=["uniform", "grouped"], default="uniform",
                   help="uniform: plain top-k over all experts; grouped: MoGE, top_k/groups per group")
    p.add_argument("--experts", type=positive_int("--experts"), default=64)
    p.add_argument("--top-k", type=positive_int("--top-k"), default=8)
    p.add_argument("--devices", type=positive_int("--devices"), default=8)
    p.add_argument("--tokens", type=positive_int("--tokens"), default=16)
    p.add_argument("--groups", type=positive_int("--groups"), default=None, help="expert groups (default: devices)")
    p.add_argument("--trials", type=positive_int("--trials"), default=10_000)
    p.add_argument("--seed", type=int_in("--seed", 0, 2**63 - 1), default=0)
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    """Estimate and print the imbalance score."""
    from npusim.config.errors import ConfigError
    from npusim.workload.routing import imbalance_score

    groups = args.groups or args.devices
    if args.experts % args.devices:
        raise ConfigError("--experts", "experts", args.experts, f"not divisible by devices ({args.devices})")
    if args.top_k > args.experts:
        raise ConfigError("--top-k", "top_k", args.top_k, f"exceeds experts ({args.experts})")
    if args.routing == "grouped" and (args.experts % groups or args.top_k % groups):
        raise ConfigError("--groups", "groups", groups, "must divide experts and top_k for grouped routing")
    if args.tokens * args.experts > MAX_CELLS:
        raise ConfigError("--tokens", "tokens", args.tokens, f"tokens x experts = {args.tokens * args.experts:,} per trial "
                          "too large", f"tokens x experts <= {MAX_CELLS:,}")
    if args.trials * args.tokens * args.experts > 2e9:
        raise ConfigError("--trials", "trials", args.trials, "trials x tokens x experts too large", "<= 2e9")
    res = imbalance_score(args.routing, args.experts, args.top_k, args.devices, args.tokens, groups,
                          args.trials, args.seed)
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        print(f"{res['scheme']}: {res['experts']} experts, top-{res['top_k']}, {res['devices']} devices, "
              f"{res['tokens']} tokens, {res['trials']} trials: mean IS {res['mean_IS']:.4f}, "
              f"P(IS > 0) {res['p_IS_gt_0']:.4f}, p95 IS {res['p95_IS']:.4f}")
    return 0
