"""Predict every published training run and print the error, dense and MoE rows apart.

Reads the repository copies benchmarks/data/training.csv and training_moe_gb300.csv (of
shared/data/published/). Each row's stated layout is pinned; knobs the source does not state
are left to the planner, as a user would. Predictions are converted to the row's own metric
with the row's own FLOP formula (see ``flops_per_step``). Baseline beside ours, for every row:
6 N (active) + 12 L H Q s attention FLOPs per token (PaLM App. B) at 40 % of the bf16 peak,
x 8/6 with full recompute; memory 16 bytes per parameter over TP x PP.
Nothing is fitted to these rows, and no factor is set per row or model.

    python benchmarks/training_accuracy.py [--csv PATH ...] [--quality AB]
        [--write-bands planners/accuracy_bands.json]

``--write-bands`` stores the MAPE per regime (``planners/accuracy.py``) that every
prediction then shows as its error band.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from sysplan.core.errors import NoPlanFits, SysplanError
from sysplan.core.units import GIB
from sysplan.costmodels import moe as moe_cost
from sysplan.hardware import load_cluster
from sysplan.models import model_flops_per_token, param_counts, resolve_model
from sysplan.models.spec import ModelSpec
from sysplan.planners.accuracy import regime
from sysplan.planners.training import plan_training
from sysplan.planners.types import Pins
from sysplan.profiles.loader import bundled_for_gpu
from sysplan.workloads.training import TrainJob

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_CSVS = (DATA / "training.csv", DATA / "training_moe_gb300.csv", DATA / "training_moe.csv")
#: Rows whose architecture the table leaves to the model's config: catalog name, MTP modules
#: (the first key a row's model name starts with wins; unlabelled DeepSeek-V3 rows keep the
#: catalog's one MTP module, the model's own configuration)
CATALOG_MODELS = {"deepseekv3 (w/o mtp)": ("deepseek-v3", 0), "deepseekv3 (w/ mtp)": ("deepseek-v3", 1),
                  "deepseekv3": ("deepseek-v3", None), "deepseek-v3": ("deepseek-v3", None),
                  "gpt oss 120b": ("gpt-oss-120b", None), "qwen3_30b_a3b": ("qwen3-30b-a3b", None),
                  "qwen3_235b_a22b": ("qwen3-235b-a22b", None),
                  "mixtral-8x7b": ("mixtral-8x7b", None), "mixtral-8x22b": ("mixtral-8x22b", None),
                  "llama4-scout": ("llama4-scout", None)}


#: Frameworks whose rows take their runtime settings from BRIDGE_RUNTIME / BRIDGE_RECOMPUTE
RUNTIME_TABLE_FRAMEWORKS = ("Megatron-Bridge", "NeMo 25.")


def _int(value: str) -> int | None:
    return int(float(value)) if value.strip() else None


def _float(value: str) -> float | None:
    return float(value) if value.strip() else None


def _catalog_name(r: dict) -> tuple[str, int | None] | None:
    name = r["model"].lower()
    for key, value in CATALOG_MODELS.items():
        if name.startswith(key):
            return value
    return None


def model_from_row(r: dict) -> ModelSpec:
    """Architecture as the row states it: GPT rows are GELU/LayerNorm/bias/tied/learned-pos;
    MoE rows that state no shape are the catalog's model (the table says "see HF configs")."""
    named = _catalog_name(r)
    if named is not None:
        model = resolve_model(named[0])[0]
        return model if named[1] is None else model.model_copy(update={"mtp_layers": named[1]})
    h, heads = int(r["hidden"]), int(r["heads"])
    gpt = r["model"].startswith("GPT")
    return ModelSpec(
        name=r["model"], num_layers=int(r["layers"]), hidden_size=h, num_heads=heads,
        num_kv_heads=_int(r["kv_heads"]) or heads, head_dim=h // heads,
        ffn_hidden=_int(r["ffn_hidden"]) or 4 * h, vocab_size=_int(r["vocab"]) or 51200,
        max_seq_len=int(r["seq_len"]), tied_embeddings=gpt, gated_mlp=not gpt,
        norm="layernorm" if gpt else "rmsnorm", linear_bias=gpt, learned_positions=gpt,
    )


def cluster_for(r: dict):
    gpu = r["gpu"]
    for name, cluster in (("GB300", "gb300-nvl72"), ("GB200", "gb200-nvl72"), ("B300", "dgx-b300"),
                          ("B200", "dgx-b200")):
        if name in gpu:
            return load_cluster(cluster)[0]
    if "96GB" in gpu:
        return load_cluster("grand-teton")[0]
    # H800 (export H100: same die and HBM, NVLink cut to 400 GB/s) is priced as an H100: the
    # catalog has no H800 node, so its row (quality C) is shown but not in the MAPE
    return load_cluster("dgx-h100" if "H100" in gpu or "H800" in gpu else "dgx-a100")[0]


