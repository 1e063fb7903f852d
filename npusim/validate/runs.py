"""Run records: strict reading of a run-record CSV (yours, or the shipped ``published.csv``).

:func:`read_runs` checks the header (every missing required column named in one message; unknown
columns refused with a "did you mean"), then validates each row into the pydantic
:class:`~npusim.validate.schema.RunRecord`, which also builds the row's hardware profile, model and
plan (``npusim.validate.convert``). Any defect raises a one-line
:class:`~npusim.config.errors.ConfigError` naming ``FILE:LINE``, the column, the value and what is
allowed. The format is documented in ``docs/formats.md``; ``npusim validate --template`` prints a
minimal file to fill in.

The shipped ``published.csv`` is the project's reference rows plus a ``plan`` column holding the
options each source (or the public recipe it names) states, which were read from the notes text
before: ``flash_attention=0,overlap_grad_reduce=0`` for the 2021-2022 Megatron-LM rows
(``megatron-eq3``, ``korthikanti-eq7``: no FlashAttention, gradient all-reduce after the backward
pass); ``sp=1`` (with tp > 1) and ``zero=1`` where a NeMo / Megatron-Bridge recipe row leaves them
blank (the recipes turn on sequence parallelism with TP and use the distributed optimizer);
``a2a=hierarchical`` for DeepEP; ``ep_overlap=1`` for the Megatron-Bridge DeepSeek-V3 recipe
(``set_moe_a2a_overlap_overrides``); ``tp_comm_overlap=1`` for MindSpeed's ``--use-mc2``;
``moe_dispatch=allgather`` for V124's all-gather dispatcher.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npusim.config.errors import ConfigError, did_you_mean

_LAZY = {
    "convert": ("measured_column", "measured_metric", "record_hardware", "record_model", "record_plan_fields",
                "record_workload", "serving_plan_fields"),
    "schema": ("COLUMNS", "MEASURED", "REQUIRED_COLUMNS", "RunRecord"),
}
"""Names re-exported from ``npusim.validate.convert`` / ``.schema`` (imported on first use, so that
importing this module for HARDWARE or published_path does not import pydantic)."""


if TYPE_CHECKING:  # pragma: no cover
    from npusim.validate.schema import RunRecord


def __getattr__(name: str):
    for mod, names in _LAZY.items():
        if name in names:
            import importlib

            return getattr(importlib.import_module(f"npusim.validate.{mod}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


HARDWARE = ("nvidia-a100-sxm-80g", "nvidia-h100-sxm-80g", "nvidia-h800-sxm-80g", "nvidia-h200-sxm-141g",
            "atlas-800t-a2", "atlas-800i-a2", "atlas-300i-duo")
"""The hardware presets the published rows name (any preset or profile path works in a run record)."""

TEMPLATE = """\
id,hardware,model,devices,plan,seq_len,global_batch,measured_step_time_s,measured_tokens_per_s,measured_mfu,flop_convention
run-a,atlas-800t-a2,llama2-7b,8,"tp=1,pp=2,zero=1,recompute=selective",4096,64,8.1,,,
run-b,atlas-800t-a2,llama2-7b,16,"tp=2,sp=1,zero=1",4096,128,,46000,,
run-c,nvidia-h100-sxm-80g,llama3-8b,8,"tp=1,zero=1,mb=1",8192,64,,,0.45,npusim
"""
"""A minimal run-record CSV (``npusim validate --template``): the required columns and one row per
kind of measured value (step time; tokens/s of all devices; MFU with its FLOP convention)."""


def published_path() -> Path:
    """The packaged ``published.csv``."""
    return Path(__file__).resolve().parent.parent / "data" / "runs" / "published.csv"


# ---- header ------------------------------------------------------------------------------------
LEGACY_COLUMNS = (
    "id", "source", "reliability", "workload", "hardware", "devices", "model",
    "layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab", "attention", "mlp",
    "experts", "top_k", "shared_experts", "expert_ffn_hidden", "expert_groups", "dense_layers",
    "seq_len", "global_batch", "micro_batch", "tp", "pp", "vpp", "cp", "ep", "etp", "dp",
    "sp", "zero", "recompute", "precision", "master_weights", "routing",
    "batch", "input_len", "output_len",
    "measured_step_time_s", "measured_ttft_s", "measured_tpot_s", "measured_tokens_per_s_per_device",
    "published_metric", "flop_convention", "notes",
)
"""The published-run schema as it was before the ``plan`` column (``shared/data/runs``): a CSV with
exactly these columns is read with ``legacy_plan``."""
LEGACY_ERA = {"megatron-eq3": "flash_attention=0,overlap_grad_reduce=0",
              "korthikanti-eq7": "flash_attention=0,overlap_grad_reduce=0"}
"""Megatron-LM of 2021-22 (Narayanan et al. SC21, Korthikanti et al. 2022): attention materialised,
gradients all-reduced after the backward."""
LEGACY_RECIPE = ("megatron-core", "nemo-automodel")
"""NeMo / Megatron-Bridge recipes: sequence parallelism with TP, and the distributed optimizer."""
LEGACY_NOTES = {"deepep": "a2a=hierarchical", "--use-mc2": "tp_comm_overlap=1"}
"""What a legacy row's notes state about its run (DeepEP's node-deduplicated all-to-all; Ascend
MC2's fused TP communication)."""


