"""The training job: sequence length, global batch, precision and runtime behaviour."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from pydantic import Field

from sysplan.core.errors import InputError
from sysplan.core.names import (
    CUDA_GRAPH_CHOICES,
    MOE_DISPATCHER_CHOICES,
    RECOMPUTE_MODULE_CHOICES,
)
from sysplan.core.types import Frozen

if TYPE_CHECKING:
    from sysplan.hardware.types import GPU
    from sysplan.models.spec import ModelSpec

Precision = Literal["bf16", "fp16", "fp8", "fp32"]


#: Megatron ``--moe-token-dispatcher-type`` values sysplan prices, and "auto" (the cheapest)
MoeDispatcher = Literal["auto", "alltoall", "allgather", "flex"]
#: The dispatchers, in the order of ``costmodels.moe.MoECost.dispatcher`` codes
MOE_DISPATCHERS: tuple[str, ...] = get_args(MoeDispatcher)[1:]
#: CUDA-graph capture of the training step: none (eager), scoped (Transformer Engine graphs of
#: attention and the MoE router and preprocessing, or of each dense layer) or full (the whole
#: iteration: static shapes only)
CudaGraphs = Literal["none", "scoped", "full"]
assert get_args(CudaGraphs) == CUDA_GRAPH_CHOICES, "core/names.py lists the CLI's choices"
assert get_args(MoeDispatcher) == MOE_DISPATCHER_CHOICES, "core/names.py lists the CLI's choices"
#: What Megatron's selective recompute (--recompute-granularity selective --recompute-modules)
#: reruns in backward instead of keeping: the attention core, the two norms, MLA's query and
#: key/value up-projections, the routed experts' activation, or a dense layer's whole MLP
RecomputeModule = Literal["core_attn", "layernorm", "mla_up_proj", "moe_act", "mlp"]
assert get_args(RecomputeModule) == RECOMPUTE_MODULE_CHOICES, "core/names.py lists them too"


class TrainJob(Frozen):
    """One training job's shape, independent of how it is parallelised."""

    seq_len: int = Field(gt=0, description="Tokens per sequence.")
    global_batch: int = Field(gt=0, description="Sequences per optimizer step.")
    precision: Precision = Field(
        default="bf16", description="Compute precision of the linear layers (fp8: FP8 GEMMs; "
        "fp32: full-precision training, e.g. the reference executor)."
    )
    optimizer: Literal["adam"] = Field(default="adam", description="Mixed-precision Adam(W).")
    overlap_grad_reduce: bool = Field(
        default=True, description="DP gradient reduction overlapped with backward "
        "(Megatron --overlap-grad-reduce, torch DDP/FSDP buckets)."
    )
    overlap_param_gather: bool = Field(
        default=True, description="ZeRO/FSDP parameter all-gather overlapped with compute."
    )
    tp_comm_overlap: bool = Field(
        default=False, description="TP collectives overlapped with GEMMs (Megatron "
        "--tp-comm-overlap / TE userbuffers, torchtitan AsyncTP)."
    )
    flash_attention: bool = Field(
        default=True, description="Fused attention (no s x s score tensors kept)."
    )
    attention_backend: Literal["flash", "cudnn"] = Field(
        default="flash", description="Fused-attention kernel family whose efficiency prices "
        "attention: 'flash' (FlashAttention-2, PyTorch SDPA) or 'cudnn' (cuDNN fused "
        "attention, Transformer Engine's default on Hopper)."
    )
    context_parallel_comm: Literal["p2p", "a2a", "allgather"] = Field(
        default="p2p", description="How context parallelism exchanges attention inputs: 'p2p' "
        "(ring attention, Megatron's default and torchtitan's), 'a2a' (all-to-all between "
        "sequence and head splits, DeepSpeed-Ulysses) or 'allgather' (keys and values "
        "all-gathered, their gradients reduce-scattered: Megatron --cp-comm-type allgather, "
        "sysplan's executor)."
    )
    ep_comm_overlap: bool = Field(
        default=False, description="MoE dispatch and combine all-to-alls of one micro-batch "
        "overlapped with the compute of another (Megatron --overlap-moe-expert-parallel-comm "
        "with --delay-wgrad-compute, batch-level overlap)."
    )
    kernel_fusion: Literal["fused", "eager"] = Field(
        default="fused", description="How element-wise work runs: 'fused' (Megatron/TE-style "
        "fused norm, RoPE, bias-residual and activation kernels) or 'eager' (plain PyTorch: "
        "every op of RMSNorm, RoPE, the GQA head repeat and SwiGLU is its own pass over "
        "memory, as the bundled executor runs them)."
    )
    selective_policy: Literal["attention", "op"] = Field(
        default="attention", description="What selective recompute reruns: 'attention' "
        "(Megatron --recompute-granularity selective: the attention core) or 'op' "
        "(torchtitan's per-op checkpointing: every matmul output but every second one and "
        "the attention output are kept, everything else is recomputed)."
    )
    recompute_modules: tuple[RecomputeModule, ...] = Field(
        default=("core_attn",), min_length=1, description="What selective recompute reruns "
        "with the 'attention' policy (Megatron --recompute-modules; its default core_attn): "
        "core_attn, layernorm, mla_up_proj, moe_act, mlp (dense layers' MLP)."
    )
    moe_load_imbalance: float = Field(
        default=1.1, ge=1.0, description="Max / mean tokens per expert-parallel rank; the "
        "slowest rank sets the MoE time (1.0 = perfectly balanced routing)."
    )
    moe_dispatcher: MoeDispatcher = Field(
        default="auto", description="MoE token dispatcher (Megatron --moe-token-dispatcher-"
        "type): 'alltoall', 'allgather', 'flex' (DeepEP-style kernels that send a token once "
        "per destination GPU and once per remote node) or 'auto' (the cheapest per layout)."
    )
    cuda_graphs: CudaGraphs = Field(
        default="none", description="CUDA-graph capture (Megatron --cuda-graph-impl/--cuda-graph-"
        "scope): 'none' (eager), 'scoped' (Transformer Engine graphs of attention and the MoE "
        "router and preprocessing, or of each dense layer; not with full recompute) or 'full' "
        "(the whole iteration; MoE layers need a capacity factor or a rank budget: dropless "
        "routing without one syncs with the host every layer). Captured kernels skip the "
        "host's launch; the GPU side of each stays."
    )
    grad_reduce_in_fp32: bool = Field(
        default=True, description="Gradients accumulated and reduced in fp32 (Megatron's "
        "default with bf16); False keeps them in bf16, halving their memory and DP traffic "
        "(Megatron --grad-reduce-in-bf16, Megatron-Bridge's performance recipes)."
    )
    fused_loss: bool = Field(
        default=False, description="Fused vocab-parallel cross-entropy that writes the "
        "gradient into the 16-bit logits in place (Megatron --cross-entropy-loss-fusion "
        "--cross-entropy-fusion-impl te); False: PyTorch's cross-entropy on fp32 logits."
    )
    fp8_saved_inputs: Literal["fp8", "bf16"] = Field(
        default="fp8", description="With --precision fp8, what each linear layer keeps for "
        "its weight gradient: 'fp8' (Transformer Engine saves the quantized input, 1 byte an "
        "element: Megatron) or 'bf16' (torchao Float8Linear saves the 16-bit input and "
        "quantizes in backward: torchtitan). Set by the target runtime."
    )
    moe_fused_experts: bool = Field(
        default=False, description="MoE: the routed experts run Transformer Engine's fused "
        "MXFP8 grouped MLP (Megatron --use-transformer-engine-op-fuser with "
        "NVTE_CUTEDSL_FUSED_GROUPED_MLP=1, TE >= 2.14): one grouped GEMM kernel per linear for "
        "all local experts, the gated activation, router weighting, bias and FP8 quantisation "
        "in its epilogue, instead of one cuBLAS GEMM per expert and separate element-wise "
        "passes. Blackwell, --precision fp8, expert TP 1."
    )
    moe_capacity_factor: float | None = Field(
        default=None, gt=0, description="Routed tokens an expert takes, as a multiple of the "
        "mean: tokens past it are dropped and every expert's input is padded to it (Megatron "
        "--moe-expert-capacity-factor --moe-pad-expert-input-to-capacity: static shapes, so "
        "no per-layer copy of token counts to the host and CUDA graphs can capture the "
        "layer); None: dropless."
    )

    moe_rank_capacity: float | None = Field(
        default=None, gt=0, description="MoE with the flex (HybridEP) dispatcher: the tokens "
        "an expert-parallel rank receives at most, as a multiple of the mean (Megatron "
        "--moe-expert-rank-capacity-factor, with --moe-paged-stash): tokens past it are "
        "dropped and none are padded; receive buffers and the experts' stashed activations "
        "get static shapes, so a full-iteration CUDA graph captures the MoE layers without "
        "padding every expert to capacity. None: no budget."
    )

    @property
    def moe_routed_imbalance(self) -> float:
        """Busiest expert-parallel rank's routed tokens over the mean: the load imbalance, or
        with a capacity factor that factor (an expert drops tokens past capacity x mean, and
        its input is padded up to it: Fedus et al. 2022, Switch Transformer, 2.2; Megatron-Core
        moe_utils permute with drop_and_pad), or with a rank budget the imbalance capped at it
        (HybridEP drops what exceeds the budget and pads nothing: Megatron-Core
        transformer_config.py ``moe_expert_rank_capacity_factor``)."""
        if self.moe_capacity_factor is not None:
            return self.moe_capacity_factor
        if self.moe_rank_capacity is not None:
            return min(self.moe_load_imbalance, self.moe_rank_capacity)
        return self.moe_load_imbalance

    @property
    def tokens_per_step(self) -> int:
        """Tokens consumed by one optimizer step."""
        return self.seq_len * self.global_batch


