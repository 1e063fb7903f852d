"""Model presets, parameter counts, Hugging Face config import and model-YAML errors."""
from __future__ import annotations

import json

import pytest
import yaml

from npusim.config.errors import ConfigError
from npusim.config.hf import from_hf_config
from npusim.config.model import ModelConfig, list_models, load_model

PRESETS = [
    "pangu-ultra-moe-718b", "pangu-pro-moe-72b", "deepseek-v3", "deepseek-v2", "deepseek-v2-lite",
    "qwen3-235b-a22b", "qwen3-30b-a3b", "qwen2-57b-a14b", "qwen2-72b", "mixtral-8x7b", "mixtral-8x22b",
    "llama3-405b", "llama3-70b", "llama3-8b", "llama2-7b", "llama2-13b", "llama2-70b", "gpt-oss-120b",
    "bloom-176b", "gpt3-175b",
]

SHAPE_FIELDS = [f for f in ModelConfig.model_fields if f not in ("name", "source")]


def rel(value: float, target: float) -> float:
    return abs(value - target) / target


# ---- presets ----------------------------------------------------------------------------------
def test_list_models_contains_all_presets():
    names = list_models()
    missing = [p for p in PRESETS if p not in names]
    assert not missing, missing


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads(name):
    m = load_model(name)
    assert isinstance(m, ModelConfig)
    assert m.name == name
    assert m.source
    # Every preset spells out every field (no silent defaults).
    from npusim.config.model import preset_dirs

    raw = yaml.safe_load((preset_dirs()[0] / f"{name}.yaml").read_text())
    assert set(raw) == set(ModelConfig.model_fields)


def test_pangu_ultra_counts():
    m = load_model("pangu-ultra-moe-718b")
    assert m.attention == "mla" and m.mla is not None and m.mla.q_lora_rank == 1536
    assert (m.n_dense_layers, m.n_moe_layers, m.mtp_layers) == (3, 58, 1)
    assert rel(m.total_params(), 719.1e9) < 0.005
    assert rel(m.activated_params() - m.vocab * m.hidden, 39.1e9) < 0.01


def test_pangu_pro_counts():
    m = load_model("pangu-pro-moe-72b")
    assert (m.experts, m.expert_groups, m.top_k, m.shared_experts) == (64, 8, 8, 4)
    assert m.d_head == 128 and m.n_moe_layers == 48
    assert rel(m.total_params(), 71.99e9) < 0.002
    assert rel(m.activated_params(), 16.50e9) < 0.005


def test_deepseek_v3_counts():
    m = load_model("deepseek-v3")
    assert (m.expert_groups, m.groups_per_token, m.dense_layers, m.mtp_layers) == (8, 4, 3, 1)
    assert rel(m.total_params(), 671e9) < 0.01
    assert rel(m.activated_params(), 37e9) < 0.03


@pytest.mark.parametrize("name,total,active", [
    ("deepseek-v2", 236e9, 21e9), ("deepseek-v2-lite", 15.7e9, None), ("qwen3-235b-a22b", 235e9, 22e9),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9), ("qwen2-57b-a14b", 57.4e9, 14.2e9), ("mixtral-8x7b", 46.7e9, 12.9e9),
    ("mixtral-8x22b", 141e9, 39e9), ("gpt-oss-120b", 116.8e9, None),
])
def test_moe_totals(name, total, active):
    m = load_model(name)
    assert rel(m.total_params(), total) < 0.02
    if active is not None:
        assert rel(m.activated_params(), active) < 0.02


@pytest.mark.parametrize("name,total", [
    ("llama3-405b", 405.8e9), ("llama3-70b", 70.6e9), ("llama3-8b", 8.03e9), ("llama2-7b", 6.74e9),
    ("llama2-13b", 13.0e9), ("llama2-70b", 69.0e9), ("qwen2-72b", 72.7e9), ("bloom-176b", 176.2e9),
    ("gpt3-175b", 175e9),
])
def test_dense_totals(name, total):
    m = load_model(name)
    assert not m.is_moe and m.n_dense_layers == m.layers
    assert rel(m.total_params(), total) < 0.01



def test_dense_total_params_method():
    m = load_model("llama3-8b")
    expected = m.layers * m.layer_params(False) + m.embedding_params()
    assert m.total_params() == expected == m.activated_params()


