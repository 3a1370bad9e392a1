"""Hand-written plans the export tests share: each exercises features the planner may not pick
yet (uneven stages, partial recompute, Ulysses CP, MLA + MTP, Frontier across nodes)."""

from __future__ import annotations

from dataclasses import dataclass

from sysplan.costmodels.estimate import estimate_config
from sysplan.costmodels.types import ParallelConfig
from sysplan.exporters import ExportRequest
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.types import Plan
from sysplan.workloads.training import TrainJob


@dataclass(frozen=True)
class Case:
    """One plan to export, and the runtimes that must accept it (the rest must refuse)."""

    name: str
    model: str
    cluster: str
    parallel: dict
    accepted: frozenset[str]
    seq_len: int = 4096
    precision: str = "bf16"
    context_parallel_comm: str = "p2p"
    job_flags: tuple[tuple[str, object], ...] = ()  # other TrainJob fields

    def __str__(self) -> str:
        return self.name

    def request(self, torchtitan_format: str = "python") -> ExportRequest:
        model, _ = resolve_model(self.model)
        cluster, _ = load_cluster(self.cluster)
        job = TrainJob(seq_len=self.seq_len, global_batch=self.parallel["global_batch"],
                       precision=self.precision, context_parallel_comm=self.context_parallel_comm,
                       **dict(self.job_flags))
        config = ParallelConfig(**self.parallel)
        estimate = estimate_config(model, job, cluster, config)
        plan = Plan(rank=1, parallel=config, estimate=estimate, num_gpus=config.world_size,
                    objective_value=estimate.tokens_per_s_per_gpu)
        return ExportRequest(plan=plan, model=model, cluster=cluster, job=job,
                             torchtitan_format=torchtitan_format)


ALL = frozenset({"megatron", "deepspeed", "torchtitan"})

CASES = [
    Case("llama8b-one-node-zero3", "8b", "dgx-h100",
         {"dp": 8, "zero": 3, "micro_batch": 2, "global_batch": 64, "recompute": "full"}, ALL),
    Case("llama70b-uneven-first-last", "70b", "dgx-h100",
         {"tp": 8, "pp": 4, "dp": 2, "sequence_parallel": True, "zero": 1, "global_batch": 64,
              "recompute": "full", "recompute_layers": 5, "schedule": "1f1b",
              "stage_layers": (19, 21, 21, 19)},
         frozenset({"megatron"})),
    Case("llama70b-frontier-interleaved", "70b", "frontier",
         {"tp": 8, "pp": 8, "vpp": 2, "dp": 16, "sequence_parallel": True, "zero": 1, "global_batch": 1024,
              "schedule": "interleaved-1f1b"},
         frozenset({"megatron"})),
    Case("llama8b-torchtitan-interleaved", "8b", "dgx-h100",
         {"tp": 2, "sequence_parallel": True, "pp": 2, "vpp": 4, "dp": 4, "zero": 2, "global_batch": 64,
              "schedule": "interleaved-1f1b"},
         frozenset({"torchtitan"})),
    Case("llama8b-uneven-middle", "8b", "dgx-h100",
         {"pp": 4, "dp": 4, "zero": 0, "global_batch": 64, "stage_layers": (7, 9, 9, 7), "schedule": "1f1b"},
         frozenset({"megatron", "torchtitan"})),
    Case("llama8b-ulysses", "8b", "dgx-h100",
         {"cp": 4, "dp": 4, "zero": 2, "global_batch": 64}, frozenset({"megatron", "deepspeed"}),
         seq_len=32768, context_parallel_comm="a2a"),
    Case("mixtral-expert-parallel", "mixtral-8x7b", "dgx-h100",
         {"tp": 2, "sequence_parallel": True, "pp": 2, "dp": 16, "ep": 8, "etp": 1, "zero": 1, "global_batch": 256,
              "recompute": "selective", "schedule": "1f1b"},
         frozenset({"megatron"})),
    # a 128-token window on every second layer and biased experts: Megatron-LM only
    Case("gpt-oss-window-expert-bias", "gpt-oss-120b", "dgx-h100",
         {"dp": 64, "ep": 8, "zero": 1, "global_batch": 512}, frozenset({"megatron"})),
    Case("deepseek-v3-mla-mtp", "deepseek-v3", "dgx-h100",
         {"tp": 1, "pp": 16, "dp": 64, "ep": 64, "zero": 1, "global_batch": 4096, "schedule": "1f1b",
              "stage_layers": (3, 5, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 2)},
         frozenset({"megatron"})),
    # what `sysplan train --stages dp` gives without --runtime: no runtime takes a mode per stage
    Case("llama70b-per-stage-recompute", "70b", "dgx-h100",
         {"tp": 8, "pp": 4, "dp": 2, "sequence_parallel": True, "zero": 1, "global_batch": 64,
              "recompute": "full", "stage_recompute": ("full", "full", "selective", "none"),
              "stage_layers": (19, 20, 20, 21), "schedule": "1f1b"},
         frozenset()),
    Case("llama8b-fp8-tp", "8b", "dgx-h100",
         {"tp": 4, "sequence_parallel": True, "dp": 2, "zero": 0, "global_batch": 32}, frozenset({"megatron", "torchtitan"}),
         precision="fp8"),
    # Megatron-Bridge's performance recipes: bf16 gradients, Transformer Engine's fused loss
    Case("llama8b-bf16-grads-fused-loss", "8b", "dgx-h100",
         {"tp": 1, "dp": 8, "zero": 1, "global_batch": 64}, frozenset({"megatron"}),
         job_flags=(("grad_reduce_in_fp32", False), ("fused_loss", True))),
]
