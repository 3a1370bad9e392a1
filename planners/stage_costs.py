"""Per-layer inputs of the pipeline DP, read from the training cost model.

``layer_costs`` reads each layer of one configuration from ``layer_cost.model_costs``, the
per-layer function ``price_training`` sums over a stage, so an even split reproduces its stages;
``plan_stages`` runs ``pipeline_dp.optimal_stages`` on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layer_cost import RECOMPUTE_MODES, model_costs
from sysplan.costmodels.memory import ALLOCATOR_RESERVE_FRACTION, NCCL_BYTES_PER_COMMUNICATOR
from sysplan.costmodels.training import model_state_bytes
from sysplan.planners.pipeline_dp import optimal_stages
from sysplan.planners.stages import StagePlan

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
        """The layer keyword arguments of ``optimal_stages`` / ``evaluate_stages`` /
        ``stages.layer_problem``, less ``fixed_bytes`` (pass it to count those bytes)."""
        return {"layer_fwd_s": self.forward_s, "layer_bwd_s": self.backward_s,
                "layer_act_bytes": self.activation_bytes, "layer_state_bytes": self.state_bytes,
                "first_extra": self.first_extra, "last_extra": self.last_extra,
                "recompute_options": self.modes, "layer_wgrad_s": self.wgrad_s,
                "layer_transient_bytes": self.transient_bytes}


def layer_costs(model, job, cluster, config, efficiency=None) -> LayerCosts:
    """Per-layer time and memory of ``config`` from ``layer_cost.model_costs``, the per-layer
    function ``price_training`` sums over a stage, so an even split reproduces its stages."""
    eff = efficiency or Efficiency.for_cluster(cluster)
    c = Candidates.from_configs([config])
    costs = model_costs(model, job, cluster, c, eff)
    f = {k: getattr(c, k).astype(float) for k in ("tp", "dp", "cp", "ep", "etp", "zero", "pp")}
    reserve = eff.calibration.allocator_reserve
    reserve = 1.0 + (ALLOCATOR_RESERVE_FRACTION if reserve is None else reserve)

    def states(dense, expert, largest=0.0) -> float:
        parts = model_state_bytes(job, f, dense, expert, largest)
        return float(sum(parts.values())[0])

    kinds = {}
    for name, layer in costs.kinds.items():
        forward = float(layer.forward_s[0])
        totals = [float(layer.seconds(full, sel)[0]) for full, sel in ((0.0, 0.0), (0.0, 1.0),
                                                                       (1.0, 0.0))]
        kept = [float(layer.kept_bytes(mode)[0]) * reserve for mode in RECOMPUTE_MODES]
        kinds[name] = {"fwd": forward, "bwd": [t - forward for t in totals],
                       "wgrad": 0.5 * float(layer.time.gemm_bwd_s[0]), "act": kept,
                       "transient": [0.0, 0.0, float(layer.activation_bytes[0]) * reserve],
                       "state": states(layer.dense_params, layer.expert_params)}
    rows = [kinds[k] for k in costs.sequence]

    def column(key, row=None):
        return np.array([k[key] if row is None else k[key][row] for k in rows])
    head, mtp = costs.head, costs.mtp
    last = (float((head.seconds + mtp.seconds)[0]),
            states(head.dense_params + mtp.dense_params, mtp.expert_params)
            + float(costs.logits_bytes[0]) * reserve,
            float(mtp.activation_bytes[0]) * reserve)
    largest = float(max(k.dense_params[0] + k.expert_params[0] for k in costs.kinds.values()))
    groups = sum(float(f[k][0] > 1) for k in ("tp", "cp", "dp", "pp", "ep"))
    return LayerCosts(
        modes=RECOMPUTE_MODES, forward_s=column("fwd"),
        backward_s=np.array([column("bwd", r) for r in range(3)]), wgrad_s=column("wgrad"),
        activation_bytes=np.array([column("act", r) for r in range(3)]),
        transient_bytes=np.array([column("transient", r) for r in range(3)]),
        state_bytes=column("state"),
        first_extra=(float(costs.embedding.seconds[0]), states(costs.embedding.dense_params, 0.0),
                     0.0),
        last_extra=last, microbatches=config.num_microbatches,
        fixed_bytes=groups * NCCL_BYTES_PER_COMMUNICATOR + states(0.0, 0.0, largest))


def plan_stages(costs: LayerCosts, pp: int, schedule: str = "1f1b",
                memory_limit_bytes: float = math.inf, vpp: int = 1) -> StagePlan:
    """``optimal_stages`` on a configuration's ``layer_costs``, its per-rank fixed bytes
    included in every stage's memory."""
    return optimal_stages(pp=pp, m=costs.microbatches, schedule=schedule,
                          memory_limit_bytes=memory_limit_bytes, vpp=vpp,
                          fixed_bytes=costs.fixed_bytes, **costs.arrays())
