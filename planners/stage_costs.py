"""Per-layer inputs of the pipeline DP, read from the training cost model.

``layer_costs`` prices each layer of one configuration with the helpers ``price_training`` uses
for a whole stage, so a uniform split reproduces its per-stage compute; ``plan_stages`` runs
``pipeline_dp.optimal_stages`` on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sysplan.costmodels import training as tr
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.compute import layer_forward, linear_seconds
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layers import layer_shapes
from sysplan.costmodels.memory import (
    ALLOCATOR_RESERVE_FRACTION,
    NCCL_BYTES_PER_COMMUNICATOR,
    activation_bytes_per_token,
    element_bytes,
)
from sysplan.models.counting import padded_vocab
from sysplan.planners.pipeline_dp import RECOMPUTE_MODES, StagePlan, optimal_stages

# --- per-layer inputs from the training cost model ---------------------------------------------

@dataclass(frozen=True)
class LayerCosts:
    """Per-layer costs of one configuration, as ``price_training`` prices a layer; rows are
    ``modes`` (none, selective, full), columns the model's layers in order."""

    modes: tuple[str, ...]
    forward_s: np.ndarray  # (L,) forward per micro-batch incl. half the TP/CP/EP traffic
    backward_s: np.ndarray  # (R, L) backward + recompute + the other half of the traffic
    wgrad_s: np.ndarray  # (L,) weight-gradient GEMMs (half the backward GEMMs)
    activation_bytes: np.ndarray  # (R, L) stored per micro-batch (x allocator reserve)
    transient_bytes: np.ndarray  # (R, L) full recompute: one layer's activations at a time
    state_bytes: np.ndarray  # (L,) weights + gradients + optimizer after ZeRO sharding
    first_extra: tuple[float, float, float]  # embedding: (s, bytes, act bytes per micro-batch)
    last_extra: tuple[float, float, float]  # final norm, LM head, loss, logits, MTP modules
    fixed_bytes: float  # every rank: communicator buffers, ZeRO gather/reduce buffers
    microbatches: int  # m of the configuration

    def arrays(self) -> dict:
        """The layer keyword arguments of ``optimal_stages`` / ``evaluate_stages``."""
        return {"layer_fwd_s": self.forward_s, "layer_bwd_s": self.backward_s,
                "layer_act_bytes": self.activation_bytes, "layer_state_bytes": self.state_bytes,
                "first_extra": self.first_extra, "last_extra": self.last_extra,
                "recompute_options": self.modes, "layer_wgrad_s": self.wgrad_s,
                "layer_transient_bytes": self.transient_bytes}


