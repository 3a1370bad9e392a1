"""Import a Hugging Face ``config.json`` as a ``ModelSpec``.

Field names follow the ``configuration_*.py`` and ``modeling_*.py`` files of Hugging Face
transformers for each ``model_type``. A sliding window is read where the config's layers use
it (``layer_types``; Qwen2's ``use_sliding_window`` from ``max_window_layers`` on; else every
layer, as Mistral). What the spec does not model is dropped: rotary settings, Llama 4's
chunked attention, GPT-NeoX's parallel residual (it changes neither parameters nor FLOPs), and
the o_proj bias of a Llama-style ``attention_bias: true`` without ``mlp_bias`` (h per layer).
Multimodal configs (``llama4``) are read from their ``text_config``: the text model only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sysplan.core.errors import InputError
from sysplan.models.spec import ModelSpec

_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "MixtralForCausalLM": "mixtral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
    "GPT2LMHeadModel": "gpt2",
    "GPTNeoXForCausalLM": "gpt_neox",
    "NemotronForCausalLM": "nemotron",
    "DbrxForCausalLM": "dbrx",
    "Llama4ForConditionalGeneration": "llama4",
    "Llama4ForCausalLM": "llama4_text",
    "GptOssForCausalLM": "gpt_oss",
}
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "relu2": "relu2"}


class _Config:
    """A parsed config.json that names the file and the field in every error."""

    def __init__(self, path: Path, data: dict[str, Any], model_type: str, prefix: str = "") -> None:
        self.path, self.data, self.model_type = path, data, model_type
        self.prefix = prefix  # "text_config." inside a nested object, named in errors

    def error(self, message: str) -> InputError:
        return InputError(f"{self.path}: {message} (model_type '{self.model_type}')")

    def section(self, field: str) -> _Config:
        """The nested object ``field`` (DBRX attn_config, Llama 4 text_config)."""
        value = self.data.get(field)
        if not isinstance(value, dict):
            raise self.error(f"missing field '{self.prefix}{field}' (a JSON object)")
        return _Config(self.path, value, self.model_type, f"{self.prefix}{field}.")

    def positive(self, field: str, default: int | None = None) -> int:
        """A positive integer field; ``default`` stands in when it is absent or null."""
        value = self.data.get(field)
        if value is None:
            if default is None:
                raise self.error(f"missing field '{self.prefix}{field}'")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(
                f"field '{self.prefix}{field}' must be a positive integer, got {value!r}"
            )
        return value

    def positive_float(self, field: str) -> float:
        """A positive number field (present: callers check)."""
        value = self.data.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise self.error(f"field '{self.prefix}{field}' must be a positive number, "
                             f"got {value!r}")
        return float(value)

    def count(self, field: str, default: int = 0) -> int:
        """A non-negative integer field; absent or null means ``default``."""
        value = self.data.get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(
                f"field '{self.prefix}{field}' must be a non-negative integer, got {value!r}"
            )
        return value

    def flag(self, field: str, default: bool) -> bool:
        value = self.data.get(field)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(f"field '{self.prefix}{field}' must be true or false, got {value!r}")
        return value

    def activation(self, field: str, default: str) -> str:
        value = str(self.data.get(field) or default)
        if value.startswith("gelu"):
            return "gelu"
        if value not in _ACTIVATIONS:
            accepted = ", ".join([*_ACTIVATIONS, "gelu*"])
            raise self.error(f"field '{self.prefix}{field}' is {value!r}; supported: {accepted}")
        return _ACTIVATIONS[value]


def _decoder(cfg: _Config, tied_default: bool = False) -> dict[str, Any]:
    """Fields shared by the Llama-style configs (HF configuration_llama.py names)."""
    hidden, heads = cfg.positive("hidden_size"), cfg.positive("num_attention_heads")
    if cfg.data.get("head_dim") is None and hidden % heads:
        raise cfg.error(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    attention_bias = cfg.flag("attention_bias", False)
    mlp_bias = cfg.flag("mlp_bias", False)
    return {
        "num_layers": cfg.positive("num_hidden_layers"),
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": cfg.positive("num_key_value_heads", heads),
        "head_dim": cfg.positive("head_dim", hidden // heads),
        "ffn_hidden": cfg.positive("intermediate_size"),
        "vocab_size": cfg.positive("vocab_size"),
        "max_seq_len": cfg.positive("max_position_embeddings"),
        "tied_embeddings": cfg.flag("tie_word_embeddings", tied_default),
        "activation": cfg.activation("hidden_act", "silu"),
        "linear_bias": attention_bias and mlp_bias,
        "qkv_bias": attention_bias and not mlp_bias,
    }


def _moe_layout(cfg: _Config, is_moe: list[bool]) -> tuple[int, int]:
    """(first_dense_layers, layer_freq) reproducing the config's MoE layer pattern."""
    moe_layers = [i for i, flag in enumerate(is_moe) if flag]
    first = moe_layers[0]
    freq = moe_layers[1] - first if len(moe_layers) > 1 else len(is_moe)
    expected = [i >= first and (i - first) % freq == 0 for i in range(len(is_moe))]
    if expected != is_moe:
        raise cfg.error(
            f"MoE layers {moe_layers} are not 'first k dense, then every n-th'; "
            "sysplan cannot represent this pattern"
        )
    return first, freq


