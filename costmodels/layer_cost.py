"""The one per-layer cost function of training: embedding, dense and MoE layers, MTP, LM head.

``model_costs`` prices every kind of layer a model has, for a batch of configurations, per
micro-batch on one GPU: time terms (forward, backward, recompute, exposed TP/CP/EP traffic),
kept activation bytes per recompute mode, and the parameters one GPU holds. Enumeration
(``costmodels/training.py``), the stage DP (``planners/stage_costs.py``) and the stage ILP
(``planners/ilp_stages.py``) all read it, so no two planners price a layer differently.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from sysplan.costmodels import collectives as coll
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.compute import LayerTime, gemm_times, layer_forward, linear_seconds
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layers import LayerShapes, layer_shapes
from sysplan.costmodels.memory import (
    activation_bytes_per_token,
    element_bytes,
    linear_dtype,
    op_checkpoint_bytes_per_token,
)
from sysplan.costmodels.moe import MoECost, moe_layer_cost
from sysplan.hardware.types import Cluster
from sysplan.models.counting import padded_vocab
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

#: Recompute modes, in the row order of every per-mode array (one definition for all planners).
RECOMPUTE_MODES = ("none", "selective", "full")
#: Per-micro-batch terms of a layer; the first seven add up to its time.
TERMS = ("gemm", "attn", "elem", "recompute", "tp", "cp", "ep")


def balanced_stage_layers(num_layers: int, pp: int) -> tuple[int, ...]:
    """Layers per stage, as even as possible, extra layers on the middle stages."""
    base, extra = divmod(num_layers, pp)
    order = sorted(range(pp), key=lambda i: (i in (0, pp - 1), i))
    counts = [base] * pp
    for i in order[:extra]:
        counts[i] += 1
    return tuple(counts)


def even_chunks(stage_layers, vpp: int) -> list[int]:
    """Layers of each model chunk in schedule order when every rank's layers split evenly
    over its ``vpp`` chunks (earlier chunks take the extra layer): chunk ``v * pp + r`` is
    virtual stage ``v`` of rank ``r`` (Megatron's layout order, torchtitan's stage order)."""
    pp = len(stage_layers)
    split = [[n // vpp + (1 if v < n % vpp else 0) for v in range(vpp)] for n in stage_layers]
    return [split[r][v] for v in range(vpp) for r in range(pp)]


@dataclass(frozen=True)
class Layout:
    """The parallel degrees a layer's cost depends on, float arrays over configurations."""

    tp: np.ndarray
    cp: np.ndarray
    ep: np.ndarray
    etp: np.ndarray
    sp: np.ndarray
    tokens: np.ndarray  # local tokens per micro-batch: micro-batch x seq / cp

    @classmethod
    def of(cls, c: Candidates, job: TrainJob) -> Layout:
        """The layout arrays of a batch of configurations."""
        f = {k: getattr(c, k).astype(float) for k in ("tp", "cp", "ep", "etp", "sp", "mb")}
        return cls(f["tp"], f["cp"], f["ep"], f["etp"], f["sp"], f["mb"] * job.seq_len / f["cp"])


