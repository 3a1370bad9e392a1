"""Names the command line offers as choices, kept free of heavy imports so that `sysplan
train --help` does not load the cost models to list them. The modules that define the
concepts check at import that they agree (``planners/runtimes.py``, ``workloads/training.py``).
"""

#: Training runtimes sysplan exports to (``planners.runtimes.RUNTIMES``).
RUNTIME_NAMES = ("megatron", "deepspeed", "torchtitan")

#: ``--moe-dispatcher`` values: "auto" and Megatron's ``--moe-token-dispatcher-type`` values
#: (``workloads.training.MoeDispatcher``).
MOE_DISPATCHER_CHOICES = ("auto", "alltoall", "allgather", "flex")

#: ``--cuda-graphs`` values (``workloads.training.CudaGraphs``).
CUDA_GRAPH_CHOICES = ("none", "scoped", "full")

#: ``--recompute-modules`` values: the Megatron ``--recompute-modules`` sysplan prices
#: (``workloads.training.RecomputeModule``).
RECOMPUTE_MODULE_CHOICES = ("core_attn", "layernorm", "mla_up_proj", "moe_act", "mlp")
