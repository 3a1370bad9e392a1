"""A batch of parallel configurations as parallel numpy arrays (struct of arrays).

The cost model prices a whole search space in one call; ``Candidates`` is that space.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from sysplan.costmodels.types import ParallelConfig

RECOMPUTE_CODES = {"none": 0, "selective": 1, "full": 2}
RECOMPUTE_NAMES = {code: name for name, code in RECOMPUTE_CODES.items()}


@dataclass(frozen=True)
class Candidates:
    """Configurations, one per index; every field is an int array of equal length."""

    tp: np.ndarray
    pp: np.ndarray
    vpp: np.ndarray
    dp: np.ndarray
    cp: np.ndarray
    ep: np.ndarray
    etp: np.ndarray
    sp: np.ndarray  # 0/1 sequence parallel
    zero: np.ndarray
    mb: np.ndarray  # micro-batch (sequences)
    recompute: np.ndarray  # RECOMPUTE_CODES
    rc_layers: np.ndarray  # with full recompute: layers per stage recomputed (0 = all)
    global_batch: np.ndarray

    def __len__(self) -> int:
        return len(self.tp)

    @property
    def gpus(self) -> np.ndarray:
        """World size of each configuration."""
        return self.tp * self.cp * self.pp * self.dp

    @property
    def microbatches(self) -> np.ndarray:
        """m = B / (b * dp) (Narayanan et al. 2021, section 2.2)."""
        return self.global_batch // (self.mb * self.dp)

    def take(self, index: np.ndarray) -> Candidates:
        """The sub-batch at ``index`` (boolean mask or integer indices)."""
        return Candidates(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def from_arrays(cls, **arrays) -> Candidates:
        """Build from equal-length sequences, casting to int64."""
        return cls(**{k: np.asarray(v, dtype=np.int64) for k, v in arrays.items()})

    @classmethod
    def from_configs(cls, configs: list[ParallelConfig]) -> Candidates:
        """Build from explicit configurations."""
        return cls.from_arrays(
            tp=[c.tp for c in configs], pp=[c.pp for c in configs],
            vpp=[c.vpp for c in configs], dp=[c.dp for c in configs],
            cp=[c.cp for c in configs], ep=[c.ep for c in configs],
            etp=[c.etp for c in configs], sp=[int(c.sequence_parallel) for c in configs],
            zero=[c.zero for c in configs], mb=[c.micro_batch for c in configs],
            recompute=[RECOMPUTE_CODES[c.recompute] for c in configs],
            rc_layers=[c.recompute_layers or 0 for c in configs],
            global_batch=[c.global_batch for c in configs],
        )

    def config(self, i: int, stage_layers: tuple[int, ...]) -> ParallelConfig:
        """The i-th configuration as a ParallelConfig."""
        pp, vpp = int(self.pp[i]), int(self.vpp[i])
        schedule = "none" if pp == 1 else ("interleaved-1f1b" if vpp > 1 else "1f1b")
        return ParallelConfig(
            tp=int(self.tp[i]), pp=pp, vpp=vpp, dp=int(self.dp[i]), cp=int(self.cp[i]),
            ep=int(self.ep[i]), etp=int(self.etp[i]), sequence_parallel=bool(self.sp[i]),
            zero=int(self.zero[i]), micro_batch=int(self.mb[i]),
            global_batch=int(self.global_batch[i]),
            recompute=RECOMPUTE_NAMES[int(self.recompute[i])],
            recompute_layers=int(self.rc_layers[i]) or None, schedule=schedule,
            stage_layers=stage_layers,
        )