@dataclass(frozen=True)
class LayerCost:
    """One layer of one kind on one GPU per micro-batch (arrays over configurations)."""

    kind: str  # "dense" or "moe"
    time: LayerTime  # forward compute
    comm: dict[str, np.ndarray]  # "tp", "cp", "ep": exposed seconds, forward + backward
    dense_params: np.ndarray  # parameters on one GPU (TP-split + replicated + norms)
    expert_params: np.ndarray  # routed-expert parameters on one GPU (/ EP x ETP)
    activation_bytes: np.ndarray  # kept for backward per micro-batch, no recompute
    selective_bytes: np.ndarray  # kept with selective recompute
    input_bytes: np.ndarray  # kept with full recompute: the layer input
    selective_s: np.ndarray  # forward seconds selective recompute reruns per micro-batch
    selective_flops: np.ndarray  # and their FLOPs
    moe: MoECost | None = None  # what the MoE block costs, for the explanation

    def terms(self, full, selective) -> dict[str, np.ndarray]:
        """Named seconds per micro-batch (forward + backward (2x) + recompute), with ``full``
        the fully recomputed share and ``selective`` a 0/1 flag; plus "fwd" and "bwd"."""
        t, full = self.time, np.asarray(full, float)
        selective = np.asarray(selective, float)
        return {
            "gemm": t.gemm_s + t.gemm_bwd_s,
            "attn": t.attention_s + t.attention_bwd_s,
            # backward touches each tensor about twice; plus the exposed per-op cost
            "elem": 3.0 * t.elementwise_s + t.overhead_s + t.overhead_bwd_s,
            # full recompute reruns the forward; selective what its policy does not keep
            "recompute": full * t.total_s + selective * self.selective_s,
            # recompute repeats the forward half of TP and EP traffic (Korthikanti 2022, 4.2.2)
            "tp": self.comm["tp"] * (1.0 + 0.5 * full),
            "cp": self.comm["cp"],
            "ep": self.comm["ep"] * (1.0 + 0.5 * full),
            "fwd": t.total_s,
            "bwd": t.gemm_bwd_s + t.attention_bwd_s + 2.0 * t.elementwise_s + t.overhead_bwd_s,
        }

    def seconds(self, full, selective) -> np.ndarray:
        """Seconds per micro-batch: the sum of ``TERMS``."""
        terms = self.terms(full, selective)
        return sum(terms[k] for k in TERMS)

    @property
    def forward_s(self) -> np.ndarray:
        """Forward seconds with the forward half of the layer's traffic."""
        return self.time.total_s + 0.5 * (self.comm["tp"] + self.comm["cp"] + self.comm["ep"])

    def kept_bytes(self, mode: str) -> np.ndarray:
        """Activation bytes kept per micro-batch under recompute ``mode``."""
        return {"none": self.activation_bytes, "selective": self.selective_bytes,
                "full": self.input_bytes}[mode]

    def recompute_flops(self, full, selective) -> np.ndarray:
        """Forward FLOPs recomputed per micro-batch (for HFU)."""
        return full * self.time.flops + selective * self.selective_flops


@dataclass(frozen=True)
class EndCost:
    """Work outside the transformer layers on one stage (embedding, LM head, MTP modules)."""

    seconds: np.ndarray  # per micro-batch, forward + backward
    dense_params: np.ndarray
    expert_params: np.ndarray
    activation_bytes: np.ndarray  # per micro-batch in flight (MTP: its layer, no recompute)
    terms: dict[str, np.ndarray]  # the named parts of ``seconds`` (TERMS keys + "lm_head")


@dataclass(frozen=True)
class ModelCosts:
    """Every layer kind of a model, and the sequence of kinds in layer order."""

    kinds: dict[str, LayerCost]
    sequence: tuple[str, ...]  # kind of layer i
    embedding: EndCost  # first stage
    head: EndCost  # last stage: final norm, LM head, loss
    mtp: EndCost  # last stage: DeepSeek-V3 multi-token-prediction modules (zero when none)
    logits_bytes: np.ndarray  # the loss's peak buffers for one micro-batch on the last stage

    def stage_counts(self, stage_layers) -> list[dict[str, int]]:
        """Layers of each kind per stage of a contiguous split."""
        bounds = np.cumsum([0, *stage_layers])
        return [{k: self.sequence[a:b].count(k) for k in self.kinds}
                for a, b in itertools.pairwise(bounds)]