#: Default global batch: about 4M tokens (4 * 2**20), the usual LLM pre-training batch
#: (Llama 3 paper, Table 4: 4M-16M tokens; GPT-3 paper, Table 2.1: 0.5M-3.2M).
DEFAULT_BATCH_TOKENS = 4 * 2**20

#: Default sequence length cap when the model's context is longer.
DEFAULT_SEQ_LEN_CAP = 8192

#: The most sequences --global-batch accepts (2**30; real batches are a few thousand).
MAX_GLOBAL_BATCH = 1_073_741_824

_ACCEPTED_BATCH = (
    "whole sequences (1536) or tokens with a suffix K, M, G or T (binary, as batch sizes are "
    "quoted: 4M = 4Mi = 4,194,304 tokens)"
)

#: Batch-size suffixes: "a 4M-token batch" means 4 x 2^20 tokens (the default, 512 x 8192).
_BATCH_SUFFIXES = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def make_train_job(
    model: ModelSpec,
    *,
    seq_len: int | None = None,
    global_batch: str | int | None = None,
    precision: str = "bf16",
    **runtime_flags: bool,
) -> tuple[TrainJob, list[str]]:
    """Build the TrainJob for ``model`` from user-level options, with notes for stderr.

    ``seq_len`` defaults to the model's context capped at 8192. ``global_batch`` is a number of
    sequences (``1536``) or of tokens with a decimal suffix (``4M``), rounded down to whole
    sequences; the default is about 4M tokens. ``runtime_flags`` are TrainJob's behaviour
    fields (``overlap_grad_reduce``, ``tp_comm_overlap``, ...). Bad values raise InputError.
    """
    notes: list[str] = []
    if seq_len is None:
        seq_len = min(model.max_seq_len, DEFAULT_SEQ_LEN_CAP)
    elif seq_len < 1:
        raise InputError(f"--seq-len {seq_len}: must be a positive number of tokens")
    elif seq_len > model.max_seq_len:
        notes.append(
            f"--seq-len {seq_len:,} is longer than {model.name}'s trained context "
            f"({model.max_seq_len:,} tokens)"
        )
    sequences, note = _global_batch_sequences(global_batch, seq_len)
    notes.append(note)
    if precision not in get_args(Precision):
        raise InputError(
            f"--precision {precision}: not accepted; choose one of {', '.join(get_args(Precision))}"
        )
    _check_runtime_flags(runtime_flags)
    job = TrainJob(
        seq_len=seq_len, global_batch=sequences, precision=precision, **runtime_flags
    )
    return job, notes


