"""Megatron-LM: the ``pretrain_gpt.py`` argument list and a launch script.

Flag names and accepted values are those of NVIDIA/Megatron-LM d98e8a64 (2026-08-22), the
release ``planners.runtimes.MEGATRON`` names; a test checks every emitted flag against the
parser's list (tests/data/runtime-names/megatron.txt). The run needs no dataset or tokenizer
files: it trains on ``--mock-data`` with the ``NullTokenizer`` unless ``DATA_ARGS`` is set, so
the script runs as written and measures the step time sysplan predicted.
"""

from __future__ import annotations

from sysplan.costmodels.layers import uses_dropout
from sysplan.costmodels.moe import token_dispatcher
from sysplan.costmodels.types import ParallelConfig
from sysplan.exporters.base import ExportFile, ExportRequest, check_runnable
from sysplan.exporters.launch import Script, script_text
from sysplan.exporters.pipeline import chunk_layers, is_uniform, rank_layers
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

RUNTIME = "megatron"

#: ZeRO stage -> Megatron-FSDP sharding strategy (Megatron docs parallelism-guide.md:61-65).
FSDP_STRATEGY = {2: "optim_grads", 3: "optim_grads_params"}


def parallel_arguments(p: ParallelConfig, model: ModelSpec, job: TrainJob) -> list[str]:
    """Degrees, sharding, overlaps, recompute and batch of the plan."""
    args = ["--tensor-model-parallel-size", str(p.tp), "--pipeline-model-parallel-size", str(p.pp)]
    args += pipeline_split_arguments(p, model)
    if p.cp > 1:
        args += ["--context-parallel-size", str(p.cp), "--cp-comm-type", job.context_parallel_comm]
    if model.moe is not None:
        args += ["--expert-model-parallel-size", str(p.ep),
                 "--expert-tensor-parallel-size", str(p.etp)]
    if p.sequence_parallel:
        args.append("--sequence-parallel")
    if p.zero >= 1:
        args.append("--use-distributed-optimizer")
    if p.zero >= 2:
        # Megatron-FSDP needs its own checkpoint format (arguments.py, use_megatron_fsdp checks)
        args += ["--use-megatron-fsdp", "--data-parallel-sharding-strategy", FSDP_STRATEGY[p.zero],
                 "--ckpt-format", "fsdp_dtensor", "--no-gradient-accumulation-fusion"]
    if job.overlap_grad_reduce and p.dp * p.cp > 1:
        args.append("--overlap-grad-reduce")
    if job.overlap_param_gather and p.zero >= 1 and p.dp * p.cp > 1:
        args.append("--overlap-param-gather")
    if job.tp_comm_overlap and p.tp > 1 and p.sequence_parallel:
        args.append("--tp-comm-overlap")
    args += recompute_arguments(p)
    if p.recompute == "selective" and job.recompute_modules != ("core_attn",):
        args += ["--recompute-modules", *job.recompute_modules]
    args += ["--micro-batch-size", str(p.micro_batch), "--global-batch-size", str(p.global_batch)]
    return args


