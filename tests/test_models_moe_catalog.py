"""MoE models users train (issue 14): catalog sizes against the model cards, and the Hugging
Face config.json import of each newly supported model_type against the catalog entry."""

import json
from pathlib import Path

import pytest

from sysplan.core.errors import InputError
from sysplan.models import from_hf_config, list_models, param_counts, resolve_model

B = 1e9


def spec(name: str):
    return resolve_model(name)[0]


# --- sizes against the model cards (within 1.5 %) ---

# (alias, card total, card active, what the card's active figure counts, source of the figures).
# "active": every parameter a token touches (ParamCounts.active); "no-embedding": the same
# without the input embedding (a lookup), DeepSeek's convention (DeepSeek-V3 README_WEIGHTS.md:
# 36.6B active without the embedding is the report's 37B).
CARDS = [
    (
        "deepseek-v2",
        236 * B,
        21 * B,
        "no-embedding",
        "DeepSeek-V2 report (arXiv 2405.04434) abstract: 236B total, 21B activated",
    ),
    (
        "deepseek-v2-lite",
        15.7 * B,
        2.4 * B,
        "no-embedding",
        "huggingface.co/deepseek-ai/DeepSeek-V2-Lite model card: 15.7B total, 2.4B activated",
    ),
    (
        "kimi-k2",
        1.04e12,
        32 * B,
        "no-embedding",
        (
            "Kimi K2 report (arXiv 2507.20534): 1.04T total; github.com/MoonshotAI/Kimi-K2 README: "
            "32B activated (the README rounds the total to 1T)"
        ),
    ),
    (
        "dbrx",
        132 * B,
        36 * B,
        "active",
        "github.com/databricks/dbrx MODEL_CARD_dbrx_base.md: 132B total, 36B active",
    ),
    (
        "grok-1",
        314 * B,
        None,
        "active",
        "github.com/xai-org/grok-1 README: 314B parameters (no active count stated)",
    ),
    (
        "llama4-scout",
        109 * B,
        17 * B,
        "active",
        (
            "huggingface.co/meta-llama/Llama-4-Scout-17B-16E card: 17B activated, 109B total; the "
            "total includes the vision encoder (about 0.9B), the catalog counts the text model"
        ),
    ),
    (
        "llama4-maverick",
        400 * B,
        17 * B,
        "active",
        (
            "huggingface.co/meta-llama/Llama-4-Maverick-17B-128E card: 17B activated, 400B total "
            "(vision encoder included, text model counted)"
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "total", "active", "kind", "source"), CARDS, ids=[card[0] for card in CARDS]
)
def test_sizes_match_the_model_card(name, total, active, kind, source) -> None:
    counts = param_counts(spec(name))
    assert counts.total == pytest.approx(total, rel=0.015), source
    if active is None:
        return
    counted = counts.active - (counts.embedding if kind == "no-embedding" else 0)
    # DeepSeek-V2-Lite: 2.45B without the input embedding, which the card prints as 2.4B
    # (2.1 % off); every other model is within the 1.5 % asked of the catalog
    tolerance = 0.025 if name == "deepseek-v2-lite" else 0.015
    assert counted == pytest.approx(active, rel=tolerance), source


def test_kimi_k2_matches_the_checkpoint_tensor_by_tensor() -> None:
    """Kimi-K2-Instruct safetensors hold 1,026,470,731,056 numbers: the model, plus one float32
    weight_scale_inv per 128x128 block of each FP8 linear and the rotary inv_freq buffers."""
    counts = param_counts(spec("kimi-k2"))
    layers, h = 61, 7168

    def blocks(rows: int, cols: int) -> int:  # FP8 block scales, 128x128 (weight_block_size)
        return -(-rows // 128) * -(-cols // 128)

    attention = (
        blocks(576, h)
        + blocks(64 * 256, 512)
        + blocks(h, 64 * 128)
        + blocks(1536, h)
        + blocks(64 * 192, 1536)
    )
    experts = (384 + 1) * 3 * blocks(2048, h)  # routed + shared, gate/up/down
    scales = layers * attention + 3 * blocks(18432, h) + (layers - 1) * experts
    inv_freq = layers * 56  # rotary_emb.inv_freq [56] per layer in the checkpoint
    assert counts.total + scales + inv_freq == 1_026_470_731_056
    assert counts.mtp == 0  # num_nextn_predict_layers 0


def test_deepseek_v2_lite_has_a_full_rank_query() -> None:
    lite = spec("deepseek-v2-lite")
    assert lite.mla is not None and lite.mla.q_lora_rank is None
    # q_proj h·a·(nope + rope) = 2048·16·192, no q_a/q_b projections (modeling_deepseek.py)
    full = lite.model_copy(update={"mla": lite.mla.model_copy(update={"q_lora_rank": 1536})})
    assert param_counts(full).total != param_counts(lite).total


def test_llama4_maverick_alternates_dense_and_moe_layers() -> None:
    model = spec("llama4-maverick")
    # moe_layers = range(interleave_moe_layer_step - 1, 48, 2) (HF configuration_llama4.py)
    assert [i for i in range(48) if model.is_moe_layer(i)] == list(range(1, 48, 2))
    assert spec("llama4-scout").num_moe_layers == 48


def test_new_models_are_listed() -> None:
    names = {listing.name for listing in list_models()}
    expected = {
        "DeepSeek-V2",
        "DeepSeek-V2-Lite",
        "Kimi K2",
        "DBRX",
        "Grok-1",
        "Llama 4 Scout",
        "Llama 4 Maverick",
    }
    assert expected <= names


# --- Hugging Face config.json import, one per newly supported model_type ---

# Field names and values of the published config.json files (ids name the repository).
DEEPSEEK_V2 = {  # huggingface.co/deepseek-ai/DeepSeek-V2 config.json
    "architectures": ["DeepseekV2ForCausalLM"],
    "model_type": "deepseek_v2",
    "attention_bias": False,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 5120,
    "intermediate_size": 12288,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "moe_intermediate_size": 1536,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 160,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 128,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 60,
    "num_key_value_heads": 128,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "routed_scaling_factor": 16.0,
    "scoring_func": "softmax",
    "tie_word_embeddings": False,
    "topk_group": 3,
    "topk_method": "group_limited_greedy",
    "v_head_dim": 128,
    "vocab_size": 102400,
}
DEEPSEEK_V2_LITE = {  # huggingface.co/deepseek-ai/DeepSeek-V2-Lite config.json
    **DEEPSEEK_V2,
    "hidden_size": 2048,
    "intermediate_size": 10944,
    "moe_intermediate_size": 1408,
    "n_group": 1,
    "n_routed_experts": 64,
    "num_attention_heads": 16,
    "num_hidden_layers": 27,
    "num_key_value_heads": 16,
    "q_lora_rank": None,
    "routed_scaling_factor": 1.0,
    "topk_group": 1,
    "topk_method": "greedy",
}
KIMI_K2 = {  # huggingface.co/moonshotai/Kimi-K2-Base config.json (Kimi-K2-Instruct: the same)
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "kimi_k2",
    "attention_bias": False,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 131072,
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 384,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 64,
    "num_nextn_predict_layers": 0,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    "routed_scaling_factor": 2.827,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "v_head_dim": 128,
    "vocab_size": 163840,
}
DBRX = {  # huggingface.co/databricks/dbrx-base config.json
    "architectures": ["DbrxForCausalLM"],
    "model_type": "dbrx",
    "attn_config": {"clip_qkv": 8, "kv_n_heads": 8, "model_type": "", "rope_theta": 500000},
    "d_model": 6144,
    "emb_pdrop": 0.0,
    "ffn_config": {
        "ffn_hidden_size": 10752,
        "model_type": "",
        "moe_jitter_eps": 0,
        "moe_loss_weight": 0.05,
        "moe_num_experts": 16,
        "moe_top_k": 4,
    },
    "max_seq_len": 32768,
    "n_heads": 48,
    "n_layers": 40,
    "resid_pdrop": 0.0,
    "router_aux_loss_coef": 0.05,
    "tie_word_embeddings": False,
    "vocab_size": 100352,
}
_LLAMA4_TEXT = {  # huggingface.co/meta-llama/Llama-4-Scout-17B-16E config.json text_config
    "attention_bias": False,
    "attention_chunk_size": 8192,
    "attn_scale": 0.1,
    "attn_temperature_tuning": 4,
    "floor_scale": 8192,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 5120,
    "interleave_moe_layer_step": 1,
    "intermediate_size": 8192,
    "intermediate_size_mlp": 16384,
    "max_position_embeddings": 262144,
    "model_type": "llama4_text",
    "moe_layers": list(range(48)),
    "no_rope_layers": [int((i + 1) % 4 != 0) for i in range(48)],
    "num_attention_heads": 40,
    "num_experts_per_tok": 1,
    "num_hidden_layers": 48,
    "num_key_value_heads": 8,
    "num_local_experts": 16,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "use_qk_norm": True,
    "vocab_size": 202048,
}
_LLAMA4_VISION = {  # the vision encoder, not counted
    "hidden_size": 1408,
    "intermediate_size": 5632,
    "model_type": "llama4_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 34,
    "patch_size": 14,
}
LLAMA4_SCOUT = {
    "architectures": ["Llama4ForConditionalGeneration"],
    "model_type": "llama4",
    "text_config": _LLAMA4_TEXT,
    "tie_word_embeddings": False,
    "vision_config": _LLAMA4_VISION,
}
LLAMA4_MAVERICK = {  # huggingface.co/meta-llama/Llama-4-Maverick-17B-128E config.json
    **LLAMA4_SCOUT,
    "text_config": {
        **{k: v for k, v in _LLAMA4_TEXT.items() if k != "moe_layers"},  # default from step
        "interleave_moe_layer_step": 2,
        "max_position_embeddings": 1048576,
        "num_local_experts": 128,
        "use_qk_norm": False,
    },
}
LLAMA4_SCOUT_TEXT_ONLY = {  # a Llama4ForCausalLM checkpoint: text_config's fields at the top
    **_LLAMA4_TEXT,
    "architectures": ["Llama4ForCausalLM"],
    "tie_word_embeddings": False,
}
GPT_OSS_120B = {  # huggingface.co/openai/gpt-oss-120b config.json
    "architectures": ["GptOssForCausalLM"],
    "model_type": "gpt_oss",
    "attention_bias": True,
    "attention_dropout": 0.0,
    "experts_per_token": 4,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2880,
    "initial_context_length": 4096,
    "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 18,
    "max_position_embeddings": 131072,
    "num_attention_heads": 64,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 36,
    "num_key_value_heads": 8,
    "num_local_experts": 128,
    "quantization_config": {"quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "factor": 32.0,
        "original_max_position_embeddings": 4096,
        "rope_type": "yarn",
        "truncate": False,
    },
    "rope_theta": 150000,
    "router_aux_loss_coef": 0.9,
    "sliding_window": 128,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "vocab_size": 201088,
}
GPT_OSS_20B = {  # huggingface.co/openai/gpt-oss-20b config.json
    **GPT_OSS_120B,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "num_hidden_layers": 24,
    "num_local_experts": 32,
}

IMPORTS = [
    ("deepseek-ai/DeepSeek-V2", DEEPSEEK_V2, "DeepSeek-V2"),
    ("deepseek-ai/DeepSeek-V2-Lite", DEEPSEEK_V2_LITE, "DeepSeek-V2-Lite"),
    ("moonshotai/Kimi-K2-Base", KIMI_K2, "Kimi K2"),
    ("databricks/dbrx-base", DBRX, "DBRX"),
    ("meta-llama/Llama-4-Scout-17B-16E", LLAMA4_SCOUT, "Llama 4 Scout"),
    ("meta-llama/Llama-4-Maverick-17B-128E", LLAMA4_MAVERICK, "Llama 4 Maverick"),
    ("Llama4ForCausalLM (Scout text model)", LLAMA4_SCOUT_TEXT_ONLY, "Llama 4 Scout"),
    ("openai/gpt-oss-120b", GPT_OSS_120B, "GPT-OSS 120B"),
    ("openai/gpt-oss-20b", GPT_OSS_20B, "GPT-OSS 20B"),
]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("repo", "config", "name"), IMPORTS, ids=[item[0] for item in IMPORTS])
def test_hf_import_matches_catalog(tmp_path: Path, repo: str, config: dict, name: str) -> None:
    imported = from_hf_config(_write(tmp_path, config))
    catalog = spec(name)
    assert param_counts(imported) == param_counts(catalog)
    skip = {"name", "family", "source"}
    assert imported.model_dump(exclude=skip) == catalog.model_dump(exclude=skip)


def test_model_type_from_architectures(tmp_path: Path) -> None:
    """A config.json without model_type is read through its architectures entry."""
    data = {k: v for k, v in DBRX.items() if k != "model_type"}
    assert param_counts(from_hf_config(_write(tmp_path, data))) == param_counts(spec("dbrx"))


def test_nested_field_errors_name_the_path(tmp_path: Path) -> None:
    dbrx = {**DBRX, "attn_config": {"clip_qkv": 8}}
    with pytest.raises(InputError, match=r"missing field 'attn_config.kv_n_heads'.*'dbrx'"):
        from_hf_config(_write(tmp_path, dbrx))
    scout = {**LLAMA4_SCOUT, "text_config": {**_LLAMA4_TEXT, "num_local_experts": 0}}
    with pytest.raises(InputError, match=r"'text_config.num_local_experts' must be a positive"):
        from_hf_config(_write(tmp_path, scout))
    with pytest.raises(InputError, match=r"missing field 'text_config'"):
        from_hf_config(_write(tmp_path, {"model_type": "llama4"}))


def test_gpt_oss_clamp_must_be_a_positive_number(tmp_path: Path) -> None:
    """swiglu_limit is read as the experts' activation clamp; a bad one names the field."""
    assert from_hf_config(_write(tmp_path, GPT_OSS_20B)).moe.activation_clamp == 7.0
    with pytest.raises(InputError, match="'swiglu_limit' must be a positive number"):
        from_hf_config(_write(tmp_path, {**GPT_OSS_20B, "swiglu_limit": "7"}))