def test_shape_details():
    assert load_model("qwen3-235b-a22b").head_dim == 128 and not load_model("qwen3-235b-a22b").qkv_bias
    assert load_model("qwen2-72b").qkv_bias and load_model("qwen2-57b-a14b").qkv_bias
    assert load_model("qwen2-57b-a14b").shared_experts == 8
    assert load_model("deepseek-v2-lite").mla.q_lora_rank is None
    assert load_model("llama2-7b").n_kv_heads == 32 and load_model("llama2-70b").n_kv_heads == 8
    oss = load_model("gpt-oss-120b")
    assert (oss.sliding_window, oss.sliding_window_every, oss.d_head) == (128, 2, 64)
    for name in ("bloom-176b", "gpt3-175b"):
        m = load_model(name)
        assert (m.mlp, m.norm, m.linear_bias, m.tied_embeddings) == ("gelu", "layernorm", True, True)


def test_overrides():
    m = load_model("llama3-8b", layers=4)
    assert m.layers == 4 and m.hidden == 4096


# ---- Hugging Face config.json ----------------------------------------------------------------
SMALL_LLAMA = {
    "_name_or_path": "acme/tiny-llama", "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 8,
    "num_key_value_heads": 2, "vocab_size": 1000, "rms_norm_eps": 1e-5, "hidden_act": "silu",
    "tie_word_embeddings": False, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
    "max_position_embeddings": 2048, "attention_bias": False,
}

SMALL_DSV3 = {
    "_name_or_path": "acme/tiny-dsv3", "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "hidden_size": 512, "intermediate_size": 1024, "moe_intermediate_size": 128, "num_hidden_layers": 6,
    "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 2000, "n_routed_experts": 16,
    "num_experts_per_tok": 4, "n_shared_experts": 1, "first_k_dense_replace": 2, "moe_layer_freq": 1,
    "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc", "q_lora_rank": 96, "kv_lora_rank": 64,
    "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32, "num_nextn_predict_layers": 1,
    "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "hidden_act": "silu", "scoring_func": "sigmoid",
    "rope_scaling": {"type": "yarn", "factor": 40}, "quantization_config": {"fmt": "e4m3"},
}


def test_hf_small_llama_roundtrip(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMALL_LLAMA))
    m = load_model(str(path))
    assert m.name == "tiny-llama" and m.source == str(path)
    assert (m.layers, m.hidden, m.ffn_hidden, m.heads, m.n_kv_heads, m.vocab) == (4, 256, 688, 8, 2, 1000)
    assert (m.attention, m.mlp, m.norm, m.is_moe, m.tied_embeddings) == ("gqa", "swiglu", "rmsnorm", False, False)
    # Written back out as a model YAML, it loads to the same shape.
    back = tmp_path / "tiny.yaml"
    back.write_text(yaml.safe_dump(m.model_dump()))
    assert load_model(str(back)) == m


def test_hf_small_deepseek_v3_roundtrip(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMALL_DSV3))
    m = load_model(str(path))
    assert m.attention == "mla" and m.mla is not None
    assert (m.mla.q_lora_rank, m.mla.kv_lora_rank, m.mla.qk_nope_head_dim, m.mla.qk_rope_head_dim,
            m.mla.v_head_dim) == (96, 64, 32, 16, 32)
    assert (m.experts, m.top_k, m.shared_experts, m.expert_ffn_hidden) == (16, 4, 1, 128)
    assert (m.expert_groups, m.groups_per_token, m.dense_layers, m.ffn_hidden, m.mtp_layers) == (4, 2, 2, 1024, 1)
    assert (m.n_dense_layers, m.n_moe_layers) == (2, 4)
    back = tmp_path / "tiny.yaml"
    back.write_text(yaml.safe_dump(m.model_dump()))
    assert load_model(str(back)) == m