def check_cuda_graphs(model: ModelSpec, job: TrainJob) -> None:
    """InputError when ``job.cuda_graphs`` cannot capture ``model``: full-iteration graphs need
    static shapes, which dropless MoE routing does not have (Megatron-Core MoE README: without
    --moe-expert-capacity-factor and --moe-pad-expert-input-to-capacity "the resulting
    dynamic shapes make MoE layers uncapturable")."""
    if (job.cuda_graphs == "full" and model.moe is not None and job.moe_capacity_factor is None
            and job.moe_rank_capacity is None):
        raise InputError(f"--cuda-graphs full: {model.name}'s dropless MoE layers copy their "
                         "token counts to the host every layer, so the iteration cannot be "
                         "captured; set --moe-capacity-factor (inputs padded to capacity) or "
                         "--moe-rank-capacity (static receive buffers, with --moe-dispatcher "
                         "flex), or use --cuda-graphs scoped")


def check_rank_capacity(model: ModelSpec, job: TrainJob) -> None:
    """InputError when ``job.moe_rank_capacity`` cannot run: Megatron-Core accepts the rank
    budget only with the HybridEP flex dispatcher (transformer_config.py: "requires
    moe_flex_dispatcher_backend to be 'hybridep' or 'ncclep'"), and sysplan prices one of
    the two token budgets at a time."""
    if job.moe_rank_capacity is None:
        return
    value = f"--moe-rank-capacity {job.moe_rank_capacity:g}"
    _require_experts(model, value)
    if job.moe_dispatcher != "flex":
        raise InputError(f"{value} with --moe-dispatcher {job.moe_dispatcher}: the rank budget "
                         "is HybridEP's; accepted: --moe-dispatcher flex")
    if job.moe_capacity_factor is not None:
        raise InputError(f"{value} with --moe-capacity-factor {job.moe_capacity_factor:g}: "
                         "accepted: one of the two budgets (per expert, padded; or per rank)")


