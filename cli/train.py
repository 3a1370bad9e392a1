"""`sysplan train`: parse options, call ``plan_training`` once, render the result.

Results go to stdout (a table, or one JSON object with ``--json``); the model resolution,
cluster notes, batch rounding and other notes go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.console import Console

from sysplan.cli.output import Quiet, print_notes, spinner
from sysplan.core import units
from sysplan.core.names import (
    CUDA_GRAPH_CHOICES,
    MOE_DISPATCHER_CHOICES,
    RECOMPUTE_MODULE_CHOICES,
    RUNTIME_NAMES,
)

HELP = """Rank the best parallel configurations for training a model on a cluster.

\b
Examples:
  sysplan train --model 70b --cluster frontier.yaml
  sysplan train --model config.json --cluster dgx-h100 --gpus 256 \\
      --objective cost --train-tokens 1T --gpu-cost 2.5 --export megatron
"""

_JOB = "Model, cluster and job"
_OBJECTIVE = "Objective"
_OUTPUT = "Output"
_PINNED = "Pinned knobs (fix one dimension; all pinned = evaluate one configuration)"
_RUNTIME = "Runtime behaviour"
_EXPORT = "Export (launch files for the top plan)"
#: What --precision accepts (a GPU without an fp8 peak takes bf16 only).
PRECISIONS = ("bf16", "fp8")


def _choice(*accepted: str, convert: Callable[[str], object] = str) -> Callable[[object], object]:
    """A typer parser accepting exactly ``accepted``; the error names the value and the list."""

    def parse(value: object) -> object:
        value = str(value)
        if value not in accepted:
            raise typer.BadParameter(f"{value}: not accepted; choose one of {', '.join(accepted)}")
        return convert(value)

    return parse


#: The most GPUs (and so the largest parallel degree) any option accepts: 2**20.
MAX_GPUS = units.MAX_GPUS


def whole_number(text: object) -> int | None:
    """``text`` as a whole number of ASCII digits (``1,024`` and ``1_024`` allowed), else None.

    ``str.isdigit`` alone also accepts digits ``int`` cannot read, such as ``'²'``.
    """
    text = str(text).strip().replace(",", "").replace("_", "")
    return int(text) if text.isascii() and text.isdigit() else None


def _positive_int(value: object) -> int:
    """A whole number of at least 1 (typer also passes the default through here)."""
    number = whole_number(value)
    if number is None or number < 1:
        raise typer.BadParameter(f"{value}: expected a whole number of at least 1")
    return number


def _bounded_int(maximum: int) -> Callable[[object], int]:
    """A typer parser of whole numbers from 1 to ``maximum``."""

    def parse(value: object) -> int:
        number = whole_number(value)
        if number is None or not 1 <= number <= maximum:
            raise typer.BadParameter(
                f"{value}: expected a whole number of at least 1 and at most {maximum:,}")
        return number

    return parse


#: Most plans --top shows; --seq-len at most the longest context a model may state.
MAX_TOP = 1_000
MAX_SEQ_LEN = 1_073_741_824


#: A GPU count, parallel degree or other per-GPU count: a whole number, 1 to ``MAX_GPUS``.
_gpu_count = _bounded_int(MAX_GPUS)


#: Largest number a plain float option takes (dollars per GPU-hour, seconds, a factor): larger
#: only turns costs into inf.
MAX_FLOAT_OPTION = 1e12


def _positive_float(value: object) -> float:
    """A finite number above 0, at most MAX_FLOAT_OPTION."""
    try:
        number = units.ascii_float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number <= MAX_FLOAT_OPTION:
        raise typer.BadParameter(
            f"{value}: expected a positive number up to 1e12, such as 2.5")
    return number


def _opt(*names: str, help: str, parser: Callable | None = None, metavar: str | None = None,
         panel: str | None = None) -> typer.models.OptionInfo:
    """A typer option with a help text (every option has one) and an optional parser."""
    return typer.Option(*names, help=help, parser=parser, metavar=metavar, rich_help_panel=panel)


def _degree(name: str, help: str) -> typer.models.OptionInfo:
    """A pinned parallel degree: a whole number of at least 1."""
    return _opt(name, help=help, parser=_gpu_count, metavar="N", panel=_PINNED)


_Model = Annotated[str, _opt(
    "--model", panel=_JOB, metavar="NAME|PATH", help="Model: a catalog name or alias (70b, llama3.1-405b, "
    "mixtral-8x7b) or a Hugging Face config.json path.")]
_Cluster = Annotated[str, _opt(
    "--cluster", panel=_JOB, metavar="NAME|PATH", help="Cluster: a catalog name (dgx-h100, frontier, ...) "
    "or a cluster YAML file.")]
_Gpus = Annotated[int | None, _opt(
    "--gpus", panel=_JOB, metavar="N", parser=_gpu_count,
    help="GPUs to plan for (default: the cluster's default allocation).")]
def _seq_len(value: object) -> int:
    """Tokens per sequence: a whole number or one with a binary suffix (8k = 8,192)."""
    text = str(value).strip().replace(",", "").replace("_", "")
    try:  # digits with an optional suffix (1e3 and other float spellings are not lengths)
        tokens = units.length_tokens(text) if text[:1].isdigit() and text.rstrip(
            "kKmM").replace(".", "", 1).isdigit() else float("nan")
    except ValueError:
        tokens = float("nan")
    if not (1 <= tokens <= MAX_SEQ_LEN and float(tokens).is_integer()):
        raise typer.BadParameter(f"{value}: expected whole tokens, at least 1 and at most "
                                 f"{MAX_SEQ_LEN:,}, such as 8192 or 8k (8,192)")
    return int(tokens)


_SeqLen = Annotated[int | None, _opt(
    "--seq-len", panel=_JOB, metavar="TOKENS", parser=_seq_len,
    help="Tokens per sequence, 8192 or 8k (default: the model's context, capped at 8192).")]
_GlobalBatch = Annotated[str | None, _opt(
    "--global-batch", panel=_JOB, metavar="N|TOKENS", help="Sequences per step (1536) or tokens with a "
    "suffix (4M), rounded down to whole sequences (default: about 4M tokens).")]
_Precision = Annotated[str, _opt(
    "--precision", panel=_JOB, metavar="[bf16|fp8]", parser=_choice(*PRECISIONS),
    help="Precision of the linear layers.")]
_Objective = Annotated[str, _opt(
    "--objective", panel=_OBJECTIVE, metavar="[throughput|time-to-train|cost]",
    parser=_choice("throughput", "time-to-train", "cost"),
    help="Rank by tokens/s per GPU, by time to train --train-tokens, or by cost at "
    "--gpu-cost; the last two also search GPU counts up to --gpus.")]
_TrainTokens = Annotated[str | None, _opt(
    "--train-tokens", panel=_OBJECTIVE, metavar="TOKENS",
    help="Tokens to train on, for --objective time-to-train or cost (15T).")]
_GpuHourCost = Annotated[float | None, _opt(
    "--gpu-cost", "--gpu-hour-cost", panel=_OBJECTIVE, metavar="DOLLARS",
    parser=_positive_float,
    help="Dollars per GPU-hour (as sysplan serve takes it): ranks by cost with --objective "
    "cost, and adds dollars per million tokens under any objective.")]
_Top = Annotated[int, _opt("--top", panel=_OUTPUT, metavar="N", parser=_bounded_int(MAX_TOP),
                           help="Plans to show.")]
_Json = Annotated[bool, _opt(
    "--json", panel=_OUTPUT, help="Write one JSON object (schema: exporters/plan_schema.json) to stdout instead of "
    "tables.")]
_Explain = Annotated[bool, _opt(
    "--explain", panel=_OUTPUT, help="Show the memory and step-time breakdown of every shown plan, and the "
    "notes.")]
_Headroom = Annotated[str, _opt(
    "--memory-headroom", panel=_JOB, metavar="SIZE", help="GPU memory kept free; a plan fits if its worst "
    "stage needs at most GPU memory minus this.")]
_Tp = Annotated[int | None, _degree("--tp", "Tensor-parallel degree.")]
_Pp = Annotated[int | None, _degree("--pp", "Pipeline-parallel stages.")]
_Vpp = Annotated[int | None, _degree(
    "--vpp", "Virtual pipeline stages per rank (interleaved 1F1B).")]
_Dp = Annotated[int | None, _degree("--dp", "Data-parallel degree.")]
_Cp = Annotated[int | None, _degree("--cp", "Context-parallel degree.")]
_Ep = Annotated[int | None, _degree("--ep", "Expert-parallel degree (MoE models).")]
_MicroBatch = Annotated[int | None, _degree("--micro-batch", "Sequences per micro-batch.")]
_Recompute = Annotated[str | None, _opt(
    "--recompute", metavar="[none|selective|full]", panel=_PINNED,
    parser=_choice("none", "selective", "full"),
    help="Activation recompute: none, selective (what --recompute-modules names; default the "
    "attention core) or full (whole layer).")]


def _modules(value: object) -> str:
    """Comma-separated --recompute-modules names, each accepted once."""
    names = [n.strip() for n in str(value).split(",")]
    for name in names:
        if name not in RECOMPUTE_MODULE_CHOICES:
            raise typer.BadParameter(f"{name}: not accepted; choose from "
                                     f"{', '.join(RECOMPUTE_MODULE_CHOICES)} (comma-separated)")
    if len(set(names)) < len(names):
        raise typer.BadParameter(f"{value}: a module is named twice")
    return ",".join(names)


_RecomputeModules = Annotated[str, _opt(
    "--recompute-modules", metavar="LIST", panel=_RUNTIME, parser=_modules,
    help="What selective recompute reruns (Megatron --recompute-modules), comma-separated: "
    "core_attn, layernorm, mla_up_proj (MLA models), moe_act (MoE models), mlp (dense "
    "layers' MLP).")]
_RecomputeLayers = Annotated[int | None, _degree(
    "--recompute-layers", "With --recompute full: layers per pipeline stage recomputed "
    "(default: all; Megatron --recompute-num-layers).")]
_Zero = Annotated[int | None, _opt(
    "--zero", metavar="[0|1|2|3]", panel=_PINNED, parser=_choice("0", "1", "2", "3", convert=int),
    help="ZeRO stage: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters (FSDP).")]
_SequenceParallel = Annotated[bool | None, _opt(
    "--sequence-parallel/--no-sequence-parallel", panel=_PINNED,
    help="Megatron sequence parallelism on the TP group (default: searched).")]
_PpLayout = Annotated[str | None, _opt(
    "--pp-layout", metavar="LAYOUT", panel=_PINNED,
    help="Layers per pipeline chunk in Megatron's --pipeline-model-parallel-layout notation, "
    "chunks in schedule order: E embedding, t layer, m MTP layer, L loss, | between chunks, "
    "x*n and (...)*n repeat (Et*4|(t*4|)*14tmL); needs --pp, sets --vpp to chunks / pp.")]
_NoOverlapGradReduce = Annotated[bool, _opt(
    "--no-overlap-grad-reduce", panel=_RUNTIME,
    help="Do not overlap the data-parallel gradient reduction with backward.")]
_TpCommOverlap = Annotated[bool, _opt(
    "--tp-comm-overlap", panel=_RUNTIME,
    help="Overlap TP collectives with GEMMs (Megatron --tp-comm-overlap, torchtitan AsyncTP).")]

_EpCommOverlap = Annotated[bool, _opt(
    "--ep-comm-overlap", panel=_RUNTIME,
    help="MoE: overlap each micro-batch's expert all-to-alls with another's compute (Megatron "
    "--overlap-moe-expert-parallel-comm).")]
_MoeFusedExperts = Annotated[bool, _opt(
    "--moe-fused-experts", panel=_RUNTIME,
    help="MoE on Blackwell with --precision fp8: run the routed experts as Transformer "
    "Engine's fused MXFP8 grouped MLP, one kernel per linear for all local experts with the "
    "activation in its epilogue (Megatron --use-transformer-engine-op-fuser, "
    "NVTE_CUTEDSL_FUSED_GROUPED_MLP=1; expert TP 1).")]
_MoeDispatcher = Annotated[str, _opt(
    "--moe-dispatcher", metavar="NAME", panel=_RUNTIME, parser=_choice(*MOE_DISPATCHER_CHOICES),
    help="MoE token dispatcher: alltoall, allgather, flex (DeepEP-style, deduplicated per GPU "
    "and per node) or auto (the cheapest per layout).")]
_CudaGraphs = Annotated[str, _opt(
    "--cuda-graphs", metavar="[none|scoped|full]", panel=_RUNTIME,
    parser=_choice(*CUDA_GRAPH_CHOICES),
    help="CUDA-graph capture, whose kernels skip the host's launch: none, scoped (attention "
    "and the MoE router; not with full recompute) or full (the whole iteration; MoE needs "
    "--moe-capacity-factor or --moe-rank-capacity). Megatron --cuda-graph-impl/--cuda-graph-"
    "scope.")]
_GradReduceBf16 = Annotated[bool, _opt(
    "--grad-reduce-in-bf16", panel=_RUNTIME,
    help="Keep and reduce gradients in bf16 instead of fp32: half their memory and DP traffic "
    "(Megatron --grad-reduce-in-bf16; Megatron-Bridge's performance recipes).")]
_FusedLoss = Annotated[bool, _opt(
    "--fused-loss", panel=_RUNTIME,
    help="Fused cross-entropy writing its gradient over the bf16 logits, 2 bytes per logit "
    "instead of 12 (Megatron --cross-entropy-loss-fusion --cross-entropy-fusion-impl te).")]
_MoeCapacityFactor = Annotated[float | None, _opt(
    "--moe-capacity-factor", metavar="F", panel=_RUNTIME, parser=_positive_float,
    help="MoE: every expert takes F times its mean share of routed tokens, dropping the rest "
    "and padding up to it (Megatron --moe-expert-capacity-factor with "
    "--moe-pad-expert-input-to-capacity: static shapes); default: dropless.")]
_MoeRankCapacity = Annotated[float | None, _opt(
    "--moe-rank-capacity", metavar="F", panel=_RUNTIME, parser=_positive_float,
    help="MoE with --moe-dispatcher flex: each expert-parallel rank receives at most F times "
    "its mean share of routed tokens, dropping the rest, padding none (Megatron "
    "--moe-expert-rank-capacity-factor with --moe-paged-stash: static buffers, so "
    "--cuda-graphs full captures the MoE layers); default: no budget.")]


_Profile = Annotated[str | None, _opt(
    "--profile", panel=_JOB, metavar="FILE|NAME|none",
    help="Measured profile pricing the plans (sysplan profile / calibrate output, or a bundled "
    "name); default: the bundled profile of the cluster's GPU if any; none: the uncalibrated "
    "defaults.")]
_Lengths = Annotated[str | None, _opt(
    "--lengths", metavar="FILE|DIST", panel=_RUNTIME,
    help="Variable-length data: a length file (one per line, or length,count CSV) or a "
    "distribution (lognormal:8192,1.0,max=131072); shows what mixed context-parallel groups "
    "gain over uniform CP on the top plan.")]
_Stages = Annotated[str, _opt(
    "--stages", panel=_OBJECTIVE, metavar="[uniform|dp]", parser=_choice("uniform", "dp"),
    help="Pipeline stages: uniform (even split, one recompute mode) or dp (the stage DP re-splits "
    "the best pipelined plans: layers and recompute per stage, exact for 1F1B, heuristic for "
    "interleaved).")]
_Runtime = Annotated[str | None, _opt(
    "--runtime", metavar="[megatron|deepspeed|torchtitan]", panel=_EXPORT,
    parser=_choice(*RUNTIME_NAMES),
    help="Search only layouts this runtime can run (default: those of --export, else any).")]
_Export = Annotated[str | None, _opt(
    "--export", metavar="TARGETS", panel=_EXPORT,
    help="Write launch files for the top plan: megatron, deepspeed, torchtitan, json "
    "(comma-separated) into --output.")]
_Output = Annotated[str, _opt(
    "--output", "-o", metavar="DIR", panel=_EXPORT, help="Folder the --export files go to.")]
_Plot = Annotated[str | None, _opt(
    "--plot", panel=_OUTPUT, metavar="DIR", help="Write pictures of the top plan (pipeline timeline, memory "
    "per stage, step-time terms; days and dollars against GPUs for --objective cost or "
    "time-to-train) as PNG and SVG into DIR, and draw them as text (needs the plot extra).")]
_TorchtitanFormat = Annotated[str, _opt(
    "--torchtitan-format", metavar="[python|toml]", panel=_EXPORT,
    parser=_choice("python", "toml"),
    help="torchtitan config: a config-function module (torchtitan 0.3) or TOML (<= 0.2.2).")]


def train(
    model: _Model,
    cluster: _Cluster,
    gpus: _Gpus = None,
    seq_len: _SeqLen = None,
    global_batch: _GlobalBatch = None,
    precision: _Precision = "bf16",
    objective: _Objective = "throughput",
    train_tokens: _TrainTokens = None,
    gpu_hour_cost: _GpuHourCost = None,
    top: _Top = 5,
    json_out: _Json = False,
    explain: _Explain = False,
    memory_headroom: _Headroom = "4GiB",
    profile: _Profile = None,
    lengths: _Lengths = None,
    stages: _Stages = "uniform",
    tp: _Tp = None,
    pp: _Pp = None,
    vpp: _Vpp = None,
    dp: _Dp = None,
    cp: _Cp = None,
    ep: _Ep = None,
    micro_batch: _MicroBatch = None,
    recompute: _Recompute = None,
    recompute_layers: _RecomputeLayers = None,
    zero: _Zero = None,
    sequence_parallel: _SequenceParallel = None,
    pp_layout: _PpLayout = None,
    no_overlap_grad_reduce: _NoOverlapGradReduce = False,
    tp_comm_overlap: _TpCommOverlap = False,
    moe_capacity_factor: _MoeCapacityFactor = None,
    moe_rank_capacity: _MoeRankCapacity = None,
    moe_dispatcher: _MoeDispatcher = "auto",
    ep_comm_overlap: _EpCommOverlap = False,
    moe_fused_experts: _MoeFusedExperts = False,
    cuda_graphs: _CudaGraphs = "none",
    recompute_modules: _RecomputeModules = "core_attn",
    grad_reduce_in_bf16: _GradReduceBf16 = False,
    fused_loss: _FusedLoss = False,
    runtime: _Runtime = None,
    export: _Export = None,
    output: _Output = "sysplan-export",
    torchtitan_format: _TorchtitanFormat = "python",
    plot: _Plot = None,
    quiet: Quiet = False,
) -> None:
    """Rank the best parallel configurations for training a model on a cluster."""
    pins = {
        "tp": tp, "pp": pp, "vpp": vpp, "dp": dp, "cp": cp, "ep": ep,
        "micro_batch": micro_batch, "recompute": recompute,
        "recompute_layers": recompute_layers, "zero": zero,
        "sequence_parallel": sequence_parallel, "pp_layout": pp_layout,
    }
    request = TrainRequest(
        model=model, cluster=cluster, gpus=gpus, seq_len=seq_len, global_batch=global_batch,
        precision=precision, objective=objective, train_tokens=train_tokens,
        gpu_hour_cost=gpu_hour_cost, top=top, memory_headroom=memory_headroom, pins=pins,
        profile=profile, lengths=lengths, stages=stages,
        overlap_grad_reduce=not no_overlap_grad_reduce, tp_comm_overlap=tp_comm_overlap,
        moe_capacity_factor=moe_capacity_factor, ep_comm_overlap=ep_comm_overlap,
        moe_dispatcher=moe_dispatcher, cuda_graphs=cuda_graphs,
        moe_fused_experts=moe_fused_experts, moe_rank_capacity=moe_rank_capacity,
        grad_reduce_in_fp32=not grad_reduce_in_bf16, fused_loss=fused_loss,
        recompute_modules=tuple(recompute_modules.split(",")), runtime=runtime,
        export=export,
        output=output, torchtitan_format=torchtitan_format,
        plot=plot,
    )
    run_train(request, json_out=json_out, explain=explain, quiet=quiet)


@dataclass(frozen=True)
class TrainRequest:
    """The options of one `sysplan train` call, as typed on the command line."""

    model: str
    cluster: str
    gpus: int | None = None
    seq_len: int | None = None
    global_batch: str | None = None
    precision: str = "bf16"
    objective: str = "throughput"
    train_tokens: str | None = None
    gpu_hour_cost: float | None = None
    top: int = 5
    memory_headroom: str = "4GiB"
    profile: str | None = None
    lengths: str | None = None
    stages: str = "uniform"
    pins: dict[str, object] = field(default_factory=dict)
    overlap_grad_reduce: bool = True
    tp_comm_overlap: bool = False
    moe_capacity_factor: float | None = None
    moe_rank_capacity: float | None = None
    ep_comm_overlap: bool = False
    moe_dispatcher: str = "auto"
    cuda_graphs: str = "none"
    moe_fused_experts: bool = False
    grad_reduce_in_fp32: bool = True
    fused_loss: bool = False
    recompute_modules: tuple[str, ...] = ("core_attn",)
    runtime: str | None = None
    export: str | None = None
    output: str = "sysplan-export"
    torchtitan_format: str = "python"
    plot: str | None = None

    def search_runtimes(self) -> tuple[str, ...]:
        """--runtime, else the runtimes named in --export, else none (any layout)."""
        from sysplan.exporters import parse_targets

        if self.runtime is not None:
            return (self.runtime,)
        targets = parse_targets(self.export, "--export") if self.export is not None else []
        return tuple(t for t in targets if t in RUNTIME_NAMES)


def run_train(request: TrainRequest, *, json_out: bool = False, explain: bool = False,
              quiet: bool = False) -> None:
    """Resolve the inputs, plan, and write the result to stdout (notes to stderr)."""
    from sysplan.cli import pictures, render
    from sysplan.core.errors import InputError
    from sysplan.core.units import parse_bytes, parse_count
    from sysplan.exporters import plan_json
    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model
    from sysplan.planners.training import plan_training
    from sysplan.planners.types import Pins
    from sysplan.workloads.training import check_precision, make_train_job

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    headroom = parse_bytes(request.memory_headroom, "--memory-headroom")
    plot_folder = pictures.check(request.plot)
    tokens = None
    if request.train_tokens is not None:
        tokens = parse_count(request.train_tokens, "--train-tokens")
        if tokens < 1:
            raise InputError(f"--train-tokens {request.train_tokens}: must be at least 1 token "
                             "(write e.g. 15T)")
    measured = None
    if request.profile not in (None, "none"):
        from sysplan.profiles.loader import load_profile

        measured = load_profile(request.profile)
    spec, model_note = resolve_model(request.model)
    lengths = None
    if request.lengths is not None:
        from sysplan.workloads.lengths import check_context, check_step, parse_lengths

        lengths = parse_lengths(request.lengths)
        check_context(lengths, spec.max_seq_len, spec.name)
    if request.moe_capacity_factor is not None and spec.moe is None:
        raise InputError(f"--moe-capacity-factor {request.moe_capacity_factor:g}: {spec.name} "
                         "has no experts; the option applies to mixture-of-experts models")
    if request.moe_dispatcher != "auto" and spec.moe is None:
        raise InputError(f"--moe-dispatcher {request.moe_dispatcher}: {spec.name} has no "
                         "experts; the option applies to mixture-of-experts models")
    _check_recompute_modules(request, spec)
    if request.ep_comm_overlap and spec.moe is None:
        raise InputError(f"--ep-comm-overlap: {spec.name} has no experts; the option applies "
                         "to mixture-of-experts models")
    cluster, cluster_notes = load_cluster(request.cluster)
    check_precision(request.precision, cluster.gpu, PRECISIONS)
    if measured is not None:
        from sysplan.profiles.loader import check_gpu

        check_gpu(measured, cluster.gpu, request.profile)
    job, job_notes = make_train_job(
        spec, seq_len=request.seq_len, global_batch=request.global_batch,
        precision=request.precision, overlap_grad_reduce=request.overlap_grad_reduce,
        tp_comm_overlap=request.tp_comm_overlap, moe_capacity_factor=request.moe_capacity_factor,
        ep_comm_overlap=request.ep_comm_overlap, moe_dispatcher=request.moe_dispatcher,
        cuda_graphs=request.cuda_graphs, grad_reduce_in_fp32=request.grad_reduce_in_fp32,
        fused_loss=request.fused_loss, recompute_modules=request.recompute_modules,
        moe_fused_experts=request.moe_fused_experts, moe_rank_capacity=request.moe_rank_capacity,
    )
    if lengths is not None:
        check_step(lengths, job.tokens_per_step)
    runtimes = request.search_runtimes()
    if runtimes and request.runtime is None:
        job_notes.append(f"search restricted to layouts {', '.join(runtimes)} can run (--export)")
    print_notes(err, [model_note, *cluster_notes, *job_notes], quiet)
    with spinner(err, f"searching configurations for {spec.name} ...", quiet):
        result = plan_training(
            spec, cluster, job, num_gpus=request.gpus, pins=Pins(**request.pins),
            objective=request.objective, top=request.top, memory_headroom_bytes=headroom,
            train_tokens=tokens, gpu_hour_cost=request.gpu_hour_cost, runtimes=runtimes,
            profile=measured, bundled_profile=request.profile != "none",
            stages=request.stages,
        )
    if lengths is not None:
        result = _with_sequence_mix(result, spec, cluster, job, request, headroom, lengths)
    if request.export is not None:
        _export_top_plan(err, result, request, cluster, measured)
    if json_out:
        if plot_folder is not None:
            pictures.training(result, plot_folder, None, err)
        typer.echo(json.dumps(plan_json.training_document(result), indent=2))
        return
    context = render.TrainContext(
        cluster=cluster, job=result.job or job, memory_headroom_bytes=headroom,
        default_allocation=request.gpus is None, train_tokens=tokens,
        gpu_hour_cost=request.gpu_hour_cost,
    )
    if not explain:
        print_notes(err, list(result.notes), quiet)
    render.print_training(render.stdout_console(), result, context, explain=explain)
    if plot_folder is not None:
        pictures.training(result, plot_folder, render.stdout_console(), err)


def _with_sequence_mix(result, spec, cluster, job, request: TrainRequest, headroom: float,
                       length_mix):
    """The result with ``sequence_mix``: a sampled step of --lengths data on the top plan."""
    from sysplan.planners.sp_mix import mix_for_plan

    plan = result.plans[0]
    mix, lengths = mix_for_plan(spec, result.job or job, cluster, plan.parallel, length_mix,
                                memory_headroom_bytes=headroom)
    data = mix.model_dump(mode="json")
    data |= {"source": request.lengths, "speedup": mix.speedup, "lengths": lengths.tolist(),
             "ranks": plan.parallel.dp * plan.parallel.cp}
    return result.model_copy(update={"sequence_mix": data})


def _export_top_plan(err: Console, result, request: TrainRequest, cluster, measured) -> None:
    """Write the --export files of the best plan; the paths go to stderr. The plan was priced
    with the first searched runtime's settings; each other runtime target gets it priced
    again with its own (``exporters.runtime_pricings``), and one under which it does not fit
    is refused (exit 2) before anything is written."""
    from pathlib import Path

    from sysplan.exporters import export_plan, parse_targets, runtime_pricings
    from sysplan.planners.training import pricing_efficiency

    targets = parse_targets(request.export, "--export")
    plan = result.plans[0]
    eff, _ = pricing_efficiency(cluster, measured, request.profile != "none")
    written = export_plan(result, plan, targets, Path(request.output), "the search",
                          torchtitan_format=request.torchtitan_format,
                          per_runtime=runtime_pricings(result, plan, targets, "the search",
                                                       efficiency=eff))
    for path in written:
        err.print(f"wrote {path}", markup=False)


def _check_recompute_modules(request: TrainRequest, spec) -> None:
    """InputError for --recompute-modules that cannot apply to this model or plan."""
    from sysplan.core.errors import InputError

    modules = request.recompute_modules
    if modules == ("core_attn",):
        return
    given = f"--recompute-modules {','.join(modules)}"
    if request.pins.get("recompute") in ("none", "full"):
        raise InputError(f"{given}: applies to selective recompute; --recompute "
                         f"{request.pins['recompute']} is pinned (use --recompute selective)")
    if "mla_up_proj" in modules and spec.mla is None:
        raise InputError(f"{given}: mla_up_proj needs multi-latent attention, which "
                         f"{spec.name} does not have")
    if "moe_act" in modules and spec.moe is None:
        raise InputError(f"{given}: moe_act needs routed experts; {spec.name} has none")
    if "mlp" in modules and spec.num_moe_layers == spec.num_layers:
        raise InputError(f"{given}: mlp reruns dense layers' MLP; every layer of "
                         f"{spec.name} is a mixture of experts")
