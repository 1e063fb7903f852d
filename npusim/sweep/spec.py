"""Sweep spec: a strict YAML schema (pydantic, extra keys forbidden) and its semantic checks.

Every defect raises ``ConfigError`` with one line naming the spec file, the field, the value and
what is allowed; the CLI turns it into exit code 2. See docs/sweep.md for the format.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from npusim.config.errors import ConfigError, did_you_mean
from npusim.config.policy import MAX_BATCH, MAX_EXPR_CHARS, MAX_SEQ_LEN, StrictModel, no_bool

SeqLen = Annotated[int, BeforeValidator(no_bool), Field(gt=0, le=MAX_SEQ_LEN)]
Batch = Annotated[int, BeforeValidator(no_bool), Field(gt=0, le=MAX_BATCH)]

MODEL_ALIASES = {"hidden_size": "hidden", "num_layers": "layers", "num_experts": "experts",
                 "num_moe_experts": "experts", "moe_router_topk": "top_k", "num_attention_heads": "heads",
                 "num_query_groups": "kv_heads", "num_key_value_heads": "kv_heads", "ffn_hidden_size": "ffn_hidden",
                 "moe_ffn_hidden_size": "expert_ffn_hidden", "expert_ffn_hidden_size": "expert_ffn_hidden",
                 "vocab_size": "vocab"}
"""Megatron-Core / Hugging Face names accepted in ``model.vary`` for npusim's ModelConfig fields."""
NOT_VARIABLE = ("name", "source", "mla", "attention")
AXES = ("tp", "cp", "pp", "vpp", "tp_extend_ep", "etp", "ep", "sp", "zero", "recompute", "micro_batch")
"""Plan axes that ``plan: auto`` enumerates for training, in loop order (outermost first)."""
SERVING_AXES = ("tp", "pp", "moe_dispatch", "etp", "ep", "shared_tp", "sp", "precision", "kv_precision")
"""Plan axes that ``plan: auto`` enumerates for serving (decode / prefill), in loop order."""
NUMERIC_AXES = ("tp", "pp", "vpp", "cp", "ep", "etp", "zero", "micro_batch", "shared_tp")
"""Plan axes that accept a {min, max} range under ``plan: auto``."""
METRICS = ("mfu", "tokens_per_s", "tokens_per_s_per_device", "tokens_per_s_per_card", "cost", "cards")
OPTION_AXES = ("schedule", "a2a", "ep_overlap", "recompute_modules", "offload_activations", "offload_optimizer")
"""Plan options that ``plan: auto`` enumerates as axes when listed (only combinations valid for the
plan around them: schedules that fit vpp / pp / the micro-batch count; a2a and ep_overlap only where
experts are exchanged, ep > 1); ``auto`` as their value lists every choice."""
OPTION_CHOICES = {"schedule": ["1f1b", "interleaved", "zb-h1", "zb-v", "dualpipe", "dualpipev"],
                  "a2a": ["flat", "hierarchical"], "ep_overlap": [False, True],
                  # the memory ladder of docs/memory.md: none, Pangu-style fine-grained, + permute
                  "recompute_modules": ["", "core_attn+layernorm+mla_up_proj+moe_act",
                                        "core_attn+layernorm+mla_up_proj+moe_act+permute"],
                  "offload_activations": [0.0, 0.5, 1.0], "offload_optimizer": [0.0, 1.0]}
DEFAULT_MAX_POINTS = 250_000
"""Largest sweep run without ``max_points`` / ``--max-points`` raised (about a minute of fast tier on
two cores)."""


def listify(v: Any) -> Any:
    """Accept a scalar where a list is expected."""
    return v if isinstance(v, list) else [v]


def _auto(v: Any) -> Any:
    """``plan: auto`` is short for ``plan: {auto: true}``."""
    if v == "auto":
        return {"auto": True}
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError("expected 'auto' or a mapping of plan fields")
    return v


