"""Map a Hugging Face ``config.json`` to the fields of :class:`npusim.config.model.ModelConfig`.

Known ``model_type`` values: llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe,
deepseek_v2, deepseek_v3, gpt_oss, bloom, gpt2 (and pangu_ultra_moe key aliases). Other types go
through generic fallbacks on the common key names. Unknown HF keys are ignored; a missing required
shape raises a one-line :class:`~npusim.config.errors.ConfigError`.

Not representable, so not modelled: attention sinks, qk-norm, output-projection / expert / router
biases, Qwen2-MoE shared-expert gates, learned position embeddings, extra (sandwich) norms.
"""
from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any, Optional

from npusim.config.errors import ConfigError

# Key aliases, first hit wins.
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_HIDDEN = ("hidden_size", "n_embd", "n_embed", "d_model", "dim")
_HEADS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num")
_VOCAB = ("vocab_size", "padded_vocab_size")
_FFN = ("intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim")
_EXPERTS = ("n_routed_experts", "num_local_experts", "num_experts", "num_routed_experts", "moe_num_experts")
_TOP_K = ("num_experts_per_tok", "experts_per_token", "moe_topk", "top_k")
_MOE_FFN = ("moe_intermediate_size", "expert_intermediate_size")
_SHARED = ("n_shared_experts", "num_shared_experts")
_DENSE = ("first_k_dense_replace", "num_dense_layers")
_MTP = ("num_nextn_predict_layers", "num_mtp_layers")
_Q_LORA = ("q_lora_rank", "attention_q_lora_dim")
_KV_LORA = ("kv_lora_rank", "attention_kv_lora_dim")
_QK_NOPE = ("qk_nope_head_dim", "attention_qk_dim")
_QK_ROPE = ("qk_rope_head_dim", "attention_qk_rope_dim")
_V_HEAD = ("v_head_dim", "attention_v_dim")

#: Families whose FFN is a GELU MLP with biases and LayerNorm (GPT-style).
_GPT_STYLE = {"gpt2", "bloom", "gpt_neox", "gptj", "gpt_bigcode", "opt", "falcon", "phi", "starcoder2"}
#: Families that add biases to Q/K/V only.
_QKV_BIAS = {"qwen2", "qwen2_moe"}
#: Families with a gated (3-matrix) FFN.
_GATED = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "deepseek_v2",
          "deepseek_v3", "gpt_oss", "pangu_ultra_moe", "gemma", "gemma2", "gemma3_text"}
#: ``tie_word_embeddings`` default of the family's HF config class when the key is absent.
_TIED_DEFAULT = {"llama": False, "mistral": False, "mixtral": False, "qwen2": False, "qwen2_moe": False,
                 "qwen3": False, "qwen3_moe": False, "deepseek_v2": False, "deepseek_v3": False,
                 "gpt_oss": False, "pangu_ultra_moe": False, "bloom": True, "gpt2": True}
#: Families that route every token through a DeepSeek-style MLA block.
_MLA_TYPES = {"deepseek_v2", "deepseek_v3", "pangu_ultra_moe", "kimi_k2"}


def _first(data: dict, keys: tuple[str, ...]) -> tuple[Optional[str], Any]:
    """Return (key, value) of the first alias present with a non-null value."""
    for k in keys:
        if data.get(k) is not None:
            return k, data[k]
    return None, None


def _int(source: str, data: dict, keys: tuple[str, ...], required: bool = False,
         positive: bool = True) -> Optional[int]:
    """Read an integer under one of ``keys``; raise ConfigError when required and absent or malformed."""
    key, value = _first(data, keys)
    if key is None:
        if required:
            raise ConfigError(source, keys[0], None, "required field is missing from the Hugging Face config",
                              " | ".join(keys))
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and (not math.isfinite(value) or not value.is_integer())):
        raise ConfigError(source, key, value, "must be an integer", "a finite whole number")
    if (value <= 0 if positive else value < 0):
        raise ConfigError(source, key, value, "must be positive" if positive else "must not be negative")
    return int(value)


def _name(data: dict, model_type: str) -> str:
    raw = data.get("_name_or_path")
    if isinstance(raw, str) and raw.strip().strip("/"):
        return PurePath(raw.strip().rstrip("/")).name or raw
    return model_type or "hf-model"


