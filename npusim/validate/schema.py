"""The run-record schema: its columns and the pydantic model that checks one row.

:class:`RunRecord` is a frozen pydantic dataclass (``extra="forbid"``, like the profile, model and
plan configs): every cell is typed and range-checked by pydantic, and one ``model_validator`` holds
the cross-column rules. When the row comes from a file (validation context ``{"reader": ...}``,
see :func:`npusim.validate.runs.read_runs`) the validator also requires the cells a file row must
fill and builds the row's hardware profile, model and plan, so a row that reads is a row npusim can
simulate. The format is documented in ``docs/formats.md`` (section "Run records").
"""
from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Literal, Optional

from pydantic import ConfigDict, Field, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass

from npusim.config.errors import ConfigError

TRAIN_MEASURED = ("measured_step_time_s", "measured_tokens_per_s", "measured_tokens_per_s_per_device",
                  "measured_mfu")
"""Measured quantities of a training row, in the order the first one given is compared."""
SERVING_MEASURED = {"prefill": "measured_ttft_s", "decode": "measured_tpot_s"}
MEASURED = TRAIN_MEASURED + ("measured_ttft_s", "measured_tpot_s")
METRIC_OF = {"measured_step_time_s": "step_time_s", "measured_tokens_per_s": "tokens_per_s",
             "measured_tokens_per_s_per_device": "tokens_per_s_per_device", "measured_mfu": "mfu",
             "measured_ttft_s": "ttft_s", "measured_tpot_s": "tpot_s"}
"""Metric name of each measured column."""

REQUIRED_COLUMNS = ("id", "hardware", "model", "devices", "plan", "seq_len", "global_batch")
"""Columns every run-record file has (plus at least one of MEASURED)."""

COLUMNS: tuple[str, ...] = (
    "id", "source", "reliability", "workload", "hardware", "devices", "model",
    "layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab", "attention", "mlp",
    "experts", "top_k", "shared_experts", "expert_ffn_hidden", "expert_groups", "dense_layers",
    "seq_len", "global_batch", "micro_batch", "tp", "pp", "vpp", "cp", "ep", "etp", "dp",
    "sp", "zero", "recompute", "precision", "master_weights", "routing", "plan",
    "batch", "input_len", "output_len",
    "measured_step_time_s", "measured_tokens_per_s", "measured_tokens_per_s_per_device", "measured_mfu",
    "measured_ttft_s", "measured_tpot_s",
    "published_metric", "flop_convention", "notes",
)
"""Every column a run-record file may have."""

INLINE_SHAPE = ("layers", "hidden", "heads", "vocab", "attention", "mlp")
"""Shape cells a row without a ``model`` must fill (a GPT-style decoder)."""

FLOP_CONVENTIONS = ("npusim", "megatron-core", "nemo-automodel", "megatron-eq3", "korthikanti-eq7", "palm",
                    "deepseek", "none")
MFU_CONVENTIONS = FLOP_CONVENTIONS[:6]
"""Conventions npusim can count FLOPs in (``measured_mfu`` needs one; ``npusim.validate.metrics``)."""

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


@dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid", str_strip_whitespace=True))
class RunRecord:
    """One typed row of a run-record CSV. Blank cells are ``None``; ``raw`` keeps the cells as read."""

    id: Annotated[str, Field(min_length=1)]
    source: Optional[str] = None
    reliability: Optional[Literal["A", "A-", "B"]] = None
    workload: Optional[Literal["train", "prefill", "decode"]] = "train"
    hardware: Annotated[str, Field(min_length=1)]
    """Profile preset name, or a profile YAML path (relative to the CSV's folder)."""
    devices: PosInt
    model: Optional[str] = None
    """Model preset name, model YAML or Hugging Face config.json path (relative to the CSV's folder);
    blank = a GPT-style decoder described by the inline shape columns."""
    layers: Optional[PosInt] = None
    hidden: Optional[PosInt] = None
    ffn_hidden: Optional[PosInt] = None
    heads: Optional[PosInt] = None
    kv_heads: Optional[PosInt] = None
    vocab: Optional[PosInt] = None
    attention: Optional[Literal["mha", "gqa", "mla"]] = None
    mlp: Optional[Literal["gelu", "swiglu"]] = None
    experts: Optional[PosInt] = None
    top_k: Optional[PosInt] = None
    shared_experts: Optional[NonNegInt] = None
    expert_ffn_hidden: Optional[PosInt] = None
    expert_groups: Optional[PosInt] = None
    dense_layers: Optional[NonNegInt] = None
    seq_len: Optional[PosInt] = None
    global_batch: Optional[PosInt] = None
    micro_batch: Optional[PosInt] = None
    tp: Optional[PosInt] = None
    pp: Optional[PosInt] = None
    vpp: Optional[PosInt] = None
    cp: Optional[PosInt] = None
    ep: Optional[PosInt] = None
    etp: Optional[PosInt] = None
    dp: Optional[PosInt] = None
    sp: Optional[bool] = None
    zero: Optional[Annotated[int, Field(ge=0, le=3)]] = None
    recompute: Optional[Literal["none", "selective", "full"]] = None
    precision: Optional[Literal["bf16", "fp16", "fp8", "int8"]] = None
    master_weights: Optional[Literal["fp32", "none"]] = None
    routing: Optional[Literal["balanced", "dropless"]] = None
    """How the measured run routed tokens: sets the simulated load (balanced -> ``routing=balanced``,
    dropless -> ``routing=learned``; npusim.validate.convert.ROUTING_OF) unless the plan cell states ``routing=``."""
    plan: Optional[str] = None
    """The ``--plan`` string of the run (every plan key of docs/formats.md)."""
    batch: Optional[PosInt] = None
    input_len: Optional[PosInt] = None
    output_len: Optional[PosInt] = None
    measured_step_time_s: Optional[PosFloat] = None
    measured_tokens_per_s: Optional[PosFloat] = None
    measured_tokens_per_s_per_device: Optional[PosFloat] = None
    measured_mfu: Optional[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]] = None
    measured_ttft_s: Optional[PosFloat] = None
    measured_tpot_s: Optional[PosFloat] = None
    published_metric: Optional[str] = None
    flop_convention: Optional[Literal[FLOP_CONVENTIONS]] = None  # type: ignore[valid-type]
    notes: Optional[str] = None
    raw: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """The row's cells exactly as read (column -> string)."""
    origin: str = field(default="", compare=False, hash=False)
    """``FILE:LINE`` of the row, used as the source of later errors."""
    base_dir: Optional[str] = field(default=None, compare=False, hash=False, repr=False)
    """Folder that relative ``hardware`` / ``model`` paths are resolved against (the CSV's folder)."""

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> "RunRecord":
        where = self.origin or self.id

        def bad(col: str, value: Any, problem: str, allowed: str = "") -> ConfigError:
            return ConfigError(where, col, value, problem, allowed)

        if self.workload is None:
            raise bad("workload", "", "blank cell", "train | prefill | decode (or leave out the column: train)")
        if self.experts is not None:
            for col in ("top_k", "expert_ffn_hidden"):
                if getattr(self, col) is None:
                    raise bad(col, "", "required for an MoE row (experts is set)", "a positive integer")
            if self.top_k > self.experts:
                raise bad("top_k", self.top_k, f"exceeds experts ({self.experts})", f"1..{self.experts}")
        wanted = TRAIN_MEASURED if self.workload == "train" else (SERVING_MEASURED[self.workload],)
        if all(getattr(self, c) is None for c in wanted):
            raise bad(wanted[0], "", f"a {self.workload} row needs a measured value", " or ".join(wanted))
        if self.measured_mfu is not None and self.flop_convention not in MFU_CONVENTIONS:
            raise bad("flop_convention", self.flop_convention or "", "measured_mfu needs the FLOP convention it "
                      "was counted in", " | ".join(MFU_CONVENTIONS))
        if self.workload == "train" and self.dp is not None:
            prod = (self.tp or 1) * (self.pp or 1) * (self.cp or 1) * self.dp
            if prod != self.devices:
                raise bad("dp", self.dp, f"tp*pp*cp*dp = {prod} but devices = {self.devices}",
                          "tp*pp*cp*dp = devices for training rows")
        ctx = info.context if isinstance(info.context, dict) else {}
        if ctx.get("reader") is not None:
            self._check_file_row(bad, ctx["reader"])
        return self

    def _check_file_row(self, bad, cache: dict) -> None:
        """Rules of a row read from a file: required cells, and its hardware, model and plan build."""
        needed = ("seq_len", "global_batch") if self.workload == "train" else ("batch", "input_len")
        if self.model is None:
            needed = needed + INLINE_SHAPE
        for col in needed:
            if getattr(self, col) is None:
                why = "required for a row without a model" if col in INLINE_SHAPE else f"required for {self.workload} rows"
                raise bad(col, "", why, "a non-blank value")
        from npusim.validate.convert import check_inputs

        check_inputs(self, cache)
