"""Published run records: strict reading of ``published.csv`` and conversion to npusim configs.

The CSV schema is the one of ``npusim/data/runs/README.md`` (a copy of the project's shared
reference data). :func:`read_runs` checks every cell and raises a one-line
:class:`~npusim.config.errors.ConfigError` naming ``FILE:LINE``, the column, the value and what is
allowed. Only the standard library is imported at module level; pydantic configs are built lazily.

Blank cells become ``None`` in :class:`RunRecord`. When a row is turned into plan fields
(:func:`record_plan_fields`), blanks take these documented defaults:

- ``vpp`` blank -> 1 (no interleaving); ``ep`` blank -> 1; ``etp`` blank -> 0 (the plan's default:
  tp, or 1 with TP-extend-EP); ``cp`` blank -> 1; ``tp``/``pp`` blank (inference rows, layout not
  stated) -> 1; ``dp`` blank -> 0 (derived from the device count).
- ``sp`` blank -> ``tp > 1`` for ``megatron-core`` / ``nemo-automodel`` rows (the NeMo and
  Megatron-Bridge recipes turn sequence parallelism on with tensor parallelism), else False;
  ``zero`` blank -> 1 for ``megatron-core`` / ``nemo-automodel`` rows (NeMo 2 / Megatron-Bridge
  recipes use Megatron's distributed optimizer), else 0; ``master_weights`` blank -> ``'fp32'``.
- ``recompute`` blank -> ``None`` here: :func:`npusim.validate.predict.simulate_record` takes the
  lightest of none / selective / full that fits in memory (the recipe had to fit).
- ``micro_batch`` blank -> ``None`` here: :func:`npusim.validate.predict.predict_record` then takes
  the micro-batch in {1, 2, 4, 8} with the shortest predicted step that fits in memory, because the
  authors tuned it per run (Narayanan et al. §5.7) and did not print it. The choice never looks at
  the measured time.

Options stated in a row's ``notes`` (``NOTE_OPTIONS``): "DeepEP" -> ``a2a=hierarchical``;
"--use-mc2" -> ``tp_comm_overlap=True``. Options of the public recipe a row names (``RECIPE_OPTIONS``,
each with its source).

Framework-era defaults, decided by the row's ``flop_convention``:

- ``megatron-eq3`` and ``korthikanti-eq7`` rows were measured with Megatron-LM of 2021-2022
  (Narayanan et al. SC21, Korthikanti et al. 2022). FlashAttention did not exist or was not used
  (attention scores, softmax and dropout are materialised), and gradients were all-reduced after
  the backward pass instead of being overlapped with it. These rows get
  ``flash_attention=False`` and ``overlap_grad_reduce=False``.
- Every other convention (``megatron-core``, ``nemo-automodel``, ``palm``, ``deepseek``, ``none``)
  keeps the ParallelPlan defaults: fused (flash) attention and overlapped gradient reduction.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from npusim.config.errors import ConfigError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from npusim.config.model import ModelConfig
    from npusim.config.workload import TrainWorkload

# ---- schema ------------------------------------------------------------------------------------
COLUMNS: tuple[str, ...] = (
    "id", "source", "reliability", "workload", "hardware", "devices", "model",
    "layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab", "attention", "mlp",
    "experts", "top_k", "shared_experts", "expert_ffn_hidden", "expert_groups", "dense_layers",
    "seq_len", "global_batch", "micro_batch", "tp", "pp", "vpp", "cp", "ep", "etp", "dp",
    "sp", "zero", "recompute", "precision", "master_weights", "routing",
    "batch", "input_len", "output_len",
    "measured_step_time_s", "measured_ttft_s", "measured_tpot_s", "measured_tokens_per_s_per_device",
    "published_metric", "flop_convention", "notes",
)
"""Every column of the schema, in the README's order."""

HARDWARE = ("nvidia-a100-sxm-80g", "nvidia-h100-sxm-80g", "nvidia-h800-sxm-80g", "nvidia-h200-sxm-141g",
            "atlas-800t-a2", "atlas-800i-a2", "atlas-300i-duo")
