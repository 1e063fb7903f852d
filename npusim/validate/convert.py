"""Turn a run record into simulator inputs: hardware profile, model, plan fields and workload.

- ``hardware``: a profile preset name (``npusim hw list``, including ``$NPUSIM_PROFILE_PATH``) or a
  profile YAML path; ``model``: a model preset name, a model YAML or a Hugging Face ``config.json``
  path. A cell ending in ``.yaml`` / ``.yml`` / ``.json`` or holding a ``/`` is a path, relative
  to the folder of the CSV. Non-blank inline shape columns override the model's fields; a blank
  ``model`` is a GPT-style decoder (LayerNorm, biases, tied embeddings) from the shape columns.
- Plan: the layout columns (``tp pp vpp cp dp ep etp sp zero recompute micro_batch precision
  master_weights``) and the ``plan`` cell (any ``--plan`` key) together; a key given by both must
  agree (a relative ``routing_histogram`` path is relative to the CSV's folder). What neither states
  takes the ParallelPlan default, except ``routing`` (from the ``routing`` column: ROUTING_OF),
  ``recompute`` and ``micro_batch``, which
  :func:`npusim.validate.predict.simulate_record` searches (the lightest recompute that fits in
  memory; the fastest micro-batch of {1, 2, 4, 8} that fits).

Only the standard library is imported at module level.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npusim.config.errors import ConfigError, did_you_mean
from npusim.validate.schema import METRIC_OF, SERVING_MEASURED, TRAIN_MEASURED

if TYPE_CHECKING:  # pragma: no cover
    from npusim.config.hardware import HardwareProfile
    from npusim.config.model import ModelConfig
    from npusim.config.workload import TrainWorkload
    from npusim.validate.schema import RunRecord

PLAN_COLUMNS = ("tp", "pp", "vpp", "cp", "dp", "ep", "etp", "sp", "zero", "recompute", "micro_batch", "precision",
                "master_weights")
"""Columns that set the ParallelPlan field of the same name."""
SHAPE_OVERRIDES = ("layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab", "experts", "top_k",
                   "shared_experts", "expert_ffn_hidden", "dense_layers", "attention", "mlp")
"""Inline shape columns that override a model file (expert_groups is not among them: its meaning for
DeepSeek's group-limited routing needs the preset's groups_per_token as well)."""
PATH_SUFFIXES = (".yaml", ".yml", ".json")
ROUTING_OF = {"balanced": "balanced", "dropless": "learned"}
"""Simulated routing load of a row's ``routing`` column (a ``routing=`` key in its plan cell wins):
forced-balance benchmark runs route evenly; dropless runs of a trained router carry its skew
(npusim.workload.routing.LEARNED_MAX_VIOLATION), so the busiest EP rank and the unequal expert GEMMs
set their pace."""

SERVING_PLAN = "tp={n},ep={n},etp=1,shared_tp={n},sp=1,moe_dispatch=allgather"
"""Serving layout for MoE rows that do not state one: attention TP over all cards, routed experts EP
over all cards, shared experts TP over all cards, all-gather MoE dispatch and RS+AG instead of
all-reduce (the Pangu Pro MoE H2P scheme collapsed onto the row's card count). Dense rows: TP over
all cards with sequence parallelism. The row's layout columns and plan cell override it."""


def _where(rec: "RunRecord") -> str:
    return rec.origin or rec.id


def _wrap(rec: "RunRecord", col: str, e: ConfigError) -> ConfigError:
    """A ConfigError of a referenced file, re-sourced to the row (one line)."""
    name = Path(str(e.source)).name or str(e.source)
    shown = f"{e.field}" if e.value is None else f"{e.field} = {e.value!r}"
    return ConfigError(_where(rec), col, getattr(rec, col), f"{name}: {shown}: {e.problem}", e.allowed)


def is_path(text: str) -> bool:
    """True when a hardware / model cell names a file rather than a preset."""
    return Path(text).suffix.lower() in PATH_SUFFIXES or "/" in text or os.sep in text


def resolve(rec: "RunRecord", col: str) -> str:
    """The cell of ``col`` as a preset name, or as a path resolved against the CSV's folder."""
    text = getattr(rec, col)
    if not is_path(text):
        return text
    p = Path(text).expanduser()
    if not p.is_absolute() and rec.base_dir:
        p = Path(rec.base_dir) / p
    return str(p)


def _check_ref(rec: "RunRecord", col: str, names: list[str], what: str) -> str:
    """Resolve ``col``; raise a one-line ConfigError for an unknown preset or a missing file."""
    ref = resolve(rec, col)
    cell = getattr(rec, col)
    if not is_path(cell):
        if cell not in names:
            raise ConfigError(_where(rec), col, cell, f"unknown {col} preset" + did_you_mean(cell, names),
                              f"a preset ({', '.join(names)}) or a {what} path relative to the CSV")
    elif not Path(ref).is_file():
        raise ConfigError(_where(rec), col, cell, f"file not found: {ref}", f"a preset name or a {what} path relative to the CSV")
    return ref


def record_hardware(rec: "RunRecord") -> "HardwareProfile":
    """The row's hardware profile (preset or profile YAML)."""
    from npusim.config.hardware import list_profiles, load_profile

    ref = _check_ref(rec, "hardware", list_profiles(), "profile YAML")
    try:
        return load_profile(ref)
    except ConfigError as e:
        raise _wrap(rec, "hardware", e) from None


def record_model(rec: "RunRecord") -> "ModelConfig":
    """The row's ModelConfig: its model file or preset with the inline shape fields applied, or a GPT-style model."""
    from npusim.config.loader import validate
    from npusim.config.model import ModelConfig, list_models, load_model

    if rec.model:
        ref = _check_ref(rec, "model", list_models(), "model YAML or config.json")
        overrides = {k: getattr(rec, k) for k in SHAPE_OVERRIDES if getattr(rec, k) is not None}
        try:
            return load_model(ref, **overrides)
        except ConfigError as e:
            raise _wrap(rec, "model", e) from None
    data: dict[str, Any] = {
        "name": rec.id, "layers": rec.layers, "hidden": rec.hidden, "ffn_hidden": rec.ffn_hidden,
        "heads": rec.heads, "kv_heads": rec.kv_heads, "vocab": rec.vocab, "attention": rec.attention,
        "mlp": rec.mlp, "norm": "layernorm", "linear_bias": True, "tied_embeddings": True,
        "source": rec.source or "",
    }
    for k in ("experts", "top_k", "shared_experts", "expert_ffn_hidden", "expert_groups", "dense_layers"):
        if getattr(rec, k) is not None:
            data[k] = getattr(rec, k)
    return validate(ModelConfig, data, _where(rec))


def stated_plan(rec: "RunRecord") -> dict:
    """The plan fields the ``plan`` cell states (parsed like ``--plan``)."""
    from npusim.config.plan import parse_plan

    return parse_plan(rec.plan, f"{_where(rec)}: plan") if rec.plan else {}


def record_plan_fields(rec: "RunRecord") -> dict:
    """ParallelPlan fields the row states (layout columns and plan cell). Absent keys take the plan
    defaults; absent ``recompute`` / ``micro_batch`` are searched by ``simulate_record``."""
    out = {k: getattr(rec, k) for k in PLAN_COLUMNS if getattr(rec, k) is not None}
    for key, value in stated_plan(rec).items():
        if key in out and out[key] != value:
            raise ConfigError(_where(rec), "plan", rec.plan, f"{key}={value} contradicts the {key} column ({out[key]})",
                              f"{key}={out[key]}, or a blank {key} column")
        out[key] = value
    if rec.routing is not None and "routing" not in out:
        out["routing"] = ROUTING_OF[rec.routing]
    hist = out.get("routing_histogram")
    if hist and rec.base_dir and not Path(hist).expanduser().is_absolute():
        out["routing_histogram"] = str(Path(rec.base_dir) / hist)
    return out


def serving_plan_fields(rec: "RunRecord", model: "ModelConfig", chips: int | None = None) -> dict:
    """Plan fields of a prefill / decode row: SERVING_PLAN over its ``chips`` (default: ``devices``),
    overridden by what the row states."""
    from npusim.config.plan import parse_plan

    n = chips or rec.devices
    fields = parse_plan(SERVING_PLAN.format(n=n)) if model.is_moe else {"tp": n, "sp": True}
    fields["precision"] = "bf16"
    fields.update(record_plan_fields(rec))
    return fields


def record_workload(rec: "RunRecord") -> "TrainWorkload":
    """The TrainWorkload of a training row (serving rows: npusim.validate.predict.simulate_serving_record)."""
    if rec.workload != "train":
        raise ValueError(f"{rec.id}: a {rec.workload} row has no training workload; use simulate_serving_record")
    from npusim.config.workload import TrainWorkload

    return TrainWorkload(seq_len=rec.seq_len, global_batch=rec.global_batch)


def measured_column(rec: "RunRecord") -> str:
    """The measured column the row is compared on: the first given of TRAIN_MEASURED for training
    rows, measured_ttft_s for prefill, measured_tpot_s for decode."""
    cols = TRAIN_MEASURED if rec.workload == "train" else (SERVING_MEASURED[rec.workload],)
    for col in cols:
        if getattr(rec, col) is not None:
            return col
    raise ConfigError(_where(rec), cols[0], "", f"a {rec.workload} row needs a measured value", " or ".join(cols))


def measured_metric(rec: "RunRecord") -> tuple[str, float]:
    """(metric name, measured value): step_time_s, tokens_per_s, tokens_per_s_per_device or mfu for
    training rows (the first given), ttft_s for prefill, tpot_s for decode."""
    col = measured_column(rec)
    return METRIC_OF[col], getattr(rec, col)


def check_inputs(rec: "RunRecord", cache: dict) -> None:
    """Build the row's hardware, model and plan once (the reader's last check); ``cache`` is shared
    by the rows of one file."""
    from npusim.config.plan import make_plan

    key = ("hardware", rec.hardware, rec.base_dir)
    if key not in cache:
        cache[key] = record_hardware(rec)
    overrides = tuple((k, getattr(rec, k)) for k in SHAPE_OVERRIDES + ("expert_groups",))
    key = ("model", rec.model, rec.base_dir, rec.id if not rec.model else "", overrides)
    if key not in cache:
        cache[key] = record_model(rec)
    model = cache[key]
    source = f"{_where(rec)}: plan"
    if rec.workload != "train":
        make_plan(serving_plan_fields(rec, model), source)
        return
    fields = record_plan_fields(rec)
    hist = fields.get("routing_histogram")
    if hist and not Path(hist).expanduser().is_file():
        raise ConfigError(_where(rec), "plan", rec.plan, f"routing_histogram file not found: {hist}",
                          "a CSV expert,tokens; relative paths are relative to the run-record CSV")
    make_plan({**fields, "recompute": fields.get("recompute", "none"), "micro_batch": fields.get("micro_batch", 1)},
              source)
    if fields.get("dp"):
        prod = fields.get("tp", 1) * fields.get("pp", 1) * fields.get("cp", 1) * fields["dp"]
        if prod != rec.devices:
            raise ConfigError(_where(rec), "dp", fields["dp"], f"tp*pp*cp*dp = {prod} but devices = {rec.devices}",
                              "tp*pp*cp*dp = devices for training rows")
