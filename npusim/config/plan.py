"""Parallel plan: how a model is split over devices, and the options of the training step."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, field_validator, model_validator

from npusim.config.errors import ConfigError
from npusim.config.policy import MAX_BATCH, MAX_DEVICES, MAX_REDUNDANT_EXPERTS, MAX_SEED, StrictModel

Degree = Annotated[int, Field(gt=0, le=MAX_DEVICES)]
"""A parallel degree: 1..MAX_DEVICES."""
MAX_ROUTING_DRAWS = 100_000
"""routing_samples x (redundant_experts + 1): the sampling work of one routing estimate."""

Recompute = Literal["none", "selective", "full"]
RecomputeModule = Literal["core_attn", "layernorm", "mla_up_proj", "moe_act", "mlp", "moe", "shared_experts",
                          "permute"]
"""Megatron-Core's ``--recompute-modules`` vocabulary, plus ``permute`` (docs/memory.md)."""
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Schedule = Literal["1f1b", "interleaved", "zb-h1", "zb-v", "dualpipe", "dualpipev"]


class ParallelPlan(StrictModel):
    """Degrees of parallelism plus step options. ``dp`` = 0 means 'derive from the device count'."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    tp: Degree = 1
    """Tensor-parallel size."""
    pp: Degree = 1
    """Pipeline-parallel size."""
    vpp: Degree = 1
    """Virtual pipeline chunks per pipeline rank (1 = no interleaving)."""
    cp: Degree = 1
    """Context-parallel size."""
    dp: int = Field(0, ge=0, le=MAX_DEVICES)
    """Data-parallel size (0 = devices / (tp*pp*cp))."""
    ep: Degree = 1
    """Expert-parallel size; expert groups are carved out of the tp*cp*dp ranks."""
    etp: int = Field(0, ge=0, le=MAX_DEVICES)
    """Expert tensor-parallel size (0 = default: tp when ep*tp fits in tp*cp*dp, else 1; 1 with tp_extend_ep)."""
    tp_extend_ep: bool = False
    """Split experts over tp*ep ranks (each expert whole) instead of splitting each expert's weights."""
    sp: bool = False
    """Megatron sequence parallelism (norms/dropout split over TP; reduce-scatter + all-gather)."""
    zero: int = Field(0, ge=0, le=3)
    """0 none, 1 optimizer states (distributed optimizer), 2 + gradients, 3 + parameters."""
    recompute: Recompute = "none"
    """Whole-layer recompute policy: none, selective (= recompute_modules core_attn) or full."""
    recompute_modules: tuple[RecomputeModule, ...] = ()
    """Fine-grained recompute: modules whose activations are dropped and recomputed in the backward
    (``core_attn+layernorm+moe_act``); overrides ``recompute=selective`` (docs/memory.md)."""
    offload_activations: Fraction = 0.0
    """Share of every layer's stored activations swapped to host memory after its forward and back
    before its backward (the chunk's last layer stays on the device)."""
    offload_modules: tuple[RecomputeModule, ...] = ()
    """Modules whose activations are swapped to host memory whole (added to ``offload_activations``)."""
    offload_optimizer: Fraction = 0.0
    """Share of the optimizer states (fp32 master weights, moments) kept in host memory and stepped
    on the host CPU."""
    micro_batch: Annotated[int, Field(gt=0, le=MAX_BATCH)] = 1
    """Sequences per micro-batch per data-parallel rank."""
    schedule: Schedule | None = None
    """Pipeline schedule (None = interleaved when vpp > 1, else 1f1b): 1f1b, interleaved (vpp
    chunks), zb-h1 (zero bubble, 1F1B memory), zb-v (zero bubble, V-shaped, vpp=2), dualpipe
    (bidirectional, 2x parameters, even pp) or dualpipev (V-shaped DualPipe, vpp=2);
    docs/schedules.md."""
    precision: Literal["bf16", "fp16", "fp8", "int8"] = "bf16"
    """GEMM precision."""
    master_weights: Literal["fp32", "none"] = "fp32"
    overlap_grad_reduce: bool = True
    """Overlap DP gradient reduction with the backward pass."""
    overlap_param_gather: bool = True
    """Overlap ZeRO parameter all-gathers with compute."""
    tp_comm_overlap: bool = False
    """Overlap TP collectives with the neighbouring GEMMs."""
    a2a: Literal["flat", "hierarchical"] = "flat"
    """EP all-to-all algorithm."""
    flash_attention: bool = True
    """Fused attention (False = materialised scores, softmax and dropout as separate kernels)."""
    ep_overlap: bool = False
    """Hide EP all-to-all of one micro-batch behind another's compute (adaptive pipe overlap / DualPipe)."""
    routing: Literal["balanced", "uniform", "learned", "zipf", "dirichlet", "grouped", "histogram"] = "balanced"
    """MoE routing load: forced balance, random top-k, a trained router's skew (npusim.workload.routing),
    skewed, MoGE grouped, or a measured histogram."""
    routing_param: float = Field(1.0, gt=0, le=1e6)
    """Zipf exponent or Dirichlet concentration."""
    routing_histogram: Optional[str] = None
    """CSV (expert,tokens) for routing=histogram."""
    routing_seed: int = Field(0, ge=0, le=MAX_SEED)
    routing_samples: int = Field(16, ge=1, le=10_000)
    capacity_factor: float = Field(0.0, ge=0, le=1e6)
    """Per-expert token cap as a multiple of the mean (0 = dropless)."""
    pad_to_capacity: bool = False
    """Drop-and-pad (Megatron ``--moe-pad-expert-input-to-capacity``): every expert computes exactly
    its capacity of rows, padded where it got fewer; needs capacity_factor > 0."""
    placement_interval: int = Field(0, ge=0, le=1_000_000)
    """Dynamic expert placement: re-place hot experts every this many steps from the load measured
    since the last re-placement (0 = static placement)."""
    redundant_experts: int = Field(0, ge=0, le=MAX_REDUNDANT_EXPERTS)
    """Hot experts replicated onto the least-loaded devices of each EP group."""
    shared_tp: int = Field(0, ge=0, le=MAX_DEVICES)
    """Serving: TP size of the shared experts (0 = tp); may span the attention DP groups."""
    moe_dispatch: Literal["alltoall", "allgather"] = "alltoall"
    """Serving: EP token exchange by all-to-all, or all-gather to every device + reduce-scatter."""
    kv_precision: Literal["auto", "bf16", "fp16", "int8"] = "auto"
    """Serving: KV-cache dtype (auto = 16-bit)."""
    weight_only: bool = False
    """Serving: int8 weights with 16-bit compute (W8A16) instead of W8A8 when precision=int8."""
    weight_dtype: Literal["auto", "int4", "int8", "fp8", "bf16", "fp16"] = "auto"
    """Serving: stored weight dtype (auto = the GEMM precision's; int8 with weight_only). W4A8 =
    ``precision=int8,weight_dtype=int4`` (0.5 byte per weight)."""

    @field_validator("recompute_modules", "offload_modules", mode="before")
    @classmethod
    def _modules_text(cls, v):
        """Accept the ``--plan`` text form ``core_attn+moe_act`` (and '' for none) as well as a list."""
        if isinstance(v, str):
            return tuple(m for m in v.split("+") if m)
        return v

    @model_validator(mode="after")
    def _sampling_work(self) -> "ParallelPlan":
        draws = self.routing_samples * (self.redundant_experts + 1)
        if draws > MAX_ROUTING_DRAWS:
            raise ValueError(f"routing_samples x (redundant_experts + 1) = {draws:,} routing draws; "
                             f"at most {MAX_ROUTING_DRAWS:,}")
        return self

    @property
    def pipeline_schedule(self) -> str:
        """The schedule in force."""
        return self.schedule or ("interleaved" if self.vpp > 1 else "1f1b")

    @property
    def expert_tp(self) -> int:
        """Expert tensor-parallel size in force."""
        if self.etp:
            return self.etp
        return 1 if self.tp_extend_ep else self.tp

    @property
    def expert_ep(self) -> int:
        """Ranks the experts of a layer are spread over (ep, times tp with TP-extend-EP)."""
        return self.ep * (self.tp if self.tp_extend_ep else 1)

    def degrees(self) -> dict[str, int]:
        """The parallel degrees by name."""
        return {"tp": self.tp, "pp": self.pp, "vpp": self.vpp, "cp": self.cp, "dp": self.dp,
                "ep": self.ep, "etp": self.expert_tp}