def legacy_plan(raw: dict[str, str]) -> str:
    """The ``plan`` of a row in the published schema without a plan column: the documented era and
    recipe defaults of its ``flop_convention`` for blank cells, and the options its notes state.
    The shipped published.csv carries these in its plan column."""
    fc = raw.get("flop_convention", "").strip()
    parts = [LEGACY_ERA[fc]] if fc in LEGACY_ERA else []
    if fc in LEGACY_RECIPE:
        tp = raw.get("tp", "").strip()
        if not raw.get("sp", "").strip() and tp.isdigit() and int(tp) > 1:
            parts.append("sp=1")
        if not raw.get("zero", "").strip():
            parts.append("zero=1")
    notes = raw.get("notes", "").lower()
    parts += [opt for key, opt in LEGACY_NOTES.items() if key in notes]
    return ",".join(parts)


def _check_header(src: str, header: list[str]) -> None:
    """Duplicate, unknown and missing columns of the header line (one message for each kind)."""
    from npusim.validate.schema import COLUMNS, MEASURED, REQUIRED_COLUMNS

    where = f"{src}:1"
    seen: set[str] = set()
    for col in header:
        if col in seen:
            raise ConfigError(where, col, col, "duplicate column", "each column once")
        seen.add(col)
    unknown = [c for c in header if c not in COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in seen]
    if not any(c in seen for c in MEASURED):
        missing.append("one of " + " | ".join(MEASURED))
    problems = []
    if unknown:
        problems.append("unknown column " + ", ".join(
            repr(c) + did_you_mean(c, [k for k in COLUMNS if k not in seen]).replace("; did", " (did").replace("?", "?)")
            for c in unknown))
    if missing:
        problems.append(f"missing required column{'s' if len(missing) > 1 else ''}: " + ", ".join(missing))
    if problems:
        raise ConfigError(where, "<header>", ", ".join(unknown + missing), "; ".join(problems),
                          "required: " + ", ".join(REQUIRED_COLUMNS) + " and a measured_* column; optional: the "
                          "other columns of docs/formats.md")


# ---- rows --------------------------------------------------------------------------------------
_EXPECTED = re.compile(r"'([^']*)'")


def _cell_error(where: str, err) -> ConfigError:
    """The first error of a row's pydantic ValidationError as a one-line ConfigError."""
    first = err.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    loc = first.get("loc") or ()
    col = str(loc[0]) if loc else "<row>"
    value, kind, ctx = first.get("input"), first.get("type", ""), first.get("ctx") or {}
    if value is None:
        return ConfigError(where, col, "", "required cell is blank", "a non-blank value")
    if kind == "literal_error":
        allowed = _EXPECTED.findall(str(ctx.get("expected", "")))
        return ConfigError(where, col, value, "unknown value" + did_you_mean(str(value), allowed), " | ".join(allowed))
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return ConfigError(where, col, value, "not an integer", "an integer")
    if kind in ("float_parsing", "float_type"):
        return ConfigError(where, col, value, "not a number", "a positive number")
    if kind == "finite_number":
        return ConfigError(where, col, value, "must be a positive finite number", "> 0")
    if kind == "bool_parsing":
        return ConfigError(where, col, value, "not a flag", "0 | 1")
    if kind == "greater_than":
        return ConfigError(where, col, value, "must be positive", f"> {ctx.get('gt')}")
    if kind in ("greater_than_equal", "less_than_equal"):
        return ConfigError(where, col, value, "out of range", f">= {ctx['ge']}" if "ge" in ctx else f"<= {ctx.get('le')}")
    if kind == "string_too_short":
        return ConfigError(where, col, value, "required cell is blank", "a non-blank value")
    return ConfigError(where, col, value, first.get("msg", "invalid"))


def _read_text(src: str) -> str:
    p = Path(src)
    if not p.is_file():
        raise ConfigError(src, "<file>", src, "file not found" if not p.exists() else "not a file", "a run-record CSV")
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
    return text


def read_runs(path: str | Path) -> list["RunRecord"]:
    """Read a run-record CSV strictly; raise a one-line ConfigError naming ``FILE:LINE`` on any defect."""
    from pydantic import TypeAdapter, ValidationError

    from npusim.validate.schema import RunRecord

    src = str(path)
    text = _read_text(src)
    base_dir = str(Path(src).resolve().parent)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise ConfigError(f"{src}:1", "<header>", "", f"cannot parse CSV: {e}") from None
    legacy = "plan" not in header and sorted(header) == sorted(LEGACY_COLUMNS)
    if legacy:  # the published schema before the plan column: each row's plan is derived from it
        header = header + ["plan"]
    _check_header(src, header)

    adapter = TypeAdapter(RunRecord)
    cache: dict[Any, Any] = {}
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
        if legacy and len(cells) == len(header) - 1:
            cells = cells + [legacy_plan(dict(zip(header, cells)))]
        if len(cells) != len(header):
            raise ConfigError(where, "<row>", len(cells), f"has {len(cells)} cells but the header has {len(header)}",
                              f"{len(header)} cells")
        raw = dict(zip(header, cells))
        rid = raw["id"].strip()
        if rid and rid in first_line:
            raise ConfigError(where, "id", rid, f"duplicate id (first at line {first_line[rid]})", "unique ids")
        data = {col: (cell if cell.strip() else None) for col, cell in raw.items()}
        try:
            rec = adapter.validate_python({**data, "raw": raw, "origin": where, "base_dir": base_dir},
                                          context={"reader": cache})
        except ValidationError as e:
            raise _cell_error(where, e) from None
        first_line[rid] = line
        records.append(rec)
    if not records:
        raise ConfigError(f"{src}:2", "<file>", "", "no run rows after the header", "at least one row")
    return records
