"""The search space: model variants (with parameter constraints) and parallel plans (auto or axes).

``plan: auto`` enumerates, per model and device count, only values each axis can take given the
axes chosen before it (tp divides the heads and a server, pp divides the devices, ep divides the
experts and tp*cp*dp, micro-batch divides the batch...), so almost every generated plan is valid.
Values listed explicitly in the spec are taken as they are; combinations the core rejects become
rows with reason 'divisibility'. Every point gets a stable id: a hash of its inputs.
"""
from __future__ import annotations

import ast
import hashlib
import itertools
import json
import operator
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from npusim.sweep.spec import AXES, OPTION_AXES, SERVING_AXES

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod}


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


def eval_expr(text: str, values: dict) -> int:
    """Evaluate an integer expression of model fields (``hidden // 128``): integers, names of integer
    fields in ``values``, + - * // %, unary minus, parentheses, min() and max(); ValueError otherwise."""
    def ev(node):
        """Value of one syntax node."""
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            v = values.get(node.id)
            if type(v) is not int:
                raise ValueError(f"{node.id!r} is not an integer model field")
            return v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max")
                and node.args and not node.keywords):
            return (min if node.func.id == "min" else max)(ev(a) for a in node.args)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            raise ValueError("'/' is not integer division (use //)")
        raise ValueError(f"unsupported expression element {type(node).__name__}")

    from npusim.config.policy import MAX_EXPR_CHARS

    text = str(text)
    if len(text) > MAX_EXPR_CHARS:
        raise ValueError(f"expression of {len(text):,} characters; at most {MAX_EXPR_CHARS}")
    try:
        return ev(ast.parse(text, mode="eval").body)
    except SyntaxError as e:
        raise ValueError(f"cannot parse: {e.msg}") from None
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except (RecursionError, MemoryError):
        raise ValueError("expression nested too deeply") from None


def build_variant(base: dict, overrides: dict, constraints=None, derive: dict | None = None) -> Variant:
    """Validate one model variant (``derive`` expressions evaluated on it and added to its
    overrides) and check it against the parameter constraints."""
    from npusim.config.errors import ConfigError
    from npusim.config.loader import validate
    from npusim.config.model import ModelConfig

    if derive:
        values, overrides = {**base, **overrides}, dict(overrides)
        for key, expr in derive.items():
            try:
                values[key] = overrides[key] = eval_expr(expr, values)
            except ValueError as e:
                return Variant(overrides, None, "model", f"model.derive.{key} = {expr!r}: {e}")
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
    budget, tokens = getattr(constraints, "compute_budget", None), getattr(constraints, "tokens", None)
    if budget is not None and tokens:
        flops = 6.0 * act * 1e9 * tokens
        if not budget.holds(flops):
            return Variant(overrides, model, "constraint", f"training FLOPs 6 x {act:.2f}B x {tokens:.3g} tokens = "
                           f"{flops:.3g} outside [{budget.min}, {budget.max}]", total, act)
    return Variant(overrides, model, None, "", total, act)


def model_variants(base: dict, vary: dict, constraints=None, derive: dict | None = None) -> list[Variant]:
    """Every combination of the ``vary`` axes (in sorted key order), derived fields added, validated
    and constrained."""
    keys = list(vary)
    return [build_variant(base, dict(zip(keys, combo)), constraints, derive)
            for combo in itertools.product(*(vary[k] for k in keys))]


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n`` in increasing order (trial division up to sqrt(n): O(sqrt n))."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]


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