def job_for(r: dict) -> TrainJob:
    """Runtime behaviour each source states (notes column), else sysplan's defaults."""
    notes, framework, precision = r["notes"], r["framework"], r["precision"].lower()
    prec = "fp8" if ("fp8" in precision or "float8" in precision) else (
        "fp16" if "fp16" in precision else "bf16")
    old_megatron = "(2021)" in framework or "(2022)" in framework
    flags = {"seq_len": int(r["seq_len"]), "global_batch": int(r["global_batch_seqs"]),
             "precision": prec}
    if old_megatron:
        # 2021/2022 Megatron: unfused softmax attention; DDP-impl local does not overlap the
        # gradient all-reduce (T020 notes say so), DDP-impl torch does (bucketed hooks)
        flags.update(flash_attention=False, overlap_grad_reduce="DDP-impl torch" in notes,
                     overlap_param_gather=False)
    elif "Megatron-Core" in framework or "NeMo" in framework or "HAI-LLM" in framework:
        flags.update(attention_backend="cudnn", tp_comm_overlap="--tp-comm-overlap" in notes)
    elif "torchtitan" in framework:
        # its Llama 3 train configs checkpoint selectively per op (selective_ac_option "op")
        # torchao's Float8Linear keeps the bf16 inputs for backward (planners/runtimes.py)
        flags.update(tp_comm_overlap="AsyncTP" in r["precision"] + r["source"],
                     selective_policy="op", fp8_saved_inputs="bf16")
    if framework.startswith(RUNTIME_TABLE_FRAMEWORKS):
        # both keep gradients in bf16: Megatron-Bridge's performance scripts
        # (cfg.ddp.grad_reduce_in_fp32 = False; scripts/performance in v0.1.0 (25.09 yaml),
        # v0.2.0 (25.11) and v0.3.0 (26.02)) and NeMo 2.0's for FP8 (scripts/performance/
        # utils.py set_primary_perf_configs at v2.3.1, helpers.py at v2.4.0)
        flags.update(grad_reduce_in_fp32=False)
        if framework.startswith("Megatron-Bridge"):
            # and fuses the loss (recipe.model.cross_entropy_fusion_impl = "te", with
            # GPTModelProvider.cross_entropy_loss_fusion True)
            flags.update(fused_loss=True)
            if modules := bridge_recompute_modules(r):
                flags.update(recompute_modules=modules)
        flags.update(bridge_runtime(r, prec))
    if "force-balance token routing" in notes:
        flags.update(moe_load_imbalance=1.0)  # the benchmark balances routing (row notes)
    if "apply_moe_token_drop" in notes or "MegatronTokenDropCallback" in notes:
        # Megatron-Bridge's and NeMo 2.0's token drop: capacity factor 1.0, expert inputs
        # padded to capacity
        flags.update(moe_capacity_factor=1.0)
    if "megatron" in framework.lower() and r["model"].startswith("GPT-3 175B") and not old_megatron:
        flags.update(flash_attention=False)
    return TrainJob(**flags)


#: Megatron-Bridge's DeepSeek-V3 recipes pin the pipeline layout by chunk count (PP x VPP):
#: the first chunk holds the embedding and the last the MTP module and the loss with fewer
#: layers (src/megatron/bridge/recipes/deepseek/deepseek_v3.py, layout_map for (4,1), (8,1),
#: (4,2), (16,1), (8,2), (4,4); its performance configs pin "Et*4|(t*4|)*14tmL" for PP 2 x VPP 8
#: and "Et|(tt|)*30mL" for PP 8 x VPP 4, scripts/performance/configs/deepseek/
#: deepseek_workload_base_configs.py); "{m}" is the MTP layer, absent in the "w/o MTP" rows
DEEPSEEK_V3_LAYOUTS = {4: "Et*16|t*16|t*16|t*13{m}L", 8: "Et*8|(t*8|)*6t*5{m}L",
                       16: "Et*4|(t*4|)*14t{m}L", 32: "Et|(tt|)*30{m}L"}


def pp_layout_for(r: dict, model: ModelSpec, pp: int | None, vpp: int | None) -> str | None:
    """The layout the row's recipe pins (Megatron-Bridge DeepSeek-V3 runs), else None."""
    if not (pp and pp > 1 and "Megatron-Bridge" in r["source"]
            and r["model"].startswith("DeepSeekV3")):
        return None
    layout = DEEPSEEK_V3_LAYOUTS.get(pp * (vpp or 1))
    return None if layout is None else layout.format(m="m" * model.mtp_layers)


