"""Measure the node this runs on and return a Profile (what `sysplan profile` writes).

Four sweeps, each timed with torch on one device: GEMMs (``torch.matmul``), causal fused
attention (``scaled_dot_product_attention``, forward and backward), copy bandwidth, and the
collectives across the node's devices (``sysplan.profiles.collectives``). With ``--model`` the
GEMMs are its layer's (forward, data and weight gradient). One decoder block's eager
element-wise chain (``profiles/eager.py``) is timed too, the model's or else a default one. A sample is the median of several
runs after a warm-up; CUDA events time a GPU, ``time.perf_counter`` a CPU.

On a CPU a "device" is one process with its share of the cores (``cores // world`` threads), so
every table is per device, the way the cost models read a GPU profile. torch is imported only
inside functions: it is an optional extra (``pip install -e '.[torch]'``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from sysplan.core.errors import InputError
from sysplan.profiles import collectives
from sysplan.profiles.contention import measure_contention
from sysplan.profiles.device import cpu_cores, default_world, describe_device, profile_name
from sysplan.profiles.schema import (
    SCHEMA_VERSION,
    AttentionTable,
    EagerTable,
    GemmTable,
    MemoryTable,
    OpOverhead,
    Profile,
)

TORCH_MISSING = ("sysplan profile needs torch: pip install -e '.[torch]' "
                 "(CPU build: pip install torch==2.13.0 first)")
DEVICES = ("auto", "cuda", "cpu")

#: The decoder whose eager element-wise chain a profile without --model times: on a CPU the
#: executor's small decoders' scale (benchmarks/executor.py), on a GPU Llama 3.1 8B's block.
DEFAULT_EAGER_DIMS = {"cpu": (128, 8, 4, 16, 512), "cuda": (4096, 32, 8, 128, 14336)}

#: (step, done, total): called after every measurement so a caller can draw a progress bar.
Progress = Callable[[str, int, int], None]

@dataclass(frozen=True)
class MeasureRequest:
    """What to measure: the options of `sysplan profile`."""

    device: str = "auto"
    quick: bool = False
    model: str | None = None
    tp: tuple[int, ...] = (1,)
    world: int | None = None


@dataclass(frozen=True)
class Sweep:
    """Shapes and repetition counts of one run."""

    gemm: tuple[tuple[int, int, int], ...]
    attention: tuple[tuple[int, int, int, int], ...]  # batch, heads, seq, head_dim
    memory_bytes: tuple[int, ...]
    message_bytes: tuple[int, ...]
    warmup: int
    samples: int
    elementwise: bool = False
    eager: tuple[tuple[int, int, int, int, int, int], ...] = ()  # tokens, h, heads, kv, d, ffn


@dataclass(frozen=True)
class MeasureResult:
    """The measured profile, the world it used, its rank (0 writes) and notes for stderr."""

    profile: Profile
    world: int
    rank: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


def import_torch() -> Any:
    """torch, or an InputError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise InputError(TORCH_MISSING) from None
    return torch


def resolve_device(choice: str, torch: Any) -> str:
    """``cuda`` or ``cpu`` for --device auto|cuda|cpu (ROCm devices are ``cuda`` in torch)."""
    if choice not in DEVICES:
        raise InputError(f"--device {choice}: not accepted; choose one of {', '.join(DEVICES)}")
    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        raise InputError("--device cuda: torch sees no GPU (torch.cuda.is_available() is False; "
                         "a CPU-only torch build?); use --device cpu")
    return "cuda" if choice == "cuda" or (choice == "auto" and available) else "cpu"