def layer_cost(model: ModelSpec, job: TrainJob, cluster: Cluster, eff: Efficiency,
               lay: Layout, moe_layer: bool) -> LayerCost:
    """Price one dense (``moe_layer=False``) or MoE layer of ``model`` on layout ``lay``."""
    shapes = layer_shapes(model, moe_layer)
    fwd = layer_forward(model, job, eff, shapes, tokens=lay.tokens, tp=lay.tp, etp=lay.etp,
                        ep=lay.ep, sp=lay.sp, cp=lay.cp, imbalance=job.moe_routed_imbalance)
    moe = None
    comm = _layer_comm(model, job, cluster, eff, shapes, fwd, lay)
    if moe_layer and model.moe is not None:
        moe = moe_layer_cost(model, job, cluster, eff, lay)
        fwd = moe.add_to(fwd)
        comm["ep"] = moe.dispatch_s
        if job.ep_comm_overlap:
            # batch-level overlap (Megatron-Core v0.14 MoE README, --overlap-moe-expert-parallel-
            # comm): the forward of one micro-batch runs beside the backward of another, so a
            # layer's all-to-alls hide behind the other's compute of that layer (forward +
            # backward) and slow it by the SMs they take; the warm-up and cool-down micro-batches
            # that have no partner are not modelled apart
            compute = fwd.total_s + fwd.gemm_bwd_s + fwd.attention_bwd_s + 2.0 * fwd.elementwise_s
            hidden = np.minimum(comm["ep"], compute)
            comm["ep"] = comm["ep"] - hidden + coll.COLLECTIVE_COMPUTE_SHARE * hidden
    split, replicated, routed = layer_params(shapes, model.hidden_size)
    act = [activation_bytes_per_token(model, job, shapes, lay.tp, lay.sp, lay.etp, s)
           * lay.tokens for s in (False, True)]
    selective_s, selective_flops = module_recompute(model, job, eff, shapes, fwd, moe, lay)
    if job.selective_policy == "op" and moe is None:  # torchtitan's Llama: dense layers
        kept, share = op_checkpoint_bytes_per_token(model, shapes, lay.tp, lay.sp,
                                                    job.precision)
        act[1] = kept * lay.tokens
        # it reruns the unsaved matmuls and every element-wise op
        selective_s = share * fwd.gemm_s + fwd.elementwise_s
        selective_flops = share * (fwd.flops - fwd.attention_flops)
    if moe is not None:
        act = [a + moe.extra_activation_bytes for a in act]
    # full recompute keeps only the layer input, 2 b s h (/ t with SP) (Korthikanti 2022, T. 2)
    inputs = (element_bytes(job.precision) * model.hidden_size * lay.tokens
              / np.where(lay.sp > 0, lay.tp, 1.0))
    return LayerCost("moe" if moe_layer and model.moe else "dense", fwd, comm,
                     split / lay.tp + replicated, routed / (lay.ep * lay.etp) + 0.0 * lay.tp,
                     act[0], act[1], inputs, selective_s + 0.0 * lay.tp,
                     selective_flops + 0.0 * lay.tp, moe)


def module_recompute(model: ModelSpec, job: TrainJob, eff: Efficiency, shapes: LayerShapes,
                     fwd: LayerTime, moe: MoECost | None, lay: Layout):
    """(seconds, FLOPs) per micro-batch that Megatron's selective recompute reruns in
    backward: each of ``job.recompute_modules`` (--recompute-modules) reruns its forward:
    core_attn the attention core (Korthikanti et al. 2022, sections 4.2-5), layernorm the two
    norms (read h, write h each), mla_up_proj MLA's q and kv up-projections (DeepSeek-V3
    report eq. 2-3, 7), moe_act the routed experts' activation, mlp a dense layer's MLP
    GEMMs and activation. What each keeps less is ``memory.activation_bytes_per_token``."""
    modules = set(job.recompute_modules)
    seconds, flops = np.zeros_like(lay.tokens), np.zeros_like(lay.tokens)
    if "core_attn" in modules:
        seconds, flops = seconds + fwd.attention_s, flops + fwd.attention_flops
    rerun = {"mla_up_proj": ("q_up", "kv_up"), "mlp": ("mlp_up", "mlp_down")}
    names = {n for m in modules & rerun.keys() for n in rerun[m]}
    for g in shapes.gemms:
        if g.name in names:
            forward, _, gemm_flops = gemm_times(eff, job, g, lay.tokens, lay.tp)
            seconds, flops = seconds + forward, flops + gemm_flops
    passes = 0.0  # elements read + written per local token
    if "layernorm" in modules:
        passes += 2.0 * 2.0 * model.hidden_size * np.where(lay.sp > 0, 1.0 / lay.tp, 1.0)
    if "mlp" in modules and moe is None:
        f = next((g.k for g in shapes.gemms if g.name == "mlp_down"), 0)
        passes += (3.0 if model.gated_mlp else 2.0) * f / lay.tp  # SwiGLU: read 2f, write f
    seconds = seconds + element_bytes(job.precision) * lay.tokens * passes / eff.memory_bytes_per_s
    if "moe_act" in modules and moe is not None:
        seconds = seconds + moe.activation_s
    return seconds, flops