class _Strict(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """A closed interval; either end may be omitted."""

    min: Optional[float] = None
    max: Optional[float] = None

    @model_validator(mode="after")
    def _order(self) -> "Range":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) exceeds max ({self.max})")
        return self

    def holds(self, x: float) -> bool:
        """True when ``x`` lies in the interval."""
        return (self.min is None or x >= self.min) and (self.max is None or x <= self.max)


class WorkloadSpec(_Strict):
    """Training workloads: every combination of sequence length and global batch is swept."""

    kind: Literal["train"] = "train"
    seq_len: Annotated[list[SeqLen], BeforeValidator(listify), Field(min_length=1)]
    """Tokens per sequence (one value or a list)."""
    global_batch: Annotated[list[Batch], BeforeValidator(listify), Field(min_length=1)]
    """Sequences per optimizer step (one value or a list)."""


def _batch_value(v: Any) -> Any:
    """One serving batch entry: 'auto' or a positive integer (at most MAX_BATCH)."""
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_BATCH):
        return v
    raise ValueError(f"expected 'auto' or a positive integer (at most {MAX_BATCH:,})")


def _per_hardware(kind: type, optional: bool = True):
    """A validator for 'one positive finite number, or {hardware name: positive finite number}'
    (``optional``: null allowed)."""
    import math

    from npusim.config.errors import shown

    def check(v: Any) -> Any:
        """The value, normalised; ValueError when it is not a positive number or such a mapping."""
        def ok(x: Any) -> bool:
            """True for a positive finite number of the wanted kind."""
            return (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                    and (kind is float or x == int(x)))
        if isinstance(v, dict):
            bad = [k for k, x in v.items() if not ok(x)]
            if bad:
                raise ValueError(f"{shown(bad[0], 40)}: expected a positive {kind.__name__} (finite), "
                                 f"got {shown(v[bad[0]], 40)}")
            return {str(k): kind(x) for k, x in v.items()}
        if (v is None and optional) or ok(v):
            return None if v is None else kind(v)
        raise ValueError(f"expected a positive {kind.__name__} (finite) or a mapping hardware name -> {kind.__name__}")
    return BeforeValidator(check)


class ServingWorkloadSpec(_Strict):
    """Serving workloads: a decode step (TPOT) or a prefill (TTFT); every input_len x batch is swept."""

    kind: Literal["decode", "prefill"]
    input_len: Annotated[list[SeqLen], BeforeValidator(listify), Field(min_length=1)]
    """Context of the decode step, or prompt length of the prefill (one value or a list)."""
    batch: Annotated[list[Annotated[Any, BeforeValidator(_batch_value)]], BeforeValidator(listify),
                     Field(min_length=1)] = ["auto"]
    """Concurrent sequences over the instance; 'auto' = the largest batch that fits in memory and
    meets the objective's TPOT / TTFT limit (found by bisection)."""
    output_len: Optional[SeqLen] = None
    """Generated tokens per sequence: the KV cache holds input_len + output_len tokens."""
    max_batch: Optional[Batch] = None
    """Upper bound of the 'auto' batch search (default: memory alone bounds it)."""


