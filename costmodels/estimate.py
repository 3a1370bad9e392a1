"""Turn one priced configuration into an ``Estimate`` (the public, per-plan record)."""

from __future__ import annotations

import numpy as np

from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layer_cost import balanced_stage_layers
from sysplan.costmodels.memory import linear_dtype
from sysplan.costmodels.training import MEMORY_TERMS, TIME_TERMS, Priced, price_training
from sysplan.costmodels.types import Estimate, MemoryBreakdown, ParallelConfig
from sysplan.hardware.types import Cluster
from sysplan.models.counting import model_flops_per_token
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob


def throughput_arrays(model: ModelSpec, job: TrainJob, cluster: Cluster, c: Candidates,
                      priced: Priced) -> dict[str, np.ndarray]:
    """tokens/s, tokens/s/GPU, MFU and HFU for every priced configuration."""
    step = priced.step_time_s
    tokens_per_s = c.global_batch * job.seq_len / step
    gpus = c.gpus.astype(float)
    # MFU and HFU are stated against the dense bf16 peak for every precision, so an fp8 plan
    # reads higher, not lower, for the same speed; fp8 jobs add MFU against the fp8 peak
    peak = cluster.gpu.peak("bf16")
    flops_per_token = model_flops_per_token(model, job.seq_len)
    # MFU: model FLOPs x tokens/s / (GPUs x dense peak) (PaLM, Chowdhery et al. 2022, App. B)
    mfu = flops_per_token * tokens_per_s / (gpus * peak)
    hfu = mfu + priced.recompute_flops_per_gpu / (step * peak)
    linear_peak = cluster.gpu.peak(linear_dtype(job.precision))
    return {"tokens_per_s": tokens_per_s, "tokens_per_s_per_gpu": tokens_per_s / gpus,
            "mfu": mfu, "hfu": hfu, "mfu_linear_peak": mfu * peak / linear_peak}


def _per_stage(model, c: Candidates, i: int, priced: Priced, stages: tuple[int, ...]):
    """Approximate per-stage totals: activations scale with the micro-batches in flight
    (p - i for 1F1B, Narayanan et al. 2021), states with the stage's layer count."""
    pp = int(c.pp[i])
    m = int(c.microbatches[i])
    worst_layers = max(stages)
    rows = []
    for s, layers in enumerate(stages):
        scale = layers / worst_layers
        in_flight = min(pp - s, m) / max(min(pp, m), 1)
        row = {k: float(priced.memory[k][i]) * scale for k in ("weights", "gradients", "optimizer")}
        row["activations"] = float(priced.memory["activations"][i]) * scale * in_flight
        other = sum(float(priced.memory[k][i]) for k in ("comm_buffers", "allocator_reserve"))
        if s == pp - 1:
            other += float(priced.memory["logits"][i])
        row["other"] = other
        row["total"] = sum(row.values())
        rows.append({"stage": s, "layers": layers, **{f"{k}_bytes": v for k, v in row.items()}})
    return tuple(rows)


def build_estimate(model: ModelSpec, job: TrainJob, cluster: Cluster, c: Candidates,
                   priced: Priced, rates: dict[str, np.ndarray], i: int,
                   usable_bytes: float) -> tuple[ParallelConfig, Estimate]:
    """ParallelConfig and Estimate for configuration ``i`` of a priced batch."""
    stages = balanced_stage_layers(model.num_layers, int(c.pp[i]))
    config = c.config(i, stages)
    mem = {k: float(priced.memory[k][i]) for k in MEMORY_TERMS}
    total = sum(mem.values())
    memory = MemoryBreakdown(
        total_bytes=total, weights_bytes=mem["weights"], gradients_bytes=mem["gradients"],
        optimizer_bytes=mem["optimizer"], activations_bytes=mem["activations"],
        other_bytes=mem["logits"] + mem["comm_buffers"] + mem["allocator_reserve"],
        terms=mem, per_stage=_per_stage(model, c, i, priced, stages),
    )
    estimate = Estimate(
        step_time_s=float(priced.step_time_s[i]),
        tokens_per_s=float(rates["tokens_per_s"][i]),
        tokens_per_s_per_gpu=float(rates["tokens_per_s_per_gpu"][i]),
        mfu=float(rates["mfu"][i]), hfu=float(rates["hfu"][i]),
        mfu_fp8=float(rates["mfu_linear_peak"][i]) if job.precision == "fp8" else None,
        model_flops_per_token=float(model_flops_per_token(model, job.seq_len)),
        fits=total <= usable_bytes, memory=memory,
        breakdown={k: float(priced.time[k][i]) for k in TIME_TERMS},
    )
    return config, estimate


def estimate_config(model: ModelSpec, job: TrainJob, cluster: Cluster, config: ParallelConfig,
                    usable_bytes: float | None = None,
                    efficiency: Efficiency | None = None) -> Estimate:
    """Price one explicit configuration (library entry point) with ``efficiency`` (default:
    the bundled profile of the cluster's GPU, else the uncalibrated curves); the estimate
    names the terms priced outside the profile's measured range."""
    eff = (efficiency or Efficiency.for_cluster(cluster)).tracking()
    c = Candidates.from_configs([config])
    priced = price_training(model, job, cluster, c, eff)
    rates = throughput_arrays(model, job, cluster, c, priced)
    usable = cluster.gpu.memory_bytes if usable_bytes is None else usable_bytes
    estimate = build_estimate(model, job, cluster, c, priced, rates, 0, usable)[1]
    return estimate.model_copy(update={"extrapolated_terms": tuple(sorted(eff.seen))})