#: --recompute-modules of Megatron-Bridge's DeepSeek-V3 and GPT-OSS performance configs by
#: container and GPU (scripts/performance/configs/{deepseek,gpt_oss}/*workload_base_configs.py
#: at v0.2.0 for 25.11 and v0.3.0 for 26.02; for 25.09 v0.1.0rc4's run_script.py sets the
#: DeepSeek-V3 modules per GPU, which its yaml's recompute_granularity "selective" keeps); the
#: FP8 GB300 DeepSeek-V3 preset of 26.02 recomputes mla_up_proj, its BF16 one and 25.11's
#: moe_act; GPT-OSS on GB300 sets none; for 26.08 the MXFP8 perf recipes
#: (src/megatron/bridge/perf_recipes/{deepseek,gpt_oss}/<gpu>/*.py at 067f987d) set
#: recompute_modules [] except DeepSeek-V3 on GB200 (mla_up_proj); the model verification
#: cards' H100 DeepSeek-V3 (26.08) and GB200 BF16 GPT-OSS (26.06) recipes recompute
#: mla_up_proj and mlp, and layernorm and moe_act
BRIDGE_RECOMPUTE = {
    ("DeepSeekV3", "26.02"): {"GB300": ("mla_up_proj",), "GB200": ("mla_up_proj",),
                              "B300": ("mla_up_proj",), "B200": ("mla_up_proj",),
                              "H100": ("mla_up_proj", "mlp")},
    ("DeepSeekV3", "26.04.01"): {"B300": ("mla_up_proj",)},
    ("DeepSeekV3", "25.11"): {"GB300": ("moe_act",), "GB200": ("mla_up_proj",),
                              "B200": ("mla_up_proj",), "H100": ("mla_up_proj", "mlp")},
    ("DeepSeekV3", "25.09"): {"GB200": ("mla_up_proj",), "B200": ("mla_up_proj",),
                              "H100": ("mla_up_proj", "mlp")},
    ("DeepSeekV3", "26.08"): {"GB300": (), "GB200": ("mla_up_proj",),
                              "H100": ("mla_up_proj", "mlp")},
    ("GPT OSS", "26.08"): {"GB300": (), "GB200": ()},
    ("GPT OSS", "26.06"): {"GB200": ("layernorm", "moe_act"), "B300": ()},
    ("GPT OSS", "26.02.01"): {"B300": ()},
    ("GPT OSS", "26.04"): {"GB200": ("layernorm", "moe_act"), "B200": ("layernorm", "moe_act")},
    ("GPT OSS", "26.02"): {"GB300": (), "GB200": ("layernorm", "moe_act"), "B300": (),
                           "B200": ("layernorm", "moe_act"), "H100": ("layernorm", "moe_act")},
    ("GPT OSS", "25.11"): {"GB300": (), "GB200": ("layernorm", "moe_act"),
                           "B200": ("layernorm", "moe_act"), "H100": ("layernorm", "moe_act")},
}


def _bridge_entry(table: dict, r: dict) -> tuple[dict, str] | None:
    """(the by-GPU settings ``table`` holds for a Megatron-Bridge or NeMo 2.0 (25.x) row's
    model and container, the row's GPU), None for other rows or ones the table lacks."""
    if not r["framework"].startswith(RUNTIME_TABLE_FRAMEWORKS):
        return None
    container = r["framework"].split()[-1]
    for (model, version), by_gpu in table.items():
        if r["model"].startswith(model) and version == container:
            return by_gpu, r["gpu"].split()[0]
    return None


def bridge_recompute_modules(r: dict) -> tuple[str, ...] | None:
    """The modules a Megatron-Bridge DeepSeek-V3 or GPT-OSS row recomputes (empty: none),
    None for other rows. Qwen3's configs turn recompute off (set_qwen3_common_configs:
    recompute_granularity None; qwen3_*_llm_pretrain.yaml in 25.09)."""
    if r["framework"].startswith("Megatron-Bridge") and r["model"].startswith("Qwen3"):
        return ()
    entry = _bridge_entry(BRIDGE_RECOMPUTE, r)
    return entry[0].get(entry[1]) if entry else None


#: What Megatron-Bridge's performance configs set besides recompute, by model, container and
#: GPU ("GPU/precision" where the precisions differ): CUDA graphs ("scoped": Transformer
#: Engine graphs of the attention and MoE router/preprocess, --cuda-graph-impl
#: transformer_engine; "full": Megatron's own per-layer or whole-iteration graphs), the token
#: dispatcher ("flex" where moe_flex_dispatcher_backend is hybridep or deepep, else Megatron's
#: alltoall) and moe_a2a_overlap (--overlap-moe-expert-parallel-comm). Read from
#: scripts/performance/configs/*/*workload_base_configs.py at v0.3.0 (26.02) and v0.2.0 (25.11),
#: and for 25.09 from v0.1.0rc4's run_script.py (DeepSeek-V3: DeepEP and the A2A overlap on
#: H100 only, where it also turns overlap_grad_reduce off) and qwen3_*_llm_pretrain.yaml
#: (cuda_graphs: true sets enable_cuda_graph, whole layers captured, which token drop's padded
#: shapes allow)
_SCOPED_FLEX = {"cuda_graphs": "scoped", "moe_dispatcher": "flex"}
_A2A = {"moe_dispatcher": "alltoall"}
_A2A_OVERLAP = {"moe_dispatcher": "alltoall", "ep_comm_overlap": True}
_FLEX_OVERLAP = {"moe_dispatcher": "flex", "ep_comm_overlap": True}
#: 26.08's MXFP8 recipes, every model on GB300 and GB200 (src/megatron/bridge/perf_recipes at
#: 067f987d: _enable_hybridep_full_iteration_mxfp8, _enable_deepseek_full_iteration_mxfp8,
#: _apply_gpt_oss_120b_full_iter_fp8mx_configs): a full-iteration CUDA graph, HybridEP with
#: moe_expert_rank_capacity_factor 1.5 and paged stashing (static buffers for dropless-style
#: routing), the batch-level EP overlap and the op fuser with NVTE_CUTEDSL_FUSED_GROUPED_MLP=1
_FULL_FUSED = {"cuda_graphs": "full", "moe_rank_capacity": 1.5, "moe_fused_experts": True,
               **_FLEX_OVERLAP}