_INT_KEYS = {"tp", "pp", "vpp", "cp", "dp", "ep", "etp", "zero", "micro_batch", "mb", "routing_seed",
             "routing_samples", "redundant_experts", "shared_tp",
             "placement_interval"}
_FLOAT_KEYS = {"routing_param", "capacity_factor", "offload_activations", "offload_optimizer"}
_TUPLE_KEYS = {"recompute_modules", "offload_modules"}
"""Keys whose value is a '+'-separated list (``recompute_modules=core_attn+moe_act``)."""
_BOOL_KEYS = {"sp", "tp_extend_ep", "overlap_grad_reduce", "overlap_param_gather", "tp_comm_overlap",
              "flash_attention", "ep_overlap", "weight_only", "pad_to_capacity"}
_STR_KEYS = {"recompute", "schedule", "precision", "master_weights", "a2a", "routing", "routing_histogram",
             "moe_dispatch", "kv_precision", "weight_dtype"}


def parse_plan(text: str, source: str = "--plan") -> dict:
    """Parse ``"tp=8,pp=16,vpp=2,ep=4"`` into a dict of plan fields (values typed, names checked).

    Input policy: a repeated key (``mb`` and ``micro_batch`` are one key), an integer of more than
    18 digits and a non-finite number are refused in one line. ``""`` is the empty plan (all
    defaults) here; the CLI refuses an empty ``--plan`` value (``npusim.cli_util.plan_text``)."""
    import math

    from npusim.config.errors import did_you_mean
    from npusim.config.policy import int_text

    out: dict = {}
    allowed = sorted(_INT_KEYS | _FLOAT_KEYS | _BOOL_KEYS | _STR_KEYS | _TUPLE_KEYS)
    parts = [p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip()]
    for part in parts:
        if "=" not in part:
            raise ConfigError(source, part, part, "expected key=value", ", ".join(allowed))
        key, val = (s.strip() for s in part.split("=", 1))
        if key not in allowed:
            raise ConfigError(source, key, val, "unknown plan key" + did_you_mean(key, allowed), ", ".join(allowed))
        name = "micro_batch" if key == "mb" else key
        if name in out:
            raise ConfigError(source, key, val, f"repeated plan key (already {name}={out[name]})", "each key once")
        if key in _INT_KEYS:
            out[name] = int_text(val, source, key)
        elif key in _FLOAT_KEYS:
            try:
                out[key] = float(val)
            except ValueError:
                raise ConfigError(source, key, val, "not a number", "a non-negative number") from None
            if not math.isfinite(out[key]):
                raise ConfigError(source, key, val, "not a finite number", "a finite non-negative number")
        elif key in _BOOL_KEYS:
            if val.lower() not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
                raise ConfigError(source, key, val, "not a boolean", "0/1/true/false")
            out[key] = val.lower() in ("1", "true", "yes", "on")
        elif key in _TUPLE_KEYS:
            out[key] = tuple(v.strip() for v in val.split("+") if v.strip() and v.strip() != "none")
        else:
            out[key] = val
    return out