def model_gemm_shapes(model: str, tp: Sequence[int], tokens: Sequence[int]
                      ) -> list[tuple[int, int, int]]:
    """The GEMMs (m, n, k) autograd runs for one transformer layer of ``model`` per tp.

    Megatron-LM's column/row-parallel split (Shoeybi et al. 2019, sec. 3): qkv N = (heads +
    2 kv) head_dim / tp, K = h; attention out N = h, K = heads head_dim / tp; MLP up (+gate)
    N = (2 if gated) ffn / tp, K = h; MLP down N = h, K = ffn / tp. The data gradient swaps
    N and K, the weight gradient is (N, K, tokens) (``costmodels.compute.linear_seconds``).
    """
    from sysplan.models import resolve_model

    spec, _ = resolve_model(model)
    h, d = spec.hidden_size, spec.head_dim
    up = (2 if spec.gated_mlp else 1) * spec.ffn_hidden
    shapes: set[tuple[int, int, int]] = set()
    for degree in tp:
        for n, k in (((spec.num_heads + 2 * spec.num_kv_heads) * d // degree, h),
                     (h, spec.num_heads * d // degree), (up // degree, h),
                     (h, spec.ffn_hidden // degree)):
            n, k = max(n, 1), max(k, 1)
            for m in tokens:
                shapes.update({(m, n, k), (m, k, n), (n, k, m)})
    return sorted(shapes)


def plan_sweep(kind: str, request: MeasureRequest) -> Sweep:
    """The shapes to time: small on a CPU, --quick fewer, --model its layer GEMMs and its
    eager element-wise chain (without it, ``DEFAULT_EAGER_DIMS``' chain)."""
    gpu, quick = kind == "cuda", request.quick
    eager = _eager_sizes(DEFAULT_EAGER_DIMS[kind], (2048,) if gpu else (128, 512))
    if request.model is not None:
        tokens = ((2048,) if gpu else (128, 512)) if quick else \
            ((1024, 4096, 16384) if gpu else (128, 512))
        gemm = model_gemm_shapes(request.model, request.tp, tokens)
        eager = _eager_sizes(_model_dims(request.model), tokens)
    elif quick:
        base = (1024, 4096, 8192) if gpu else (128, 512, 1024)
        gemm = [(base[0], base[0], base[0]), (base[1], base[1], base[1]),
                (base[2], base[2], base[2]), (base[1], base[2], base[0]),
                (base[1], base[0], base[2]), (base[0], base[1], base[1])]
    else:
        sizes = (1024, 4096, 8192, 16384) if gpu else (128, 512, 1024, 2048)
        gemm = [(m, n, k) for m in sizes for n in sizes for k in sizes]
    return Sweep(gemm=tuple(sorted(set(gemm))), attention=_attention_shapes(kind, request),
                 memory_bytes=_memory_sizes(gpu, quick),
                 message_bytes=collectives.message_sizes(gpu, quick),
                 warmup=(5 if gpu else 2) if quick else (10 if gpu else 3),
                 samples=(10 if gpu else 5) if quick else (30 if gpu else 7),
                 elementwise=not quick, eager=eager)


def _model_dims(model: str) -> tuple[int, int, int, int, int]:
    """(hidden, heads, kv_heads, head_dim, ffn) of ``model``, as the eager chain takes them."""
    from sysplan.models import resolve_model

    spec, _ = resolve_model(model)
    return spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.ffn_hidden


def _eager_sizes(dims: tuple[int, int, int, int, int], tokens: Sequence[int]
                 ) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The block element-wise chain of a decoder of ``dims`` at one token (the ops' host
    cost alone) and at ``tokens``."""
    return tuple((n, *dims) for n in (1, *tokens))


def _attention_shapes(kind: str, request: MeasureRequest) -> tuple[tuple[int, int, int, int], ...]:
    """(batch, heads, seq, head_dim) over a grid of batch and sequence length.

    Batch and length vary independently (never a line in (batch x heads, seq)), so the cost
    models can interpolate between the points in two dimensions.
    """
    heads, head_dim = (32, 128) if kind == "cuda" else (4, 64)
    if request.model is not None:
        from sysplan.models import resolve_model

        spec, _ = resolve_model(request.model)
        heads, head_dim = max(1, spec.num_heads // max(request.tp)), spec.head_dim
    if request.quick:
        pairs = ((1, 1024), (4, 4096), (1, 16384)) if kind == "cuda" else \
            ((2, 128), (1, 512), (8, 256))
    else:
        seqs = (512, 1024, 2048, 4096, 8192, 16384) if kind == "cuda" else (128, 256, 512, 1024)
        pairs = tuple((batch, seq) for batch in (1, 4) for seq in seqs)
    return tuple((batch, heads, seq, head_dim) for batch, seq in pairs)


def _memory_sizes(gpu: bool, quick: bool) -> tuple[int, ...]:
    if quick:
        return (2**28,) if gpu else (2**26,)
    return (2**26, 2**28, 2**30) if gpu else (2**24, 2**26, 2**28)


def median_time(torch: Any, run: Callable[[], object], kind: str, warmup: int,
                samples: int) -> float:
    """Median seconds of ``run`` over ``samples`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    times = []
    if kind == "cuda":
        torch.cuda.synchronize()
        for _ in range(samples):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)  # elapsed_time is in ms
    else:
        for _ in range(samples):
            began = time.perf_counter()
            run()
            times.append(time.perf_counter() - began)
    return float(f"{statistics.median(times):.6g}")  # six figures, like the bundled profiles


def measure_gemm(torch: Any, kind: str, sweep: Sweep, tick: Callable[[str], None]) -> GemmTable:
    """Median time of ``torch.matmul`` of [m, k] x [k, n] per shape (bf16 on GPU, fp32 CPU)."""
    dtype, label = (torch.bfloat16, "bf16") if kind == "cuda" else (torch.float32, "fp32")
    rows = []
    for m, n, k in sweep.gemm:
        a = torch.randn(m, k, device=kind, dtype=dtype)
        b = torch.randn(k, n, device=kind, dtype=dtype)
        seconds = median_time(torch, lambda a=a, b=b: torch.matmul(a, b), kind,
                              sweep.warmup, sweep.samples)
        rows.append((m, n, k, seconds))
        tick("gemm")
    return GemmTable(dtype=label, rows=tuple(rows))


def attention_backends(torch: Any, kind: str) -> list[tuple[str, Any]]:
    """(profile name, SDPBackend) to try: flash and cuDNN on a GPU, math on a CPU."""
    from torch.nn.attention import SDPBackend

    if kind == "cpu":
        return [("math", None)]  # whichever kernel torch picks on a CPU; rows say "math"
    backends = [("flash", SDPBackend.FLASH_ATTENTION)]
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        backends.append(("cudnn", SDPBackend.CUDNN_ATTENTION))
    return backends


def measure_attention(torch: Any, kind: str, sweep: Sweep, tick: Callable[[str], None]
                      ) -> tuple[AttentionTable | None, list[str]]:
    """Causal SDPA forward time and backward time (forward+backward minus forward)."""
    from torch.nn.attention import sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    dtype = torch.bfloat16 if kind == "cuda" else torch.float32
    rows, notes = [], []
    for name, backend in attention_backends(torch, kind):
        for batch, heads, seq, head_dim in sweep.attention:
            q, k, v = (torch.randn(batch, heads, seq, head_dim, device=kind, dtype=dtype,
                                   requires_grad=True) for _ in range(3))
            grad = torch.randn(batch, heads, seq, head_dim, device=kind, dtype=dtype)

            def forward(q=q, k=k, v=v):
                return sdpa(q, k, v, is_causal=True)

            def both(forward=forward, grad=grad):
                forward().backward(grad)

            try:
                with sdpa_kernel(backend) if backend is not None else nullcontext():
                    fwd = median_time(torch, forward, kind, sweep.warmup, sweep.samples)
                    total = median_time(torch, both, kind, sweep.warmup, sweep.samples)
            except RuntimeError as error:
                notes.append(f"attention {name} skipped at seq {seq}: {str(error)[:80]}")
                tick("attention")
                continue
            # Backward = (forward + backward) - forward; floored so timing noise stays positive.
            backward = max(total - fwd, fwd / 100)
            rows.append((name, batch * heads, seq, head_dim, True, fwd, backward))
            tick("attention")
    return (AttentionTable(rows=tuple(rows)) if rows else None), notes


def measure_memory(torch: Any, kind: str, sweep: Sweep, tick: Callable[[str], None]
                   ) -> MemoryTable:
    """Copy (bytes moved = 2 x size: read + write) and, in a full run, a + b (3 x size)."""
    rows = []
    for size in sweep.memory_bytes:
        source = torch.empty(size // 4, device=kind, dtype=torch.float32).fill_(1.0)
        target = torch.empty_like(source)
        seconds = median_time(torch, lambda s=source, t=target: t.copy_(s), kind,
                              sweep.warmup, sweep.samples)
        rows.append(("copy", 2 * size, seconds))  # one read + one write of the buffer
        if sweep.elementwise:
            seconds = median_time(torch, lambda s=source, t=target: torch.add(s, s, out=t),
                                  kind, sweep.warmup, sweep.samples)
            rows.append(("elementwise", 3 * size, seconds))  # two reads + one write
        tick("memory")
    return MemoryTable(rows=tuple(rows))


def measure_eager(torch: Any, kind: str, sweep: Sweep, tick: Callable[[str], None]
                  ) -> EagerTable | None:
    """Median forward and backward seconds of one block's eager element-wise chain
    (``profiles/eager.py``) per size in ``sweep.eager`` (fp32 on a CPU, bf16 on a GPU)."""
    if not sweep.eager:
        return None
    from sysplan.profiles.eager import element_chain

    dtype, label = (torch.bfloat16, "bf16") if kind == "cuda" else (torch.float32, "fp32")
    sync = torch.cuda.synchronize if kind == "cuda" else (lambda: None)
    rows = []
    for size in sweep.eager:
        forward, gradients = element_chain(*size, device=kind, dtype=dtype)
        forwards, backwards = [], []
        for sample in range(sweep.warmup + sweep.samples):
            sync()
            began = time.perf_counter()
            outputs = forward()
            sync()
            middle = time.perf_counter()
            torch.autograd.backward(outputs, gradients)
            sync()
            if sample >= sweep.warmup:
                forwards.append(middle - began)
                backwards.append(time.perf_counter() - middle)
        rows.append((*size, float(f"{statistics.median(forwards):.6g}"),
                     float(f"{statistics.median(backwards):.6g}")))
        tick("eager")
    return EagerTable(dtype=label, rows=tuple(rows))


#: Ops in the chain ``measure_overhead`` times
OVERHEAD_CHAIN = 200


def measure_overhead(torch: Any, kind: str, sweep: Sweep) -> OpOverhead:
    """Seconds per op of a chain of one-element multiplications recorded by autograd, forward
    and backward apart: the per-op dispatch, autograd and launch cost that every real op pays
    on top of its work (host time, measured with the clock, not device events)."""
    weight = torch.ones(1, device=kind, requires_grad=True)

    def forward():
        x = torch.ones(1, device=kind)
        for _ in range(OVERHEAD_CHAIN):
            x = x * weight
        return x

    forwards, backwards = [], []
    for sample in range(sweep.warmup + sweep.samples):
        began = time.perf_counter()
        y = forward()
        middle = time.perf_counter()
        y.backward()
        ended = time.perf_counter()
        if kind == "cuda":
            torch.cuda.synchronize()
        if sample >= sweep.warmup:
            forwards.append((middle - began) / OVERHEAD_CHAIN)
            backwards.append((ended - middle) / OVERHEAD_CHAIN)
    return OpOverhead(forward_s=float(f"{statistics.median(forwards):.4g}"),
                      backward_s=float(f"{statistics.median(backwards):.4g}"))


def measure_node(request: MeasureRequest, progress: Progress | None = None) -> MeasureResult:
    """Measure every table on this node (see the module docstring) and return the profile.

    Under torchrun or srun with WORLD_SIZE > 1 the collectives run in-process across the
    launched ranks instead of spawning (tier ``network`` when they span nodes); every rank
    measures, and only the result of rank 0 is meant to be written.
    """
    torch = import_torch()
    launch = collectives.launched_world()
    kind = resolve_device(request.device, torch)
    world, notes = _world(kind, torch, request, launch)
    sweep = plan_sweep(kind, request)
    total = (len(sweep.gemm) + len(sweep.attention) * len(attention_backends(torch, kind))
             + len(sweep.memory_bytes) + len(sweep.eager)
             + collectives.steps(world, sweep.message_bytes)
             + int(kind == "cpu" and launch is None))  # the contention levels
    done = 0

    def tick(step: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(step, done, total)

    index = launch.local_rank if launch is not None and kind == "cuda" else 0
    if kind == "cuda":
        torch.cuda.set_device(index)
    with _threads(torch, kind, world):
        gemm = measure_gemm(torch, kind, sweep, tick)
        attention, attention_notes = measure_attention(torch, kind, sweep, tick)
        memory = measure_memory(torch, kind, sweep, tick)
        overhead = measure_overhead(torch, kind, sweep)
        eager = measure_eager(torch, kind, sweep, tick)
    contention = None
    if kind == "cpu" and launch is None:  # launched ranks are all measuring beside it
        slowdowns = measure_contention(world, max(1, cpu_cores() // world), cpu_cores())
        contention = tuple(slowdowns.items()) or None
        tick("contention")
    if kind == "cuda":
        torch.cuda.empty_cache()  # leave the GPU memory to the collective workers
    table, collective_notes = collectives.measure(kind, world, sweep.message_bytes, sweep.warmup,
                                                  sweep.samples, launch, tick)
    device = describe_device(kind, torch, world, index)
    profile = Profile(schema_version=SCHEMA_VERSION, name=profile_name(device), device=device,
                      gemm=gemm, attention=attention, memory=memory, collectives=table,
                      overhead=overhead, eager=eager, contention=contention)
    return MeasureResult(profile=profile, world=world, rank=launch.rank if launch else 0,
                         notes=tuple(notes + attention_notes + collective_notes))


def _world(kind: str, torch: Any, request: MeasureRequest,
           launch: collectives.Launch | None) -> tuple[int, list[str]]:
    """Devices the collectives span, and a note when --world is overridden or too small."""
    if launch is not None:
        ignored = [f"--world {request.world} ignored: launched with {launch.world} ranks"] \
            if request.world is not None else []
        return launch.world, ignored
    world = request.world if request.world is not None else default_world(kind, torch)
    if kind == "cuda" and world > torch.cuda.device_count():
        raise InputError(f"--world {world}: this node has {torch.cuda.device_count()} GPUs")
    if world < 2:
        return max(world, 1), ["one device: no collectives measured"]
    return world, []


@contextmanager
def _threads(torch: Any, kind: str, world: int):
    """On a CPU, run with one device's share of the cores; restore the count afterwards."""
    before = torch.get_num_threads()
    if kind == "cpu":
        torch.set_num_threads(max(1, cpu_cores() // world))
    try:
        yield
    finally:
        torch.set_num_threads(before)
