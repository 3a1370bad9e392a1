"""Architecture description of a decoder-only transformer, dense or MoE (DESIGN.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sysplan.core.types import Frozen

#: Bounds far above any real model that keep a malformed config (a layer count of 10**20) from
#: hanging the planners or overflowing int64 arithmetic: layers, widths and counts, context.
MAX_LAYERS = 10_000
MAX_WIDTH = 16_777_216
MAX_CONTEXT = 1_073_741_824


class MoESpec(Frozen):
    """Mixture-of-experts MLP description."""

    num_experts: int = Field(gt=1, le=MAX_WIDTH, description="Routed experts per MoE layer.")
    top_k: int = Field(gt=0, description="Routed experts each token is sent to.")
    expert_ffn_hidden: int = Field(gt=0, le=MAX_WIDTH,
                                   description="FFN hidden size of one routed expert.")
    num_shared_experts: int = Field(default=0, ge=0, description="Always-on shared experts.")
    shared_expert_ffn_hidden: int | None = Field(
        default=None, description="FFN hidden of one shared expert (default: expert_ffn_hidden)."
    )
    first_dense_layers: int = Field(
        default=0, ge=0, description="Leading layers with a dense MLP (DeepSeek-V3: 3)."
    )
    layer_freq: int = Field(
        default=1, ge=1, description="Every layer_freq-th layer after the dense ones is MoE."
    )
    router_bias: bool = Field(
        default=False,
        description="Per-expert score-correction bias on the router (DeepSeek-V3 noaux_tc).",
    )
    expert_bias: bool = Field(
        default=False,
        description="Biases on the routed experts' linears (GPT-OSS: gate_up_proj_bias and "
        "down_proj_bias).",
    )
    activation_clamp: float | None = Field(
        default=None, gt=0,
        description="Limit GPT-OSS's clamped gated activation holds both fc1 halves to "
        "(swiglu_limit 7.0: gate * sigmoid(1.702 gate) * (up + 1)); None: plain SwiGLU.",
    )
    route_groups: int = Field(
        default=1, ge=1,
        description="Expert groups of group-limited routing (HF n_group; DeepSeek-V3: 8).",
    )
    route_groups_per_token: int | None = Field(
        default=None, ge=1,
        description="Groups one token may reach (HF topk_group; DeepSeek-V3: 4; None: all).",
    )

    @model_validator(mode="after")
    def _check(self) -> MoESpec:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k {self.top_k} exceeds num_experts {self.num_experts}")
        if self.num_experts % self.route_groups:
            raise ValueError(f"route_groups {self.route_groups} does not divide num_experts "
                             f"{self.num_experts}")
        if (self.route_groups_per_token or 1) > self.route_groups:
            raise ValueError(f"route_groups_per_token {self.route_groups_per_token} exceeds "
                             f"route_groups {self.route_groups}")
        return self

    @property
    def shared_ffn(self) -> int:
        """FFN hidden of one shared expert."""
        return self.shared_expert_ffn_hidden or self.expert_ffn_hidden


class MLASpec(Frozen):
    """Multi-head latent attention dimensions (DeepSeek-V2/V3)."""

    q_lora_rank: int | None = Field(default=None, description="Query low-rank dim (None: full).")
    kv_lora_rank: int = Field(gt=0, description="Compressed KV latent dim.")
    qk_nope_head_dim: int = Field(gt=0, description="Per-head non-rotary query/key dim.")
    qk_rope_head_dim: int = Field(gt=0, description="Per-head rotary query/key dim.")
    v_head_dim: int = Field(gt=0, description="Per-head value dim.")


class ModelSpec(Frozen):
    """A decoder-only language model's shape; everything the cost models read."""

    name: str = Field(description="Canonical name, e.g. 'Llama 3.1 70B'.")
    family: str = Field(default="", description="Family label, e.g. 'llama3', 'gpt3'.")
    num_layers: int = Field(gt=0, le=MAX_LAYERS, description="Transformer layers.")
    hidden_size: int = Field(gt=0, le=MAX_WIDTH, description="Model width h.")
    num_heads: int = Field(gt=0, le=MAX_WIDTH, description="Attention (query) heads a.")
    num_kv_heads: int = Field(gt=0, le=MAX_WIDTH,
                              description="Key/value heads g (= a for MHA, 1 for MQA).")
    head_dim: int = Field(gt=0, le=MAX_WIDTH, description="Per-head dim d_h (usually h / a).")
    ffn_hidden: int = Field(gt=0, le=MAX_WIDTH, description="Dense MLP hidden size f.")
    vocab_size: int = Field(gt=0, le=MAX_WIDTH, description="Vocabulary size (unpadded).")
    max_seq_len: int = Field(gt=0, le=MAX_CONTEXT, description="Trained context length.")
    tied_embeddings: bool = Field(default=False, description="LM head shares the embedding.")
    gated_mlp: bool = Field(default=True, description="SwiGLU-style gate (3 MLP matrices).")
    activation: Literal["silu", "gelu", "relu2"] = Field(
        default="silu",
        description="MLP activation: silu (SwiGLU when gated), gelu, relu2 (squared ReLU).",
    )
    norm: Literal["rmsnorm", "layernorm"] = Field(
        default="rmsnorm", description="Normalisation; layernorm has a bias (2h params)."
    )
    linear_bias: bool = Field(default=False, description="Biases on all linears (GPT-2/3).")
    qkv_bias: bool = Field(default=False, description="Biases on Q/K/V only (Qwen2).")
    qk_norm: bool = Field(default=False, description="Per-head RMSNorm on Q and K (Qwen3).")
    learned_positions: bool = Field(
        default=False, description="Learned absolute position embeddings (GPT) instead of RoPE."
    )
    moe: MoESpec | None = Field(default=None, description="MoE MLP, if any.")
    mla: MLASpec | None = Field(default=None, description="MLA attention, if any.")
    mtp_layers: int = Field(default=0, ge=0, description="Multi-token-prediction modules.")
    sliding_window: int | None = Field(
        default=None, gt=0, le=MAX_CONTEXT, description="Keys a query of a sliding-window "
        "layer attends to, itself included (Mistral, GPT-OSS sliding_window); None: none.")
    sliding_window_layers: int = Field(
        default=0, ge=0, le=MAX_LAYERS, description="Layers with the sliding window; the "
        "others attend to the whole causal context (GPT-OSS: every second layer).")
    source: str = Field(default="", description="Where the architecture numbers come from.")

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if (self.sliding_window is None) != (self.sliding_window_layers == 0):
            raise ValueError("sliding_window and sliding_window_layers go together: a window "
                             "and the number of layers (1 or more) that use it")
        if self.sliding_window_layers > self.num_layers:
            raise ValueError(f"sliding_window_layers {self.sliding_window_layers} exceeds "
                             f"num_layers {self.num_layers}")
        return self

    def attended_keys(self, seq_len: float) -> float:
        """Keys a query attends to under causal masking, averaged over the sequence and the
        layers (``attended_keys_split``: full layers plus windowed ones)."""
        return sum(self.attended_keys_split(seq_len))

    def attended_keys_split(self, seq_len: float) -> tuple[float, float]:
        """(full layers', windowed layers') shares of ``attended_keys``: s / 2 per full layer
        (the FlashAttention-2 causal FLOP count, Dao 2023, section 4.1), and for a window
        w < s the mean of min(i, w) over positions i, w - w^2 / (2 s) (Beltagy et al. 2020,
        Longformer, section 3.1: O(s w) work), weighted by the layers that use each."""
        full = seq_len / 2.0
        if self.sliding_window is None or self.sliding_window >= seq_len:
            return full, 0.0
        w = float(self.sliding_window)
        share = self.sliding_window_layers / self.num_layers
        return (1.0 - share) * full, share * (w - w * w / (2.0 * seq_len))

    def is_moe_layer(self, index: int) -> bool:
        """Whether layer ``index`` (0-based) has a routed-expert MLP."""
        if self.moe is None or index < self.moe.first_dense_layers:
            return False
        return (index - self.moe.first_dense_layers) % self.moe.layer_freq == 0

    @property
    def num_moe_layers(self) -> int:
        """Number of layers with routed experts."""
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))