def make_plan(fields: dict, source: str = "--plan") -> ParallelPlan:
    """Validate plan fields into a ParallelPlan (one-line ConfigError on a bad value)."""
    from npusim.config.loader import validate

    return validate(ParallelPlan, fields, source)


MAX_DEVICES = 1_000_000
"""Largest cluster npusim simulates."""
MAX_PIPELINE_UNITS = 2_000_000
"""Most forward/backward units one step may schedule (about 10 s of event simulation)."""


def resolve_plan(plan: ParallelPlan, model, devices: int, global_batch: int, seq_len: int,
                 source: str = "--plan") -> ParallelPlan:
    """Derive ``dp`` and check the plan against the model and device count; raise ConfigError."""
    def bad(field: str, value: object, problem: str, allowed: str = "") -> ConfigError:
        return ConfigError(source, field, value, problem, allowed)

    if not 1 <= devices <= MAX_DEVICES:
        raise bad("devices", devices, "out of range", f"1..{MAX_DEVICES:,}")
    if plan.weight_dtype != "auto":
        raise bad("weight_dtype", plan.weight_dtype, "a serving option (training keeps 16-bit weights)", "auto")
    mp = plan.tp * plan.pp * plan.cp
    dp = plan.dp
    if dp == 0:
        if devices % mp:
            raise bad("devices", devices, f"not divisible by tp*pp*cp = {mp}", f"a multiple of {mp}")
        dp = devices // mp
    if mp * dp != devices:
        raise bad("dp", dp, f"tp*pp*cp*dp = {mp * dp} but devices = {devices}", f"dp = {devices // mp if devices % mp == 0 else 'none'}")
    if model.heads % plan.tp:
        raise bad("tp", plan.tp, f"does not divide heads ({model.heads})", "a divisor of the head count")
    kv = model.n_kv_heads
    if model.attention != "mla" and kv % plan.tp and plan.tp % kv:
        raise bad("tp", plan.tp, f"incompatible with kv_heads ({kv})", "a divisor or multiple of kv_heads")
    chunks = plan.pp * plan.vpp
    if model.layers < chunks:
        raise bad("pp*vpp", chunks, f"more pipeline chunks than layers ({model.layers})", f"<= {model.layers}")
    if plan.vpp > 1 and plan.pp == 1:
        raise bad("vpp", plan.vpp, "interleaving needs pp > 1", "1 when pp = 1")
    if seq_len % plan.cp:
        raise bad("cp", plan.cp, f"does not divide seq_len ({seq_len})", "a divisor of seq_len")
    if plan.sp and plan.tp > 1 and (seq_len // plan.cp) % plan.tp:
        raise bad("sp", 1, f"seq_len/cp ({seq_len // plan.cp}) not divisible by tp ({plan.tp})")
    per_step = plan.micro_batch * dp
    if global_batch % per_step:
        raise bad("global_batch", global_batch, f"not divisible by micro_batch*dp = {per_step}",
                  f"a multiple of {per_step}")
    m = global_batch // per_step
    units = (3 if plan.pipeline_schedule in ("zb-h1", "zb-v", "dualpipe", "dualpipev") else 2) * m * plan.pp * plan.vpp
    if units > MAX_PIPELINE_UNITS:
        raise bad("global_batch", global_batch,
                  f"{m:,} micro-batches x {plan.pp * plan.vpp} chunks = {units:,} pipeline units to simulate",
                  f"<= {MAX_PIPELINE_UNITS:,} (raise micro_batch or dp)")
    _check_schedule(plan, m, global_batch, per_step, bad)
    if plan.pipeline_schedule == "interleaved" and plan.pp > 1 and m % plan.pp:
        raise bad("global_batch", global_batch,
                  f"interleaved schedule needs micro-batches ({m}) divisible by pp ({plan.pp})",
                  f"global_batch a multiple of {per_step * plan.pp}")
    if model.is_moe:
        plan = _check_moe(plan, model, dp, bad)
    elif plan.ep > 1:
        raise bad("ep", plan.ep, "a dense model has no experts", "1")
    return plan.model_copy(update={"dp": dp})


def _check_moe(plan: ParallelPlan, model, dp: int, bad) -> ParallelPlan:
    """Default the expert TP size and check expert placement and routing options of an MoE plan."""
    if plan.etp == 0:
        # Megatron-Core's default expert TP is tp; when ep*tp does not fit in tp*cp*dp (as in the
        # NeMo/Megatron-Bridge MoE recipes, which set ETP 1) fall back to 1.
        etp = 1 if plan.tp_extend_ep or (plan.tp * plan.cp * dp) % (plan.ep * plan.tp) else plan.tp
        plan = plan.model_copy(update={"etp": etp})
    eep = plan.expert_ep
    if model.experts % eep:
        raise bad("ep", plan.ep, f"experts ({model.experts}) not divisible by expert-parallel ranks ({eep})",
                  "a divisor of the expert count")
    moe_ranks = eep * plan.expert_tp
    if (plan.tp * plan.cp * dp) % moe_ranks:
        raise bad("ep", plan.ep, f"ep*etp = {moe_ranks} does not divide tp*cp*dp = {plan.tp * plan.cp * dp}",
                  "ep*etp dividing tp*cp*dp")
    if plan.routing == "grouped" and not model.expert_groups:
        raise bad("routing", "grouped", "the model has no expert groups", "balanced, uniform, learned, zipf, dirichlet, histogram")
    if plan.routing == "grouped" and model.top_k % model.expert_groups:
        raise bad("routing", "grouped", f"top_k ({model.top_k}) not divisible by expert_groups ({model.expert_groups})")
    if plan.routing == "histogram" and not plan.routing_histogram:
        raise bad("routing_histogram", None, "routing=histogram needs routing_histogram=PATH")
    if plan.pad_to_capacity and plan.capacity_factor <= 0:
        raise bad("pad_to_capacity", True, "padding to capacity needs a capacity", "capacity_factor > 0")
    return plan


def _check_schedule(plan: ParallelPlan, m: int, global_batch: int, per_step: int, bad) -> None:
    """Raise ConfigError when the schedule cannot run this plan's ``m`` micro-batches
    (``per_step`` sequences each)."""
    sched = plan.pipeline_schedule
    if sched == "zb-h1" and plan.vpp != 1:
        raise bad("vpp", plan.vpp, "zb-h1 runs one chunk per rank", "vpp=1 (zb-v for two chunks)")
    if sched in ("zb-v", "dualpipev") and plan.vpp != 2:
        raise bad("vpp", plan.vpp, f"{sched} places two chunks per rank in a V", "vpp=2")
    if sched == "dualpipe":
        if plan.vpp != 1:
            raise bad("vpp", plan.vpp, "dualpipe holds one stage of each direction per rank", "vpp=1 (dualpipev for a V)")
        if plan.pp % 2:
            raise bad("pp", plan.pp, "dualpipe needs an even number of pipeline ranks", "an even pp")
        if m % 2:
            raise bad("global_batch", global_batch, f"dualpipe splits the micro-batches ({m}) between its two directions",
                      f"global_batch a multiple of {2 * per_step}")
    if sched in ("dualpipe", "dualpipev") and m < 2 * plan.pp:
        raise bad("global_batch", global_batch, f"{sched} needs at least 2*pp = {2 * plan.pp} micro-batches, got {m}",
                  f"global_batch >= {2 * plan.pp * per_step}")
