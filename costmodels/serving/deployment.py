"""A serving deployment and the contract between the serving cost model and the simulator.

``Deployment`` says how a model is served: replicas of one layout (aggregated), or separate
prefill and decode pools (disaggregated), with the engine's batching knobs. ``StepCost`` is
what the continuous-batching simulator asks of a cost model: how long one engine iteration
takes, how many KV-cache tokens a replica holds, and how long moving a request's KV cache
from a prefill to a decode replica takes. ``costmodels.serving.cost.ServingCost`` implements it.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol

from pydantic import Field, model_validator

from sysplan.core.types import Frozen

Engine = Literal["vllm", "sglang", "trtllm"]
Precision = Literal["bf16", "fp8"]
Routing = Literal["round-robin", "least-loaded"]


class ReplicaLayout(Frozen):
    """One engine instance: its model parallelism and precisions."""

    tp: int = Field(default=1, ge=1, description="Tensor-parallel degree.")
    pp: int = Field(default=1, ge=1, description="Pipeline-parallel stages.")
    weights_precision: Precision = Field(default="bf16", description="Weight dtype.")
    kv_precision: Precision = Field(default="bf16", description="KV-cache dtype.")

    @property
    def gpus(self) -> int:
        """GPUs one replica occupies."""
        return self.tp * self.pp


class EngineKnobs(Frozen):
    """The scheduler knobs the simulator models, in vLLM's vocabulary (exporters translate)."""

    engine: Engine = Field(default="vllm", description="Scheduler policy simulated.")
    max_num_seqs: int = Field(default=256, ge=1, description="Sequences batched at once.")
    max_num_batched_tokens: int = Field(default=8192, ge=1, description="Tokens per iteration "
                                        "(prefill chunk + decode tokens).")
    chunked_prefill: bool = Field(default=True, description="Split long prompts over "
                                  "iterations and mix them with decodes.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="Share of GPU "
                                          "memory for weights, activations and KV cache.")
    block_size: int = Field(default=16, ge=1, description="KV-cache tokens per block.")
    capacity_policy: Literal["guaranteed_no_evict", "max_utilization"] = Field(
        default="guaranteed_no_evict", description="TensorRT-LLM's capacity scheduler: reserve "
        "KV for whole requests, or admit on the prompt and pause (evict) when KV runs out.")
    prefix_cache_hit_rate: float = Field(default=0.0, ge=0, lt=1, description="Share of each "
                                         "prompt found in the prefix cache (vLLM automatic "
                                         "prefix caching, SGLang's radix cache): not "
                                         "recomputed, still held in the KV cache.")


class Deployment(Frozen):
    """How a model is served: aggregated replicas, or prefill and decode pools."""

    replica: ReplicaLayout = Field(default_factory=ReplicaLayout, description="Layout of the "
                                   "aggregated replicas (ignored when disaggregated).")
    replicas: int = Field(default=1, ge=0, description="Aggregated replicas.")
    disaggregated: bool = False
    prefill: ReplicaLayout | None = None
    prefill_replicas: int = Field(default=0, ge=0)
    decode: ReplicaLayout | None = None
    decode_replicas: int = Field(default=0, ge=0)
    engine: EngineKnobs = Field(default_factory=EngineKnobs)
    routing: Routing = Field(default="least-loaded", description="How requests pick a replica.")

    @model_validator(mode="after")
    def _check(self) -> Deployment:
        if self.disaggregated:
            if self.prefill is None or self.decode is None:
                raise ValueError("a disaggregated deployment names its prefill and decode layouts")
            if self.prefill_replicas < 1 or self.decode_replicas < 1:
                raise ValueError("a disaggregated deployment needs prefill and decode replicas")
        elif self.replicas < 1:
            raise ValueError("an aggregated deployment needs at least one replica")
        return self

    @property
    def num_gpus(self) -> int:
        """GPUs the whole deployment occupies."""
        if self.disaggregated:
            return (self.prefill.gpus * self.prefill_replicas
                    + self.decode.gpus * self.decode_replicas)
        return self.replica.gpus * self.replicas


class Batch(NamedTuple):
    """What one engine iteration runs (hashable: the simulator memoises iteration times).

    Prompt chunks are kept apart from one another: chunk ``c`` of a prompt with ``done``
    tokens already cached has ``c`` queries attending causally to ``done + 1 .. done + c``
    keys, ``c * done + c * (c + 1) / 2`` (query, key) pairs; n prompts in one iteration cost
    n such sums, not one sequence of their summed length."""

    prefill_tokens: int = 0  #: new prompt tokens, all chunks
    prefill_context_tokens: int = 0  #: keys the chunks end on (cached + new), summed
    prefill_pairs: int = 0  #: causal (query, key) pairs of all chunks
    prefill_seqs: int = 0  #: prompt chunks (each computes its last position's logits)
    decode_seqs: int = 0  #: sequences emitting one token each
    decode_context_tokens: int = 0  #: KV tokens the decoding sequences read, summed

    @classmethod
    def prompt(cls, chunk: int, done: int = 0) -> Batch:
        """One chunk of ``chunk`` prompt tokens after ``done`` cached ones."""
        return cls(chunk, done + chunk, chunk * done + chunk * (chunk + 1) // 2, 1)

    @classmethod
    def decode(cls, seqs: int, context_tokens: int) -> Batch:
        """``seqs`` decoding sequences holding ``context_tokens`` KV tokens in total."""
        return cls(decode_seqs=seqs, decode_context_tokens=context_tokens)

    def __add__(self, other: Batch) -> Batch:  # type: ignore[override]
        return Batch(*(a + b for a, b in zip(self, other, strict=True)))


class StepCost(Protocol):
    """What the simulator asks of a serving cost model (all times in seconds)."""

    def iteration_seconds(self, layout: ReplicaLayout, batch: Batch) -> float:
        """One engine iteration running ``batch``."""
        ...

    def kv_capacity_tokens(self, layout: ReplicaLayout, knobs: EngineKnobs) -> int:
        """KV-cache tokens one replica holds (0: the weights do not fit)."""
        ...

    def kv_transfer_seconds(self, prefill: ReplicaLayout, decode: ReplicaLayout,
                            tokens: int) -> float:
        """Moving ``tokens`` tokens of KV cache from a prefill to a decode replica."""
        ...