def _serving_values(axis: str, st: dict, c: dict) -> list:
    """Serving auto values: attention TP x DP over the instance, routed experts EP x ETP dividing it,
    shared experts TP over the attention group or the instance, MoE dispatch, W8A8, pp = 1."""
    model, devices = c["model"], c["devices"]
    tp, pp = st.get("tp") or 1, st.get("pp") or 1
    group = devices // pp if devices % pp == 0 else 0  # tp * dp
    moe = model.is_moe
    if axis == "tp":
        node = c["devices_per_node"]
        return [d for d in divisors(devices) if node % d == 0 and model.heads % d == 0]
    if axis == "pp":
        return [1]
    if axis == "moe_dispatch":
        return ["allgather", "alltoall"] if moe else [None]
    if axis == "etp":
        return [e for e in divisors(group) if model.expert_ffn_hidden % e == 0] if moe and group else [None]
    if axis == "ep":
        etp = st.get("etp") or 1
        return [e for e in divisors(model.experts) if group % (e * etp) == 0] or [1] if moe and group else [None]
    if axis == "shared_tp":
        # all-to-all dispatch leaves each attention group its own tokens: shared experts stay on its TP ranks
        if not (moe and model.shared_experts):
            return [None]
        width = model.shared_experts * model.expert_ffn_hidden
        wide = {tp, group} if st.get("moe_dispatch") == "allgather" else {tp}
        return [s for s in sorted(wide) if group % s == 0 and width % s == 0] or [tp]
    if axis == "sp":
        return [tp > 1]
    if axis == "precision":
        return ["int8"]
    if axis == "kv_precision":
        return [None]  # auto: 16-bit while the batch fits, then int8 (the batch search tries both)
    raise ValueError(f"no auto values for {axis!r}")


MEMORY_OPTIONS = ("recompute_modules", "offload_activations", "offload_optimizer")
"""Option axes that trade memory for time on any plan (docs/memory.md)."""


def _option_values(axis: str, given: list, st: dict, c: dict) -> list:
    """The listed values of an option axis (``schedule``, ``a2a``, ``ep_overlap``) valid for the plan
    chosen so far: a schedule that fits vpp, pp and the micro-batch count (one schedule when pp = 1);
    a2a and ep_overlap only where experts are exchanged (MoE, ep > 1), else the first value listed."""
    if axis in MEMORY_OPTIONS:  # memory levers apply to every plan (recompute_modules, swapping)
        return given
    if axis != "schedule":
        return given if c["model"].is_moe and (st.get("ep") or 1) > 1 else given[:1]
    pp, vpp = st.get("pp") or 1, st.get("vpp") or 1
    tp, cp = st.get("tp") or 1, st.get("cp") or 1
    dp = c["devices"] // (tp * cp * pp) if c["devices"] % (tp * cp * pp) == 0 else 0
    per = (st.get("micro_batch") or 1) * dp
    m = c["global_batch"] // per if per and c["global_batch"] % per == 0 else 0

    def fits(s: str) -> bool:
        from npusim.config.schedules import SCHEDULES

        f = SCHEDULES[s]
        if s == "interleaved":
            return vpp > 1 and m % pp == 0
        if f.vpp is not None and f.vpp != vpp:
            return False
        if s == "dualpipe" and (pp % 2 or m % 2):
            return False
        return not (s in ("dualpipe", "dualpipev") and m < 2 * pp)

    ok = [v for v in given if fits(v)]
    return ok[:1] if pp == 1 else ok


def _axis_values(axis: str, space: dict, st: dict, c: dict) -> list:
    """Values to try for ``axis``: listed in the spec, auto (optionally within a range), or the default."""
    given = space.get(axis)
    if axis in OPTION_AXES:
        return _option_values(axis, given, st, c)
    if isinstance(given, list):
        return given
    if not space.get("auto"):
        return [None]
    vals = _serving_values(axis, st, c) if c.get("serving") else _auto_values(axis, st, c)
    if isinstance(given, dict):
        lo, hi = given.get("min"), given.get("max")
        vals = [v for v in vals if v is None or ((lo is None or v >= lo) and (hi is None or v <= hi))]
    return vals


def plans(space: dict, c: dict) -> Iterator[dict]:
    """Plan field dicts of the space for one (model, hardware, devices, workload) context
    (``c["serving"]`` selects the serving axes)."""
    axes = SERVING_AXES if c.get("serving") else AXES
    if space.get("auto") and not c.get("serving"):
        axes += tuple(k for k in OPTION_AXES if isinstance(space.get(k), list))
    options = {k: v for k, v in space.items() if k != "auto" and k not in axes}
    opt_keys = list(options)
    states = _expand(space, c, axes)
    for combo in itertools.product(*(options[k] for k in opt_keys)):
        fixed = dict(zip(opt_keys, combo))
        for st in states:
            yield {**st, **fixed} if fixed else st


_SCALARS = (int, float, str, type(None))
"""Plan values that are their own fragment key (bool is an int); others are keyed by their repr."""