class Constraints(_Strict):
    """Parameter budgets in billions (main model, MTP modules excluded, as the papers count), and a
    training-compute budget: ``compute_budget`` FLOPs of 6 x activated parameters x ``tokens``."""

    total_params_B: Optional[Range] = None
    activated_params_B: Optional[Range] = None
    tokens: Optional[float] = Field(None, gt=0, le=1e18)
    """Training tokens (e.g. 1e12); with it each shape's best plan gets ``train_days`` in shapes.csv."""
    compute_budget: Optional[Range] = None
    """Training FLOPs = 6 x activated parameters x tokens (needs ``tokens``)."""

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        """``params_B`` is short for ``total_params_B``."""
        if isinstance(v, dict) and "params_B" in v:
            if "total_params_B" in v:
                raise ValueError("params_B and total_params_B are the same budget; give one")
            v = {("total_params_B" if k == "params_B" else k): x for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _needs_tokens(self) -> "Constraints":
        if self.compute_budget is not None and self.tokens is None:
            raise ValueError("compute_budget needs tokens (training FLOPs = 6 x activated params x tokens)")
        return self


class ModelSpec(_Strict):
    """A base model (preset name or path) with axes to vary and parameter-count constraints."""

    base: str
    vary: dict[str, Annotated[list[Any], BeforeValidator(listify), Field(min_length=1)]] = {}
    """ModelConfig field (or Megatron/HF alias) -> values; the product of all axes is swept."""
    constraints: Constraints = Constraints()
    """Variants outside a budget are infeasible with reason 'constraint'."""
    derive: dict[str, Annotated[str, Field(max_length=MAX_EXPR_CHARS)]] = {}
    """ModelConfig field -> integer expression of other fields (``heads: hidden // 128``), applied
    to every variant after the ``vary`` values."""


class ObjectiveSpec(_Strict):
    """What ranks feasible points, and the limits that make a point infeasible."""

    metric: Literal[METRICS] = "mfu"  # type: ignore[valid-type]
    """mfu and tokens_per_s[_per_device|_per_card] are maximised; cost (price x device-hours per
    million tokens) and cards (a serving-capacity sweep's answer, ``workload.kind: serve``) minimised."""
    memory_headroom: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of HBM kept free: a point fits when peak memory <= (1 - headroom) x HBM."""
    max_step_time_s: Optional[float] = Field(None, gt=0)
    """Training: points slower than this are infeasible with reason 'step_time'."""
    max_tpot_s: Annotated[Any, _per_hardware(float)] = None
    """Decode: TPOT limit in seconds, one number or per hardware name (reason 'tpot')."""
    max_ttft_s: Annotated[Any, _per_hardware(float)] = None
    """Prefill: TTFT limit in seconds, one number or per hardware name (reason 'ttft')."""
    devices_per_card: Annotated[Any, _per_hardware(int)] = 1
    """Devices per card, one number or per hardware name, for tokens_per_s_per_card (an Atlas 300I
    Duo card holds 2 devices)."""
    price_per_device_hour: Annotated[Any, _per_hardware(float, optional=False)] = 1.0
    """Price of one device-hour, one number or per hardware name (metric cost)."""


def _objective(v: Any) -> Any:
    """``objective: mfu`` is short for ``objective: {metric: mfu}``."""
    return {"metric": v} if isinstance(v, str) else v


class TierSpec(_Strict):
    """How the tiers run."""

    full_top: int = Field(100, ge=0)
    """Best fast-tier points re-scored by the full event simulation."""
    full_per_model: int = Field(0, ge=0)
    """Also re-score the best this-many points of every model variant (per hardware, devices and
    workload), so each shape's best plan is fully simulated when shapes are compared."""
    batch_size: Annotated[int, Field(gt=0, le=1_000_000)] = 256
    """Points per task sent to a worker (and per chunk file written)."""


class SweepSpec(_Strict):
    """A sweep: hardware x devices x workload x model variants x parallel plans."""

    name: str = "sweep"
    description: str = ""
    hardware: Annotated[list[str], BeforeValidator(listify), Field(min_length=1)]
    devices: Any
    """A count, a list of counts, or {hardware name: count or list} (checked in ``load_spec``)."""
    workload: Any
    """A WorkloadSpec (train, the default kind) or a ServingWorkloadSpec (checked in ``load_spec``)."""
    model: ModelSpec
    plan: Annotated[dict[str, Any], BeforeValidator(_auto)] = {}
    """``auto`` or a mapping of plan fields to a value, a list, or (numeric axes) {min, max}."""
    objective: Annotated[ObjectiveSpec, BeforeValidator(_objective)] = ObjectiveSpec()
    """A mapping, or a metric name alone (``objective: mfu``)."""
    tiers: TierSpec = TierSpec()
    search: Literal["prune", "exhaustive", "refine"] = "prune"
    """prune: skip what cannot win (memory bound, dominated recompute / ZeRO variants;
    npusim.sweep.prune); exhaustive: time every valid point that fits; refine (training): prune on a
    coarse grid of the ordered numeric axes, then around its best points (npusim.sweep.refine)."""
    max_points: Annotated[int, BeforeValidator(no_bool), Field(gt=0, le=100_000_000)] = DEFAULT_MAX_POINTS
    """A spec with more points is refused (with its count) unless this or ``--max-points`` is raised."""


_CLASS_WORDS = ("ValidationError", "pydantic", "class_name", "input_type", "[type=")


def _plain(err: ConfigError) -> ConfigError:
    """The error without Python or pydantic class names (``instance of ObjectiveSpec`` -> a mapping)."""
    import re

    text = f"{err.problem} {err.allowed}"
    names = re.findall(r"\b([A-Z][A-Za-z]*(?:Spec|Constraints|Range|Model|Config|Plan))\b", text)
    if not names and not any(w in text for w in _CLASS_WORDS):
        return err
    problem = re.sub(r"(?:a valid dictionary )?or instance of \w+", "a mapping", err.problem)
    problem = re.sub(r"\s*\[type=.*$", "", problem)
    for n in names:
        problem = problem.replace(n, "mapping")
    allowed = "" if any(n in err.allowed for n in names) or "class_name" in err.allowed else err.allowed
    problem = problem.replace("Input should be a a mapping", "Input should be a mapping")
    return ConfigError(err.source, err.field, err.value, problem, allowed or "see docs/sweep.md")


def load_spec(path: str | Path) -> tuple[SweepSpec, dict]:
    """Read and check a sweep spec; return it and its resolved, JSON-ready form (ConfigError on a
    defect, never naming a Python class)."""
    try:
        return _load_spec(path)
    except ConfigError as e:
        raise _plain(e) from None


def _load_spec(path: str | Path) -> tuple[SweepSpec, dict]:
    """The body of load_spec."""
    from npusim.config.loader import read_mapping, validate
    from npusim.sweep.spec_checks import check_devices, check_objective, check_workload

    src = str(path)
    spec = validate(SweepSpec, read_mapping(path), src)
    base_dir = Path(path).resolve().parent
    workload = check_workload(spec.workload, src)
    spec = spec.model_copy(update={"model": _check_model(spec.model, src, base_dir), "workload": workload,
                                   "plan": _check_plan(spec.plan, src)})
    hardware, names = _check_hardware(spec, src, base_dir)
    spec = spec.model_copy(update={"hardware": hardware, "devices": check_devices(spec.devices, names, src)})
    check_objective(spec, names, src)
    if spec.search == "refine" and spec.workload.kind != "train":
        raise ConfigError(src, "search", "refine", "refines training sweeps only", "prune or exhaustive")
    resolved = spec.model_dump(mode="json")
    resolved["key"] = spec_key(resolved)
    return spec, resolved


def spec_key(resolved: dict) -> str:
    """Stable hash of the parts of a resolved spec that decide the points and their status."""
    body = {k: v for k, v in resolved.items() if k not in ("key", "name", "description")}
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=8).hexdigest()