BRIDGE_RUNTIME = {
    **{(model, "26.08"): {"GB300": _FULL_FUSED, "GB200": _FULL_FUSED}
       for model in ("GPT OSS", "Qwen3_30B", "Qwen3_235B")},
    # the model verification cards' BF16 recipes (examples/model_verification_cards at
    # 067f987d, their perf_recipes): DeepSeek-V3 on 1,024 H100s without overlapped gradient
    # reduction, its recipe's HybridEP (recipes/deepseek/h100/deepseek_v3.py sets the
    # alltoall type, then apply_flex_dispatcher_backend(cfg.model, "hybridep") turns it to flex
    # on Hopper); Qwen3-30B-A3B on 16 H100s (bridge 3a9559f0); GPT-OSS on 64 GB200s
    ("DeepSeekV3", "26.08"): {"GB300": _FULL_FUSED, "GB200": _FULL_FUSED,
                              "H100": {"moe_dispatcher": "flex", "overlap_grad_reduce": False}},
    ("Qwen3_30B", "26.06"): {"H100": {"cuda_graphs": "scoped", **_FLEX_OVERLAP}},
    # 26.04 (Megatron-Bridge v0.4.0 scripts/performance/configs): the rows whose configuration
    # no 26.02 row has
    ("GPT OSS", "26.04"): {"GB200": _FLEX_OVERLAP, "B200": {"moe_dispatcher": "flex"}},
    ("Qwen3_30B", "26.04"): {"B200": {"cuda_graphs": "scoped", "moe_dispatcher": "flex"},
                             "H100": {"moe_dispatcher": "flex"}},
    ("GPT OSS", "26.06"): {"GB200": _A2A_OVERLAP, "B300": _SCOPED_FLEX},
    # DGX-B300 (benchmarks/data/training_moe.csv T351-T358 notes: v0.3.0, branch r0.3.0 at
    # 904597bd3 for 26.02.01, v0.4.0, v0.4.2 = 26.04.01 and v0.5.0 base configs); 26.02.01's
    # GPT-OSS config names hybridep but its perf script never applies it: alltoall
    ("GPT OSS", "26.02.01"): {"B300": {"cuda_graphs": "scoped", **_A2A}},
    ("DeepSeekV3", "26.04.01"): {"B300": _SCOPED_FLEX},
    ("Qwen3_235B", "26.04"): {"B300": _A2A},
    ("DeepSeekV3", "26.02"): {"GB300/fp8": {"moe_dispatcher": "flex"}, "GB300": _SCOPED_FLEX,
                              "GB200": _SCOPED_FLEX, "B300": {"moe_dispatcher": "flex"},
                              "B200": {"moe_dispatcher": "flex"},
                              "H100": {"moe_dispatcher": "flex"}},
    ("DeepSeekV3", "25.11"): {"GB300": _SCOPED_FLEX, "GB200": _SCOPED_FLEX, "B200": _A2A,
                              "H100": _FLEX_OVERLAP},
    ("DeepSeekV3", "25.09"): {"GB200": _A2A, "B200": _A2A,
                              "H100": {**_FLEX_OVERLAP, "overlap_grad_reduce": False}},
    ("GPT OSS", "26.02"): {"GB300": {"cuda_graphs": "scoped", **_A2A}, "GB200": _A2A,
                           "B300": {"cuda_graphs": "scoped", **_A2A}, "B200": _A2A,
                           "H100": _A2A},
    ("GPT OSS", "25.11"): {"GB300": {"cuda_graphs": "scoped", **_A2A}, "GB200": _A2A,
                           "B200": _A2A, "H100": _A2A},
    ("Qwen3_30B", "26.02"): {"GB300": _SCOPED_FLEX, "GB200": _SCOPED_FLEX, "B300": _SCOPED_FLEX,
                             "B200": {"cuda_graphs": "scoped", **_A2A},
                             "H100/bf16": {"cuda_graphs": "scoped", **_FLEX_OVERLAP},
                             "H100": _FLEX_OVERLAP},
    ("Qwen3_30B", "25.11"): {"GB300": _SCOPED_FLEX, "GB200": _SCOPED_FLEX,
                             "B200": {"cuda_graphs": "scoped", **_A2A},
                             "H100/bf16": {"cuda_graphs": "scoped", **_A2A_OVERLAP},
                             "H100": _A2A_OVERLAP},
    ("Qwen3_30B", "25.09"): {"GB200": {"cuda_graphs": "full", **_A2A},
                             "B200": {"cuda_graphs": "full", **_A2A}, "H100": _A2A},
    ("Qwen3_235B", "26.02"): {"GB300": _SCOPED_FLEX, "GB200": _SCOPED_FLEX, "B300": _A2A_OVERLAP,
                              "B200": _A2A, "H100": _A2A_OVERLAP},
    ("Qwen3_235B", "25.11"): {"GB300": _SCOPED_FLEX, "GB200": _SCOPED_FLEX,
                              "B200": _A2A_OVERLAP, "H100": _A2A_OVERLAP},
    ("Qwen3_235B", "25.09"): {"GB200": {"cuda_graphs": "full", **_A2A}, "B200": _A2A,
                              "H100": _A2A},
    # NeMo 2.0 (NVIDIA/NeMo scripts/performance and its recipes at v2.2.1 = 25.02, v2.3.1 =
    # 25.04, v2.4.0 = 25.07; benchmarks/data/training_moe.csv T359-T363 notes): Megatron-Core's
    # whole-layer CUDA graphs (enable_cuda_graph) where the CSV or script turns them on, the
    # all-to-all dispatcher throughout; Llama 4's script fuses the loss in Transformer Engine
    ("Mixtral-8x7B", "25.02"): {"B200": {"cuda_graphs": "full", **_A2A}},
    ("Mixtral-8x7B", "25.04"): {"GB200": {"cuda_graphs": "full", **_A2A}},
    ("Mixtral-8x22B", "25.02"): {"B200": _A2A},
    ("Mixtral-8x22B", "25.04"): {"GB200": _A2A},
    ("LLAMA4-Scout", "25.07"): {"GB200": {"cuda_graphs": "full", "fused_loss": True, **_A2A}},
}