def encoded_plans(space: dict, c: dict) -> Iterator[tuple[dict, str]]:
    """(plan, its canonical JSON as ``point_id`` encodes it) for every plan of ``plans``. The JSON is
    joined from per-field fragments encoded once (a plan's fields sorted as ``sort_keys`` sorts
    them), which is several times cheaper than encoding each plan."""
    frags: dict[tuple, str] = {}
    orders: dict[tuple, tuple] = {}
    for plan in plans(space, c):
        names = tuple(plan)
        order = orders.get(names)
        if order is None:
            order = orders[names] = tuple(sorted(names))
        parts = []
        for k in order:
            v = plan[k]
            key = (k, type(v), v if isinstance(v, _SCALARS) else repr(v))  # lists (module lists) by repr
            f = frags.get(key)
            if f is None:
                f = frags[key] = _ENCODE(k) + ":" + _ENCODE(v)
            parts.append(f)
        yield plan, "{" + ",".join(parts) + "}"


def _expand(space: dict, c: dict, axes: tuple) -> list[dict]:
    """The product over ``axes`` in depth-first order (the first axis outermost), each axis's values
    computed from the outer choices; built level by level, which gives the same order. An axis
    whose value is None (not set) is left out of the state."""
    states: list[dict] = [{}]
    for axis in axes:
        nxt = []
        for st in states:
            for v in _axis_values(axis, space, st, c):
                nxt.append(st if v is None else {**st, axis: v})
        states = nxt
    return states


AXIS_READS = {"pp": ("tp", "cp"), "vpp": ("pp",), "etp": ("tp_extend_ep", "tp"),
              "ep": ("tp_extend_ep", "etp", "tp", "cp", "pp"), "sp": ("tp", "cp"),
              "micro_batch": ("vpp", "tp", "cp", "pp"), "schedule": ("pp", "vpp", "tp", "cp", "micro_batch"),
              "a2a": ("ep",), "ep_overlap": ("ep",), "shared_tp": ("tp", "moe_dispatch", "pp")}
"""The earlier axes whose chosen value the values of an axis depend on (``_auto_values``,
``_serving_values``, ``_option_values``; serving ``etp``/``ep`` read ``pp`` and ``etp``, listed
under the training names); axes absent read none. ``count_plans`` relies on it (tested against
``plans``)."""
_SERVING_READS = {"etp": ("pp",), "ep": ("etp", "pp"), "sp": ("tp",)}


def _needed(axes: tuple, serving: bool) -> list[tuple]:
    """For each axis position, the axes chosen up to it that a later axis reads."""
    reads = {**AXIS_READS, **_SERVING_READS} if serving else AXIS_READS
    out = []
    for i in range(len(axes)):
        later = {a for ax in axes[i + 1:] for a in reads.get(ax, ())}
        out.append(tuple(a for a in axes[:i + 1] if a in later))
    return out


def _axes_of(space: dict, c: dict) -> tuple[tuple, dict]:
    """(the plan axes enumerated for a context, in loop order; the listed options outside them)."""
    axes = SERVING_AXES if c.get("serving") else AXES
    if space.get("auto") and not c.get("serving"):
        axes += tuple(k for k in OPTION_AXES if isinstance(space.get(k), list))
    return axes, {k: v for k, v in space.items() if k != "auto" and k not in axes}


def _count_states(space: dict, c: dict, axes: tuple, level: int = 0, start: dict | None = None,
                  seen: dict | None = None, keep_only: dict | None = None) -> int:
    """How many states ``_expand`` completes from ``start`` (chosen up to ``level``), without building
    them: level by level, each state keeping only the chosen axes a later axis reads (``AXIS_READS``),
    so states that differ in nothing else merge (and their counts add). ``keep_only`` (axis -> set
    of values) counts only the states whose axes take those values."""
    states: dict[tuple, list] = {(): [start or {}, 1]}
    needed = _needed(axes, bool(c.get("serving")))
    for axis, keep in zip(axes[level:], needed[level:]):
        nxt: dict[tuple, list] = {}
        only = keep_only.get(axis) if keep_only else None
        fresh = seen is not None and axis not in seen
        found = seen.setdefault(axis, {}) if seen is not None else None
        for st, n in states.values():
            for v in _axis_values(axis, space, st, c):
                if v is not None:
                    if only is not None and v not in only:
                        continue
                    if found is not None:
                        found.setdefault(repr(v), v)
                new = {**st, axis: v}
                key = tuple([new.get(a) for a in keep])
                hit = nxt.get(key)
                if hit is None:
                    nxt[key] = [{a: new.get(a) for a in keep}, n]
                else:
                    hit[1] += n
        if fresh and not found:  # an axis no plan sets (e.g. etp of a dense model) is not listed
            del seen[axis]
        states = nxt
    return sum(n for _, n in states.values())


