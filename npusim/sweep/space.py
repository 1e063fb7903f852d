"""The search space: model variants (with parameter constraints) and parallel plans (auto or axes).

``plan: auto`` enumerates, per model and device count, only values each axis can take given the
axes chosen before it (tp divides the heads and a server, pp divides the devices, ep divides the
experts and tp*cp*dp, micro-batch divides the batch...), so almost every generated plan is valid.
Values listed explicitly in the spec are taken as they are; combinations the core rejects become
rows with reason 'divisibility'. Every point gets a stable id: a hash of its inputs.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from npusim.sweep.spec import AXES


@dataclass(frozen=True)
class Variant:
    """One model shape of the sweep."""

    overrides: dict
    """Fields changed from the base model."""
    model: Any
    """The ModelConfig, or None when the overrides make an invalid model."""
    reason: Optional[str] = None
    """'model' (invalid shape) or 'constraint' (outside the parameter budget); None when usable."""
    message: str = ""
    total_params_B: Optional[float] = None
    activated_params_B: Optional[float] = None


def build_variant(base: dict, overrides: dict, constraints=None) -> Variant:
    """Validate one model variant and check it against the parameter constraints."""
    from npusim.config.errors import ConfigError
    from npusim.config.loader import validate
    from npusim.config.model import ModelConfig

    name = base.get("name", "model")
    if overrides:
        name += "[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]"
    try:
        model = validate(ModelConfig, {**base, **overrides, "name": name}, "model.vary")
    except ConfigError as e:
        return Variant(overrides, None, "model", str(e))
    total, act = model.total_params() / 1e9, model.activated_params() / 1e9
    for key, value in (("total_params_B", total), ("activated_params_B", act)):
        rng = getattr(constraints, key, None)
        if rng is not None and not rng.holds(value):
            return Variant(overrides, model, "constraint", f"{key} = {value:.2f} outside [{rng.min}, {rng.max}]",
                           total, act)
    return Variant(overrides, model, None, "", total, act)


def model_variants(base: dict, vary: dict, constraints=None) -> list[Variant]:
    """Every combination of the ``vary`` axes (in sorted key order), validated and constrained."""
    keys = list(vary)
    return [build_variant(base, dict(zip(keys, combo)), constraints)
            for combo in itertools.product(*(vary[k] for k in keys))]


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n`` in increasing order."""
    return [d for d in range(1, n + 1) if n % d == 0]


def _auto_values(axis: str, st: dict, c: dict) -> list:
    """Values of ``axis`` that fit the model, device count, workload and the axes chosen so far."""
    model, devices = c["model"], c["devices"]
    tp, cp, pp = st.get("tp") or 1, st.get("cp") or 1, st.get("pp") or 1
    mp = tp * cp * pp
    dp = devices // mp if devices % mp == 0 else 0
    moe = model.is_moe
    if axis == "tp":
        kv = model.n_kv_heads
        return [d for d in divisors(c["devices_per_node"]) if model.heads % d == 0
                and (model.attention == "mla" or kv % d == 0 or d % kv == 0)]
    if axis == "cp":
        return [x for x in (1, 2) if c["seq_len"] % x == 0]
    if axis == "pp":
        return [p for p in range(1, min(model.layers, 64) + 1) if devices % (tp * cp * p) == 0]
    if axis == "vpp":
        return [v for v in (1, 2, 3, 4) if v == 1 or (pp > 1 and pp * v <= model.layers)]
    if axis == "tp_extend_ep":
        # TP-extend-EP with ep = e is the layout of ep = e * tp, etp = 1 (the core models them alike),
        # so auto enumerates only the latter; list tp_extend_ep in the spec to sweep it by name.
        return [False] if moe else [None]
    if axis == "etp":
        return ([1] if st.get("tp_extend_ep") else sorted({1, tp})) if moe else [None]
    if axis == "ep":
        if not moe:
            return [None]
        spread = tp if st.get("tp_extend_ep") else 1
        etp = st.get("etp") or 1
        return [e for e in divisors(model.experts) if model.experts % (e * spread) == 0
                and dp and (tp * cp * dp) % (e * spread * etp) == 0] or [1]
    if axis == "sp":
        return [tp > 1 and (c["seq_len"] // cp) % tp == 0]
    if axis == "zero":
        return [0, 1]
    if axis == "recompute":
        return ["none", "selective", "full"]
    if axis == "micro_batch":
        gb, vpp = c["global_batch"], st.get("vpp") or 1
        return [b for b in (1, 2, 4) if dp and gb % (b * dp) == 0
                and (vpp == 1 or (gb // (b * dp)) % pp == 0)] or [1]
    raise ValueError(f"no auto values for {axis!r}")


def _axis_values(axis: str, space: dict, st: dict, c: dict) -> list:
    """Values to try for ``axis``: listed in the spec, auto (optionally within a range), or the default."""
    given = space.get(axis)
    if isinstance(given, list):
        return given
    if not space.get("auto"):
        return [None]
    vals = _auto_values(axis, st, c)
    if isinstance(given, dict):
        lo, hi = given.get("min"), given.get("max")
        vals = [v for v in vals if v is None or ((lo is None or v >= lo) and (hi is None or v <= hi))]
    return vals


def plans(space: dict, c: dict) -> Iterator[dict]:
    """Plan field dicts of the space for one (model, hardware, devices, workload) context."""
    options = {k: v for k, v in space.items() if k != "auto" and k not in AXES}
    opt_keys = list(options)
    for combo in itertools.product(*(options[k] for k in opt_keys)):
        fixed = dict(zip(opt_keys, combo))
        for st in _nest(space, c, 0, {}):
            yield {**{k: v for k, v in st.items() if v is not None}, **fixed}


def _nest(space: dict, c: dict, i: int, st: dict) -> Iterator[dict]:
    """Depth-first product over AXES, each axis's values computed from the outer choices."""
    if i == len(AXES):
        yield dict(st)
        return
    axis = AXES[i]
    for v in _axis_values(axis, space, st, c):
        st[axis] = v
        yield from _nest(space, c, i + 1, st)
    st.pop(axis, None)


def point_id(inputs: dict) -> str:
    """Stable 16-hex-digit id of a point: a hash of its inputs (canonical JSON)."""
    return hashlib.blake2b(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode(),
                           digest_size=8).hexdigest()


def generate(resolved: dict, variants: list[Variant], profiles: dict) -> list[dict]:
    """Every point of the sweep in a deterministic order: hardware, devices, workload, model, plan.

    A point is a dict of inputs plus ``id`` and ``index``; variants that are invalid or outside the
    constraints give one point each (per hardware, devices and workload) carrying their reason.
    """
    wl = resolved["workload"]
    out: list[dict] = []
    for hw_name, devices, seq, gb in itertools.product(list(profiles), resolved["devices"], wl["seq_len"],
                                                       wl["global_batch"]):
        hw = profiles[hw_name]
        for v in variants:
            common = {"hardware": hw_name, "devices": devices, "seq_len": seq, "global_batch": gb,
                      "model": v.overrides}
            if v.reason is not None:
                out.append({**common, "plan": {}, "pre": [v.reason, v.message]})
                continue
            c = {"model": v.model, "devices": devices, "seq_len": seq, "global_batch": gb,
                 "devices_per_node": hw.node.devices_per_node}
            for plan in plans(resolved["plan"], c):
                out.append({**common, "plan": plan})
    for i, p in enumerate(out):
        p["id"] = point_id({k: p[k] for k in ("hardware", "devices", "seq_len", "global_batch", "model", "plan")})
        p["index"] = i
    return out