def layer_params(shapes: LayerShapes, h: int) -> tuple[float, float, float]:
    """(TP-split, replicated, routed-expert) parameters of one layer (+ its two norms)."""
    split = sum(g.n * g.k for g in shapes.gemms if g.split == "tp")
    replicated = sum(g.n * g.k for g in shapes.gemms if g.split == "none") + 2 * h
    return float(split), float(replicated), float(shapes.params_expert)


def _layer_comm(model, job, cluster, eff, shapes, fwd: LayerTime, lay: Layout):
    """Exposed TP and CP seconds of one layer per micro-batch (forward + backward); EP is
    the MoE block's (``costmodels/moe.py``)."""
    tp, cp = lay.tp, lay.cp
    act_bytes = lay.tokens * model.hidden_size * element_bytes(job.precision)
    # 2 all-reduces forward + 2 backward per layer (or AG + RS with SP, same volume):
    # Korthikanti et al. 2022, section 4.2.2 / Narayanan et al. 2021, section 3.3
    tp_total = 4.0 * np.where(tp > 1, tp_pair_seconds(cluster, eff, act_bytes, lay), 0.0)
    if job.tp_comm_overlap:
        # chunked overlap with the layer's GEMMs (TE userbuffers / AsyncTP): one chunk of
        # the communication stays exposed, the rest hides behind GEMM time (3 x fwd GEMMs)
        hidden = np.minimum(tp_total * (tp - 1.0) / tp, 3.0 * fwd.gemm_s)
        tp_total = tp_total - hidden
    if job.context_parallel_comm == "a2a":
        cp_total = _ulysses_seconds(model, job, cluster, eff, shapes, lay)
    elif job.context_parallel_comm == "allgather":
        cp_total = _allgather_cp_seconds(cluster, eff, shapes, lay, job)
    else:
        cp_total = _ring_seconds(cluster, eff, shapes, fwd, lay, job)
    cp_total = np.where(cp > 1, cp_total, 0.0)
    return {"tp": tp_total, "cp": cp_total, "ep": np.zeros_like(tp)}


#: Fixed seconds of one ring-attention step beyond the fabric's latency: the step launches
#: the attention tile, the send and receive and the output correction (online-softmax
#: rescale) as separate kernels and waits on the receive (TE ``AttnFuncWithCPAndKVP2P``);
#: about 5 us per launch (CUDA kernel launch overhead) x 4. Uncalibrated.
RING_STEP_OVERHEAD_S = 20e-6


def _ring_seconds(cluster, eff, shapes, fwd: LayerTime, lay: Layout, job) -> np.ndarray:
    """Exposed ring-attention (p2p CP) seconds of one layer, forward + backward.

    Each of the c - 1 steps sends the next rank one KV block of 2 b (s/c) g d_h bytes / t
    while it computes one attention tile, 1/c of the local attention; a step hides its send
    only when the tile outlasts it, and every step pays the tier's latency and its kernel
    overhead (training-formulas 4.8; Liu et al. 2023, Ring Attention, section 3). Backward
    sends KV and dKV (2x the bytes) behind 2.5x the tile (FlashAttention-2 backward). The
    hidden sends slow the tiles they overlap (``collectives.COLLECTIVE_COMPUTE_SHARE``).
    """
    tp, cp = lay.tp, lay.cp
    kv_bytes = lay.tokens * shapes.kv_bytes_dims * element_bytes(job.precision) / tp
    # one step's send: the ring all-gather of the c blocks is c - 1 such steps
    send = coll.all_gather_time(cluster, kv_bytes * cp, cp, tp, eff) / np.maximum(cp - 1.0, 1.0)
    steps = cp - 1.0
    total = np.zeros_like(send)
    for factor, tile in ((1.0, fwd.attention_s / cp), (2.0, fwd.attention_bwd_s / cp)):
        step = factor * send + RING_STEP_OVERHEAD_S
        hidden = np.minimum(step, tile)
        total = total + steps * (step - hidden + coll.COLLECTIVE_COMPUTE_SHARE * hidden)
    return total