def count_plans(space: dict, c: dict, seen: dict | None = None, keep_only: dict | None = None) -> int:
    """How many plans ``plans`` yields for one context, without building them (``_count_states``).
    ``seen`` (axis -> {repr: value}) collects the values each axis takes; ``keep_only`` (axis -> set
    of values) counts only the plans whose axes take those values."""
    axes, options = _axes_of(space, c)
    total = _count_states(space, c, axes, seen=seen, keep_only=keep_only)
    for k, vals in options.items():
        if seen is not None:
            for v in vals:
                seen.setdefault(k, {}).setdefault(repr(v), v)
        total *= len(vals)
    return total


def plan_slice(space: dict, c: dict, start: int, stop: int) -> list[dict]:
    """``list(plans(space, c))[start:stop]``, built without the plans before ``start``: a depth-first
    walk that steps over whole subtrees by their counts."""
    axes, options = _axes_of(space, c)
    opt_keys = list(options)
    per = _count_states(space, c, axes)
    out: list[dict] = []
    for n, combo in enumerate(itertools.product(*(options[k] for k in opt_keys))):
        lo = n * per
        if lo >= stop or per == 0:
            break
        if lo + per <= start:
            continue
        fixed = dict(zip(opt_keys, combo))
        for st in _walk(space, c, axes, 0, {}, max(0, start - lo), stop - lo, [0]):
            out.append({**{k: v for k, v in st.items() if v is not None}, **fixed})
    return out


def _walk(space: dict, c: dict, axes: tuple, level: int, st: dict, start: int, stop: int, at: list) -> Iterator[dict]:
    """The complete states of ``_expand`` under ``st`` whose position (``at[0]`` counts them) lies in
    [start, stop), skipping subtrees that end before ``start``."""
    if level == len(axes):
        if at[0] >= start:
            yield st
        at[0] += 1
        return
    for v in _axis_values(axes[level], space, st, c):
        if at[0] >= stop:
            return
        new = {**st, axes[level]: v}
        n = _count_states(space, c, axes, level + 1, new) if level + 1 < len(axes) else 1
        if at[0] + n <= start:
            at[0] += n
            continue
        yield from _walk(space, c, axes, level + 1, new, start, stop, at)


_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def point_id(inputs: dict) -> str:
    """Stable 16-hex-digit id of a point: a hash of its inputs (canonical JSON)."""
    return _digest(_ENCODE(inputs))


def workload_keys(wl: dict) -> tuple[str, ...]:
    """Point keys that describe the workload: (seq_len, global_batch) for training, else the serving ones."""
    return ("seq_len", "global_batch") if wl.get("kind", "train") == "train" else ("kind", "input_len", "output_len", "batch")


def workload_points(wl: dict) -> list[dict]:
    """Every workload combination of the spec, in a fixed order."""
    if wl.get("kind", "train") == "train":
        return [{"seq_len": s, "global_batch": g} for s, g in itertools.product(wl["seq_len"], wl["global_batch"])]
    return [{"kind": wl["kind"], "input_len": i, "output_len": wl.get("output_len"), "batch": b}
            for i, b in itertools.product(wl["input_len"], wl["batch"])]


def devices_for(devices, hw_name: str) -> list[int]:
    """Device counts of one profile: the spec's list, or its entry of a per-hardware mapping."""
    return devices[hw_name] if isinstance(devices, dict) else devices


class TooManyPoints(Exception):
    """The spec has more points than its limit; ``count`` is the total."""

    def __init__(self, count: int, limit: int):
        super().__init__(count, limit)
        self.count, self.limit = count, limit