def bridge_runtime(r: dict, precision: str) -> dict:
    """The TrainJob settings ``BRIDGE_RUNTIME`` states for a Megatron-Bridge or NeMo 2.0 MoE
    row ({} for other rows)."""
    entry = _bridge_entry(BRIDGE_RUNTIME, r)
    if entry is None:
        return {}
    by_gpu, gpu = entry
    return dict(by_gpu.get(f"{gpu}/{precision}", by_gpu.get(gpu, {})))


def pins_for(r: dict, model: ModelSpec) -> Pins:
    recompute = r["recompute"].lower()
    rc = ("full" if "full" in recompute else "selective" if "selective" in recompute
          else "none" if recompute.startswith("none") else None)
    modules = bridge_recompute_modules(r)
    if modules is not None:
        rc = "selective" if modules else "none"
    sharding = r["sharding"].lower()
    zero = 3 if "fsdp" in sharding else 0 if sharding.startswith("none") else None
    sp = None
    if "sequence parallelism" in recompute:
        sp = "no sequence parallelism" not in recompute
    elif "(2021)" in r["framework"]:
        sp = False  # sequence parallelism arrived in 2022 (Korthikanti et al.)
    elif "torchtitan" in r["framework"] and int(r["tp"] or 1) > 1:
        sp = True  # torchtitan's TP plan shards norms along the sequence
    micro_batch, vpp = _int(r["micro_batch"]), _int(r["vpp"])
    if "torchtitan" in r["framework"] and (_int(r["pp"]) or 1) > 1:
        # torchtitan splits the "local batch" into as many micro-batches as there are
        # pipeline stages ("The default value will be the number of pipeline stages",
        # --experimental.pipeline_parallel_microbatches), two stages per rank when interleaved
        vpp = 2 if "interleaved" in (r["notes"] + r["precision"]).lower() else 1
        micro_batch = max(1, micro_batch // (int(r["pp"]) * vpp))
    pp = _int(r["pp"])
    return Pins(tp=_int(r["tp"]), pp=pp, vpp=vpp or (1 if pp == 1 else None),
                dp=_int(r["dp"]), cp=_int(r["cp"]), ep=_int(r["ep"]), micro_batch=micro_batch,
                recompute=rc, zero=zero, sequence_parallel=sp,
                pp_layout=pp_layout_for(r, model, pp, vpp))


def flops_per_step(r: dict, model: ModelSpec) -> float:
    """The row's own FLOP convention (published README notes say which)."""
    B, s, l, h = int(r["global_batch_seqs"]), int(r["seq_len"]), model.num_layers, model.hidden_size
    V = model.vocab_size
    if "(2021)" in r["framework"] or r["id"] == "T011":
        # Narayanan et al. 2021, eq. (3): hardware FLOPs with full recompute
        return 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))
    if "Megatron-Core" in r["framework"]:
        # model FLOPs without recompute (Narayanan et al. 2021 appendix; NeMo calculate_tflops)
        return 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h))
    # NeMo: 6 x matmul parameters (incl. LM head) + 12 l s h attention, per token
    counts = param_counts(model)
    return B * s * (6 * (counts.total - counts.embedding + (V * h if counts.lm_head == 0 else 0))
                    + 12 * l * s * h)


def measured_metric(r: dict) -> tuple[str, float] | None:
    for key in ("step_time_s", "tokens_per_s_per_gpu", "tflops_per_gpu"):
        if _float(r[key]) is not None:
            return key, float(r[key])
    if _float(r["mfu_pct"]) is not None:
        return "mfu_pct", float(r["mfu_pct"])
    return None