def _allgather_cp_seconds(cluster, eff, shapes, lay: Layout, job) -> np.ndarray:
    """All-gather CP of one layer, forward + backward: every rank gathers the c shards of
    keys and values (2 b s g d_h / t bytes in all) before its attention and reduce-scatters
    their gradients after the backward; not overlapped with the attention (Megatron
    --cp-comm-type allgather, TE AttnFuncWithCPAndKVAllGather; the executor's cp_gather)."""
    whole = lay.tokens * lay.cp * shapes.kv_bytes_dims * element_bytes(job.precision) / lay.tp
    return (coll.all_gather_time(cluster, whole, lay.cp, lay.tp, eff)
            + coll.reduce_scatter_time(cluster, whole, lay.cp, lay.tp, eff))


def _ulysses_seconds(model, job, cluster, eff, shapes, lay: Layout) -> np.ndarray:
    """All-to-all CP (DeepSpeed-Ulysses, Jacobs et al. 2023, section 3.1): Q, K, V and the
    attention output are re-split between sequence and heads, forward and again backward;
    each all-to-all moves (c-1)/c of the local tensor and is not overlapped."""
    heads = model.num_heads
    features = heads * shapes.attn_qk_dim + shapes.kv_bytes_dims + heads * shapes.attn_v_dim
    nbytes = lay.tokens * features * element_bytes(job.precision) / lay.tp
    return 2.0 * coll.all_to_all_time(cluster, nbytes, lay.cp, lay.tp, eff)


def lm_head_seconds(model, eff, tokens, tp, job: TrainJob) -> np.ndarray:
    """LM head GEMMs (fwd, dgrad, wgrad) and the cross-entropy over the padded vocab."""
    vocab = padded_vocab(model, tp)
    # logits = 2 b s h V FLOPs (Narayanan 2021): a [tokens, h] x [h, V / t] GEMM
    forward, backward = linear_seconds(eff, tokens, vocab / tp, model.hidden_size,
                                       eff.gpu.peak(linear_dtype(job.precision, head=True)))
    # PyTorch: softmax + loss + its gradient touch the fp32 logits about three times (read
    # and write); TE's fused kernel reads the 16-bit logits once and writes the gradient over
    # them (transformer_engine/pytorch/triton/cross_entropy.py, cross_entropy_forward)
    loss_bytes = (2.0 * 2.0 if job.fused_loss else 3.0 * 2.0 * 4.0) * tokens * vocab / tp
    return forward + backward + loss_bytes / eff.memory_bytes_per_s


def tp_pair_seconds(cluster: Cluster, eff: Efficiency, act_bytes, lay: Layout) -> np.ndarray:
    """One TP all-reduce of ``act_bytes``, or with sequence parallelism the all-gather and
    reduce-scatter that replace it (Korthikanti et al. 2022, section 4.2.2): the same ring
    volume (Thakur et al. 2005), priced apart so a measured table prices each op it has (gloo
    has no reduce-scatter: it all-reduces and slices)."""
    tp = lay.tp
    pair = (coll.all_gather_time(cluster, act_bytes, tp, 1, eff)
            + coll.reduce_scatter_time(cluster, act_bytes, tp, 1, eff))
    return np.where(lay.sp > 0, pair, coll.all_reduce_time(cluster, act_bytes, tp, 1, eff))