def generate(resolved: dict, variants: list[Variant], profiles: dict, limit: int | None = None) -> list[dict]:
    """Every point of the sweep in a deterministic order: hardware, devices, workload, model, plan.

    A point is a dict of inputs plus ``id`` and ``index``; variants that are invalid or outside the
    constraints give one point each (per hardware, devices and workload) carrying their reason.
    More than ``limit`` points: the rest are only counted, then TooManyPoints(count) is raised.
    """
    wl = resolved["workload"]
    serving = wl.get("kind", "train") != "train"
    keys = ("hardware", "devices", *workload_keys(wl), "model")
    out: list[dict] = []
    extra = 0
    for hw_name, hw in profiles.items():
        for devices, wp in itertools.product(devices_for(resolved["devices"], hw_name), workload_points(wl)):
            for v in variants:
                common = {"hardware": hw_name, "devices": devices, **wp, "model": v.overrides}
                head, tail = _ENCODE({**{k: common[k] for k in keys}, "plan": _SLOT}).split(_ENCODE(_SLOT))
                if v.reason is not None:
                    out.append({**common, "plan": {}, "pre": [v.reason, v.message], "id": _digest(head + "{}" + tail)})
                    continue
                c = {"model": v.model, "devices": devices, "devices_per_node": hw.node.devices_per_node,
                     "serving": serving, **wp}
                if limit is not None and len(out) > limit:
                    extra += count_plans(resolved["plan"], c)
                    continue
                for plan, text in encoded_plans(resolved["plan"], c):
                    out.append({**common, "plan": plan, "id": _digest(head + text + tail)})
    if limit is not None and len(out) + extra > limit:
        raise TooManyPoints(len(out) + extra, limit)
    for i, p in enumerate(out):
        p["index"] = i
    return out


_SLOT = "\x00plan\x00"
"""Placeholder of the plan in a point's JSON template (never a plan value)."""


def _digest(text: str) -> str:
    """16 hex digits of a point's canonical JSON (as ``point_id``)."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def contexts(resolved: dict, variants: list[Variant], profiles: dict) -> list[tuple[dict, Variant, dict | None]]:
    """(common point inputs, variant, plan context or None for a removed variant) in generation order."""
    wl = resolved["workload"]
    serving = wl.get("kind", "train") != "train"
    out = []
    for hw_name, hw in profiles.items():
        for devices, wp in itertools.product(devices_for(resolved["devices"], hw_name), workload_points(wl)):
            for v in variants:
                common = {"hardware": hw_name, "devices": devices, **wp, "model": v.overrides}
                c = None if v.reason is not None else {"model": v.model, "devices": devices, "serving": serving,
                                                       "devices_per_node": hw.node.devices_per_node, **wp}
                out.append((common, v, c))
    return out


def count_points(resolved: dict, variants: list[Variant], profiles: dict) -> tuple[int, dict[str, int], dict]:
    """(points, points of removed variants by reason, plan axis -> the values it takes) of a spec,
    counted without generating its points (``count_plans``)."""
    pre: dict[str, int] = {}
    seen: dict[str, dict] = {}
    total = 0
    for _, v, c in contexts(resolved, variants, profiles):
        if c is None:
            pre[v.reason] = pre.get(v.reason, 0) + 1
            total += 1
        else:
            total += count_plans(resolved["plan"], c, seen)
    return total, pre, {k: list(vals.values()) for k, vals in seen.items()}


def sample_points(resolved: dict, variants: list[Variant], profiles: dict, blocks: int, size: int) -> list[dict]:
    """About ``blocks`` x ``size`` points of evaluable shapes for timing: a contiguous run of ``size``
    plans from the middle of each of ``blocks`` contexts spread evenly through the sweep (every
    point of a small sweep), with their ids."""
    live = [(common, c) for common, _, c in contexts(resolved, variants, profiles) if c is not None]
    if not live:
        return []
    step = max(1, len(live) // blocks)
    out: list[dict] = []
    keys = ("hardware", "devices", *workload_keys(resolved["workload"]), "model", "plan")
    for common, c in live[step // 2::step][:blocks]:
        mid = max(0, count_plans(resolved["plan"], c) // 2 - size // 2)
        for plan in plan_slice(resolved["plan"], c, mid, mid + size):
            p = {**common, "plan": plan}
            p["id"], p["index"] = point_id({k: p[k] for k in keys}), len(out)
            out.append(p)
    return out