def _llama(cfg: _Config) -> dict[str, Any]:
    return _decoder(cfg)


def _mixtral(cfg: _Config) -> dict[str, Any]:
    fields = _decoder(cfg)
    # every layer is a sparse MoE block (HF modeling_mixtral.py MixtralSparseMoeBlock)
    fields["moe"] = {
        "num_experts": cfg.positive("num_local_experts"),
        "top_k": cfg.positive("num_experts_per_tok"),
        "expert_ffn_hidden": fields["ffn_hidden"],
    }
    return fields


def _qwen2(cfg: _Config) -> dict[str, Any]:
    # Qwen2Attention: q/k/v_proj always have a bias, o_proj none (HF modeling_qwen2.py)
    return {**_decoder(cfg), "qkv_bias": True, "linear_bias": False}


def _qwen3(cfg: _Config) -> dict[str, Any]:
    # Qwen3Attention: q_norm and k_norm over head_dim (HF modeling_qwen3.py)
    return {**_decoder(cfg), "qk_norm": True}


def _qwen3_moe(cfg: _Config) -> dict[str, Any]:
    fields = _qwen3(cfg)
    experts = cfg.count("num_experts")
    step = cfg.positive("decoder_sparse_step", 1)
    dense_only = cfg.data.get("mlp_only_layers") or []
    if not isinstance(dense_only, list):
        raise cfg.error(
            f"field 'mlp_only_layers' must be a list of layer indices, got {dense_only!r}"
        )
    # MoE iff not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0 (modeling_qwen3_moe.py)
    is_moe = [
        experts > 1 and i not in dense_only and (i + 1) % step == 0
        for i in range(fields["num_layers"])
    ]
    if any(is_moe):
        first, freq = _moe_layout(cfg, is_moe)
        fields["moe"] = {
            "num_experts": cfg.positive("num_experts"),
            "top_k": cfg.positive("num_experts_per_tok"),
            "expert_ffn_hidden": cfg.positive("moe_intermediate_size"),
            "first_dense_layers": first,
            "layer_freq": freq,
        }
    return fields


