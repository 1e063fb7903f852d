"""Checks of the sweep spec's cross-field parts: workload kind, per-hardware device counts and
objective mappings, derived model fields. Each defect raises a one-line ``ConfigError``."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from npusim.config.errors import ConfigError, did_you_mean
from npusim.config.policy import MAX_DEVICES, no_bool
from npusim.sweep.serving_capacity import SERVE_METRICS, ServeLoadSpec
from npusim.sweep.spec import MODEL_ALIASES, ServingWorkloadSpec, SweepSpec, WorkloadSpec, listify


def _typed(src: str, field: str, value: Any, cls: type) -> Any:
    """Validate ``value`` as ``cls`` (a pydantic model or type); errors name ``field`` and the inner path."""
    from pydantic import BaseModel as _Model, TypeAdapter, ValidationError

    from npusim.config.errors import from_pydantic

    try:
        if isinstance(cls, type) and issubclass(cls, _Model):
            return cls.model_validate(value)
        return TypeAdapter(cls).validate_python(value)
    except ValidationError as e:
        err = from_pydantic(src, e)
        inner = "" if err.field == "<root>" else "." + err.field
        raise ConfigError(src, field + inner, err.value, err.problem, err.allowed) from None


def check_workload(raw: Any, src: str):
    """A training workload (``kind: train``, the default) or a serving one (``kind: decode|prefill``)."""
    if not isinstance(raw, dict):
        raise ConfigError(src, "workload", raw, "expected a mapping",
                          "{seq_len, global_batch} or {kind: decode|prefill, input_len, batch}")
    kind = raw.get("kind", "train")
    cls = {"train": WorkloadSpec, "decode": ServingWorkloadSpec, "prefill": ServingWorkloadSpec,
           "serve": ServeLoadSpec}.get(kind)
    if cls is None:
        raise ConfigError(src, "workload.kind", kind, "unknown workload kind", "train, decode, prefill, serve")
    return _typed(src, "workload", raw, cls)


DeviceCounts = Annotated[list[Annotated[int, BeforeValidator(no_bool), Field(gt=0, le=MAX_DEVICES)]], Field(min_length=1)]
"""One or more device counts, each 1..MAX_DEVICES."""


def check_devices(raw: Any, names: list[str], src: str) -> Any:
    """Device counts: one list for every profile, or {profile name: count or list} naming each one."""
    if raw is None:
        raise ConfigError(src, "devices", None, "required field is missing")
    if not isinstance(raw, dict):
        return _typed(src, "devices", listify(raw), DeviceCounts)
    out = {}
    for k, v in raw.items():
        if k not in names:
            raise ConfigError(src, f"devices.{k}", v, "hardware not in the sweep", ", ".join(names))
        out[k] = _typed(src, f"devices.{k}", listify(v), DeviceCounts)
    missing = [n for n in names if n not in out]
    if missing:
        raise ConfigError(src, "devices", raw, f"no device count for {missing[0]}", "a count for every swept profile")
    return {n: out[n] for n in names}


def check_objective(spec: SweepSpec, names: list[str], src: str) -> None:
    """Per-hardware mappings name swept profiles; limits match the workload kind."""
    obj, kind = spec.objective, spec.workload.kind
    for key in ("price_per_device_hour", "max_tpot_s", "max_ttft_s", "devices_per_card"):
        value = getattr(obj, key)
        for k in value if isinstance(value, dict) else ():
            if k not in names:
                raise ConfigError(src, f"objective.{key}.{k}", value[k], "hardware not in the sweep", ", ".join(names))
    price = obj.price_per_device_hour
    missing = [h for h in names if isinstance(price, dict) and h not in price]
    if missing and obj.metric == "cost":
        raise ConfigError(src, "objective.price_per_device_hour", price, f"no price for {missing[0]}",
                          "a price for every swept profile name")
    if kind == "serve" and obj.metric not in SERVE_METRICS:
        raise ConfigError(src, "objective.metric", obj.metric, "does not rank a serve workload", ", ".join(SERVE_METRICS))
    if kind != "serve" and obj.metric == "cards":
        raise ConfigError(src, "objective.metric", obj.metric, "ranks serving capacity only", "a serve workload")
    limits = {"max_step_time_s": "train", "max_tpot_s": "decode", "max_ttft_s": "prefill"}
    for key, needs in limits.items():
        if getattr(obj, key) is not None and kind != needs:
            raise ConfigError(src, f"objective.{key}", getattr(obj, key), f"does not apply to a {kind} workload",
                              f"a {needs} workload (workload.kind: {needs})")


def check_derive(derive: dict, vary: dict, base, fields: list[str], src: str) -> dict:
    """Canonicalise derived fields and check each expression against the base model's values."""
    from npusim.sweep.space import eval_expr

    out: dict[str, str] = {}
    values = base.model_dump()
    for key, expr in derive.items():
        name = MODEL_ALIASES.get(key, key)
        if name not in fields:
            raise ConfigError(src, f"model.derive.{key}", expr, "not a variable model field" + did_you_mean(key, fields),
                              ", ".join(fields))
        if name in vary or name in out:
            raise ConfigError(src, f"model.derive.{key}", expr, f"{name} is also varied or derived", "one source per field")
        try:
            values[name] = eval_expr(expr, values)
        except ValueError as e:
            raise ConfigError(src, f"model.derive.{key}", expr, str(e),
                              "integers, integer model fields, + - * // %, parentheses, min(), max()") from None
        out[name] = str(expr)
    return out
