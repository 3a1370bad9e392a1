"""models/: catalog, parameter and FLOP counts, Hugging Face config.json import."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysplan.core.errors import InputError
from sysplan.models import (
    ModelSpec,
    MoESpec,
    forward_flops_per_token,
    from_hf_config,
    list_models,
    model_flops_per_token,
    padded_vocab,
    param_counts,
    resolve_model,
)

HF = Path(__file__).parent / "data" / "hf"


def spec(name: str) -> ModelSpec:
    return resolve_model(name)[0]


# --- exact parameter counts (HF model.num_parameters(), published totals) ---


@pytest.mark.parametrize(
    ("name", "total"),
    [
        ("llama2-70b", 68_976_648_192),
        ("llama3.1-70b", 70_553_706_496),
        ("llama3.1-405b", 405_853_388_800),
        ("llama3.1-8b", 8_030_261_248),
        ("mixtral-8x7b", 46_702_792_704),
        ("gpt2", 124_439_808),
    ],
)
def test_exact_parameter_counts(name: str, total: int) -> None:
    counts = param_counts(spec(name))
    assert counts.total == total


def test_counts_are_a_named_sum() -> None:
    for listing in list_models():
        counts = param_counts(spec(listing.name))
        layers_total = sum(total for total, _ in counts.per_layer)
        layers_active = sum(active for _, active in counts.per_layer)
        fixed = counts.embedding + counts.lm_head + counts.final_norm
        assert counts.total == fixed + layers_total == listing.params
        assert counts.active == fixed + layers_active <= counts.total


def test_llama_70b_parts_by_hand() -> None:
    counts = param_counts(spec("70b"))
    assert counts.embedding == counts.lm_head == 128_256 * 8192
    assert counts.final_norm == 8192
    # q, o: h²; k, v: h·8·128; MLP 3·h·f; two RMSNorms
    layer = 2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    assert counts.per_layer == ((layer, layer),) * 80


def test_tied_embeddings_have_no_head() -> None:
    counts = param_counts(spec("gpt3-175b"))
    assert counts.lm_head == 0
    assert counts.embedding == (50257 + 2048) * 12288  # tokens + learned positions
    assert round(counts.total / 1e9, 1) == 174.6  # Brown et al. 2020 Table 2.1: 175.0B


def test_mixtral_active_parameters() -> None:
    counts = param_counts(spec("mixtral-8x7b"))
    assert counts.active == 12_879_925_248  # Mistral AI: 12.9B active
    assert counts.mtp == 0


def test_deepseek_v3_total_active_and_mtp() -> None:
    model = spec("deepseek-v3")
    counts = param_counts(model)
    assert counts.total == 671_026_419_200  # DeepSeek-V3 report: 671B
    assert round(counts.active / 1e9, 1) == 37.6  # report: 37B active
    # README_WEIGHTS.md: 36.6B active without the input embedding (0.9B head included)
    assert round((counts.active - counts.embedding) / 1e9, 1) == 36.6
    # README_WEIGHTS.md: "11.5B unique" is the MTP transformer layer; eh_proj adds 2h² = 0.1B
    assert round(counts.mtp / 1e9, 1) == 11.6
    # HF's "685B" (safetensors total 684,531,386,000) = main + MTP + the MTP layer's copies of
    # embedding and head + one FP8 scale_inv per 128x128 block of each quantised linear
    copies = 2 * model.vocab_size * model.hidden_size
    assert counts.total + counts.mtp + copies + _deepseek_fp8_scales() == 684_531_386_000
    dense, moe = counts.per_layer[2], counts.per_layer[3]
    assert dense[0] == dense[1] and moe[0] > moe[1]


def _deepseek_fp8_scales() -> int:
    def blocks(rows: int, cols: int) -> int:
        return -(-rows // 128) * -(-cols // 128)

    h = 7168
    attention = (
        blocks(1536, h)
        + blocks(128 * 192, 1536)
        + blocks(576, h)
        + blocks(128 * 256, 512)
        + blocks(h, 128 * 128)
    )
    dense_mlp = 3 * blocks(18432, h)
    moe_mlp = (256 + 1) * 3 * blocks(2048, h)  # routed + shared experts
    return 62 * attention + 3 * dense_mlp + (62 - 3) * moe_mlp  # 61 layers + the MTP layer


@pytest.mark.parametrize(
    ("name", "total_b", "active_b"),
    [  # Qwen3 technical report (arXiv 2505.09388) Tables 1-2
        ("qwen3-8b", 8.2, 8.2),
        ("qwen3-14b", 14.8, 14.8),
        ("qwen3-32b", 32.8, 32.8),
        ("qwen3-30b-a3b", 30.5, 3.4),
        ("qwen3-235b-a22b", 235.1, 22.2),
        ("nemotron-4-15b", 15.6, 15.6),  # 3.2B embedding + 12.5B non-embedding
        ("nemotron-4-340b", 341.0, 341.0),  # 9.4B embedding + 331.6B non-embedding
        ("mixtral-8x22b", 140.6, 39.2),  # Mistral AI: 141B total, 39B active
    ],
)
def test_published_sizes(name: str, total_b: float, active_b: float) -> None:
    counts = param_counts(spec(name))
    assert round(counts.total / 1e9, 1) == total_b
    assert round(counts.active / 1e9, 1) == active_b


@pytest.mark.parametrize(
    ("name", "total_b"),  # Narayanan et al. 2021 Table 1
    [
        ("megatron-1.7b", 1.7),
        ("megatron-18b", 18.4),
        ("megatron-145b", 145.6),
        ("megatron-530b", 529.6),
        ("megatron-1t", 1008.0),
    ],
)
def test_megatron_table_1(name: str, total_b: float) -> None:
    assert round(param_counts(spec(name)).total / 1e9, 1) == total_b


# --- FLOPs ---


def test_model_flops_llama_70b_by_hand() -> None:
    n = 70_553_706_496 - 128_256 * 8192  # all parameters but the input embedding
    expected = 6 * n + 12 * 80 * 64 * 128 * 8192  # PaLM App. B: 6N + 12·L·H·Q·T
    assert model_flops_per_token(spec("70b"), 8192) == expected == 481_442_709_504


def test_forward_flops_llama_70b_by_hand() -> None:
    weights = 80 * (2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672) + 128_256 * 8192
    core = 80 * 2 * 2 * 64 * 128 * 8192  # QKᵀ and AV, 2 FLOPs per multiply-add
    model = spec("70b")
    assert forward_flops_per_token(model, 8192, causal=False) == 2 * weights + core
    assert forward_flops_per_token(model, 8192) == 2 * weights + core / 2


def test_model_flops_tied_head_counted_once() -> None:
    model = spec("gpt2")
    counts = param_counts(model)
    n = counts.total - counts.embedding + 50257 * 768
    assert model_flops_per_token(model, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_model_flops_mla_and_moe() -> None:
    model = spec("deepseek-v3")
    counts = param_counts(model)
    n = counts.active - counts.embedding
    attention = 6 * 61 * 128 * 4096 * (192 + 128)  # 6·L·H·T·(qk_dim + v_dim)
    assert model_flops_per_token(model, 4096) == 6 * n + attention
    with_mtp = model_flops_per_token(model, 4096, include_mtp=True)
    assert with_mtp > model_flops_per_token(model, 4096)


@pytest.mark.parametrize("name", ["70b", "mixtral-8x7b", "deepseek-v3", "qwen3-8b"])
def test_three_forwards_are_the_model_flops_minus_norms(name: str) -> None:
    model = spec(name)
    forward = forward_flops_per_token(model, 4096, causal=False)
    assert 3 * forward <= model_flops_per_token(model, 4096)
    assert 3 * forward == pytest.approx(model_flops_per_token(model, 4096), rel=1e-4)


@pytest.mark.parametrize(("tp", "padded"), [(1, 50304), (2, 50432), (4, 50688), (8, 51200)])
def test_padded_vocab_megatron(tp: int, padded: int) -> None:
    assert padded_vocab(spec("gpt2"), tp) == padded  # 50257 → multiple of 128·tp
    assert padded_vocab(spec("70b"), 8) == 128_256 + 768  # 129024 = 126·1024


# --- catalog ---


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("70b", "Llama 3.1 70B"),
        ("8b", "Llama 3.1 8B"),
        ("405b", "Llama 3.1 405B"),
        ("175b", "GPT-3 175B"),
        ("gpt3-175b", "GPT-3 175B"),
        ("llama2-70b", "Llama 2 70B"),
        ("LLAMA_3.1 70b", "Llama 3.1 70B"),
        ("llama31-70b", "Llama 3.1 70B"),
        ("mixtral-8x7b", "Mixtral 8x7B"),
        ("deepseek-v3", "DeepSeek-V3"),
        ("qwen3-235b-a22b", "Qwen3 235B-A22B"),
        ("nemotron-4-340b", "Nemotron-4 340B"),
        ("gpt3-1.3b", "GPT-3 XL 1.3B"),
        ("gpt3-13b", "GPT-3 13B"),
    ],
)
def test_alias_resolution(alias: str, name: str) -> None:
    assert spec(alias).name == name


def test_resolution_note() -> None:
    _, note = resolve_model("70b")
    assert note == "70b → Llama 3.1 70B (80 layers, h=8192, GQA 64/8)"
    _, note = resolve_model("deepseek-v3")
    assert note.startswith("deepseek-v3 → DeepSeek-V3 (61 layers, h=7168, MLA 128 heads")
    assert "MoE 256 experts top-8 + 1 shared" in note


def test_ambiguous_alias_lists_matches() -> None:
    with pytest.raises(InputError) as error:
        resolve_model("mixtral")
    message = str(error.value)
    assert "ambiguous" in message and "Mixtral 8x7B" in message and "Mixtral 8x22B" in message
    assert "sysplan models" in message
    assert error.value.exit_code == 2


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(InputError, match=r"unknown model 'lama-3.1-70b'.*Llama 3.1 70B"):
        resolve_model("lama-3.1-70b")
    with pytest.raises(InputError, match="sysplan models"):
        resolve_model("no-such-thing")


def test_catalog_entries_have_sources_and_unique_aliases() -> None:
    listings = list_models()
    assert len(listings) >= 40
    seen: set[str] = set()
    for listing in listings:
        assert spec(listing.name).source
        for alias in listing.aliases:
            assert alias not in seen
            seen.add(alias)
            assert spec(alias).name == listing.name


# --- Hugging Face import ---


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("Llama-3.1-70B", "Llama 3.1 70B"),
        ("Mixtral-8x7B-v0.1", "Mixtral 8x7B"),
        ("DeepSeek-V3", "DeepSeek-V3"),
        ("Qwen3-8B", "Qwen3 8B"),
        ("Qwen3-30B-A3B", "Qwen3 30B-A3B"),
        ("gpt2", "GPT-2 124M"),
    ],
)
def test_hf_import_matches_catalog(folder: str, name: str) -> None:
    imported = from_hf_config(HF / folder / "config.json")
    catalog = spec(name)
    assert param_counts(imported) == param_counts(catalog)
    skip = {"name", "family", "source"}
    assert imported.model_dump(exclude=skip) == catalog.model_dump(exclude=skip)
    assert imported.name == folder


def test_hf_import_gpt_neox() -> None:
    model = from_hf_config(HF / "pythia-160m")  # a folder holding config.json works too
    assert param_counts(model).total == 162_322_944  # EleutherAI/pythia-160m


def test_resolve_model_accepts_a_path() -> None:
    path = str(HF / "Qwen3-8B" / "config.json")
    model, note = resolve_model(path)
    assert model.qk_norm and note.startswith(f"{path} → Qwen3-8B (36 layers")


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_hf_unknown_model_type(tmp_path: Path) -> None:
    path = _write(tmp_path, {"model_type": "mamba", "architectures": ["MambaForCausalLM"]})
    with pytest.raises(InputError, match=r"config.json: unsupported model_type 'mamba'.*llama"):
        from_hf_config(path)


def test_hf_missing_field(tmp_path: Path) -> None:
    data = json.loads((HF / "Llama-3.1-70B" / "config.json").read_text())
    del data["intermediate_size"]
    with pytest.raises(InputError, match=r"config.json: missing field 'intermediate_size'"):
        from_hf_config(_write(tmp_path, data))


def test_hf_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        from_hf_config(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON"):
        resolve_model(str(bad))


# --- properties ---

_llama_like = st.builds(
    dict,
    num_layers=st.integers(1, 64),
    heads=st.integers(1, 32),
    head_dim=st.sampled_from([32, 64, 128]),
    ffn=st.integers(1, 20_000),
    vocab=st.integers(1, 200_000),
    experts=st.integers(0, 16),
)


def _build(p: dict, layers: int | None = None, heads: int | None = None) -> ModelSpec:
    heads = heads or p["heads"]
    moe = None
    if p["experts"] > 1:
        moe = MoESpec(num_experts=p["experts"], top_k=1, expert_ffn_hidden=p["ffn"])
    return ModelSpec(
        name="x",
        num_layers=layers or p["num_layers"],
        hidden_size=heads * p["head_dim"],
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=p["head_dim"],
        ffn_hidden=p["ffn"],
        vocab_size=p["vocab"],
        max_seq_len=4096,
        moe=moe,
    )


@given(_llama_like)
def test_params_grow_with_layers_and_width(p: dict) -> None:
    base = param_counts(_build(p))
    deeper = param_counts(_build(p, layers=p["num_layers"] + 1))
    wider = param_counts(_build(p, heads=p["heads"] + 1))
    assert deeper.total > base.total and deeper.active > base.active
    assert wider.total > base.total and wider.active > base.active
    assert base.active <= base.total
    assert (base.active < base.total) == (p["experts"] > 1)


@given(_llama_like, st.integers(1, 32_768))
def test_flops_grow_with_sequence(p: dict, seq_len: int) -> None:
    model = _build(p)
    assert model_flops_per_token(model, seq_len + 1) > model_flops_per_token(model, seq_len)
    assert forward_flops_per_token(model, seq_len) < forward_flops_per_token(
        model, seq_len, causal=False
    )


@pytest.mark.parametrize(("name", "total_b", "active_b"),
                         [("gpt-oss-120b", 116.83, 5.13), ("gpt-oss-20b", 20.91, 3.61)])
def test_gpt_oss_counts_match_the_model_card(name: str, total_b: float, active_b: float) -> None:
    """OpenAI gpt-oss model card (arXiv 2508.10925) Table 1: total, and active per token
    without the embedding, to the card's two decimals with the Q/K/V and expert biases (the
    output projection's and router's biases and the attention sinks, 0.1M, are left out)."""
    counts = param_counts(spec(name))
    assert round(counts.total / 1e9, 2) == total_b
    assert round((counts.active - counts.embedding) / 1e9, 2) == active_b