def end_tp_seconds(model: ModelSpec, job: TrainJob, cluster: Cluster, eff: Efficiency,
                   lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    """TP collectives outside the layers per micro-batch, (embedding, LM head + loss).

    The vocab-parallel embedding's output is all-reduced in forward (with SP reduce-scattered,
    and all-gathered back in backward); the LM head's input gradient is all-reduced in
    backward (with SP: all-gather forward, reduce-scatter backward): one all-reduce volume of
    b s h at each end (Shoeybi et al. 2019, section 3; Korthikanti et al. 2022, section 4.2.2).
    The vocab-parallel cross-entropy all-reduces three fp32 values per token: the logits' max,
    the sum of exponentials and the target's logit (Megatron _VocabParallelCrossEntropy)."""
    tp = lay.tp
    act_bytes = lay.tokens * model.hidden_size * element_bytes(job.precision)
    end = tp_pair_seconds(cluster, eff, act_bytes, lay)
    loss = 3.0 * coll.all_reduce_time(cluster, 4.0 * lay.tokens, tp, 1, eff)
    return np.where(tp > 1, end, 0.0), np.where(tp > 1, end + loss, 0.0)


#: Bytes per logit alive at the loss's peak: PyTorch's cross_entropy on ``logits.float()``
#: (torchtitan ``cross_entropy_loss``) saves fp32 log-probabilities (4); its backward holds
#: them with the fp32 gradient from nll_loss (4) and writes the fp32 input gradient (4).
#: The forward moment (bf16 logits 2 + fp32 copy 4 + log-probs 4 = 10) is lower.
LOSS_BYTES_PER_LOGIT = 12.0
#: Transformer Engine's fused cross-entropy (Megatron --cross-entropy-fusion-impl te) computes
#: the gradient in forward and stores it over the 16-bit logits it saves for backward
#: (transformer_engine/pytorch/cross_entropy.py, CrossEntropyFunction.forward): 2 bytes.
FUSED_LOSS_BYTES_PER_LOGIT = 2.0


def loss_peak_bytes(tokens, vocab_per_gpu, fused_loss: bool = False):
    """Bytes the loss holds at its peak (the start of backward) for ``tokens`` local tokens
    over ``vocab_per_gpu`` logits (vocab / TP with a vocab-parallel loss)."""
    per_logit = FUSED_LOSS_BYTES_PER_LOGIT if fused_loss else LOSS_BYTES_PER_LOGIT
    return per_logit * tokens * vocab_per_gpu


def model_costs(model: ModelSpec, job: TrainJob, cluster: Cluster, c: Candidates,
                efficiency: Efficiency | None = None) -> ModelCosts:
    """Price every layer kind of ``model`` for the configurations ``c``: the public per-layer
    cost function enumeration, the stage DP and the stage ILP read."""
    eff = efficiency or Efficiency.for_cluster(cluster)
    lay = Layout.of(c, job)
    sequence = tuple("moe" if model.is_moe_layer(i) else "dense" for i in range(model.num_layers))
    kinds = {k: layer_cost(model, job, cluster, eff, lay, k == "moe") for k in dict.fromkeys(sequence)}
    h, tp, zero = model.hidden_size, lay.tp, np.zeros_like(lay.tp)
    vocab = padded_vocab(model, tp)
    embedding_params = vocab * h / tp + (model.max_seq_len * h if model.learned_positions else 0.0)
    embed_tp, head_tp = end_tp_seconds(model, job, cluster, eff, lay)
    embedding = EndCost(embed_tp, embedding_params, zero, zero, {"tp": embed_tp})
    head_s = lm_head_seconds(model, eff, lay.tokens, tp, job)
    head_params = np.where(model.tied_embeddings, 0.0, vocab * h / tp) + h  # + final norm
    head = EndCost(head_s + head_tp, head_params, zero, zero, {"lm_head": head_s, "tp": head_tp})
    logits = loss_peak_bytes(lay.tokens, vocab / tp, job.fused_loss)
    return ModelCosts(kinds, sequence, embedding, head,
                      _mtp(model, job, cluster, eff, lay, head_s), logits)


def _mtp(model, job, cluster, eff, lay: Layout, head_s) -> EndCost:
    """DeepSeek-V3 multi-token prediction (report section 2.2, eq. 21-24): per module one
    transformer layer (MoE when the model's deep layers are), eh_proj (2h -> h), three norms,
    and another pass through the shared LM head and loss. Priced without recompute."""
    zero = np.zeros_like(lay.tp)
    if not model.mtp_layers:
        return EndCost(zero, zero, zero, zero, {})
    block = layer_cost(model, job, cluster, eff, lay, model.is_moe_layer(model.num_layers))
    h, n = model.hidden_size, float(model.mtp_layers)
    proj_f, proj_b = linear_seconds(eff, lay.tokens, h / lay.tp, 2 * h,
                                    eff.gpu.peak(linear_dtype(job.precision)))
    terms = {k: n * v for k, v in block.terms(0.0, 0.0).items() if k in TERMS}
    terms["gemm"] = terms["gemm"] + n * (proj_f + proj_b)
    terms["lm_head"] = n * head_s
    seconds = sum(terms.values())
    # the projection's input (2h) is kept beside the block's activations
    act = n * (block.activation_bytes + 2.0 * h * lay.tokens * element_bytes(job.precision))
    dense = n * (block.dense_params + 2.0 * h * h / lay.tp + 3.0 * h)
    return EndCost(seconds, dense, n * block.expert_params, act, terms)