def _resolve_path(name: str, base_dir: Path) -> str:
    """A preset name as is; a relative file path against the spec's folder."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml", ".json") and not p.is_absolute() and (base_dir / p).exists():
        return str(base_dir / p)
    return name


def _check_model(ms: ModelSpec, src: str, base_dir: Path) -> ModelSpec:
    """Load the base model, canonicalise vary names and type-check every value."""
    from pydantic import TypeAdapter, ValidationError

    from npusim.config.model import ModelConfig, load_model
    from npusim.config.policy import bool_for_number
    from npusim.sweep.spec_checks import check_derive

    base = _resolve_path(ms.base, base_dir)
    try:
        load_model(base)
    except ConfigError as e:
        raise ConfigError(src, "model.base", ms.base, e.problem, e.allowed) from None
    fields = [f for f in ModelConfig.model_fields if f not in NOT_VARIABLE]
    vary: dict[str, list] = {}
    for key, values in ms.vary.items():
        name = MODEL_ALIASES.get(key, key)
        if name not in fields:
            raise ConfigError(src, f"model.vary.{key}", values, "not a variable model field" + did_you_mean(key, fields),
                              ", ".join(fields))
        if name in vary:
            raise ConfigError(src, f"model.vary.{key}", values, f"{name} is varied twice")
        info = ModelConfig.model_fields[name]
        adapter = TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)
        for v in values:
            if bool_for_number(info.annotation, v):
                raise ConfigError(src, f"model.vary.{key}", v, "a boolean is not a number", "a number, not true/false")
            try:
                adapter.validate_python(v)
            except ValidationError as e:
                first = e.errors()[0]
                ctx = ", ".join(f"{k} {x}" for k, x in (first.get("ctx") or {}).items() if k != "error")
                raise ConfigError(src, f"model.vary.{key}", v, first["msg"], ctx) from None
        vary[name] = values
    return ms.model_copy(update={"base": base, "vary": dict(sorted(vary.items())),
                                 "derive": check_derive(ms.derive, vary, load_model(base), fields, src)})


def _check_plan(plan: dict, src: str) -> dict:
    """Validate plan axes and options: known keys, typed values, ranges only on numeric axes."""
    from npusim.config.plan import ParallelPlan, make_plan

    auto = plan.get("auto", False)
    if not isinstance(auto, bool):
        raise ConfigError(src, "plan.auto", auto, "not a boolean", "true, false")
    keys = [k for k in ParallelPlan.model_fields if k != "dp"]
    out: dict[str, Any] = {"auto": auto}
    for key, value in plan.items():
        if key == "auto":
            continue
        name = "micro_batch" if key == "mb" else key
        if name == "dp":
            raise ConfigError(src, "plan.dp", value, "dp is derived from devices / (tp*pp*cp)", "omit dp")
        if name not in keys:
            raise ConfigError(src, f"plan.{key}", value, "unknown plan key" + did_you_mean(key, keys), ", ".join(keys))
        if isinstance(value, dict):
            if name not in NUMERIC_AXES:
                raise ConfigError(src, f"plan.{key}", value, "a {min, max} range needs a numeric axis",
                                  "a value or a list")
            try:
                rng = Range.model_validate(value)
            except Exception as e:  # pydantic ValidationError
                from npusim.config.errors import from_pydantic

                err = from_pydantic(src, e)
                inner = "" if err.field == "<root>" else "." + err.field
                raise ConfigError(src, f"plan.{key}{inner}", err.value, err.problem, err.allowed) from None
            if not auto:
                raise ConfigError(src, f"plan.{key}", value, "a range restricts auto enumeration", "plan.auto: true")
            out[name] = rng.model_dump()
            continue
        if name in OPTION_AXES and value == "auto":
            value = list(OPTION_CHOICES[name])
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError(src, f"plan.{key}", value, "empty list", "one or more values")
        for v in values:
            try:
                make_plan({name: v}, source=src)
            except ConfigError as e:
                raise ConfigError(src, f"plan.{key}", v, e.problem, e.allowed) from None
        out[name] = values
    return out


def _check_hardware(spec: SweepSpec, src: str, base_dir: Path) -> tuple[list[str], list[str]]:
    """Resolve every hardware entry to a profile (names stay names, relative paths become absolute);
    return the entries and the profile names."""
    from npusim.config.hardware import load_profile

    resolved, names = [], []
    for i, entry in enumerate(spec.hardware):
        path = _resolve_path(entry, base_dir)
        try:
            names.append(load_profile(path).name)
        except ConfigError as e:
            raise ConfigError(src, f"hardware.{i}", entry, e.problem, e.allowed) from None
        resolved.append(path)
    if len(set(names)) != len(names):
        raise ConfigError(src, "hardware", spec.hardware, "a profile is listed twice", "distinct profiles")
    return resolved, names