def _deepseek(cfg: _Config) -> dict[str, Any]:
    fields = _decoder(cfg)
    mla = {
        "q_lora_rank": cfg.count("q_lora_rank") or None,  # null: full-rank q_proj (V2-Lite)
        "kv_lora_rank": cfg.positive("kv_lora_rank"),
        "qk_nope_head_dim": cfg.positive("qk_nope_head_dim"),
        "qk_rope_head_dim": cfg.positive("qk_rope_head_dim"),
        "v_head_dim": cfg.positive("v_head_dim"),
    }
    fields["mla"] = mla
    fields["head_dim"] = mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]
    fields["mtp_layers"] = cfg.count("num_nextn_predict_layers")
    first_dense, freq = cfg.count("first_k_dense_replace"), cfg.positive("moe_layer_freq", 1)
    experts = cfg.count("n_routed_experts")
    # MoE iff n_routed_experts and i >= first_k_dense_replace and i % moe_layer_freq == 0
    # (HF modeling_deepseek.py DeepseekV3DecoderLayer)
    is_moe = [
        experts > 1 and i >= first_dense and i % freq == 0 for i in range(fields["num_layers"])
    ]
    if any(is_moe):
        first, layer_freq = _moe_layout(cfg, is_moe)
        fields["moe"] = {
            "num_experts": cfg.positive("n_routed_experts"),
            "top_k": cfg.positive("num_experts_per_tok"),
            "expert_ffn_hidden": cfg.positive("moe_intermediate_size"),
            "num_shared_experts": cfg.count("n_shared_experts"),
            "first_dense_layers": first,
            "layer_freq": layer_freq,
            # e_score_correction_bias exists with topk_method noaux_tc (DeepSeek-V3 §2.1.2)
            "router_bias": cfg.data.get("topk_method") == "noaux_tc",
            # group-limited routing: a token reaches at most topk_group of n_group expert
            # groups (DeepSeek-V2 report section 2.1.3 device-limited routing; V3 section 2.1.2
            # node-limited routing); greedy top-k (V2-Lite) has no groups
            **_route_groups(cfg),
        }
    return fields


def _route_groups(cfg: _Config) -> dict[str, int]:
    """``route_groups`` fields of a DeepSeek config; none with greedy (ungrouped) top-k."""
    if cfg.data.get("topk_method", "greedy") == "greedy":
        return {}
    groups = cfg.positive("n_group", 1)
    if groups == 1:  # one group: ungrouped (Kimi K2)
        return {}
    return {"route_groups": groups, "route_groups_per_token": cfg.positive("topk_group", groups)}


def _gpt2(cfg: _Config) -> dict[str, Any]:
    # HF configuration_gpt2.py names; n_inner null means 4·n_embd (modeling_gpt2.py GPT2Block)
    hidden, heads = cfg.positive("n_embd"), cfg.positive("n_head")
    if hidden % heads:
        raise cfg.error(f"n_embd {hidden} is not a multiple of n_head {heads}")
    return {
        "num_layers": cfg.positive("n_layer"),
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": hidden // heads,
        "ffn_hidden": cfg.positive("n_inner", 4 * hidden),
        "vocab_size": cfg.positive("vocab_size"),
        "max_seq_len": cfg.positive("n_positions"),
        "tied_embeddings": cfg.flag("tie_word_embeddings", True),
        "gated_mlp": False,
        "activation": cfg.activation("activation_function", "gelu_new"),
        "norm": "layernorm",
        "linear_bias": True,
        "learned_positions": True,
    }


def _gpt_neox(cfg: _Config) -> dict[str, Any]:
    # HF modeling_gpt_neox.py: fused query_key_value and MLP with biases, LayerNorm, untied
    # embed_out; rotary_pct and use_parallel_residual do not change the counts
    fields = _decoder(cfg)
    fields.update(
        num_kv_heads=fields["num_heads"],
        activation=cfg.activation("hidden_act", "gelu"),
        gated_mlp=False,
        norm="layernorm",
        linear_bias=cfg.flag("attention_bias", True),
        qkv_bias=False,
    )
    return fields


def _nemotron(cfg: _Config) -> dict[str, Any]:
    # HF modeling_nemotron.py: LayerNorm1P (scale and bias), non-gated up/down MLP with relu2
    fields = _decoder(cfg)
    fields.update(
        activation=cfg.activation("hidden_act", "relu2"), gated_mlp=False, norm="layernorm"
    )
    return fields