def pipeline_split_arguments(p: ParallelConfig, model: ModelSpec) -> list[str]:
    """Virtual stages and uneven splits: the plain flags when they can say it, else a layout.

    Megatron takes first/last stage sizes with the middle split evenly
    (--decoder-first/last-pipeline-num-layers; with virtual stages each rank's count must
    divide by vpp and vpp is given per rank), or any split as --pipeline-model-parallel-layout
    (E = embedding, t = layer, m = MTP, L = loss, | between chunks, vpp-major order).
    """
    if p.pp == 1:
        return []
    if is_uniform(p, model):
        if p.vpp == 1:
            return []
        return ["--num-layers-per-virtual-pipeline-stage", str(model.num_layers // (p.pp * p.vpp))]
    ranks = rank_layers(p, model)
    first, middle, last = ranks[0], ranks[1:-1], ranks[-1]
    if not p.chunk_layers and len(set(middle)) <= 1 and all(n % p.vpp == 0 for n in ranks):
        args = ["--decoder-first-pipeline-num-layers", str(first),
                "--decoder-last-pipeline-num-layers", str(last)]
        if p.vpp > 1:
            args += ["--num-virtual-stages-per-pipeline-rank", str(p.vpp)]
        return args
    return ["--pipeline-model-parallel-layout", layout_string(p, model)]


def layout_string(p: ParallelConfig, model: ModelSpec) -> str:
    """Megatron's --pipeline-model-parallel-layout for the plan's chunks."""
    chunks = ["t" * n for n in chunk_layers(p, model)]
    chunks[0] = "E" + chunks[0]
    chunks[-1] = chunks[-1] + "m" * model.mtp_layers + "L"
    return "|".join(chunks)


def recompute_arguments(p: ParallelConfig) -> list[str]:
    """Selective (attention core), full for every layer, or the first N layers per chunk."""
    if p.recompute == "selective":
        return ["--recompute-granularity", "selective"]  # default module: core_attn
    if p.recompute == "full" and p.recompute_layers:
        # block: the first N layers of each stage's chunk are recomputed
        return ["--recompute-granularity", "full", "--recompute-method", "block",
                "--recompute-num-layers", str(p.recompute_layers)]
    if p.recompute == "full":
        return ["--recompute-granularity", "full", "--recompute-method", "uniform",
                "--recompute-num-layers", "1"]
    return []


def shape_arguments(model: ModelSpec, job: TrainJob) -> list[str]:
    """Layers, widths, heads and sequence (the same flags in Megatron-DeepSpeed)."""
    return ["--num-layers", str(model.num_layers), "--hidden-size", str(model.hidden_size),
            "--ffn-hidden-size", str(model.ffn_hidden),
            "--num-attention-heads", str(model.num_heads),
            "--seq-length", str(job.seq_len),
            "--max-position-embeddings", str(max(model.max_seq_len, job.seq_len))]


def model_arguments(model: ModelSpec, job: TrainJob, dispatcher: str = "alltoall") -> list[str]:
    """The architecture as Megatron's GPT model flags (``dispatcher``: the MoE token
    dispatcher the plan was priced with)."""
    args = shape_arguments(model, job)
    if model.mla is None and model.head_dim * model.num_heads != model.hidden_size:
        args += ["--kv-channels", str(model.head_dim)]
    if model.mla is None and model.num_kv_heads < model.num_heads:
        args += ["--group-query-attention", "--num-query-groups", str(model.num_kv_heads)]
    args += ["--position-embedding-type",
             "learned_absolute" if model.learned_positions else "rope"]
    args += ["--normalization", "RMSNorm" if model.norm == "rmsnorm" else "LayerNorm"]
    args += layer_arguments(model)
    if model.qkv_bias:
        args.append("--add-qkv-bias")
    if model.qk_norm:
        args.append("--qk-layernorm")
    args += _window_arguments(model)
    return args + _moe_arguments(model, job, dispatcher) + _mla_arguments(model)


def _window_arguments(model: ModelSpec) -> list[str]:
    """The sliding window sysplan priced: ``--window-size w,0`` (Megatron-Bridge's GPT-OSS
    provider maps Hugging Face's sliding_window 128 to window_size (128, 0)) on
    ``sliding_window_layers`` layers: every N-th layer full where the full ones are evenly
    spaced (``--window-attn-skip-freq N``, core/transformer/utils.py
    is_layer_window_attention: layer_number % N != 0 is windowed), else the windowed layers
    first as a pattern (1 = window)."""
    if model.sliding_window is None:
        return []
    args = ["--window-size", f"{model.sliding_window},0"]
    full = model.num_layers - model.sliding_window_layers
    if full and model.num_layers % full == 0:
        args += ["--window-attn-skip-freq", str(model.num_layers // full)]
    elif full:
        pattern = [1] * model.sliding_window_layers + [0] * full
        args += ["--window-attn-skip-freq", f"[{','.join(map(str, pattern))}]"]
    return args


def layer_arguments(model: ModelSpec) -> list[str]:
    """MLP activation, biases, output embedding and dropout (the same flags in
    Megatron-DeepSpeed)."""
    args = []
    if model.moe is not None and model.moe.activation_clamp is not None:
        # GPT-OSS's clamped gate: gate * sigmoid(1.702 gate) * (up + 1), both clamped
        # (Megatron-Bridge GPT-OSS provider: quick_gelu, glu_linear_offset 1.0,
        # activation_func_clamp_value 7.0), the eager clamps sysplan prices (costmodels/moe.py)
        args += ["--quick-geglu", "--glu-linear-offset", "1.0",
                 "--activation-func-clamp-value", f"{model.moe.activation_clamp:g}"]
    elif model.gated_mlp:
        args.append("--swiglu")
    elif model.activation == "relu2":
        args.append("--squared-relu")
    if not model.linear_bias and not (model.moe is not None and model.moe.expert_bias):
        # biased experts (GPT-OSS) need Megatron's linear biases, which it adds to every
        # linear, experts included (Megatron-Bridge GPT-OSS provider: add_bias_linear True)
        args.append("--disable-bias-linear")
    if not model.tied_embeddings:
        args.append("--untie-embeddings-and-output-weights")
    if not uses_dropout(model):
        args += ["--attention-dropout", "0", "--hidden-dropout", "0"]
    return args


def _moe_arguments(model: ModelSpec, job: TrainJob, dispatcher: str) -> list[str]:
    moe = model.moe
    if moe is None:
        return []
    capacity = []
    if job.ep_comm_overlap:  # batch-level EP overlap needs the delayed weight gradients
        capacity += ["--overlap-moe-expert-parallel-comm", "--delay-wgrad-compute"]
    if job.moe_capacity_factor is not None:  # tokens past capacity dropped, lowest probs first
        # and every expert's input padded to capacity: static shapes, no host sync
        capacity += ["--moe-expert-capacity-factor", f"{job.moe_capacity_factor:g}",
                     "--moe-token-drop-policy", "probs", "--moe-pad-expert-input-to-capacity"]
    args = ["--num-experts", str(moe.num_experts), "--moe-router-topk", str(moe.top_k),
            "--moe-ffn-hidden-size", str(moe.expert_ffn_hidden), "--moe-grouped-gemm",
            "--moe-token-dispatcher-type", dispatcher]
    if dispatcher == "flex":  # DeepEP kernels (Megatron-Core MoE README, "DeepEP"); a rank
        # budget needs HybridEP's (transformer_config.py moe_expert_rank_capacity_factor)
        backend = "deepep" if job.moe_rank_capacity is None else "hybridep"
        args += ["--moe-flex-dispatcher-backend", backend]
    if job.moe_rank_capacity is not None:
        # static receive buffers and paged stashing of the experts' activations; HybridEP
        # with a budget needs the op fuser or TE's grouped tensors (transformer_config.py)
        capacity += ["--moe-expert-rank-capacity-factor", f"{job.moe_rank_capacity:g}",
                     "--moe-paged-stash"]
        if not job.moe_fused_experts:
            capacity.append("--moe-use-grouped-tensor")
    if moe.route_groups > 1:  # group-limited routing (DeepSeek-V3 node-limited routing)
        args += ["--moe-router-num-groups", str(moe.route_groups),
                 "--moe-router-group-topk", str(moe.route_groups_per_token or moe.route_groups)]
    if moe.num_shared_experts:
        shared = moe.num_shared_experts * moe.shared_ffn
        args += ["--moe-shared-expert-intermediate-size", str(shared)]
    if moe.first_dense_layers or moe.layer_freq > 1:
        pattern = ",".join(str(int(model.is_moe_layer(i))) for i in range(model.num_layers))
        args += ["--moe-layer-freq", f"[{pattern}]"]
    if job.moe_fused_experts:  # Transformer Engine's op-fuser grouped MLP (environment())
        args.append("--use-transformer-engine-op-fuser")
    return args + capacity


def _mla_arguments(model: ModelSpec) -> list[str]:
    args = []
    if model.mla is not None:
        mla = model.mla
        args += ["--multi-latent-attention", "--kv-lora-rank", str(mla.kv_lora_rank),
                 "--qk-head-dim", str(mla.qk_nope_head_dim),
                 "--qk-pos-emb-head-dim", str(mla.qk_rope_head_dim),
                 "--v-head-dim", str(mla.v_head_dim)]
        if mla.q_lora_rank:
            args += ["--q-lora-rank", str(mla.q_lora_rank)]
    if model.mtp_layers:
        args += ["--mtp-num-layers", str(model.mtp_layers)]
    return args


def precision_arguments(job: TrainJob) -> list[str]:
    """bf16 (or fp16, or no flag: fp32) everywhere; fp8 GEMMs through Transformer Engine
    (hybrid E4M3/E5M2; block-scaled MXFP8 for the fused grouped experts)."""
    args = {"fp16": ["--fp16"], "fp32": []}.get(job.precision, ["--bf16"])
    if job.moe_fused_experts:
        # the fused grouped MLP is an MXFP8 kernel (Megatron-Bridge "fp8_mx": e4m3, mxfp8)
        args += ["--fp8-format", "e4m3", "--fp8-recipe", "mxfp8"]
    elif job.precision == "fp8":
        args += ["--fp8-format", "hybrid", "--fp8-recipe", "delayed"]
    backend = "fused" if job.attention_backend == "cudnn" else "flash"
    args += ["--attention-backend", backend]
    if not job.grad_reduce_in_fp32 and job.precision in ("bf16", "fp8"):
        args.append("--grad-reduce-in-bf16")  # bf16 gradient buffer and reduction
    if job.fused_loss:  # Transformer Engine's cross-entropy, gradient over the logits
        args += ["--cross-entropy-loss-fusion", "--cross-entropy-fusion-impl", "te"]
    return args


def graph_arguments(model: ModelSpec, job: TrainJob) -> list[str]:
    """CUDA-graph capture (Megatron arguments.py --cuda-graph-impl/--cuda-graph-scope; both
    implementations need Transformer Engine's RNG tracker): scoped Transformer Engine graphs of
    attention and the MoE router and preprocessing (of attention and the MLP on a dense model),
    or the whole iteration, which skips the NaN check it cannot capture."""
    if job.cuda_graphs == "none":
        return []
    if job.cuda_graphs == "full":
        return ["--cuda-graph-impl", "local", "--cuda-graph-scope", "full_iteration",
                "--te-rng-tracker", "--no-check-for-nan-in-loss-and-grad"]
    scope = ["attn", "moe_router", "moe_preprocess"] if model.moe is not None else ["attn", "mlp"]
    return ["--cuda-graph-impl", "transformer_engine", "--cuda-graph-scope", *scope,
            "--te-rng-tracker"]


def run_arguments(model: ModelSpec) -> list[str]:
    """A short measured run: Llama-style AdamW settings, per-step logging, the NullTokenizer
    (token ids only; the same flags in Megatron-DeepSpeed)."""
    return ["--train-iters", "$TRAIN_ITERS", "--lr", "3e-4", "--min-lr", "3e-5",
            "--lr-decay-style", "cosine", "--lr-warmup-iters", "10", "--weight-decay", "0.1",
            "--adam-beta1", "0.9", "--adam-beta2", "0.95", "--clip-grad", "1.0",
            "--init-method-std", "0.02", "--log-interval", "1", "--eval-iters", "0",
            "--tokenizer-type", "NullTokenizer", "--vocab-size", str(model.vocab_size)]


def arguments(request: ExportRequest) -> list[str]:
    """The whole ``pretrain_gpt.py`` argument list for the plan."""
    p, model, job = request.plan.parallel, request.model, request.job
    dispatcher = "alltoall"
    if model.moe is not None:
        dispatcher = token_dispatcher(model, job, request.cluster, p)
    return (parallel_arguments(p, model, job) + model_arguments(model, job, dispatcher)
            + precision_arguments(job) + graph_arguments(model, job) + run_arguments(model)
            + ["--log-throughput", "$DATA_ARGS"])


def environment(request: ExportRequest) -> list[tuple[str, str, str]]:
    """Variables the estimate assumed."""
    p = request.plan.parallel
    env = []
    blackwell = request.cluster.gpu.gpu_class == "blackwell"
    if (p.tp > 1 or p.cp > 1) and p.zero < 2 and not blackwell:
        env.append(("CUDA_DEVICE_MAX_CONNECTIONS", "1", ("TP/CP communication kernels are "
                    "scheduled ahead of compute so they overlap (Megatron arguments.py)")))
    if request.job.moe_fused_experts:
        env.append(("NVTE_CUTEDSL_FUSED_GROUPED_MLP", "1", ("Transformer Engine registers its "
                    "fused MXFP8 grouped-MLP kernel only with this set before it is imported")))
    return env


def export(request: ExportRequest) -> list[ExportFile]:
    """``megatron/train.sh``: environment, arguments and launcher for the plan."""
    check_runnable(request, RUNTIME)
    script = Script(
        runtime=RUNTIME,
        program=("$MEGATRON_DIR/pretrain_gpt.py",),
        arguments=tuple(arguments(request)),
        environment=tuple(environment(request)),
        preamble=(
            'MEGATRON_DIR=${MEGATRON_DIR:-$PWD}  # a Megatron-LM checkout'
            + (' (ROCm/Megatron-LM on AMD GPUs)' if request.cluster.gpu.vendor == 'amd' else ''),
            "TRAIN_ITERS=${TRAIN_ITERS:-50}  # steps to run; compare the logged step time",
            'DATA_ARGS=${DATA_ARGS:---mock-data}  # or: --data-path PREFIX (real tokens)',
        ),
    )
    return [ExportFile("megatron/train.sh", script_text(request, script), executable=True)]