def _require_experts(model: ModelSpec, option: str) -> None:
    """InputError naming ``option`` when ``model`` has no routed experts."""
    if model.moe is None:
        raise InputError(f"{option}: {model.name} has no routed experts; accepted for "
                         "mixture-of-experts models only")


def check_fused_experts(model: ModelSpec, job: TrainJob, gpu: GPU) -> None:
    """InputError when ``job.moe_fused_experts`` cannot run: the fused grouped-MLP kernel is
    Transformer Engine's CuTe DSL MXFP8 kernel for routed experts on compute capability 10+
    (Transformer Engine ops/fused/grouped_mlp.py, the CuTe DSL grouped-GEMM kernels)."""
    if not job.moe_fused_experts:
        return
    _require_experts(model, "--moe-fused-experts")
    if job.precision != "fp8":
        raise InputError(f"--moe-fused-experts with --precision {job.precision}: the fused "
                         "grouped MLP is an MXFP8 kernel; accepted: --precision fp8")
    if gpu.gpu_class != "blackwell":
        raise InputError(f"--moe-fused-experts on {gpu.name}: the fused grouped MLP needs a "
                         "Blackwell GPU (compute capability 10 or later) such as the "
                         "B200 or GB200; accepted: a cluster of Blackwell GPUs")


def check_precision(precision: str, gpu: GPU, choices: tuple[str, ...] = get_args(Precision)
                    ) -> None:
    """InputError unless ``gpu`` lists a dense peak for ``precision`` (bf16 and fp16 share one).

    The message lists the ``choices`` (the precisions the caller accepts) the GPU has a peak for.
    """
    listed = set(gpu.peak_flops) | ({"bf16", "fp16"} if {"bf16", "fp16"} & set(gpu.peak_flops)
                                    else set())
    if precision not in listed:
        accepted = [p for p in choices if p in listed]
        raise InputError(f"--precision {precision}: {gpu.name} has no {precision} peak; "
                         f"accepted for it: {', '.join(accepted)}")


def _global_batch_sequences(value: str | int | None, seq_len: int) -> tuple[int, str]:
    """Sequences per step for ``--global-batch`` and the note saying how they were chosen."""
    if value is None:
        sequences = max(1, DEFAULT_BATCH_TOKENS // seq_len)
        return sequences, (
            f"global batch: {sequences:,} sequences of {seq_len:,} tokens "
            f"({sequences * seq_len:,} tokens; default about 4M tokens, set --global-batch)"
        )
    text = str(value).strip().replace("_", "").replace(",", "")
    if text.isascii() and text.isdigit():
        sequences = int(text)
        if not 1 <= sequences <= MAX_GLOBAL_BATCH:
            raise InputError(f"--global-batch {value}: must be from 1 to "
                             f"{MAX_GLOBAL_BATCH:,} sequences")
        return sequences, (
            f"global batch: {sequences:,} sequences of {seq_len:,} tokens "
            f"({sequences * seq_len:,} tokens)"
        )
    tokens = batch_tokens(text, value)
    sequences = int(tokens // seq_len)
    if sequences > MAX_GLOBAL_BATCH:
        raise InputError(f"--global-batch {value}: {sequences:,} sequences of {seq_len:,} "
                         f"tokens; accepted: at most {MAX_GLOBAL_BATCH:,} sequences")
    if sequences < 1:
        raise InputError(
            f"--global-batch {value}: {tokens:,.0f} tokens is less than one sequence of "
            f"{seq_len:,} tokens"
        )
    return sequences, (
        f"--global-batch {value} tokens = {sequences:,} sequences of {seq_len:,} "
        f"({sequences * seq_len:,} tokens)"
    )


def batch_tokens(text: str, original: str | int | None = None) -> float:
    """``4M`` (or ``4Mi``) -> 4,194,304 tokens: a number with a binary suffix, as batch sizes
    are quoted (the default 4M-token batch is 512 x 8192); InputError naming the value."""
    original = text if original is None else original
    body = text.strip().removesuffix("i").removesuffix("I")
    factor = _BATCH_SUFFIXES.get(body[-1:].upper())
    try:
        tokens = float(body[:-1]) * factor if factor and body[:-1].isascii() else float("nan")
    except ValueError:
        tokens = float("nan")
    if not 0 < tokens < float("inf"):
        raise InputError(f"--global-batch {original}: expected {_ACCEPTED_BATCH}")
    return tokens



def _check_runtime_flags(flags: dict[str, bool]) -> None:
    """Only TrainJob's behaviour fields may be passed as runtime flags."""
    accepted = sorted(set(TrainJob.model_fields) - {"seq_len", "global_batch", "precision"})
    unknown = sorted(set(flags) - set(accepted))
    if unknown:
        raise InputError(
            f"unknown training-job option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
