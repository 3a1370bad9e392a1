"""Pipeline schedules (GPipe, 1F1B, interleaved 1F1B) and their execution in rounds.

A schedule is, per pipeline stage, an ordered list of actions ("F" or "B", global model
chunk, micro-batch). Model chunk c lives on stage c mod pp (Megatron's interleaved
assignment: stage s holds chunks s, s + pp, ..., so its local chunk v is chunk v * pp + s).

``plan_rounds`` replays all stages' lists in lock-step rounds, every stage doing its next
action once the activation (forward) or gradient (backward) it needs has arrived. All
stages compute the same plan, so in each round every stage knows exactly which tensors it
sends and receives: those are posted together and waited for, which cannot deadlock and
needs no message tags (NCCL matches point-to-point messages in order only).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

from sysplan.executor.parallel import Comm, Grid

#: ("F" | "B", global model chunk, micro-batch)
Action = tuple[str, int, int]
#: (source stage, destination stage, "act" | "grad", chunk that consumes it, micro-batch)
Message = tuple[int, int, str, int, int]
Round = tuple[dict[int, Action], list[Message]]


def stage_actions(schedule: str, pp: int, vpp: int, micro_batches: int,
                  stage: int) -> list[Action]:
    """The ordered actions of pipeline stage ``stage`` in one optimizer step."""
    if schedule == "gpipe":  # GPipe: all forwards, then all backwards (Huang et al. 2019, 2.2)
        return ([("F", stage, i) for i in range(micro_batches)]
                + [("B", stage, i) for i in range(micro_batches)])
    # 1F1B (Narayanan et al. 2021, section 2.2) and, for vpp > 1, interleaved 1F1B
    # (Narayanan et al. 2021, section 2.2, Figure 4; Megatron-LM pipeline_parallel/schedules)
    total = micro_batches * vpp

    def chunk(k: int, forward: bool) -> int:
        local = (k // pp) % vpp
        return (local if forward else vpp - 1 - local) * pp + stage

    def micro_batch(k: int) -> int:
        return (k // (pp * vpp)) * pp + k % pp

    if vpp == 1:
        warmup = min(total, pp - stage - 1)
    else:
        warmup = min(total, (pp - stage - 1) * 2 + (vpp - 1) * pp)
    forward = [("F", chunk(k, True), micro_batch(k)) for k in range(total)]
    backward = [("B", chunk(k, False), micro_batch(k)) for k in range(total)]
    order = forward[:warmup]
    for k in range(total - warmup):  # steady state: one forward, one backward
        order += [forward[warmup + k], backward[k]]
    return order + backward[total - warmup:]


def plan_rounds(schedule: str, pp: int, vpp: int, micro_batches: int) -> list[Round]:
    """Every stage's actions replayed in rounds, with the messages each round produces."""
    queues = [deque(stage_actions(schedule, pp, vpp, micro_batches, s)) for s in range(pp)]
    last = pp * vpp - 1
    arrived: set[tuple[str, int, int]] = set()
    rounds: list[Round] = []
    while any(queues):
        actions: dict[int, Action] = {}
        messages: list[Message] = []
        for stage, queue in enumerate(queues):
            if not queue:
                continue
            kind, chunk, micro = queue[0]
            local = (kind == "F" and chunk == 0) or (kind == "B" and chunk == last)
            if not local and (("act" if kind == "F" else "grad"), chunk, micro) not in arrived:
                continue
            actions[stage] = queue.popleft()
            if kind == "F" and chunk < last:
                messages.append((stage, (chunk + 1) % pp, "act", chunk + 1, micro))
            if kind == "B" and chunk > 0:
                messages.append((stage, (chunk - 1) % pp, "grad", chunk - 1, micro))
        assert actions, f"{schedule} schedule deadlocks (pp {pp}, vpp {vpp})"
        arrived.update((kind, chunk, micro) for _, _, kind, chunk, micro in messages)
        rounds.append((actions, messages))
    return rounds


def run_rounds(rounds: list[Round], grid: Grid, comm: Comm,
               compute: Callable[[Action, torch.Tensor | None], torch.Tensor | None],
               shape: tuple[int, ...], device: torch.device) -> None:
    """Execute this stage's part of the plan: compute, then the round's sends and receives.

    ``compute`` runs one action on the tensor it received (None for the first chunk's
    forward and the last chunk's backward) and returns the tensor to send on, if any.
    """
    stage = grid.coord("pp")
    inbox: dict[tuple[str, int, int], torch.Tensor] = {}
    for actions, messages in rounds:
        out = None
        if stage in actions:
            kind, chunk, micro = actions[stage]
            out = compute(actions[stage], inbox.pop(("act" if kind == "F" else "grad",
                                                     chunk, micro), None))
        sends = [(grid.stage_peer(dst), out) for src, dst, *_ in messages if src == stage]
        receives = [((kind, chunk, micro), grid.stage_peer(src),
                     torch.empty(shape, device=device))
                    for src, dst, kind, chunk, micro in messages if dst == stage]
        assert all(t is not None for _, t in sends), "a sending action returned nothing"
        comm.exchange(sends, [(peer, buffer) for _, peer, buffer in receives])
        inbox.update({key: buffer for key, _, buffer in receives})
    assert not inbox, "received tensors left unused"
