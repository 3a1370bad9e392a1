"""What each training runtime can run: one list of rules serves the search and the exporters.

``sysplan train --runtime R`` drops the configurations R cannot run (``Runtime.mask`` over the
whole candidate batch), so its top plan always exports; ``sysplan export --to R`` asks the same
rules of one plan (``Runtime.unsupported``) and refuses, naming the feature, when one fails.
A rule is a vectorised predicate over ``Candidates`` that is True where the configuration
needs the feature the runtime lacks. Model rules name architecture features the runtime's
model code lacks; they refuse the whole question up front.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sysplan.core.errors import InputError
from sysplan.core.names import RUNTIME_NAMES
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.types import ParallelConfig
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

Predicate = Callable[[Candidates, ModelSpec, TrainJob], np.ndarray]


@dataclass(frozen=True)
class Rule:
    """A feature the runtime lacks and where a configuration would need it."""

    feature: str
    needs: Predicate


@dataclass(frozen=True)
class ModelRule:
    """An architecture feature the runtime's model code lacks."""

    feature: str
    needs: Callable[[ModelSpec], bool]


@dataclass(frozen=True)
class Runtime:
    """A training runtime sysplan exports to, with the version its rules were read from."""

    name: str
    title: str
    version: str
    context_parallel_comms: tuple[str, ...] = ("p2p",)  # CP algorithms offered, preferred first
    selective_policy: str = "attention"  # what its selective recompute reruns (TrainJob)
    fp8_saved_inputs: str = "fp8"  # what its FP8 linears keep for backward (TrainJob)
    rules: tuple[Rule, ...] = ()
    model_rules: tuple[ModelRule, ...] = field(default_factory=tuple)

    def _all_rules(self) -> tuple[Rule, ...]:
        names = {"p2p": "ring (p2p)", "a2a": "all-to-all (Ulysses)",
                 "allgather": "all-gather of keys and values"}
        offered = " or ".join(names[k] for k in self.context_parallel_comms)
        cp_rule = Rule(f"context parallelism other than {offered}",
                       lambda c, m, j: (c.cp > 1)
                       & (j.context_parallel_comm not in self.context_parallel_comms))
        return (cp_rule, *self.rules)

    def mask(self, c: Candidates, model: ModelSpec, job: TrainJob) -> np.ndarray:
        """True where the runtime can run the configuration."""
        ok = np.ones(len(c), dtype=bool)
        for rule in self._all_rules():
            ok &= ~np.asarray(rule.needs(c, model, job), dtype=bool)
        return ok

    def unsupported(self, config: ParallelConfig, model: ModelSpec, job: TrainJob) -> list[str]:
        """Features of ``config`` (and ``model``) this runtime lacks, in rule order."""
        one = Candidates.from_configs([config])
        missing = [r.feature for r in self.model_rules if r.needs(model)]
        return missing + [r.feature for r in self._all_rules()
                          if bool(np.asarray(r.needs(one, model, job))[0])]

    def check_model(self, model: ModelSpec) -> None:
        """InputError naming the first architecture feature the runtime cannot train."""
        missing = [r.feature for r in self.model_rules if r.needs(model)]
        if missing:
            raise InputError(f"--runtime {self.name}: {self.title} cannot train {model.name} "
                             f"({'; '.join(missing)})")



def _megatron_only_job_rules(title: str) -> tuple[Rule, ...]:
    """Job options only the Megatron export writes (``TrainJob`` fields)."""
    return (
        Rule(f"bf16 gradient reduction (sysplan writes {title}'s fp32 reduction only)",
             lambda c, m, j: np.full(len(c), not j.grad_reduce_in_fp32)),
        Rule(f"fused cross-entropy ({title} computes the loss in PyTorch)",
             lambda c, m, j: np.full(len(c), j.fused_loss)),
        Rule(f"fused MXFP8 grouped experts ({title} runs Transformer Engine's grouped MLP "
             "through Megatron-Core only)",
             lambda c, m, j: np.full(len(c), j.moe_fused_experts)),
        Rule(f"selective recompute of modules other than the attention core ({title} has "
             "no --recompute-modules)",
             lambda c, m, j: (c.recompute == 1) & (j.recompute_modules != ("core_attn",))),
    )


def _moe_split_experts(c: Candidates, model: ModelSpec, job: TrainJob) -> np.ndarray:
    """MoE with experts replicated over TP ranks (expert TP 1 while TP > 1 and EP 1)."""
    return (model.moe is not None) & (c.ep == 1) & (c.etp != c.tp)