def _mlp(data: dict, model_type: str) -> str:
    if model_type in _GPT_STYLE:
        return "gelu"
    act = str(data.get("hidden_act") or data.get("activation_function") or "silu").lower()
    if any(a in act for a in ("silu", "swish", "swiglu")):
        return "swiglu"
    # Llama-family / gated configs keep 3 matrices whatever their activation (e.g. GeGLU).
    if model_type in _GATED:
        return "swiglu"
    return "gelu" if ("gelu" in act or "relu" in act) else "swiglu"


def _norm(data: dict, model_type: str) -> str:
    if model_type in _GPT_STYLE:
        return "layernorm"
    if "rms_norm_eps" in data:
        return "rmsnorm"
    if "layer_norm_epsilon" in data or "layer_norm_eps" in data:
        return "layernorm"
    return "rmsnorm"


def _sliding(source: str, data: dict, model_type: str) -> tuple[Optional[int], int]:
    """Return (sliding_window, sliding_window_every)."""
    window = data.get("sliding_window")
    layer_types = data.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        idx = [i for i, t in enumerate(layer_types) if "sliding" in str(t)]
        if not idx or not window:
            return None, 0
        window = _required(_int(source, {"sliding_window": window}, ("sliding_window",), required=True))
        gaps = {b - a for a, b in zip(idx, idx[1:])}
        if len(gaps) == 1:
            every = gaps.pop()
        elif not gaps:
            every = len(layer_types)
        else:  # irregular pattern (e.g. 5 sliding : 1 full): nearest "every n-th" approximation
            every = max(1, round(len(layer_types) / len(idx)))
        return window, every
    if not window or data.get("use_sliding_window") is False:
        return None, 0
    if model_type in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe") and not data.get("use_sliding_window"):
        return None, 0
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        raise ConfigError(source, "sliding_window", window, "must be a positive integer")
    return window, 1


def _required(value: Optional[int]) -> int:
    """A value ``_int(..., required=True)`` returned (it raises instead of returning None)."""
    if value is None:  # pragma: no cover - _int raises for a missing required key
        raise ValueError("missing required integer")
    return value