MODEL_PRESETS = ("deepseek-v3", "deepseek-v2-lite", "deepseek-v2", "qwen3-235b-a22b", "qwen3-30b-a3b",
                 "qwen2-57b-a14b", "mixtral-8x7b", "mixtral-8x22b", "llama3-405b", "llama3-70b",
                 "llama3-8b", "llama2-7b", "llama2-13b", "llama2-70b", "qwen2-72b", "gpt-oss-120b",
                 "pangu-pro-moe-72b", "pangu-ultra-moe-718b", "bloom-176b")
FLOP_CONVENTIONS = ("megatron-eq3", "korthikanti-eq7", "megatron-core", "nemo-automodel", "palm",
                    "deepseek", "none")
LEGACY_MEGATRON = ("megatron-eq3", "korthikanti-eq7")
"""flop_convention tags of rows measured with Megatron-LM of 2021-2022 (no flash attention,
gradient all-reduce after the backward pass)."""

_ENUMS: dict[str, tuple[str, ...]] = {
    "reliability": ("A", "A-", "B"),
    "workload": ("train", "prefill", "decode"),
    "hardware": HARDWARE,
    "attention": ("mha", "gqa", "mla"),
    "mlp": ("gelu", "swiglu"),
    "recompute": ("none", "selective", "full"),
    "precision": ("bf16", "fp16", "fp8", "int8"),
    "master_weights": ("fp32", "none"),
    "routing": ("balanced", "dropless"),
    "flop_convention": FLOP_CONVENTIONS,
}
_POS_INTS = ("devices", "layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab", "experts", "top_k",
             "expert_ffn_hidden", "expert_groups", "seq_len", "global_batch", "micro_batch", "tp", "pp",
             "vpp", "cp", "ep", "etp", "dp", "batch", "input_len", "output_len")
_NONNEG_INTS = ("shared_experts", "dense_layers")
_POS_FLOATS = ("measured_step_time_s", "measured_ttft_s", "measured_tpot_s", "measured_tokens_per_s_per_device")
_TEXT = ("source", "published_metric", "notes")

_ALWAYS_REQUIRED = ("id", "source", "reliability", "workload", "hardware", "devices", "layers", "hidden",
                    "heads", "vocab", "attention", "mlp", "precision", "flop_convention")
_REQUIRED_BY_WORKLOAD = {
    "train": ("seq_len", "global_batch", "tp", "pp", "cp", "dp", "measured_step_time_s"),
    "prefill": ("batch", "input_len", "measured_ttft_s"),
    "decode": ("batch", "input_len", "measured_tpot_s"),
}
METRIC_BY_WORKLOAD = {
    "train": ("step_time_s", "measured_step_time_s"),
    "prefill": ("ttft_s", "measured_ttft_s"),
    "decode": ("tpot_s", "measured_tpot_s"),
}

_ID_RE = re.compile(r"^[VP][0-9]{3}[A-Za-z0-9_.\-]*$")
_INT_RE = re.compile(r"^[0-9]+$")

# Inline shape columns that override a preset (expert_groups is not among them: its meaning for
# DeepSeek's group-limited routing needs the preset's groups_per_token as well).
_SHAPE_OVERRIDES = ("layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab", "experts", "top_k",
                    "shared_experts", "expert_ffn_hidden", "dense_layers", "attention", "mlp")


def published_path() -> Path:
    """The packaged copy of ``published.csv``."""
    return Path(__file__).resolve().parent.parent / "data" / "runs" / "published.csv"