def layer_costs(model, job, cluster, config, efficiency=None) -> LayerCosts:
    """Per-layer time and memory of ``config`` from the training cost model
    (``costmodels/training.py``: the same helpers price one layer here as a whole stage
    there, so a uniform split reproduces its per-stage compute)."""
    eff = efficiency or Efficiency.for_cluster(cluster)
    c = Candidates.from_configs([config])
    f = {k: getattr(c, k).astype(float) for k in
         ("tp", "pp", "vpp", "dp", "cp", "ep", "etp", "sp", "zero", "mb", "recompute")}
    tp, cp, ep, etp, sp = f["tp"], f["cp"], f["ep"], f["etp"], f["sp"]
    tokens = f["mb"] * job.seq_len / cp
    reserve = eff.calibration.allocator_reserve
    reserve = 1.0 + (ALLOCATOR_RESERVE_FRACTION if reserve is None else reserve)
    h = model.hidden_size
    one, zero = np.ones(1), np.zeros(1)

    def states(dense, expert, largest=0.0) -> float:
        # _memory's weights + gradients + optimizer are linear in the parameter counts
        params = tr.LocalParams(dense * one, expert * one, largest * one)
        mem = tr._memory(model, job, eff, f, params, [], tokens, one, one, zero, zero)
        return float(mem["weights"][0] + mem["gradients"][0] + mem["optimizer"][0])

    kinds, largest = {}, 0.0
    for moe in sorted({model.is_moe_layer(i) for i in range(model.num_layers)} | {
            model.mtp_layers > 0 and model.moe is not None}):
        shapes = layer_shapes(model, moe)
        fwd = layer_forward(model, job, eff, shapes, tokens=tokens, tp=tp, etp=etp, ep=ep,
                            sp=sp, cp=cp, imbalance=job.moe_load_imbalance)
        comm = tr._layer_comm(model, job, cluster, eff, shapes, fwd, tokens, tp, cp, ep, etp)
        totals = []
        for full, selective in ((0.0, False), (0.0, True), (1.0, False)):
            per_mb = {k: np.zeros(1) for k in ("gemm", "attn", "elem", "recompute", "tp", "cp",
                                               "ep", "fwd", "bwd")}
            tr._accumulate(per_mb, fwd, comm, 1.0, full, selective)
            totals.append(float(sum(per_mb[k] for k in ("gemm", "attn", "elem", "recompute",
                                                         "tp", "cp", "ep"))[0]))
        forward = float(fwd.total_s[0] + 0.5 * (comm["tp"] + comm["cp"] + comm["ep"])[0])
        layer_bytes = [float(activation_bytes_per_token(model, job, shapes, tp, sp, etp, s)[0]
                             * tokens[0]) for s in (False, True)]
        # full recompute keeps the layer input (Korthikanti et al. 2022, Table 2), as _memory
        kept = float(element_bytes(job.precision) * h * tokens[0]
                     / (tp[0] if sp[0] > 0 else 1.0))
        split, replicated, routed = tr._layer_params(shapes, h)
        dense, expert = split / tp[0] + replicated, routed / (ep[0] * etp[0])
        largest = max(largest, dense + expert)
        kinds[moe] = {"fwd": forward, "bwd": [t - forward for t in totals],
                      "wgrad": 0.5 * float(fwd.gemm_bwd_s[0]),
                      "act": [x * reserve for x in (*layer_bytes, kept)],
                      "transient": [0.0, 0.0, layer_bytes[0] * reserve],
                      "state": states(dense, expert)}
    rows = [kinds[model.is_moe_layer(i)] for i in range(model.num_layers)]

    def column(key, row=None):
        return np.array([k[key] if row is None else k[key][row] for k in rows])
    vocab = float(padded_vocab(model, int(tp[0])))
    embedding = vocab * h / tp[0] + (model.max_seq_len * h if model.learned_positions else 0.0)
    head = (0.0 if model.tied_embeddings else vocab * h / tp[0]) + h
    head_s = float(tr._lm_head_seconds(model, eff, tokens, tp, job.precision)[0])
    logits = 4.0 * tokens[0] * (h + vocab / tp[0]) * reserve  # _memory's last-stage logits
    last = [head_s, states(head, 0.0) + logits, 0.0]
    if model.mtp_layers:  # DeepSeek-V3 section 2.2: a layer, eh_proj (2h -> h), the shared head
        mtp = kinds[model.moe is not None]
        proj_f, proj_b = linear_seconds(eff, tokens, h / tp, 2 * h, eff.gpu.peak("bf16"))
        last[0] += model.mtp_layers * (mtp["fwd"] + mtp["bwd"][0] + float((proj_f + proj_b)[0])
                                       + head_s)
        last[1] += model.mtp_layers * (mtp["state"] + states(2 * h * h / tp[0] + 3 * h, 0.0))
        last[2] += model.mtp_layers * mtp["act"][0]
    groups = sum(float(x[0] > 1) for x in (tp, cp, f["dp"], f["pp"], ep))
    return LayerCosts(
        modes=RECOMPUTE_MODES, forward_s=column("fwd"),
        backward_s=np.array([column("bwd", r) for r in range(3)]), wgrad_s=column("wgrad"),
        activation_bytes=np.array([column("act", r) for r in range(3)]),
        transient_bytes=np.array([column("transient", r) for r in range(3)]),
        state_bytes=column("state"), first_extra=(0.0, states(embedding, 0.0), 0.0),
        last_extra=tuple(last), microbatches=config.num_microbatches,
        fixed_bytes=groups * NCCL_BYTES_PER_COMMUNICATOR + states(0.0, 0.0, largest))


def plan_stages(costs: LayerCosts, pp: int, schedule: str = "1f1b",
                memory_limit_bytes: float = math.inf, vpp: int = 1) -> StagePlan:
    """``optimal_stages`` on a configuration's ``layer_costs``; the per-rank fixed bytes
    come off the limit and are added back to the reported memory."""
    plan = optimal_stages(pp=pp, m=costs.microbatches, schedule=schedule,
                          memory_limit_bytes=memory_limit_bytes - costs.fixed_bytes, vpp=vpp,
                          **costs.arrays())
    memory = tuple(x + costs.fixed_bytes for x in plan.stage_memory_bytes)
    return StagePlan(**{**plan.__dict__, "stage_memory_bytes": memory})
