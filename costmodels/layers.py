"""The matmuls of one transformer layer, per token, and how TP/EP split them.

Shapes follow Megatron-LM's layer (``megatron/core/transformer``): fused QKV, output
projection, (gated) MLP, routed and shared experts with a router, MLA projections
(DeepSeek-V3 technical report, section 2.1.1). Each GEMM is tokens x K -> N.
"""

from __future__ import annotations

from dataclasses import dataclass

from sysplan.models.spec import ModelSpec


@dataclass(frozen=True)
class Gemm:
    """One weight matmul of a layer."""

    name: str
    n: int  # output features
    k: int  # input features
    split: str  # 'tp' (divided by tp), 'etp' (expert, by etp), 'none' (replicated)
    expert: bool = False  # routed expert: runs on top_k * tokens spread over experts

    @property
    def mlp_down(self) -> bool:
        """The down projection of an MLP block (``_mlp``: dense, shared or routed experts),
        whose input is the activation's output; MLA's q_down and kv_down are not."""
        return self.name in MLP_DOWN


@dataclass(frozen=True)
class LayerShapes:
    """Per-token matmuls and attention dims of one layer kind (dense or MoE)."""

    gemms: tuple[Gemm, ...]
    attn_qk_dim: int  # per-head query/key dim
    attn_v_dim: int  # per-head value dim
    kv_bytes_dims: int  # K and V features exchanged by ring attention (per token, all heads)

    @property
    def params_expert(self) -> int:
        """Routed-expert parameters of the layer (all experts)."""
        return sum(g.n * g.k for g in self.gemms if g.expert)


def uses_dropout(model: ModelSpec) -> bool:
    """GPT-2/3-style models (biased linears) train with dropout 0.1; Llama-style use none."""
    return model.linear_bias


def _attention_gemms(m: ModelSpec) -> tuple[list[Gemm], int, int, int]:
    h, a, g, d = m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim
    if m.mla is None:
        # Megatron fused QKV: h -> (a + 2g) d_h; output projection a d_h -> h (GQA, Ainslie 2023)
        gemms = [Gemm("qkv", (a + 2 * g) * d, h, "tp"), Gemm("attn_out", h, a * d, "tp")]
        return gemms, d, d, 2 * g * d
    mla = m.mla
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    gemms = []
    if mla.q_lora_rank:
        # DeepSeek-V3 report eq. 6-7: W_DQ (h -> d_c'), W_UQ/W_QR (d_c' -> a (d_nope + d_rope))
        gemms += [Gemm("q_down", mla.q_lora_rank, h, "none"),
                  Gemm("q_up", a * qk, mla.q_lora_rank, "tp")]
    else:
        gemms.append(Gemm("q", a * qk, h, "tp"))
    gemms += [
        # eq. 1-3: W_DKV and W_KR (h -> d_c + d_rope), W_UK/W_UV (d_c -> a (d_nope + d_v))
        Gemm("kv_down", mla.kv_lora_rank + mla.qk_rope_head_dim, h, "none"),
        Gemm("kv_up", a * (mla.qk_nope_head_dim + mla.v_head_dim), mla.kv_lora_rank, "tp"),
        Gemm("attn_out", h, a * mla.v_head_dim, "tp"),
    ]
    return gemms, qk, mla.v_head_dim, a * (qk + mla.v_head_dim)


#: The MLP blocks ``_mlp`` names, and their down projections
MLP_BLOCKS = ("mlp", "shared", "expert")
MLP_DOWN = frozenset(f"{block}_down" for block in MLP_BLOCKS)


def _mlp(name: str, h: int, f: int, gated: bool, split: str, expert: bool = False) -> list[Gemm]:
    # SwiGLU (Shazeer 2020): gate and up fused, h -> 2f, then f -> h; GELU MLP h -> f -> h
    up = 2 * f if gated else f
    return [Gemm(f"{name}_up", up, h, split, expert), Gemm(f"{name}_down", h, f, split, expert)]


def layer_shapes(m: ModelSpec, moe_layer: bool) -> LayerShapes:
    """Matmuls of a dense (``moe_layer=False``) or MoE layer of ``m``."""
    gemms, qk, v, kv_dims = _attention_gemms(m)
    h = m.hidden_size
    if moe_layer and m.moe is not None:
        moe = m.moe
        gemms.append(Gemm("router", moe.num_experts, h, "none"))
        if moe.num_shared_experts:
            gemms += _mlp("shared", h, moe.shared_ffn * moe.num_shared_experts, m.gated_mlp, "tp")
        for g in _mlp("expert", h, moe.expert_ffn_hidden, m.gated_mlp, "etp", expert=True):
            # one entry stands for all E experts: weights E x n x k, work top_k per token
            gemms.append(Gemm(g.name, g.n * moe.num_experts, g.k, g.split, True))
    else:
        gemms += _mlp("mlp", h, m.ffn_hidden, m.gated_mlp, "tp")
    return LayerShapes(tuple(gemms), qk, v, kv_dims)