def _dbrx(cfg: _Config) -> dict[str, Any]:
    # HF configuration_dbrx.py names; modeling_dbrx.py: fused Wqkv and out_proj without bias,
    # LayerNorm(bias=False) (counted with a bias: h per norm too many, see the catalog note),
    # every layer a GLU MoE (w1, v1, w2 of ffn_hidden_size per expert), router without bias
    attn, ffn = cfg.section("attn_config"), cfg.section("ffn_config")
    hidden, heads = cfg.positive("d_model"), cfg.positive("n_heads")
    if hidden % heads:
        raise cfg.error(f"d_model {hidden} is not a multiple of n_heads {heads}")
    act = ffn.data.get("ffn_act_fn") or {"name": "silu"}  # DbrxFFNConfig default
    activation = act.get("name") if isinstance(act, dict) else act
    if activation not in _ACTIVATIONS:
        accepted = ", ".join(_ACTIVATIONS)
        raise ffn.error(f"field 'ffn_config.ffn_act_fn' is {act!r}; supported names: {accepted}")
    expert_ffn = ffn.positive("ffn_hidden_size")
    return {
        "num_layers": cfg.positive("n_layers"),
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": attn.positive("kv_n_heads"),
        "head_dim": hidden // heads,
        "ffn_hidden": expert_ffn,
        "vocab_size": cfg.positive("vocab_size"),
        "max_seq_len": cfg.positive("max_seq_len"),
        "tied_embeddings": cfg.flag("tie_word_embeddings", False),
        "activation": _ACTIVATIONS[activation],
        "norm": "layernorm",
        "moe": {
            "num_experts": ffn.positive("moe_num_experts"),
            "top_k": ffn.positive("moe_top_k"),
            "expert_ffn_hidden": expert_ffn,
        },
    }


def _llama4(cfg: _Config) -> dict[str, Any]:
    # Llama4ForConditionalGeneration: the text model is text_config (the vision encoder is not
    # counted); Llama4ForCausalLM (model_type llama4_text) has the same fields at the top level
    text = cfg.section("text_config") if cfg.model_type == "llama4" else cfg
    fields = _decoder(text)
    # tie_word_embeddings sits at the top of a multimodal config (HF Llama4Config), else inside
    fields["tied_embeddings"] = cfg.flag(
        "tie_word_embeddings", text.flag("tie_word_embeddings", False)
    )
    # dense layers: Llama4TextMLP(intermediate_size_mlp); experts and the shared expert:
    # intermediate_size (HF modeling_llama4.py Llama4TextDecoderLayer, Llama4TextMoe);
    # use_qk_norm is Llama4TextL2Norm, which has no weights
    fields["ffn_hidden"] = text.positive("intermediate_size_mlp")
    layers = fields["num_layers"]
    step = text.positive("interleave_moe_layer_step", 1)
    moe_layers = text.data.get("moe_layers")
    if moe_layers is None:  # configuration_llama4.py default: range(step - 1, L, step)
        moe_layers = list(range(step - 1, layers, step))
    if not isinstance(moe_layers, list):
        raise text.error(
            f"field '{text.prefix}moe_layers' must be a list of layer indices, got {moe_layers!r}"
        )
    is_moe = [i in moe_layers for i in range(layers)]
    if any(is_moe):
        first, freq = _moe_layout(cfg, is_moe)
        fields["moe"] = {
            "num_experts": text.positive("num_local_experts"),
            "top_k": text.positive("num_experts_per_tok"),
            "expert_ffn_hidden": text.positive("intermediate_size"),
            "num_shared_experts": 1,  # Llama4TextMoe.shared_expert, always one
            "first_dense_layers": first,
            "layer_freq": freq,
        }
    return fields


def _gpt_oss(cfg: _Config) -> dict[str, Any]:
    # HF modeling_gpt_oss.py: every layer MoE with experts of intermediate_size, biased Q/K/V
    # and experts. As in the catalog entry, the output projection's and router's biases and
    # the attention sinks are not modelled (0.1M parameters in gpt-oss-120b); its sliding
    # window (every second layer, layer_types) is read by _sliding_window
    fields = _decoder(cfg)
    fields.update(qkv_bias=True, linear_bias=False)
    # openai/gpt-oss config.json holds num_experts_per_tok and experts_per_token (OpenAI's name)
    top_k = cfg.data.get("num_experts_per_tok")
    fields["moe"] = {
        "num_experts": cfg.positive("num_local_experts"),
        "top_k": cfg.positive("num_experts_per_tok" if top_k is not None else "experts_per_token"),
        "expert_ffn_hidden": fields["ffn_hidden"],
        "expert_bias": True,
    }
    if cfg.data.get("swiglu_limit") is not None:  # modeling_gpt_oss.py: gate and up clamped
        fields["moe"]["activation_clamp"] = cfg.positive_float("swiglu_limit")
    return fields