def predicted(metric: str, r: dict, model: ModelSpec, step: float, gpus: int, peak: float) -> float:
    tokens = int(r["global_batch_seqs"]) * int(r["seq_len"])
    if metric == "step_time_s":
        return step
    if metric == "tokens_per_s_per_gpu":
        return tokens / step / gpus
    tflops = flops_per_step(r, model) / step / gpus / 1e12
    return tflops if metric == "tflops_per_gpu" else 100 * tflops * 1e12 / peak


def baseline_step(r: dict, model: ModelSpec, cluster) -> float:
    """The fair one-liner for every row: 6 N (active, MoE) + 12 L H Q s attention FLOPs per
    token (PaLM, Chowdhery et al. 2022, App. B) at 40 % of the bf16 dense peak whatever the
    row's precision, x 8/6 with full recompute (one more forward, Korthikanti et al. 2022)."""
    tokens = int(r["global_batch_seqs"]) * int(r["seq_len"])
    flops = model_flops_per_token(model, int(r["seq_len"])) * tokens
    if "full" in r["recompute"].lower():
        flops *= 8.0 / 6.0
    return flops / (int(r["num_gpus"]) * cluster.gpu.peak("bf16") * 0.4)


def naive_memory(r: dict, model: ModelSpec) -> float:
    """Baseline: 16 bytes per parameter (ZeRO paper) over TP x PP, ignoring activations."""
    shards = (_int(r["tp"]) or 1) * (_int(r["pp"]) or 1)
    return 16 * param_counts(model).total / shards


def evaluate(r: dict, bundled_profile: bool = True) -> dict:
    model, cluster, job = model_from_row(r), cluster_for(r), job_for(r)
    pins = pins_for(r, model)
    gpus = int(r["num_gpus"])
    out = {"id": r["id"], "source": _short_source(r), "quality": r["quality"], "model": r["model"],
           "moe": model.moe is not None, "gpu": r["gpu"], "gpu_class": cluster.gpu.gpu_class,
           "framework": r["framework"],
           "seq_len": job.seq_len}
    metric = measured_metric(r)
    if metric is None:
        return {**out, "error": "no metric"}
    key, truth = metric
    try:
        result = plan_training(model, cluster, job, num_gpus=gpus, pins=pins, top=1,
                               memory_headroom_bytes=0.0, bundled_profile=bundled_profile)
    except NoPlanFits:
        # the stated layout ran, so price it anyway; the memory columns show the miss
        result = plan_training(model, cluster, job, num_gpus=gpus, pins=pins, top=1,
                               memory_headroom_bytes=-(2**40), bundled_profile=bundled_profile)
        out["over_memory"] = True
    except SysplanError as exc:
        return {**out, "metric": key, "truth": truth, "error": str(exc)[:90]}
    plan = result.plans[0]
    step = plan.estimate.step_time_s
    peak = cluster.gpu.peak("bf16")
    ours = predicted(key, r, model, step, gpus, peak)
    base = predicted(key, r, model, baseline_step(r, model, cluster), gpus, peak)
    # in-sample: a row the bundled profile's calibration was fitted on (its fitted_on names it)
    bundled = bundled_for_gpu(cluster.gpu.name) if bundled_profile else None
    fitted_on = bundled.calibration.fitted_on if bundled and bundled.calibration else ""
    fitted_on += " " + " ".join(moe_cost.MOE_KERNEL_FITTED_ON if model.moe else ())
    out.update(metric=key, truth=truth, ours=ours, naive=base, err=ours / truth - 1,
               naive_err=base / truth - 1, layout=_layout(plan.parallel), ep=plan.parallel.ep,
               profile=result.profile.name, in_sample=r["id"] in fitted_on.split(),
               regime=regime(model.moe is not None, job.seq_len,
                             not result.profile.name.startswith("default-")))
    if _float(r["peak_mem_gib"]) is not None:
        mem_truth = float(r["peak_mem_gib"])
        # the published figure is the caching allocator's max reserved: NCCL's buffers are
        # cudaMalloc'ed by NCCL itself, outside it (NCCL docs, NCCL_BUFFSIZE)
        memory = plan.estimate.memory
        allocator = memory.total_bytes - memory.terms.get("comm_buffers", 0.0)
        out.update(mem_truth=mem_truth, mem_ours=allocator / GIB,
                   mem_naive=naive_memory(r, model) / GIB)
    return out


def _short_source(r: dict) -> str:
    return re.split(r"[,(']", r["source"])[0].strip()[:28]