# ---- record ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRecord:
    """One typed row of a run-record CSV. Blank cells are ``None``; ``raw`` keeps the cells as read."""

    id: str
    source: Optional[str]
    reliability: str
    workload: str
    hardware: str
    devices: int
    model: Optional[str]
    layers: int
    hidden: int
    ffn_hidden: Optional[int]
    heads: int
    kv_heads: Optional[int]
    vocab: int
    attention: str
    mlp: str
    experts: Optional[int]
    top_k: Optional[int]
    shared_experts: Optional[int]
    expert_ffn_hidden: Optional[int]
    expert_groups: Optional[int]
    dense_layers: Optional[int]
    seq_len: Optional[int]
    global_batch: Optional[int]
    micro_batch: Optional[int]
    tp: Optional[int]
    pp: Optional[int]
    vpp: Optional[int]
    cp: Optional[int]
    ep: Optional[int]
    etp: Optional[int]
    dp: Optional[int]
    sp: Optional[bool]
    zero: Optional[int]
    recompute: Optional[str]
    precision: str
    master_weights: Optional[str]
    routing: Optional[str]
    batch: Optional[int]
    input_len: Optional[int]
    output_len: Optional[int]
    measured_step_time_s: Optional[float]
    measured_ttft_s: Optional[float]
    measured_tpot_s: Optional[float]
    measured_tokens_per_s_per_device: Optional[float]
    published_metric: Optional[str]
    flop_convention: str
    notes: Optional[str]
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """The row's cells exactly as read (column -> string)."""
    origin: str = field(default="", compare=False, hash=False)
    """``FILE:LINE`` of the row, used as the source of later errors."""


_RECORD_COLUMNS = tuple(f.name for f in fields(RunRecord) if f.name not in ("raw", "origin"))
assert _RECORD_COLUMNS == COLUMNS


# ---- reading -----------------------------------------------------------------------------------
def _parse_cell(where: str, col: str, text: str) -> Any:
    """Type one non-blank cell, or raise ConfigError."""
    if col in _TEXT:
        return text
    val = text.strip()
    if col == "id":
        if not _ID_RE.match(val):
            raise ConfigError(where, col, text, "malformed id", "V### or P###, optionally with a variant suffix")
        return val
    if col in _ENUMS:
        allowed = _ENUMS[col]
        if val not in allowed:
            raise ConfigError(where, col, text, "unknown value" + did_you_mean(val, list(allowed)), " | ".join(allowed))
        return val
    if col == "model":
        if val in MODEL_PRESETS:
            return val
        from npusim.config.model import list_models  # presets added after the README

        names = list_models()
        if val not in names:
            allowed = sorted(set(MODEL_PRESETS) | set(names))
            raise ConfigError(where, col, text, "unknown model preset" + did_you_mean(val, allowed),
                              ", ".join(allowed) + "; blank = inline GPT-style shape")
        return val
    if col == "sp":
        if val not in ("0", "1"):
            raise ConfigError(where, col, text, "not a flag", "0 | 1")
        return val == "1"
    if col == "zero":
        if val not in ("0", "1", "2", "3"):
            raise ConfigError(where, col, text, "not a ZeRO stage", "0..3")
        return int(val)
    if col in _POS_INTS or col in _NONNEG_INTS:
        positive = col in _POS_INTS
        allowed = "a positive integer" if positive else "a non-negative integer"
        if not _INT_RE.match(val):
            raise ConfigError(where, col, text, "not an integer", allowed)
        n = int(val)
        if positive and n < 1:
            raise ConfigError(where, col, text, "must be positive", allowed)
        return n
    if col in _POS_FLOATS:
        try:
            x = float(val)
        except ValueError:
            raise ConfigError(where, col, text, "not a number", "a positive number of seconds or tokens/s") from None
        if not math.isfinite(x) or x <= 0:
            raise ConfigError(where, col, text, "must be a positive finite number", "> 0")
        return x
    raise AssertionError(f"column {col} has no parser")  # pragma: no cover


def _check_row(where: str, v: dict[str, Any]) -> None:
    """Cross-column checks of one typed row (a blank ``workload`` means ``train``)."""
    if v["workload"] is None:
        v["workload"] = "train"
    for col in _ALWAYS_REQUIRED + _REQUIRED_BY_WORKLOAD[v["workload"]]:
        if v[col] is None:
            raise ConfigError(where, col, "", f"required for {v['workload']} rows", "a non-blank value")
    if v["workload"] == "train":
        prod = v["tp"] * v["pp"] * v["cp"] * v["dp"]
        if prod != v["devices"]:
            raise ConfigError(where, "dp", v["dp"], f"tp*pp*cp*dp = {prod} but devices = {v['devices']}",
                              "tp*pp*cp*dp = devices for training rows")
    if v["experts"] is not None:
        for col in ("top_k", "expert_ffn_hidden"):
            if v[col] is None:
                raise ConfigError(where, col, "", "required for an MoE row (experts is set)", "a positive integer")
        if v["top_k"] > v["experts"]:
            raise ConfigError(where, "top_k", v["top_k"], f"exceeds experts ({v['experts']})", f"1..{v['experts']}")