_BUILDERS: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "llama": _llama,
    "mistral": _llama,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "kimi_k2": _deepseek,  # Kimi K2: DeepseekV3ForCausalLM with its own model_type
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "nemotron": _nemotron,
    "dbrx": _dbrx,
    "llama4": _llama4,
    "llama4_text": _llama4,
    "gpt_oss": _gpt_oss,
}


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (expected a Hugging Face config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable JSON file ({error})") from None
    except RecursionError:  # e.g. 100,000 nested lists: a config.json is a few levels deep
        raise InputError(f"{path}: not a Hugging Face config.json: nested too deeply to "
                         "read") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _model_type(path: Path, data: dict[str, Any]) -> str:
    architectures = data.get("architectures") or []
    if not isinstance(architectures, list):  # a list of class names; anything else names none
        architectures = []
    model_type = data.get("model_type")
    if model_type is None and architectures:
        model_type = _ARCHITECTURES.get(str(architectures[0]))
    if not isinstance(model_type, str) or model_type not in _BUILDERS:  # [] is unhashable
        supported = ", ".join(_BUILDERS)
        raise InputError(
            f"{path}: unsupported model_type {model_type!r} (architectures {architectures}); "
            f"supported model_type values: {supported}"
        )
    return str(model_type)


def _name(path: Path, data: dict[str, Any]) -> str:
    """``_name_or_path`` if present, else the folder of a config.json, else the file stem."""
    given = data.get("_name_or_path")
    if isinstance(given, str) and given.strip():
        return given.strip()
    if path.name == "config.json" and path.parent.name:
        return path.parent.name
    return path.stem


def _sliding_window(cfg: _Config, layers: int, context: int) -> dict[str, Any]:
    """The config's sliding window and how many layers use it (HF layer_types
    "sliding_attention"; Qwen2/3 use_sliding_window from layer max_window_layers on,
    modeling_qwen2.py; otherwise every layer, Mistral's configuration_mistral.py); {} when
    none. A window at least the context long is no window."""
    if cfg.data.get("sliding_window") is None:
        return {}
    window = cfg.positive("sliding_window")
    types = cfg.data.get("layer_types")
    if isinstance(types, list):
        count = sum(kind == "sliding_attention" for kind in types)
    elif "use_sliding_window" in cfg.data:
        count = (max(0, layers - cfg.count("max_window_layers"))
                 if cfg.flag("use_sliding_window", False) else 0)
    else:
        count = layers
    if count == 0 or window >= context:
        return {}
    return {"sliding_window": window, "sliding_window_layers": count}


def from_hf_config(path: str | Path) -> ModelSpec:
    """Read a Hugging Face ``config.json`` (or a folder holding one) into a ``ModelSpec``."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    data = _read(path)
    model_type = _model_type(path, data)
    cfg = _Config(path, data, model_type)
    fields = _BUILDERS[model_type](cfg)
    if "num_layers" in fields and model_type not in ("llama4", "llama4_text"):
        fields.update(_sliding_window(cfg, fields["num_layers"], fields["max_seq_len"]))
    try:
        return ModelSpec(
            name=_name(path, data),
            family=model_type,
            source=f"Hugging Face config.json: {path}",
            **fields,
        )
    except ValidationError as error:
        detail = error.errors()[0]
        where = "".join(f"{part}: " for part in (".".join(map(str, detail["loc"])),) if part)
        message = str(detail["msg"]).removeprefix("Value error, ")
        raise InputError(f"{path}: {where}{message} (model_type '{model_type}')") from None