# Public HF config.json values (relevant keys), mapped and compared with the presets.
HF_CONFIGS = {
    "deepseek-v3": {
        "_name_or_path": "deepseek-ai/DeepSeek-V3", "model_type": "deepseek_v3", "hidden_size": 7168,
        "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
        "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
        "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "topk_method": "noaux_tc",
        "first_k_dense_replace": 3, "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "num_nextn_predict_layers": 1,
        "vocab_size": 129280, "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "attention_bias": False},
    "deepseek-v2-lite": {
        "model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944,
        "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16,
        "num_key_value_heads": 16, "n_shared_experts": 2, "n_routed_experts": 64, "num_experts_per_tok": 6,
        "n_group": 1, "topk_group": 1, "topk_method": "greedy", "first_k_dense_replace": 1, "moe_layer_freq": 1,
        "q_lora_rank": None, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "vocab_size": 102400, "tie_word_embeddings": False, "attention_bias": False},
    "qwen3-30b-a3b": {
        "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
        "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
        "num_experts": 128, "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "vocab_size": 151936, "tie_word_embeddings": False, "attention_bias": False,
        "use_sliding_window": False, "sliding_window": None},
    "qwen2-57b-a14b": {
        "model_type": "qwen2_moe", "hidden_size": 3584, "intermediate_size": 18944, "moe_intermediate_size": 2560,
        "shared_expert_intermediate_size": 20480, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "num_experts": 64, "num_experts_per_tok": 8, "decoder_sparse_step": 1,
        "vocab_size": 151936, "tie_word_embeddings": False, "use_sliding_window": False,
        "sliding_window": 131072},
    "mixtral-8x7b": {
        "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
        "vocab_size": 32000, "tie_word_embeddings": False, "sliding_window": None},
    "gpt-oss-120b": {
        "model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 36,
        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 128,
        "num_experts_per_tok": 4, "experts_per_token": 4, "vocab_size": 201088, "tie_word_embeddings": False,
        "attention_bias": True, "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * 18},
    "llama3-8b": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "tie_word_embeddings": False, "rms_norm_eps": 1e-5},
    "qwen2-72b": {
        "model_type": "qwen2", "hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
        "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 152064, "tie_word_embeddings": False,
        "use_sliding_window": False, "sliding_window": 131072},
    "bloom-176b": {
        "model_type": "bloom", "n_layer": 70, "hidden_size": 14336, "n_head": 112, "vocab_size": 250880,
        "layer_norm_epsilon": 1e-5},
}


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_hf_config_matches_preset(name):
    got = ModelConfig.model_validate(from_hf_config(HF_CONFIGS[name], f"{name}/config.json"))
    want = load_model(name)
    diff = {f: (getattr(got, f), getattr(want, f)) for f in SHAPE_FIELDS
            if getattr(got, f) != getattr(want, f) and not (f == "head_dim" and got.d_head == want.d_head)}
    assert not diff, diff


def test_hf_ignores_unknown_keys():
    out = from_hf_config({**SMALL_LLAMA, "some_future_key": {"x": 1}, "rope_scaling": None}, "c.json")
    assert set(out) <= set(ModelConfig.model_fields)
    assert out["source"] == "c.json"


def test_hf_name_falls_back_to_model_type():
    data = {k: v for k, v in SMALL_LLAMA.items() if k != "_name_or_path"}
    assert from_hf_config(data, "c.json")["name"] == "llama"


@pytest.mark.parametrize("drop,field", [
    ("num_hidden_layers", "num_hidden_layers"), ("hidden_size", "hidden_size"),
    ("vocab_size", "vocab_size"), ("intermediate_size", "intermediate_size"),
])
def test_hf_missing_field(tmp_path, drop, field):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in SMALL_LLAMA.items() if k != drop}))
    with pytest.raises(ConfigError) as exc:
        load_model(str(path))
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and field in msg and "missing" in msg
    assert exc.value.field == field


def test_hf_moe_missing_top_k():
    data = {k: v for k, v in SMALL_DSV3.items() if k != "num_experts_per_tok"}
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        from_hf_config(data, "x/config.json")


def test_hf_bad_value_type():
    with pytest.raises(ConfigError, match="must be an integer"):
        from_hf_config({**SMALL_LLAMA, "num_hidden_layers": "four"}, "x/config.json")


def test_hf_shared_width_not_multiple():
    data = dict(HF_CONFIGS["qwen2-57b-a14b"], shared_expert_intermediate_size=20000)
    with pytest.raises(ConfigError, match="shared_expert_intermediate_size"):
        from_hf_config(data, "x/config.json")


# ---- errors -----------------------------------------------------------------------------------
def test_unknown_preset_did_you_mean():
    with pytest.raises(ConfigError) as exc:
        load_model("llama3-8")
    msg = str(exc.value)
    assert "did you mean" in msg and "llama3-8b" in msg and "\n" not in msg


GOOD = {"layers": 2, "hidden": 64, "ffn_hidden": 128, "heads": 4, "vocab": 100}


@pytest.mark.parametrize("patch,drop,needle", [
    ({"colour": "red"}, None, "unknown key"),
    ({"heads": 6, "kv_heads": 4}, None, "kv_heads"),
    ({"experts": 4, "top_k": 5, "expert_ffn_hidden": 32}, None, "top_k"),
    ({}, "layers", "missing"),
])
def test_bad_model_yaml(tmp_path, patch, drop, needle):
    data = {**GOOD, **patch}
    if drop:
        data.pop(drop)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_model(str(path))
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert needle in msg
    if drop:
        assert exc.value.field == drop
