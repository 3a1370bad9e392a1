"""Serving cost model: engine-iteration time, KV-cache capacity and KV transfer (``StepCost``).

One engine iteration runs a batch of T tokens (prefill chunks plus one token per decoding
sequence) through every layer: weight GEMMs priced at their real (M, N, K) and never faster
than reading their weights from HBM (roofline, serving-formulas 4.3), fused attention over the
prefill tokens, a memory-bound read of the decoding sequences' KV cache, element-wise passes,
two TP all-reduces per layer, PP sends, the LM head for the sequences that emit a token and a
fixed per-iteration overhead. Everything that depends on the layout alone is tabulated once per
layout over T on a log grid, so an iteration is a handful of pure-Python interpolations.

Pipeline stages run one after the other for the single batch in flight (vLLM's engine without
virtual-engine interleaving): PP adds the p2p latency and frees memory, it adds no throughput.
Expert parallelism is not modelled: routed experts are split over the TP ranks like dense MLPs
(vLLM's default without ``--enable-expert-parallel``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from sysplan.costmodels import collectives
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layers import Gemm, layer_shapes
from sysplan.costmodels.serving.calibration import serving_calibration
from sysplan.costmodels.serving.deployment import Batch, EngineKnobs, ReplicaLayout
from sysplan.hardware.types import Cluster
from sysplan.models.counting import padded_vocab, param_counts
from sysplan.models.spec import ModelSpec

_STEPS = 8  # grid points per octave of T
_GRID = 2.0 ** (np.arange(17 * _STEPS + 1) / _STEPS)  # 1 .. 131072 tokens
_GRID_LIST = _GRID.tolist()
_LAST = len(_GRID_LIST) - 1
_BYTES = {"bf16": 2, "fp8": 1}
_ACTIVATION_BYTES = 2  # activations stay 16-bit in fp8 serving


def _interp(values: list[float], x: float) -> float:
    """Piecewise-linear value at ``x`` over the log grid (linear extrapolation past its end)."""
    if x <= 1.0:
        return values[0] * x
    i = min(int(math.log2(x) * _STEPS), _LAST - 1)
    x0 = _GRID_LIST[i]
    return values[i] + (values[i + 1] - values[i]) * (x - x0) / (_GRID_LIST[i + 1] - x0)


def _monotone(row) -> list[float]:
    """An engine can always pad a batch (CUDA-graph sizes), so time never falls as tokens
    grow; measured tables can wiggle, so rows keep their running maximum."""
    return np.maximum.accumulate(np.broadcast_to(row, _GRID.shape)).tolist()


def _local_dims(g: Gemm, n: float, k: float, tp: int) -> tuple[float, float]:
    """Column-parallel linears split outputs, row-parallel ones (attention output, MLP down)
    inputs (Shoeybi et al. 2019, section 3); replicated ones keep both."""
    if g.split == "none":
        return n, k
    if g.name == "attn_out" or g.mlp_down:
        return n, k / tp
    return n / tp, k


@dataclass(frozen=True)
class IterationCost:
    """Seconds of one engine iteration on one replica; ``total_s`` is the sum of the parts."""

    gemm_s: float  # weight GEMMs of all layers, routed experts included
    lm_head_s: float  # output projection for the sequences that emit a token
    attention_s: float  # prefill fused attention + decode KV read
    elementwise_s: float  # norms, residuals, RoPE, activation
    communication_s: float  # TP all-reduces, PP sends, logits gather
    overhead_s: float  # scheduler, input preparation, sampling, launch gaps

    @property
    def total_s(self) -> float:
        """The iteration's duration."""
        return sum(vars(self).values())


