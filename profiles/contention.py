"""How much one CPU process's compute slows while others compute beside it.

Processes that share a machine share its caches, memory bandwidth and, on a VM or with SMT,
the physical cores behind its vCPUs. ``measure_contention`` starts the processes once and,
round after round, times the same work in process 0 alone and then with 2, 3, ... of them
running it at once (each with the profile's threads); the slowdown for k processes is the
median over rounds of process 0's time beside k - 1 others over its time alone in that round,
so a VM's drift between rounds cancels. The work is what the executor's ranks do: a matmul
and a memory-bound pass. On the 2-vCPU CI machine two single-threaded processes ran it about
1.2x slower than one alone (2026-12-07): ``sysplan run`` had under-predicted every
multi-process layout by more than its single-process one. GPUs are not measured (one rank per
GPU).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

#: Side of the square fp32 matmul in the work (3 x 1 MiB operands)
MATMUL = 512
#: fp32 elements of the memory-bound pass (an add of 16 MiB into 16 MiB)
ELEMENTS = 4 * 2**20
#: Times the work runs per timing, and timed rounds per level
REPEATS, ROUNDS = 8, 15
#: Seconds the parent waits for the workers
WAIT_S = 120


def _work(torch: Any, a, b, x, y) -> float:
    """Seconds of REPEATS x (matmul + elementwise add)."""
    began = time.perf_counter()
    for _ in range(REPEATS):
        torch.mm(a, b)
        torch.add(x, x, out=y)
    return time.perf_counter() - began


def _worker(index: int, processes: int, threads: int, barrier: Any, channel: Any) -> None:
    """Every round: process 0 alone, then the first k processes together for k = 2..processes;
    process 0 reports its times of the round."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(MATMUL, MATMUL), torch.randn(MATMUL, MATMUL)
    x = torch.randn(ELEMENTS)
    y = torch.empty_like(x)
    _work(torch, a, b, x, y)  # warm up
    for _ in range(ROUNDS):
        times = []
        for k in range(1, processes + 1):
            barrier.wait(timeout=WAIT_S)
            if index < k:
                seconds = _work(torch, a, b, x, y)
                if index == 0:
                    times.append(seconds)
        if index == 0:
            channel.put(times)


def measure_contention(world: int, threads: int, cores: int) -> dict[int, float]:
    """{k: slowdown of one process's work with k processes at once} for k = 2 .. min(world,
    cores // threads); {} when no two processes fit beside each other."""
    import multiprocessing as mp

    most = min(world, max(1, cores // max(threads, 1)))
    if most < 2:
        return {}
    context = mp.get_context("spawn")
    barrier, channel = context.Barrier(most), context.Queue()
    workers = [context.Process(target=_worker, args=(i, most, threads, barrier, channel))
               for i in range(most)]
    for w in workers:
        w.start()
    try:
        rounds = [channel.get(timeout=WAIT_S) for _ in range(ROUNDS)]
    finally:
        for w in workers:
            w.join(timeout=WAIT_S)
            if w.is_alive():
                w.kill()
    return {k: round(statistics.median(r[k - 1] / r[0] for r in rounds), 3)
            for k in range(2, most + 1)}