def read_runs(path: str | Path) -> list[RunRecord]:
    """Read a run-record CSV strictly; raise a one-line ConfigError naming ``FILE:LINE`` on any bad cell."""
    p = Path(path)
    src = str(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(src, "<file>", src, f"cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{src}:{line}", "<file>", f"byte {e.start}", "not valid UTF-8 text", "UTF-8 CSV") from None
    if not text.strip():
        raise ConfigError(f"{src}:1", "<file>", "", "file is empty", "a header line and run rows")

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as e:
        raise ConfigError(f"{src}:1", "<header>", "", f"cannot parse CSV: {e}") from None
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for col in header:
        if col in seen:
            raise ConfigError(f"{src}:1", col, col, "duplicate column", "each column once")
        seen.add(col)
    for col in COLUMNS:
        if col not in seen:
            raise ConfigError(f"{src}:1", col, None, "missing column", ", ".join(COLUMNS))
    for col in header:
        if col not in COLUMNS:
            raise ConfigError(f"{src}:1", col, col, "unknown column" + did_you_mean(col, list(COLUMNS)),
                              "the columns of the run-record schema")

    records: list[RunRecord] = []
    first_line: dict[str, int] = {}
    while True:
        line = reader.line_num + 1
        where = f"{src}:{line}"
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ConfigError(where, "<row>", "", f"cannot parse CSV: {e}") from None
        if not cells or all(not c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            raise ConfigError(where, "<row>", len(cells), f"has {len(cells)} cells but the header has {len(header)}",
                              f"{len(header)} cells")
        raw = dict(zip(header, cells))
        typed = {col: (_parse_cell(where, col, raw[col]) if raw[col].strip() else None) for col in COLUMNS}
        rid = typed["id"]
        if rid is not None and rid in first_line:
            raise ConfigError(where, "id", rid, f"duplicate id (first at line {first_line[rid]})", "unique ids")
        _check_row(where, typed)
        first_line[rid] = line
        records.append(RunRecord(**typed, raw=raw, origin=where))
    if not records:
        raise ConfigError(f"{src}:2", "<file>", "", "no run rows after the header", "at least one row")
    return records


# ---- conversion --------------------------------------------------------------------------------
def record_model(rec: RunRecord) -> "ModelConfig":
    """The ModelConfig of a row: its preset with the inline shape fields applied, or a GPT-style model."""
    from npusim.config.loader import validate
    from npusim.config.model import ModelConfig, load_model

    if rec.model:
        overrides = {k: getattr(rec, k) for k in _SHAPE_OVERRIDES if getattr(rec, k) is not None}
        try:
            return load_model(rec.model, **overrides)
        except ConfigError as e:
            raise ConfigError(rec.origin or rec.id, e.field, e.value, f"{e.problem} (preset {rec.model})",
                              e.allowed) from None
    data: dict[str, Any] = {
        "name": rec.id, "layers": rec.layers, "hidden": rec.hidden, "ffn_hidden": rec.ffn_hidden,
        "heads": rec.heads, "kv_heads": rec.kv_heads, "vocab": rec.vocab, "attention": rec.attention,
        "mlp": rec.mlp, "norm": "layernorm", "linear_bias": True, "tied_embeddings": True,
        "source": rec.source or "",
    }
    for k in ("experts", "top_k", "shared_experts", "expert_ffn_hidden", "expert_groups", "dense_layers"):
        if getattr(rec, k) is not None:
            data[k] = getattr(rec, k)
    return validate(ModelConfig, data, rec.origin or rec.id)


NOTE_OPTIONS = {
    "deepep": {"a2a": "hierarchical"},
    "--use-mc2": {"tp_comm_overlap": True},
}
"""Plan options a row states in its notes: DeepEP forwards tokens across nodes once per destination
node (modelled as the hierarchical all-to-all); Ascend MC2 fuses matmul and TP communication."""

RECIPE_OPTIONS = {
    ("deepseek-v3", "megatron-core"): {"a2a": "hierarchical", "ep_overlap": True},
}
"""Options of the public benchmark recipe a row was measured with, where the row does not state them.
Megatron-Bridge's DeepSeek-V3 H100 performance configs (scripts/performance/configs/deepseek) set
``enable_deepep=True`` (modelled as the hierarchical all-to-all) and the MoE all-to-all overlap with
1F1B (``set_moe_a2a_overlap_overrides``, modelled as ``ep_overlap``)."""

RECIPE_SP = ("megatron-core", "nemo-automodel")
"""Conventions whose recipes enable sequence parallelism whenever tp > 1."""

DISPUTED_ROWS = {
    "V074": "the same model, GPUs, plan and (balanced) routed work measured 10,494 tokens/s/GPU in the NeMo "
            "25.09 container (token-drop routing), 1.99x this row's 5,275 (25.11, dropless)",
    "V121": "the README's GPU reference for the same configuration (837 tokens/s/GPU) sits as far below "
            "the prediction on an A100 as this row does on the 910B; the flags benchmarked are not stated",
    "V124": "dense rows of the same README and commit run at the MFU npusim predicts, this MoE row (like "
            "V121) at 2.1x less; the flags benchmarked are not stated",
}
"""Rows that another measurement from the same source puts in doubt (benchmarks/crosscheck.py ->
docs/crosscheck.md). They stay in every accuracy table; gates report them separately."""


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def record_plan_fields(rec: RunRecord) -> dict:
    """ParallelPlan fields of a row (blanks take the defaults documented in the module docstring)."""
    out = {
        "tp": _or(rec.tp, 1), "pp": _or(rec.pp, 1), "vpp": _or(rec.vpp, 1), "cp": _or(rec.cp, 1),
        "dp": _or(rec.dp, 0), "ep": _or(rec.ep, 1), "etp": _or(rec.etp, 0), "sp": bool(rec.sp) if rec.sp is not None else (
            rec.flop_convention in RECIPE_SP and _or(rec.tp, 1) > 1),
        "zero": _or(rec.zero, 1 if rec.flop_convention in RECIPE_SP else 0), "recompute": _or(rec.recompute, "none"),
        "micro_batch": rec.micro_batch, "precision": rec.precision,
        "master_weights": _or(rec.master_weights, "fp32"),
    }
    out.update(RECIPE_OPTIONS.get((rec.model, rec.flop_convention), {}))
    notes = (rec.notes or "").lower()
    for keyword, opts in NOTE_OPTIONS.items():
        if keyword in notes:
            out.update(opts)
    if rec.flop_convention in LEGACY_MEGATRON:
        out["flash_attention"] = False
        out["overlap_grad_reduce"] = False
    return out


def record_workload(rec: RunRecord) -> "TrainWorkload":
    """The TrainWorkload of a training row (serving rows: npusim.validate.predict.simulate_serving_record)."""
    if rec.workload != "train":
        raise ValueError(f"{rec.id}: a {rec.workload} row has no training workload; use simulate_serving_record")
    from npusim.config.workload import TrainWorkload

    return TrainWorkload(seq_len=rec.seq_len, global_batch=rec.global_batch)


def measured_metric(rec: RunRecord) -> tuple[str, float]:
    """(metric name, measured value): step_time_s for train, ttft_s for prefill, tpot_s for decode."""
    name, col = METRIC_BY_WORKLOAD[rec.workload]
    value = getattr(rec, col)
    if value is None:
        raise ConfigError(rec.origin or rec.id, col, "", f"required for {rec.workload} rows", "a positive number")
    return name, value
