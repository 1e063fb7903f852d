"""Model config: dense and MoE decoder-only transformers (MHA / GQA / MLA, GELU / SwiGLU, MoGE).

Field names follow the short forms of Megatron-Core / the run-record schema. Parameter counts are
plan independent and live here; per-device shares live in the workload and memory layers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from npusim.config.policy import MAX_EXPERTS, MAX_HEADS, MAX_LAYERS, MAX_SEQ_LEN, MAX_WIDTH, StrictModel

Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]
"""A positive width (hidden, FFN, head, rank, vocabulary), at most MAX_WIDTH."""
Layers = Annotated[int, Field(gt=0, le=MAX_LAYERS)]
Heads = Annotated[int, Field(gt=0, le=MAX_HEADS)]


class MLAConfig(StrictModel):
    """Multi-head latent attention ranks (DeepSeek-V2/V3, Pangu Ultra MoE)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    q_lora_rank: Optional[Width] = None
    """Query down-projection rank; None = full-rank query projection (DeepSeek-V2-Lite)."""
    kv_lora_rank: Width
    qk_nope_head_dim: Width
    qk_rope_head_dim: Width
    v_head_dim: Width


class ModelConfig(StrictModel):
    """A decoder-only transformer, dense or MoE."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: str = "custom"
    layers: Layers
    """Transformer layers (MTP modules not counted)."""
    hidden: Width
    """Model width."""
    ffn_hidden: Optional[Width] = None
    """Intermediate width of dense FFN layers (None when every layer is MoE)."""
    heads: Heads
    """Query heads."""
    kv_heads: Optional[Heads] = None
    """Key/value heads (None = heads)."""
    head_dim: Optional[Width] = None
    """Per-head width (None = hidden / heads)."""
    vocab: Width
    """Vocabulary size of the embedding and logit layer."""
    attention: Literal["mha", "gqa", "mla"] = "mha"
    mla: Optional[MLAConfig] = None
    mlp: Literal["gelu", "swiglu"] = "swiglu"
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    qkv_bias: bool = False
    linear_bias: bool = False
    """Biases on the dense projections (GPT-style)."""
    experts: int = Field(0, ge=0, le=MAX_EXPERTS)
    """Routed experts per MoE layer; 0 = dense model."""
    top_k: int = Field(0, ge=0, le=MAX_EXPERTS)
    """Routed experts per token."""
    shared_experts: int = Field(0, ge=0, le=MAX_EXPERTS)
    """Shared-expert FFN width in units of expert_ffn_hidden."""
    expert_ffn_hidden: Optional[Width] = None
    expert_groups: int = Field(0, ge=0, le=MAX_EXPERTS)
    """Expert groups (MoGE: top_k/expert_groups experts per group; DeepSeek: group-limited routing)."""
    groups_per_token: int = Field(0, ge=0, le=MAX_EXPERTS)
    """DeepSeek group-limited routing: groups each token may use (0 = all / MoGE)."""
    moe_layer_freq: Layers = 1
    """Every n-th layer after the dense ones is MoE (Mixtral/DeepSeek: 1)."""
    dense_layers: int = Field(0, ge=0, le=MAX_LAYERS)
    """Leading dense layers of an MoE model."""
    mtp_layers: int = Field(0, ge=0, le=MAX_LAYERS)
    """Multi-token-prediction modules (each one extra transformer layer plus a 2h->h projection)."""
    tied_embeddings: bool = False
    sliding_window: Optional[Annotated[int, Field(gt=0, le=MAX_SEQ_LEN)]] = None
    """Window of local-attention layers (GPT-OSS alternates full and windowed layers)."""
    sliding_window_every: int = Field(0, ge=0, le=MAX_LAYERS)
    """Every n-th layer uses the sliding window (0 = none)."""
    source: str = ""
    """Where the shape comes from (HF config, paper table)."""

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        kv = self.kv_heads or self.heads
        if self.heads % kv:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({kv})")
        if self.attention == "mla" and self.mla is None:
            raise ValueError("attention 'mla' needs an 'mla' section with the latent ranks")
        if self.experts:
            if not (1 <= self.top_k <= self.experts):
                raise ValueError(f"top_k ({self.top_k}) must be in 1..experts ({self.experts})")
            if self.expert_ffn_hidden is None:
                raise ValueError("an MoE model needs expert_ffn_hidden")
            if self.expert_groups and (self.experts % self.expert_groups):
                raise ValueError(f"experts ({self.experts}) must divide into expert_groups ({self.expert_groups})")
            if self.dense_layers > self.layers:
                raise ValueError(f"dense_layers ({self.dense_layers}) exceeds layers ({self.layers})")
        elif self.ffn_hidden is None:
            raise ValueError("a dense model needs ffn_hidden")
        if (self.dense_layers or not self.experts) and self.ffn_hidden is None:
            raise ValueError("dense layers need ffn_hidden")
        if self.head_dim is None and self.attention != "mla" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) is not divisible by heads ({self.heads}); set head_dim")
        return self

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        """True when the model has routed experts."""
        return self.experts > 0

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads."""
        return self.kv_heads or self.heads

    @property
    def d_head(self) -> int:
        """Per-head width of Q/K/V (non-MLA)."""
        return self.head_dim or self.hidden // self.heads

    @property
    def n_moe_layers(self) -> int:
        """Number of MoE layers among the main layers."""
        if not self.is_moe:
            return 0
        return len([i for i in range(self.dense_layers, self.layers) if (i - self.dense_layers) % self.moe_layer_freq == 0])

    @property
    def n_dense_layers(self) -> int:
        """Number of dense-FFN layers among the main layers."""
        return self.layers - self.n_moe_layers

    @property
    def mlp_matrices(self) -> int:
        """Weight matrices per FFN: 2 for GELU, 3 for SwiGLU."""
        return 3 if self.mlp == "swiglu" else 2

    # ---- parameter counts (plan independent) --------------------------------------------------
    def attention_params(self) -> int:
        """Parameters of one attention block (projections, biases, latent norms)."""
        h = self.hidden
        if self.attention == "mla":
            m = self.mla
            assert m is not None
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * self.heads * qk
            else:
                q = h * self.heads * qk
            kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
            kv += m.kv_lora_rank * self.heads * (m.qk_nope_head_dim + m.v_head_dim)
            return q + kv + self.heads * m.v_head_dim * h
        d = self.d_head
        qkv = h * (self.heads + 2 * self.n_kv_heads) * d
        out = self.heads * d * h
        bias = (self.heads + 2 * self.n_kv_heads) * d if (self.qkv_bias or self.linear_bias) else 0
        bias += h if self.linear_bias else 0
        return qkv + out + bias

    def ffn_params(self, width: int) -> int:
        """Parameters of one FFN of intermediate ``width``."""
        p = self.mlp_matrices * self.hidden * width
        if self.linear_bias:
            p += width * (self.mlp_matrices - 1) + self.hidden
        return p

    def norm_params(self) -> int:
        """Parameters of the two norms of one layer."""
        return (4 if self.norm == "layernorm" else 2) * self.hidden

    def moe_params(self, activated: bool = False) -> int:
        """Parameters of one MoE FFN block (routed + shared + router); ``activated`` counts top-k only."""
        n = self.top_k if activated else self.experts
        assert self.expert_ffn_hidden is not None
        p = n * self.ffn_params(self.expert_ffn_hidden)
        if self.shared_experts:
            p += self.ffn_params(self.shared_experts * self.expert_ffn_hidden)
        return p + self.hidden * self.experts

    def layer_params(self, moe: bool, activated: bool = False) -> int:
        """Parameters of one transformer layer."""
        ffn = self.moe_params(activated) if moe else self.ffn_params(self.ffn_hidden or 0)
        return self.attention_params() + ffn + self.norm_params()

    def embedding_params(self) -> int:
        """Input embedding plus output head (one matrix if tied) plus final norm."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.hidden

    def mtp_params(self, activated: bool = False) -> int:
        """Parameters of the MTP modules (one layer each plus the 2h->h projection and norms)."""
        layer = self.layer_params(self.is_moe, activated)
        return self.mtp_layers * (layer + 2 * self.hidden * self.hidden + 3 * self.hidden)

    def total_params(self) -> int:
        """All parameters of the main model (MTP modules excluded, as the papers count)."""
        moe = self.n_moe_layers * self.layer_params(True) if self.n_moe_layers else 0
        return self.n_dense_layers * self.layer_params(False) + moe + self.embedding_params()

    def activated_params(self) -> int:
        """Parameters touched per token: top-k routed plus shared experts, both embeddings."""
        moe = self.n_moe_layers * self.layer_params(True, True) if self.n_moe_layers else 0
        return self.n_dense_layers * self.layer_params(False) + moe + self.embedding_params()

    def activated_matmul_params(self) -> int:
        """Activated parameters that take part in matmuls (input embedding excluded): the 6N basis."""
        return self.activated_params() - self.vocab * self.hidden * (0 if self.tied_embeddings else 1)

    def summary(self) -> dict:
        """Parameter counts in billions for display."""
        return {"name": self.name, "total_params_B": round(self.total_params() / 1e9, 2),
                "activated_params_B": round(self.activated_params() / 1e9, 2),
                "activated_matmul_params_B": round(self.activated_matmul_params() / 1e9, 2),
                "mtp_params_B": round(self.mtp_params() / 1e9, 2),
                "layers": self.layers, "hidden": self.hidden, "attention": self.attention,
                "experts": self.experts, "top_k": self.top_k}


def preset_dirs() -> list[Path]:
    """Directories of model preset YAML files."""
    here = Path(__file__).resolve().parent.parent / "data" / "models"
    return [here] if here.is_dir() else []


def list_models() -> list[str]:
    """Names of every model preset."""
    return sorted(p.stem for d in preset_dirs() for p in d.glob("*.yaml"))


def load_model(name_or_path: str, **overrides) -> ModelConfig:
    """Load a preset by name, a model YAML, or a Hugging Face ``config.json`` by path."""
    from npusim.config.loader import find_preset, read_mapping, validate

    path = find_preset(name_or_path, preset_dirs(), "model")
    data = read_mapping(path)
    if path.suffix == ".json" or "model_type" in data or "architectures" in data:
        from npusim.config.hf import from_hf_config

        data = from_hf_config(data, str(path))
    data = {**data, **overrides}
    return validate(ModelConfig, data, str(path))