def _ulysses_heads(c: Candidates, model: ModelSpec, job: TrainJob) -> np.ndarray:
    """Ulysses splits each TP rank's heads (query and key/value) over the CP ranks."""
    return (c.cp > 1) & (((model.num_heads // c.tp) % c.cp != 0)
                         | ((np.maximum(model.num_kv_heads // c.tp, 1)) % c.cp != 0))


def _fsdp_shards(c: Candidates) -> np.ndarray:
    """torchtitan's FSDP shard degree: dp with ZeRO-2/3, 1 with plain replication."""
    return np.where(c.zero >= 2, c.dp, 1)


def _no_cuda_graphs(title: str) -> Rule:
    """The rule of a runtime that cannot capture a training step (``TrainJob.cuda_graphs``)."""
    return Rule(f"CUDA-graph capture of the training step ({title} has no option for it)",
                lambda c, m, j: np.full(len(c), j.cuda_graphs != "none"))


MEGATRON = Runtime(
    name="megatron",
    title="Megatron-LM",
    version="NVIDIA/Megatron-LM d98e8a64 (2026-08-22)",
    context_parallel_comms=("p2p", "a2a", "allgather"),  # --cp-comm-type p2p | a2a | allgather
    rules=(
        # Megatron-FSDP (--use-megatron-fsdp) has no pipeline-parallel test or documented
        # support at d98e8a64; the distributed optimizer (ZeRO-1) works with any PP
        Rule("ZeRO-2/3 (Megatron-FSDP) with pipeline parallelism",
             lambda c, m, j: (c.zero >= 2) & (c.pp > 1)),
        # moe/experts.py TEGroupedMLP._is_fused_impl_supported: "Tensor parallelism is not
        # supported" by the op-fuser grouped MLP
        Rule("fused grouped experts with expert tensor parallelism (Megatron-Core's fused "
             "grouped MLP runs with expert TP 1)",
             lambda c, m, j: j.moe_fused_experts & (c.etp > 1)),
    ),
)

DEEPSPEED = Runtime(
    name="deepspeed",
    title="Megatron-DeepSpeed",
    version="DeepSpeed 0.19.6 (edaa7221, 2026-08-22) with Megatron-DeepSpeed f4157bea "
            "(2024-12-24)",
    context_parallel_comms=("a2a",),
    rules=(
        # deepspeed/runtime/pipe/engine.py asserts zero stage < 2 in its pipeline engine
        Rule("ZeRO-2/3 with pipeline parallelism (DeepSpeed's pipeline engine allows ZeRO 0-1)",
             lambda c, m, j: (c.zero >= 2) & (c.pp > 1)),
        Rule("interleaved (virtual) pipeline stages (DeepSpeed's pipeline engine runs plain 1F1B)",
             lambda c, m, j: c.vpp > 1),
        # megatron/core/parallel_state.py:146 asserts TP = PP = 1 with Ulysses; arguments.py
        # refuses --sequence-parallel with --ds-sequence-parallel-size
        Rule("Ulysses context parallelism with TP or PP (Megatron-DeepSpeed runs it on "
             "TP = PP = 1)", lambda c, m, j: (c.cp > 1) & ((c.tp > 1) | (c.pp > 1))),
        Rule("Ulysses context parallelism over a CP degree that does not divide the heads "
             "per TP rank", _ulysses_heads),
        # DeepSpeed's pipeline engine checkpoints with the uniform method only (gpt_model.py)
        Rule("full recompute of only some layers with pipeline parallelism",
             lambda c, m, j: (c.recompute == 2) & (c.rc_layers > 0) & (c.pp > 1)),
        # FP8 needs Transformer Engine layers (--transformer-impl), which sysplan does not export
        Rule("FP8 linear layers", lambda c, m, j: np.full(len(c), j.precision == "fp8")),
        _no_cuda_graphs("Megatron-DeepSpeed"),
        *_megatron_only_job_rules("Megatron-DeepSpeed"),
    ),
    model_rules=(
        ModelRule("multi-latent attention", lambda m: m.mla is not None),
        ModelRule("multi-token prediction", lambda m: m.mtp_layers > 0),
        ModelRule("QK normalisation", lambda m: m.qk_norm),
        ModelRule("mixture-of-experts layers (DeepSpeed-MoE routes with capacity factors that "
                  "sysplan does not price)", lambda m: m.moe is not None),
        # Megatron-DeepSpeed's arguments.py has no window flag: it would train full attention
        ModelRule("sliding-window attention", lambda m: m.sliding_window is not None),
    ),
)

TORCHTITAN = Runtime(
    name="torchtitan",
    title="torchtitan",
    version="torchtitan 0.3.0 (PyPI; also main b5bcd76c, 2026-08-21)",
    # activation_checkpoint mode "selective" with selective_ac_option "op" (its Llama 3
    # train configs): per-op checkpointing (costmodels/memory.op_checkpoint_bytes_per_token)
    selective_policy="op",
    # torchao's Float8Linear (its float8 converter) saves the bf16 input and weight and
    # quantizes them again in backward (torchao float8/float8_linear.py,
    # matmul_with_hp_or_float8_args.forward: ctx.save_for_backward(input_hp, weight_hp_t))
    fp8_saved_inputs="bf16",
    rules=(
        Rule("ZeRO-1 (torchtitan shards with FSDP2: ZeRO-2, ZeRO-3 or none)",
             lambda c, m, j: c.zero == 1),
        Rule("expert tensor parallelism (torchtitan experts use EP without TP)",
             lambda c, m, j: (c.ep > 1) & (c.etp > 1)),
        Rule("experts replicated over TP ranks (torchtitan shards experts with TP when EP is 1)",
             _moe_split_experts),
        Rule("expert parallelism wider than the FSDP x CP x TP ranks",
             lambda c, m, j: (c.ep > 1) & ((_fsdp_shards(c) * c.cp * c.tp) % c.ep != 0)),
        # torchtitan 0.3.0 activation_checkpoint: FullAC, SelectiveAC (per op) or none
        Rule("full recompute of only some layers (torchtitan recomputes every layer or none)",
             lambda c, m, j: (c.recompute == 2) & (c.rc_layers > 0)),
        # torchtitan 0.3.0's job config has no CUDA-graph option for training (compile only)
        _no_cuda_graphs("torchtitan"),
        *_megatron_only_job_rules("torchtitan"),
        # models/common/decoder.py refuses weight tying with pipeline parallelism
        Rule("tied embeddings with pipeline parallelism",
             lambda c, m, j: np.full(len(c), m.tied_embeddings) & (c.pp > 1)),
    ),
    model_rules=(
        # torchtitan 0.3.0 has MoE model code of its own (deepseek_v3, llama4, qwen3 under
        # torchtitan/models), with config fields sysplan does not write yet
        ModelRule("mixture-of-experts layers: torchtitan's own MoE models are not exported "
                  "yet, --runtime megatron exports them", lambda m: m.moe is not None),
        ModelRule("an architecture other than Llama-style dense (sysplan writes torchtitan's "
                  "llama3 model: SwiGLU, RMSNorm, RoPE, no biases, no sliding window)",
                  lambda m: m.moe is None and not _llama_like(m)),
    ),
)


def _llama_like(m: ModelSpec) -> bool:
    """Whether torchtitan's llama3 model code builds ``m`` exactly."""
    return (m.moe is None and m.mla is None and m.mtp_layers == 0 and m.gated_mlp
            and m.activation == "silu" and m.norm == "rmsnorm" and not m.linear_bias
            and not m.qkv_bias and not m.qk_norm and not m.learned_positions
            and m.sliding_window is None)

#: Registry of runtimes by name (house style 10).
RUNTIMES: dict[str, Runtime] = {r.name: r for r in (MEGATRON, DEEPSPEED, TORCHTITAN)}
assert tuple(RUNTIMES) == RUNTIME_NAMES, "core/names.py lists the runtimes the CLI offers"


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``; InputError listing the accepted names otherwise."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise InputError(f"--runtime {name}: not accepted; choose one of "
                         f"{', '.join(RUNTIMES)}") from None


def job_for(runtimes: list[Runtime], job: TrainJob) -> TrainJob:
    """``job`` with a context-parallel algorithm every runtime in ``runtimes`` runs, if any,
    and the first runtime's selective-recompute policy and FP8 saved inputs.

    The job's own CP choice wins when all accept it; otherwise the first common one; with
    none in common the first runtime's preferred one, and the others' rules then exclude
    CP > 1.
    """
    if runtimes:
        job = job.model_copy(update={"selective_policy": runtimes[0].selective_policy,
                                     "fp8_saved_inputs": runtimes[0].fp8_saved_inputs})
    offered = [r.context_parallel_comms for r in runtimes]
    if not offered or all(job.context_parallel_comm in o for o in offered):
        return job
    common = [k for k in offered[0] if all(k in o for o in offered)]
    choice = common[0] if common else offered[0][0]
    return job.model_copy(update={"context_parallel_comm": choice})
