"""What the cost model predicts for a layout the executor runs, term by term.

The tiny decoder becomes a ``ModelSpec`` (Llama-style: GQA, SwiGLU, RMSNorm, untied head), the
layout a ``ParallelConfig`` and the run an fp32 ``TrainJob`` without overlap (the executor
reduces gradients after the backward and gathers parameters in line), priced by
``estimate_config`` on the given cluster and efficiency (for a CPU: the ``local-cpu.yaml`` and
profile ``sysplan profile --device cpu`` wrote, whose measured gloo table prices the
collectives). Terms are grouped as the executor can measure them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.estimate import estimate_config
from sysplan.costmodels.types import Estimate, ParallelConfig
from sysplan.executor.layout import ExecLayout, chunk_layers
from sysplan.executor.model import TinyConfig
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec, MoESpec
from sysplan.profiles.device import cpu_cores
from sysplan.workloads.training import TrainJob

#: Measured groups and the cost-model terms each one sums.
TERM_GROUPS = {
    "compute": ("compute_gemm", "compute_attention", "compute_elementwise", "recompute",
                "lm_head", "ep_comm", "optimizer"),
    "tp": ("tp_comm",),
    "cp": ("cp_comm",),
    "dp": ("dp_comm",),
    "pipeline": ("pp_bubble", "pp_p2p"),
}


@dataclass(frozen=True)
class Prediction:
    """The cost model's step time, memory and grouped terms for one executor layout."""

    step_time_s: float
    tokens_per_s: float
    memory_bytes: float  # worst stage
    terms_s: dict[str, float]  # TERM_GROUPS -> seconds per step
    estimate: Estimate


def tiny_model_spec(tiny: TinyConfig) -> ModelSpec:
    """The executor's decoder as the cost model sees it."""
    moe = (MoESpec(num_experts=tiny.moe_experts, top_k=tiny.moe_top_k,
                   expert_ffn_hidden=tiny.ffn) if tiny.moe_experts else None)
    return ModelSpec(
        name=f"tiny decoder (h={tiny.hidden}, {tiny.layers} layers)", family="sysplan-run",
        num_layers=tiny.layers, hidden_size=tiny.hidden, num_heads=tiny.heads,
        num_kv_heads=tiny.kv_heads, head_dim=tiny.hidden // tiny.heads, ffn_hidden=tiny.ffn,
        vocab_size=tiny.vocab, max_seq_len=tiny.seq_len, moe=moe,
        source="sysplan run (executor/model.py)")


def parallel_config(tiny: TinyConfig, layout: ExecLayout) -> ParallelConfig:
    """The layout in the cost model's terms; stage layers summed per rank over its chunks."""
    chunks = [len(r) for r in chunk_layers(tiny, layout)]
    per_rank = tuple(sum(chunks[v * layout.pp + r] for v in range(layout.vpp))
                     for r in range(layout.pp))
    return ParallelConfig(
        tp=layout.tp, pp=layout.pp, vpp=layout.vpp, dp=layout.dp, cp=layout.cp,
        etp=layout.tp if tiny.moe_experts else 1,
        sequence_parallel=layout.sequence_parallel, zero=layout.zero,
        micro_batch=layout.micro_batch, global_batch=layout.global_batch,
        recompute=layout.recompute, recompute_layers=layout.recompute_layers,
        schedule="interleaved-1f1b" if layout.vpp > 1 else ("1f1b" if layout.pp > 1 else "none"),
        stage_layers=per_rank)


def busy_ranks(layout: ExecLayout) -> float:
    """Ranks computing at once, on average over a step: a pipeline's ranks idle in its
    bubble, (p - 1) / (v m) of their compute time (Narayanan et al. 2021, section 2.2)."""
    if layout.pp == 1:
        return float(layout.world_size)
    bubble = (layout.pp - 1) / (layout.vpp * layout.micro_batches)
    return layout.world_size / (1.0 + bubble)


def shared_cores(efficiency: Efficiency, cluster: Cluster, world: float) -> Efficiency:
    """``efficiency`` when ``world`` CPU processes compute on this machine at once: each runs
    its ops (their work and their host cost) at the rate the profile measured for one
    process alone, slowed by the contention it measured for that many processes side by
    side (shared caches, memory bandwidth, SMT siblings: ``profiles/contention.py``), and by
    cores / world more when they outnumber the cores (time slicing). GPUs are never shared
    (one rank per GPU)."""
    if cluster.gpu.gpu_class != "cpu" or world <= 1:
        return efficiency
    cores = cpu_cores()
    # one process alone runs at the measured rate; between measured counts (a pipeline's
    # average) the slowdown is interpolated, beyond the largest it is held
    measured = {1: 1.0, **{k: v for k, v in (efficiency.contention or {}).items() if k <= cores}}
    counts = sorted(measured)
    slowdown = float(np.interp(min(world, cores), counts, [measured[k] for k in counts]))
    share = min(1.0, cores / world) / slowdown
    if share == 1.0:
        return efficiency
    c = efficiency.calibration
    calibration = c.model_copy(update={"gemm_scale": c.gemm_scale * share,
                                       "attention_scale": c.attention_scale * share,
                                       "elementwise_scale": c.elementwise_scale * share})
    # the host work of every op (dispatch, autograd) runs on the same shared cores
    eager = efficiency.eager.slowed(share) if efficiency.eager is not None else None
    return replace(efficiency, calibration=calibration, eager=eager,
                   op_forward_s=efficiency.op_forward_s / share,
                   op_backward_s=efficiency.op_backward_s / share)


def predict(tiny: TinyConfig, layout: ExecLayout, cluster: Cluster,
            efficiency: Efficiency) -> Prediction:
    """Price ``layout`` of ``tiny`` on ``cluster`` (CPU processes beyond the measured ones
    share its cores: ``shared_cores``, as many at once as ``busy_ranks``)."""
    efficiency = shared_cores(efficiency, cluster, busy_ranks(layout))
    # the executor's attention is one SDPA call (priced from the profile's attention table)
    # and every other op runs eagerly, one pass over memory each
    # its CP all-gathers keys and values (parallel.TensorOps.cp_gather), not a ring
    job = TrainJob(seq_len=tiny.seq_len, global_batch=layout.global_batch, precision="fp32",
                   flash_attention=True, kernel_fusion="eager", overlap_grad_reduce=False,
                   overlap_param_gather=False, context_parallel_comm="allgather")
    estimate = estimate_config(tiny_model_spec(tiny), job, cluster,
                               parallel_config(tiny, layout), efficiency=efficiency)
    terms = {group: sum(estimate.breakdown.get(t, 0.0) for t in names)
             for group, names in TERM_GROUPS.items()}
    return Prediction(step_time_s=estimate.step_time_s, tokens_per_s=estimate.tokens_per_s,
                      memory_bytes=estimate.memory.total_bytes, terms_s=terms, estimate=estimate)