def _layout(p) -> str:
    return (f"tp{p.tp} pp{p.pp} v{p.vpp} dp{p.dp} cp{p.cp} z{p.zero} mb{p.micro_batch} "
            f"{p.recompute[:4]}{' sp' if p.sequence_parallel else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, nargs="+", default=list(DEFAULT_CSVS))
    parser.add_argument("--quality", default="AB", help="quality letters to include in MAPE")
    parser.add_argument("--no-profile", action="store_true",
                        help="price with the uncalibrated defaults, not the bundled profiles")
    parser.add_argument("--ids", help="comma-separated row ids to predict (default: all)")
    parser.add_argument("--write-bands", type=Path, metavar="JSON",
                        help="write the MAPE per regime (planners/accuracy_bands.json)")
    parser.add_argument("--fit-moe-kernel", metavar="IDS",
                        help="comma-separated MoE row ids to fit costmodels.moe.MOE_KERNEL_S and "
                        "MOE_GRAPHED_SHARE on (prints the MAPE of each candidate pair on them, "
                        "and of the best on the rest)")
    args = parser.parse_args(argv)
    rows = [r for path in args.csv for r in csv.DictReader(path.open())]
    if args.ids:
        wanted = set(args.ids.split(","))
        rows = [r for r in rows if r["id"] in wanted]
    if args.fit_moe_kernel:
        return fit_moe_kernel(rows, args.fit_moe_kernel.split(","), set(args.quality))
    results = [evaluate(r, bundled_profile=not args.no_profile) for r in rows]
    print(f"{'id':5} {'q':1} {'model':20} {'metric':20} {'published':>10} {'sysplan':>9} "
          f"{'err':>7} {'baseline':>9} {'err':>7}  layout")
    for x in results:
        if "err" not in x:
            print(f"{x['id']:5} {x['quality']:1} {x['model'][:20]:20} {x.get('metric', ''):20} "
                  f"{x.get('truth', float('nan')):>10.4g}  -- {x.get('error', '')}")
            continue
        print(f"{x['id']:5} {x['quality']:1} {x['model'][:20]:20} {x['metric']:20} "
              f"{x['truth']:>10.4g} {x['ours']:>9.4g} {x['err']:>+7.1%} {x['naive']:>9.4g} "
              f"{x['naive_err']:>+7.1%}  {x['layout']}{' ep' + str(x['ep']) if x['moe'] else ''}{' (over memory)' if x.get('over_memory') else ''}"
              f"  [{x['profile']}]")
    _summary(results, set(args.quality))
    bands = _bands(results, set(args.quality))
    if args.write_bands:
        args.write_bands.write_text(json.dumps(bands, indent=2) + "\n")
        print(f"wrote {args.write_bands}")
    return 0


#: Candidate seconds per MoE-block kernel ``--fit-moe-kernel`` tries (0 to 60 us), and
#: candidate shares of it a CUDA-graph-replayed kernel keeps
MOE_KERNEL_GRID = tuple(i * 1e-6 for i in range(0, 61, 2))
MOE_GRAPHED_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def fit_moe_kernel(rows: list[dict], ids: list[str], quality: set[str]) -> int:
    """Grid-search ``MOE_KERNEL_S`` and ``MOE_GRAPHED_SHARE`` together on the MoE rows ``ids``
    (least MAPE of the predicted throughput) and print the MAPE of each pair on them, and of
    the best pair on the other MoE rows (out of sample)."""
    moe_rows = [r for r in rows if r["quality"] in quality and model_from_row(r).moe is not None]
    fit = [r for r in moe_rows if r["id"] in ids]
    held = [r for r in moe_rows if r["id"] not in ids]
    if not fit:
        print(f"error: none of {','.join(ids)} is a MoE row of quality {''.join(quality)}")
        return 2

    def mape(part: list[dict]) -> float:
        errors = [abs(x["err"]) for x in map(evaluate, part) if "err" in x]
        return sum(errors) / len(errors) if errors else float("nan")

    saved = moe_cost.MOE_KERNEL_S, moe_cost.MOE_GRAPHED_SHARE
    table = {}
    try:
        for value in MOE_KERNEL_GRID:
            for share in MOE_GRAPHED_GRID:
                moe_cost.MOE_KERNEL_S, moe_cost.MOE_GRAPHED_SHARE = value, share
                table[value, share] = mape(fit)
        best = min(table, key=table.get)
        moe_cost.MOE_KERNEL_S, moe_cost.MOE_GRAPHED_SHARE = best
        held_out = mape(held)
    finally:
        moe_cost.MOE_KERNEL_S, moe_cost.MOE_GRAPHED_SHARE = saved
    print(f"in-sample MAPE on {len(fit)} rows; columns: MOE_GRAPHED_SHARE")
    print(f"{'us/kernel':>9} " + " ".join(f"{share:>6.2f}" for share in MOE_GRAPHED_GRID))
    for value in MOE_KERNEL_GRID:
        cells = [f"{table[value, share]:>6.1%}" + ("*" if (value, share) == best else " ")
                 for share in MOE_GRAPHED_GRID]
        print(f"{value * 1e6:>9.0f} " + "".join(cells))
    print(f"fitted MOE_KERNEL_S = {best[0] * 1e6:.0f}e-6, MOE_GRAPHED_SHARE = {best[1]:g} "
          f"(in-sample {table[best]:.1%}, held-out {held_out:.1%} on {len(held)} rows) on "
          f"{' '.join(r['id'] for r in fit)}")
    return 0


#: What each regime covers, as the planner's header says it.
REGIMES = {"dense-profiled": "dense, measured GPU profile",
           "dense-default": "dense, uncalibrated default efficiencies",
           "dense-long": "dense, sequences of 16k tokens or more",
           "moe": "mixture of experts"}


def _bands(results: list[dict], quality: set[str]) -> dict:
    """MAPE per regime over the rows of ``quality`` a calibration was not fitted on (printed,
    and what --write-bands stores; in-sample rows are counted apart, never in the band)."""
    rows = [x for x in results if "err" in x and x["quality"] in quality]
    print("\nError band per regime (what each prediction shows; planners/accuracy.py):")
    out = {}
    for name, description in REGIMES.items():
        xs = [x for x in rows if x["regime"] == name and not x["in_sample"]]
        mape = sum(abs(x["err"]) for x in xs) / len(xs) if xs else None
        out[name] = {"description": description, "rows": len(xs),
                     "mape": round(mape, 4) if mape is not None else None,
                     "in_sample": sum(x["in_sample"] for x in rows if x["regime"] == name),
                     "gpu_classes": sorted({x["gpu_class"] for x in xs})}
        print(f"  {name:15} {len(xs):>4} rows  MAPE {mape if mape is None else f'{mape:.1%}'}"
              f"  GPU classes {', '.join(out[name]['gpu_classes'])}")
    return {"generated_by": "python benchmarks/training_accuracy.py --write-bands "
                            "planners/accuracy_bands.json",
            "quality": "".join(sorted(quality)), "regimes": out}


def _summary(results: list[dict], quality: set[str]) -> None:
    by_source: dict[str, list[dict]] = defaultdict(list)
    for x in results:
        if "err" in x and x["quality"] in quality:
            by_source[x["source"]].append(x)
    print(f"\nMAPE by source (quality {''.join(sorted(quality))}; throughput or step time):")
    print(f"  {'source':30} {'rows':>4} {'sysplan':>8} {'baseline':>8}  in-sample rows "
          f"(fitted by a bundled calibration)")
    everything = [x for xs in by_source.values() for x in xs]
    groups = [("ALL dense", [x for x in everything if not x["moe"]]),
              ("  dense, training.csv", [x for x in everything
                                         if not x["moe"] and "GB300" not in x["gpu"]]),
              ("  dense, out of sample", [x for x in everything
                                          if not x["moe"] and not x["in_sample"]]),
              ("  dense, GB300", [x for x in everything if not x["moe"] and "GB300" in x["gpu"]]),
              ("ALL MoE", [x for x in everything if x["moe"]]),
              ("  MoE, out of sample", [x for x in everything
                                        if x["moe"] and not x["in_sample"]])]
    for gpu in ("H100", "B200", "B300", "GB200", "GB300"):  # MoE by system (B200 excludes GB200)
        groups.append((f"  MoE, {gpu}", [x for x in everything if x["moe"] and (
            x["gpu"].startswith(gpu) or x["gpu"].startswith("H800") and gpu == "H100")]))
    for family in ("DeepSeek", "GPT", "Qwen3", "Mixtral", "LLAMA4"):  # MoE by model family
        groups.append((f"  MoE, {family}", [x for x in everything
                                            if x["moe"] and x["model"].startswith(family)]))
    groups.append(("  MoE, 26.08 container", [x for x in everything
                                              if x["moe"] and x["framework"].endswith("26.08")]))
    # what the one family sysplan misses most (GPT-OSS on Blackwell) weighs in the rest
    groups.append(("  MoE, without GPT-OSS", [x for x in everything
                                              if x["moe"] and not x["model"].startswith("GPT")]))
    for name, xs in sorted(by_source.items()) + [g for g in groups if g[1]]:
        ours = sum(abs(x["err"]) for x in xs) / len(xs)
        naive = sum(abs(x["naive_err"]) for x in xs) / len(xs)
        fitted = sum(x["in_sample"] for x in xs)
        print(f"  {name:30} {len(xs):>4} {ours:>8.1%} {naive:>8.1%}  {fitted or ''}")
    mem = [x for x in results if "mem_truth" in x and x["quality"] in quality]
    if mem:
        print("\nPeak memory (GiB; published = the allocator's max reserved):")
        for x in mem:
            print(f"  {x['id']:5} published {x['mem_truth']:6.1f}  sysplan {x['mem_ours']:6.1f} "
                  f"({x['mem_ours'] / x['mem_truth'] - 1:+.1%})  16 B/param "
                  f"{x['mem_naive']:6.1f} ({x['mem_naive'] / x['mem_truth'] - 1:+.1%})"
                  f"{'  judged not to fit' if x.get('over_memory') else ''}")
        ours = sum(abs(x["mem_ours"] / x["mem_truth"] - 1) for x in mem) / len(mem)
        naive = sum(abs(x["mem_naive"] / x["mem_truth"] - 1) for x in mem) / len(mem)
        print(f"  memory MAPE: sysplan {ours:.1%}  16 B/param {naive:.1%}  ({len(mem)} rows)")
    ran = [x for x in results if "err" in x]
    refused = [x["id"] for x in ran if x.get("over_memory")]
    print(f"  published runs judged not to fit: {len(refused)} of {len(ran)}"
          f"{' (' + ', '.join(refused) + ')' if refused else ''}")
    skipped = [x for x in results if "err" not in x]
    if skipped:
        print(f"\n{len(skipped)} rows not predicted (see '--' lines).")


if __name__ == "__main__":
    sys.exit(main())