@dataclass(frozen=True)
class _LayoutCost:
    """Per-layout constants and tables (rows over ``_GRID`` as Python lists)."""

    stage_weight_bytes: tuple[float, ...]  # per GPU, each pipeline stage
    stage_kv_bytes_per_token: tuple[float, ...]  # per GPU, each stage
    kv_read_bytes_per_token: float  # one TP rank, all layers (the stages run in turn)
    memory_bytes_per_s: float  # HBM bandwidth memory-bound kernels reach
    prefill_flops_per_pair: float  # attention FLOPs per (query, key) pair, all layers, one GPU
    decode_flops_per_pair: float
    gemm: list[float]  # over T
    elementwise: list[float]
    communication: list[float]
    lm_head: list[float]  # over sequences emitting a token
    logits_gather: list[float]
    attention_s_per_flop: list[float]  # over sequence length


class ServingCost:
    """Roofline-plus-profile cost of serving ``model`` on ``cluster`` (implements StepCost)."""

    #: Per-iteration time outside the GPU kernels: scheduling, input preparation, sampling and
    #: launch gaps that CUDA graphs and asynchronous scheduling do not hide. An assumption (not
    #: calibrated): vLLM's v0.6.0 release notes found CPU work (API server, scheduler, input
    #: preparation) taking most of a Llama-3-8B H100 step before it was overlapped, and Vidur
    #: (Agrawal et al. 2024) models these CPU overheads as profiled per-iteration terms.
    ITERATION_OVERHEAD_S = 1.0e-3
    #: Memory outside weights, activations and KV cache, per GPU: the CUDA context (vLLM's
    #: startup log: "total_gpu_memory (79.15GiB)" on an 80 GiB H100), "non_torch_memory"
    #: (0.35 GiB on one GPU; NCCL and custom all-reduce buffers add to it under TP), cuBLAS
    #: workspaces and the CUDA-graph pool. An assumption of that order, not measured.
    RESERVE_BYTES = 2 * 2**30
    #: Activation peak of vLLM's profiling run over the live tensors we count (residual,
    #: hidden, QKV, gate/up and activation outputs): the caching allocator also holds
    #: transient copies (fp32 norm upcasts, attention workspace). An assumption.
    ACTIVATION_FACTOR = 2.0
    #: vLLM's custom all-reduce handles messages up to 8 MiB inside an NVLink domain
    #: (``vllm/distributed/device_communicators/custom_all_reduce.py``, ``max_size``).
    CUSTOM_ALL_REDUCE_MAX_BYTES = 8 * 2**20

    def __init__(self, model: ModelSpec, cluster: Cluster,
                 efficiency: Efficiency | None = None) -> None:
        self.model, self.cluster = model, cluster
        eff = efficiency or Efficiency.for_cluster(cluster)
        cal = serving_calibration(eff.calibration)
        # the serve_* scales apply to serving only, on top of the shared ones
        self.eff = replace(eff, calibration=cal.model_copy(update={
            "gemm_scale": cal.gemm_scale * cal.serve_gemm_scale,
            "elementwise_scale": cal.elementwise_scale * cal.serve_memory_scale}))
        overhead = self.eff.calibration.serve_iteration_overhead_s
        self.iteration_overhead_s = self.ITERATION_OVERHEAD_S if overhead is None else overhead
        self._counts = param_counts(model)
        self._moe_layer = tuple(model.is_moe_layer(i) for i in range(model.num_layers))
        self._shapes = {kind: layer_shapes(model, kind) for kind in set(self._moe_layer)}
        self._cache: dict[ReplicaLayout, _LayoutCost] = {}
        self._decode_functions: dict[tuple[ReplicaLayout, int], Callable[[int], float]] = {}

    @property
    def attention_backend(self) -> str:
        """The measured attention table prefill is priced with. On Hopper and Blackwell every
        engine runs a warp-specialised kernel of FlashAttention-3's class (Shah et al. 2024:
        up to 740 TFLOP/s bf16 forward on H100, 75 % of peak): vLLM's FA3 build, SGLang's
        FA3 / FlashInfer Hopper kernels, TensorRT-LLM's own FMHA; our H100 table's ``cudnn``
        row (cuDNN SDPA) is that class. Elsewhere FlashAttention-2 (``flash``)."""
        return "cudnn" if self.cluster.gpu.gpu_class in ("hopper", "blackwell") else "flash"

    def _kv_bytes_per_token_layer(self, layout: ReplicaLayout) -> float:
        """KV bytes of one token in one layer on one GPU (serving-formulas 4.1)."""
        m, kv = self.model, _BYTES[layout.kv_precision]
        if m.mla is not None:
            # MLA caches the compressed latent c_KV and the shared RoPE key once per token
            # (DeepSeek-V2 section 2.1.2; DeepSeek-V3 report section 2.1.1), replicated on
            # every TP rank (vLLM's MLA backends keep one head of width r + d_rope).
            return (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) * kv
        # K and V of n_kv heads of d_h; TP splits heads, replicating them when tp > n_kv
        return 2.0 * m.num_kv_heads * m.head_dim * kv / min(layout.tp, m.num_kv_heads)

    def _stage_layers(self, pp: int) -> list[list[int]]:
        """Layer indices of each stage, split evenly (extra layers on the first stages)."""
        return [list(part) for part in np.array_split(np.arange(self.model.num_layers), pp)]

    def _layer_weight_bytes(self, moe_layer: bool, layout: ReplicaLayout) -> float:
        """One layer's weight bytes on one GPU: split linears / tp, the rest replicated."""
        index = self._moe_layer.index(moe_layer)
        total_params = self._counts.per_layer[index][0]
        weight_bytes, matrix_params = 0.0, 0
        for g in self._shapes[moe_layer].gemms:
            # fp8 serving quantizes the linears only; the MoE router stays 16-bit (vLLM
            # DeepSeek gate is a ReplicatedLinear without quant_config)
            size = _BYTES[layout.weights_precision] if g.name != "router" else 2
            weight_bytes += g.n * g.k / (1 if g.split == "none" else layout.tp) * size
            matrix_params += g.n * g.k
        return weight_bytes + (total_params - matrix_params) * 2.0  # norms, biases

    def _stage_weight_bytes(self, layout: ReplicaLayout) -> tuple[float, ...]:
        """Weight bytes per GPU of each stage. Embedding and LM head stay 16-bit in fp8
        serving (vLLM's fp8 method quantizes LinearBase layers only; FP8 checkpoints list
        ``lm_head`` as ignored) and are split over TP by vocabulary (VocabParallelEmbedding)."""
        per_kind = {kind: self._layer_weight_bytes(kind, layout) for kind in self._shapes}
        stages = []
        for s, layers in enumerate(self._stage_layers(layout.pp)):
            total = sum(per_kind[self._moe_layer[i]] for i in layers)
            if s == 0:
                total += self._counts.embedding * 2.0 / layout.tp
            if s == layout.pp - 1:
                total += self._counts.lm_head * 2.0 / layout.tp + self._counts.final_norm * 2.0
            stages.append(total)
        return tuple(stages)

    def kv_bytes_per_token(self, layout: ReplicaLayout) -> float:
        """KV-cache bytes of one token on one GPU of the most loaded pipeline stage."""
        layers = len(self._stage_layers(layout.pp)[0])
        return layers * self._kv_bytes_per_token_layer(layout)

    def weight_bytes_per_gpu(self, layout: ReplicaLayout) -> float:
        """Weight bytes on one GPU of the heaviest stage (all experts; no expert parallel)."""
        return max(self._layout(layout).stage_weight_bytes)

    def activation_bytes_per_gpu(self, layout: ReplicaLayout, knobs: EngineKnobs) -> float:
        """Activation peak of a ``max_num_batched_tokens`` forward plus the sampler's logits.

        Live at the MLP peak per token: residual and hidden (2h), QKV output and the gate/up
        plus activation outputs (3F for SwiGLU) split by TP; the sampler holds fp32 logits and
        probabilities of ``max_num_seqs`` x V (vLLM V1 ``_dummy_sampler_run``)."""
        m, ffn = self.model, self.model.ffn_hidden
        if m.moe is not None:
            ffn = max(ffn, m.moe.top_k * m.moe.expert_ffn_hidden
                      + m.moe.num_shared_experts * m.moe.shared_ffn)
        qkv = (m.num_heads + 2 * m.num_kv_heads) * m.head_dim
        per_token = 2 * m.hidden_size + (qkv + (3 if m.gated_mlp else 2) * ffn) / layout.tp
        forward = knobs.max_num_batched_tokens * per_token * _ACTIVATION_BYTES
        sampler = 2.0 * knobs.max_num_seqs * m.vocab_size * 4
        return self.ACTIVATION_FACTOR * forward + sampler

    def kv_budget_bytes(self, weights: float, layout: ReplicaLayout,
                        knobs: EngineKnobs) -> float:
        """KV-cache bytes one GPU holding ``weights`` gets, as each engine reads its memory
        knob (``knobs.gpu_memory_utilization``, f; 0 when nothing is left):

        * vLLM: f x total memory holds weights, the profiled activation peak and the KV cache
          (``vllm/v1/worker/gpu_worker.py`` ``determine_available_memory``: requested memory
          minus non-KV memory);
        * SGLang: f x total holds weights and the KV pool, activations live outside it
          (``sglang/srt/model_executor/model_runner.py`` ``profile_max_num_token``: free
          memory after loading minus total x (1 - mem_fraction_static));
        * TensorRT-LLM: f x the memory still free once the engine's weights and activation
          workspace are allocated (``KvCacheConfig.free_gpu_memory_fraction``,
          ``cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp``)."""
        total = float(self.cluster.gpu.memory_bytes)
        f = knobs.gpu_memory_utilization
        activations = self.activation_bytes_per_gpu(layout, knobs)
        if knobs.engine == "sglang":
            budget = f * total - weights - self.RESERVE_BYTES
        elif knobs.engine == "trtllm":
            budget = f * (total - weights - activations - self.RESERVE_BYTES)
        else:
            budget = f * total - weights - activations - self.RESERVE_BYTES
        return max(budget, 0.0)

    def kv_capacity_tokens(self, layout: ReplicaLayout, knobs: EngineKnobs) -> int:
        """KV tokens one replica holds, whole blocks (0 when the weights do not fit): the
        most constrained stage's ``kv_budget_bytes`` over its KV bytes per token
        (serving-formulas 4.1)."""
        cost = self._layout(layout)
        tokens = min(self.kv_budget_bytes(weights, layout, knobs) / kv for weights, kv in
                     zip(cost.stage_weight_bytes, cost.stage_kv_bytes_per_token, strict=True))
        return int(tokens // knobs.block_size) * knobs.block_size

    def kv_cache_bytes_per_gpu(self, layout: ReplicaLayout, knobs: EngineKnobs) -> float:
        """KV-cache bytes per GPU of the most loaded stage at the replica's capacity."""
        return self.kv_capacity_tokens(layout, knobs) * self.kv_bytes_per_token(layout)

    def iteration_seconds(self, layout: ReplicaLayout, batch: Batch) -> float:
        """One engine iteration running ``batch`` (StepCost); the total of
        ``iteration_breakdown``."""
        return sum(self._parts(self._layout(layout), batch))

    def iteration_breakdown(self, layout: ReplicaLayout, batch: Batch) -> IterationCost:
        """The named parts of ``iteration_seconds``."""
        return IterationCost(*self._parts(self._layout(layout), batch))

    def prefill_seconds(self, layout: ReplicaLayout, tokens: int) -> float:
        """A whole prompt of ``tokens`` in one iteration, nothing else batched."""
        return self.iteration_seconds(layout, Batch.prompt(tokens))

    def decode_step_seconds(self, layout: ReplicaLayout, batch: int, context: int) -> float:
        """One decode iteration of ``batch`` sequences of ``context`` KV tokens each."""
        return self.iteration_seconds(layout, Batch.decode(batch, batch * context))

    def kv_transfer_seconds(self, prefill: ReplicaLayout, decode: ReplicaLayout,
                            tokens: int) -> float:
        """Move ``tokens`` tokens of KV cache (one copy of every layer, prefill's KV dtype)
        from a prefill to a decode replica over the outermost tier, each GPU of the smaller
        side carrying its share in parallel: latency + bytes / (GPUs x bandwidth). The
        transfer model of DistServe (Zhong et al. 2024, section 4) and Splitwise (Patel et
        al. 2024, KV transfer over InfiniBand), without layer-wise overlap."""
        m = self.model
        one = ReplicaLayout(tp=1, kv_precision=prefill.kv_precision)
        copy_bytes = m.num_layers * self._kv_bytes_per_token_layer(one) * tokens
        tiers = self.cluster.tiers
        fraction = float(self.eff.collective_fraction(len(tiers) - 1, len(tiers)))
        bandwidth = tiers[-1].effective_bandwidth_bytes_per_s * fraction
        links = min(prefill.gpus, decode.gpus)
        return tiers[-1].latency_s + copy_bytes / (links * bandwidth)

    def _parts(self, c: _LayoutCost, b: Batch) -> tuple[float, ...]:
        tokens = b.prefill_tokens + b.decode_seqs
        if tokens <= 0:
            return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        # the LM head runs on each sequence's last position: every decode and every prompt
        # chunk (vLLM V1 gpu_model_runner ``logits_indices = query_start_loc[1:] - 1``)
        emitting = b.decode_seqs + b.prefill_seqs
        attention = 0.0
        if b.prefill_tokens > 0:
            # each chunk's causal pairs, summed (FlashAttention varlen runs them apart); the
            # kernel's efficiency read at the square causal block of the mean chunk's work
            pairs = max(b.prefill_pairs, 1)
            seq = min(math.sqrt(2.0 * pairs / max(b.prefill_seqs, 1)), _GRID_LIST[-1])
            attention += (pairs * c.prefill_flops_per_pair
                          * _interp(c.attention_s_per_flop, seq))
        if b.decode_seqs > 0 and b.decode_context_tokens > 0:
            attention += self._decode_attention(c, b.decode_seqs, b.decode_context_tokens)
        return (_interp(c.gemm, tokens), _interp(c.lm_head, emitting), attention,
                _interp(c.elementwise, tokens),
                _interp(c.communication, tokens) + _interp(c.logits_gather, emitting),
                self.iteration_overhead_s)

    def _decode_attention(self, c: _LayoutCost, seqs: int, context: int) -> float:
        """Decode attention reads every cached token once; its compute counts only where it
        takes longer (serving-formulas 4.3, roofline)."""
        read_s = context * c.kv_read_bytes_per_token / c.memory_bytes_per_s
        seq = min(max(context / seqs, 1.0), _GRID_LIST[-1])
        compute_s = context * c.decode_flops_per_pair * _interp(c.attention_s_per_flop, seq)
        return max(read_s, compute_s)

    def decode_seconds(self, layout: ReplicaLayout, seqs: int) -> Callable[[int], float]:
        """``iteration_seconds(layout, Batch.decode(seqs, context))`` as a function of the
        summed ``context`` (the simulator's decode-only runs): the parts that do not depend
        on it are evaluated once, the total is summed in the same order, so the values are
        the same to the last bit."""
        key = (layout, seqs)
        function = self._decode_functions.get(key)
        if function is not None:
            return function
        c = self._layout(layout)
        gemm, lm_head, _, elementwise, communication, overhead = self._parts(
            c, Batch.decode(seqs, 0))
        attention = self._decode_attention

        def function(context: int) -> float:
            return gemm + lm_head + attention(c, seqs, context) + elementwise + communication \
                + overhead

        self._decode_functions[key] = function
        return function

    def _layout(self, layout: ReplicaLayout) -> _LayoutCost:
        cost = self._cache.get(layout)
        if cost is None:
            cost = self._cache[layout] = self._build(layout)
        return cost

    def _gemm_row(self, g: Gemm, layout: ReplicaLayout, m: np.ndarray) -> np.ndarray:
        """Seconds of GEMM ``g`` over token counts ``m``: the profile's time, never below the
        time to read its weights and activations from HBM (roofline, serving-formulas 4.3)."""
        gpu, bandwidth = self.cluster.gpu, self.eff.memory_bytes_per_s
        # fp8 weights run on fp8 tensor cores where the GPU has them (W8A8), else as weight-only
        # fp8 at the bf16 rate (vLLM's Marlin fallback); the router stays 16-bit
        fp8 = layout.weights_precision == "fp8" and g.name != "router"
        peak = gpu.peak("fp8" if fp8 and "fp8" in gpu.peak_flops else "bf16")
        size = 1 if fp8 else 2
        moe = self.model.moe
        if not g.expert:
            n, k = _local_dims(g, g.n, g.k, layout.tp)
            memory = (n * k * size + m * (n + k) * _ACTIVATION_BYTES) / bandwidth
            return np.maximum(self.eff.gemm_seconds(m, n, k, peak), memory)
        # T x top_k routed tokens spread uniformly: E (1 - (1 - 1/E)^(T k)) distinct experts
        # are read (expected occupancy, at most min(E, T k)), each running its share of tokens
        n, k = _local_dims(g, g.n / moe.num_experts, g.k, layout.tp)
        routed = m * moe.top_k
        active = moe.num_experts * -np.expm1(routed * np.log1p(-1.0 / moe.num_experts))
        per_expert = routed / active
        memory = (n * k * size + per_expert * (n + k) * _ACTIVATION_BYTES) / bandwidth
        return active * np.maximum(self.eff.gemm_seconds(per_expert, n, k, peak), memory)

    def _elementwise_bytes_per_token(self, moe_layer: bool, tp: int) -> float:
        """HBM bytes per token of one layer's memory-bound kernels on one GPU: two fused
        add + RMSNorm passes (read x and residual, write both: 8h, replicated over TP), RoPE
        on q and k, the gated activation (read 2F, write F), MoE token permute/unpermute."""
        m = self.model
        rope_dim = m.mla.qk_rope_head_dim if m.mla is not None else m.head_dim
        elements = 8.0 * m.hidden_size + 2.0 * (m.num_heads + m.num_kv_heads) * rope_dim / tp
        per_f = 3 if m.gated_mlp else 2
        for g in self._shapes[moe_layer].gemms:
            if g.mlp_down:
                elements += per_f * g.k * (m.moe.top_k if g.expert else 1) / tp
                if g.expert:
                    elements += 4.0 * m.moe.top_k * m.hidden_size
        return elements * _ACTIVATION_BYTES

    def _all_reduce_row(self, message: np.ndarray, tp: int) -> np.ndarray:
        """TP all-reduce: NCCL's ring (``collectives.all_reduce_time``), or inside an NVLink
        domain for messages up to 8 MiB vLLM's custom one-shot (two syncs, read n-1 peer
        buffers) or two-shot (four syncs, reduce-scatter + all-gather) kernel, the faster
        (``csrc/custom_all_reduce.cuh``)."""
        ring = collectives.all_reduce_time(self.cluster, message, tp, 1, self.eff)
        inner = self.cluster.tiers[0]
        if tp > inner.domain_size or tp not in (2, 4, 6, 8):  # its _SUPPORTED_WORLD_SIZES
            return ring + self.eff.calibration.serve_collective_latency_s
        bandwidth = inner.effective_bandwidth_bytes_per_s * float(
            self.eff.collective_fraction(0, len(self.cluster.tiers)))
        one_shot = 2 * inner.latency_s + (tp - 1) * message / bandwidth
        two_shot = 4 * inner.latency_s + 2 * (tp - 1) / tp * message / bandwidth
        custom = np.minimum(one_shot, two_shot)
        # plus a calibrated fixed cost per all-reduce (launch and synchronisation)
        extra = self.eff.calibration.serve_collective_latency_s
        return np.where(message <= self.CUSTOM_ALL_REDUCE_MAX_BYTES,
                        np.minimum(custom, ring), ring) + extra

    def _token_rows(self, layout: ReplicaLayout) -> tuple[np.ndarray, ...]:
        """GEMM, element-wise and communication seconds of all layers over T tokens."""
        m, tp = self.model, layout.tp
        gemm, elementwise = np.zeros_like(_GRID), np.zeros_like(_GRID)
        for kind in self._shapes:
            count = self._moe_layer.count(kind)
            for g in self._shapes[kind].gemms:
                gemm += count * self._gemm_row(g, layout, _GRID)
            elementwise += (count * self._elementwise_bytes_per_token(kind, tp) * _GRID
                            / self.eff.memory_bytes_per_s)
        # two all-reduces of T x h activations per layer (Megatron TP, Shoeybi et al. 2019);
        # pp - 1 sends of the same tensor between consecutive stages, tp ranks apart
        message = _GRID * m.hidden_size * _ACTIVATION_BYTES
        communication = 2 * m.num_layers * (self._all_reduce_row(message, tp) if tp > 1 else 0.0)
        if layout.pp > 1:
            communication = communication + (layout.pp - 1) * collectives.p2p_time(
                self.cluster, message, tp, self.eff)
        return gemm, elementwise, communication

    def _build(self, layout: ReplicaLayout) -> _LayoutCost:
        m, tp = self.model, layout.tp
        gemm, elementwise, communication = self._token_rows(layout)
        head = Gemm("lm_head", padded_vocab(m, tp) / tp, m.hidden_size, "none")  # 16-bit
        lm_head = self._gemm_row(head, layout.model_copy(update={"weights_precision": "bf16"}),
                                 _GRID)
        gather = 0.0
        if tp > 1:  # logits gathered to the driver rank (vLLM LogitsProcessor)
            gather = collectives.all_gather_time(self.cluster, _GRID * m.vocab_size * 2, tp, 1,
                                                 self.eff)
        shapes = self._shapes[self._moe_layer[0]]
        heads = m.num_heads / tp
        decode_dims = prefill_dims = shapes.attn_qk_dim + shapes.attn_v_dim
        if m.mla is not None:  # absorbed MLA decode: q.k over r + d_rope, a.v over r
            decode_dims = 2 * m.mla.kv_lora_rank + m.mla.qk_rope_head_dim
        # QK^T and AV: 2 FLOPs per multiply-add per pair (FlashAttention-2, Dao 2023, 4.1)
        per_pair = 2.0 * heads * m.num_layers
        # at the rates' own head dim: the serving factors were fitted on those rates as measured
        per_flop, _ = self.eff.attention_seconds(np.ones_like(_GRID), np.full_like(_GRID, heads),
                                                 _GRID, self.attention_backend,
                                                 head_dim=self.eff.attention_head_dim)
        kv_layer = self._kv_bytes_per_token_layer(layout)
        return _LayoutCost(
            stage_weight_bytes=self._stage_weight_bytes(layout),
            stage_kv_bytes_per_token=tuple(len(layers) * kv_layer
                                           for layers in self._stage_layers(layout.pp)),
            kv_read_bytes_per_token=m.num_layers * kv_layer,
            memory_bytes_per_s=self.eff.memory_bytes_per_s,
            prefill_flops_per_pair=per_pair * prefill_dims,
            decode_flops_per_pair=per_pair * decode_dims,
            gemm=_monotone(gemm), elementwise=elementwise.tolist(),
            communication=_monotone(communication), lm_head=_monotone(lm_head),
            logits_gather=_monotone(gather),
            attention_s_per_flop=np.asarray(per_flop, dtype=float).tolist())