def from_hf_config(data: dict, source: str) -> dict:
    """Translate a Hugging Face ``config.json`` mapping into ModelConfig fields.

    ``source`` (the file path) names the config in errors and becomes the ``source`` field.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, "<root>", type(data).__name__, "top level must be a mapping", "a config.json object")
    if not any(k in data for k in _LAYERS) and isinstance(data.get("text_config"), dict):
        data = {**data["text_config"], "_name_or_path": data.get("_name_or_path"),
                "model_type": data["text_config"].get("model_type", data.get("model_type"))}
    model_type = str(data.get("model_type") or "").lower()
    layers = _required(_int(source, data, _LAYERS, required=True))
    hidden = _required(_int(source, data, _HIDDEN, required=True))
    heads = _required(_int(source, data, _HEADS, required=True))
    vocab = _required(_int(source, data, _VOCAB, required=True))
    out: dict[str, Any] = {"name": _name(data, model_type), "layers": layers, "hidden": hidden,
                           "heads": heads, "vocab": vocab}
    out.update(_attention_fields(source, data, model_type, heads))
    out.update(_ffn_fields(source, data, model_type, hidden))
    out["mtp_layers"] = _int(source, data, _MTP, positive=False) or 0
    tied = data.get("tie_word_embeddings")
    out["tied_embeddings"] = bool(tied) if tied is not None else _TIED_DEFAULT.get(model_type, True)
    window, every = _sliding(source, data, model_type)
    if window:
        out.update(sliding_window=window, sliding_window_every=every)
    out["source"] = source
    return out


def _attention_fields(source: str, data: dict, model_type: str, heads: int) -> dict:
    """Attention type, heads, MLA ranks, biases, norm and MLP kind."""
    out: dict[str, Any] = {}
    kv_heads = _int(source, data, _KV_HEADS) or heads
    if data.get("multi_query") is True and not _first(data, _KV_HEADS)[0]:
        kv_heads = 1
    head_dim = _int(source, data, ("head_dim", "kv_channels"))
    kv_lora = _int(source, data, _KV_LORA)
    if kv_lora is not None or model_type in _MLA_TYPES:
        mla = {"q_lora_rank": _int(source, data, _Q_LORA),
               "kv_lora_rank": _int(source, data, _KV_LORA, required=True),
               "qk_nope_head_dim": _int(source, data, _QK_NOPE, required=True),
               "qk_rope_head_dim": _int(source, data, _QK_ROPE, required=True),
               "v_head_dim": _int(source, data, _V_HEAD, required=True)}
        out.update(attention="mla", mla=mla, kv_heads=heads)
    else:
        out.update(attention="gqa" if kv_heads < heads else "mha", kv_heads=kv_heads)
        if head_dim is not None:
            out["head_dim"] = head_dim
    out["mlp"] = _mlp(data, model_type)
    out["norm"] = _norm(data, model_type)
    if model_type in _GPT_STYLE and model_type in ("gpt2", "bloom", "gpt_neox", "gptj", "opt", "gpt_bigcode"):
        out["linear_bias"] = True
    elif data.get("bias") is True or data.get("use_bias") is True:
        out["linear_bias"] = True
    qkv_bias = data.get("attention_bias", data.get("qkv_bias"))
    out["qkv_bias"] = bool(qkv_bias) if qkv_bias is not None else model_type in _QKV_BIAS
    return out


def _ffn_fields(source: str, data: dict, model_type: str, hidden: int) -> dict:
    """Dense FFN width, or the MoE fields (experts, routing groups, shared experts, dense layers)."""
    ffn = _int(source, data, _FFN)
    experts = _int(source, data, _EXPERTS, positive=False) or 0
    if experts <= 1:  # a single "expert" is a dense FFN
        if ffn is None:
            if model_type not in _GPT_STYLE:
                raise ConfigError(source, "intermediate_size", None,
                                  "required field is missing from the Hugging Face config", " | ".join(_FFN))
            ffn = 4 * hidden
        return {"ffn_hidden": ffn}
    top_k = _int(source, data, _TOP_K, required=True)
    expert_ffn = _int(source, data, _MOE_FFN)
    if expert_ffn is None:  # Mixtral / GPT-OSS: intermediate_size is the expert width
        if ffn is None:
            raise ConfigError(source, "moe_intermediate_size", None,
                              "required field is missing from the Hugging Face config",
                              "moe_intermediate_size | intermediate_size")
        expert_ffn, ffn = ffn, None
    dense, freq = _moe_layout(source, data)
    groups = _int(source, data, ("n_group", "num_expert_groups"), positive=False) or 0
    topk_group = _int(source, data, ("topk_group",), positive=False) or 0
    if groups <= 1 or data.get("topk_method") == "greedy":
        groups, topk_group = 0, 0
    out = {"experts": experts, "top_k": top_k, "expert_ffn_hidden": expert_ffn,
           "shared_experts": _shared_experts(source, data, expert_ffn), "dense_layers": dense,
           "moe_layer_freq": freq, "expert_groups": groups,
           "groups_per_token": topk_group if topk_group and topk_group < groups else 0}
    if dense or freq > 1:
        if ffn is None:
            raise ConfigError(source, "intermediate_size", None,
                              "required for the dense layers of this MoE model", "a positive integer")
        out["ffn_hidden"] = ffn
    return out


def _shared_experts(source: str, data: dict, expert_ffn: int) -> int:
    """Shared-expert width in units of the routed expert width."""
    shared = _int(source, data, _SHARED, positive=False) or 0
    shared_width = _int(source, data, ("shared_expert_intermediate_size",), positive=False)
    if shared_width:
        if shared_width % expert_ffn:
            raise ConfigError(source, "shared_expert_intermediate_size", shared_width,
                              f"not a multiple of the expert width {expert_ffn}",
                              f"k x {expert_ffn} (shared_experts counts expert widths)")
        shared = shared_width // expert_ffn
    return shared


def _moe_layout(source: str, data: dict) -> tuple[int, int]:
    """(leading dense layers, MoE layer frequency)."""
    dense = _int(source, data, _DENSE, positive=False) or 0
    mlp_only = data.get("mlp_only_layers") or []
    if mlp_only:
        if (not isinstance(mlp_only, list) or not all(type(i) is int for i in mlp_only)
                or sorted(mlp_only) != list(range(len(mlp_only)))):
            raise ConfigError(source, "mlp_only_layers", mlp_only,
                              "only a leading run of dense layers can be modelled", "[0, 1, ..., k-1]")
        dense = max(dense, len(mlp_only))
    return dense, _int(source, data, ("moe_layer_freq", "decoder_sparse_step")) or 1
