"""One engine replica of the continuous-batching simulator: its queues, KV blocks and the batch
it runs each iteration (the scheduler policies). ``costmodels.serving.simulator`` drives replicas.

Policies (``EngineKnobs.engine``):

* vllm: vLLM V0's scheduler as Vidur models it (Agrawal et al., MLSys'24,
  ``vidur/scheduler/replica_scheduler/{vllm,sarathi}_replica_scheduler.py``). A token budget
  of ``max_num_batched_tokens`` and at most ``max_num_seqs`` running sequences per iteration.
  Chunked prefill (Sarathi-Serve): running decodes take one token each, then partially
  prefilled requests, then waiting ones fill the rest of the budget with prompt chunks.
  Without chunking (V0 ``_schedule_default``): an iteration that can admit whole prompts runs
  them alone (prefill-only, decodes stall); otherwise it decodes. KV is allocated in blocks of
  ``block_size`` tokens; admission needs blocks for the whole prompt and leaves 1 % of the
  blocks free (V0 BlockSpaceManager ``watermark=0.01``); when a decode cannot get a block the
  most recently admitted running sequence is preempted by recompute (its KV freed, it goes to
  the front of the waiting queue and re-prefills prompt + generated tokens).
  vLLM V1 (``vllm/v1/core/sched/scheduler.py``, 0.8.5-0.10) schedules the same way with
  chunking always on: the running list first (decodes and the partial prefill), then waiting
  requests while ``max_num_seqs`` allows, preempting the most recently added running request
  (``self.running.pop()``) by recompute when blocks run out.
* sglang: SGLang 0.4.6 (``python/sglang/srt/managers/scheduler.py``,
  ``schedule_policy.py``): a prefill batch whenever one can be formed (the chunked request
  first, then waiting ones within ``chunked_prefill_size``, our ``max_num_batched_tokens``),
  otherwise a decode step; never both in one iteration (``--enable-mixed-chunk`` off). A
  request is admitted only while the free KV tokens, less what the running requests are
  expected to still write (their remaining output, clipped at 4096, x ``new_token_ratio``,
  which decays from 0.7 to 0.098 over 600 decode steps), hold its prompt and its own expected
  output; a decode that runs out of KV retracts the newest request (recompute) and resets the
  ratio. Its overlap scheduler, which hides the CPU's batch preparation, is not modelled
  apart: the per-iteration overhead is the same as vLLM's.
* prefix caching (``prefix_cache_hit_rate`` h): a new prompt's first h share of tokens is
  found cached: it is not prefilled (its chunks attend to it as cached keys) and its KV
  blocks are counted like the rest (a shared prefix is not deduplicated).
* trtllm: TensorRT-LLM in-flight batching (docs "The Batch Manager in TensorRT-LLM" and
  performance-tuning guide "Tuning Max Batch Size and Max Num Tokens"): ``max_num_seqs`` is
  its max_batch_size and ``max_num_batched_tokens`` its max_num_tokens; context and generation
  requests share an iteration even without chunking (a prompt then enters only whole, when it
  fits in what the budget leaves). Capacity scheduler GUARANTEED_NO_EVICT (the default, docs
  "Useful Runtime Options: Capacity Scheduler Policy"): a request is admitted only if KV for
  prompt + output tokens can be reserved, so a started request is never paused; others wait.
  MAX_UTILIZATION (``capacity_policy``) admits on the prompt's blocks alone and, when a
  decode finds no free block, pauses the newest request: its KV is freed and it resumes by
  recomputing its context (``batch_manager/capacityScheduler.cpp`` MaxUtilizationScheduler;
  docs "Capacity Scheduler Policy"), as vLLM preempts, with no watermark.

Token accounting: after a request's k-th output token its KV holds prompt + k - 1 tokens; a
decode step stores one token and emits one. A prompt longer than the token budget is admitted
alone, as if the budget had been raised to fit it. A request whose KV can never fit is
rejected (vLLM ignores such prompts): it ends with NaN times.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np

from sysplan.costmodels.serving.deployment import Batch, EngineKnobs, ReplicaLayout, StepCost

#: A step count no sequence reaches (``next_finish`` when nothing decodes).
NEVER = 1 << 62
#: Iteration times remembered per layout (about 150 bytes each).
CACHE_ENTRIES = 200_000
#: What admission decides for the head of the waiting queue.
ADMIT, WAIT, REJECT = 0, 1, 2


class Ledger:
    """Per-request state the replicas share, and what they hand back to the driver."""

    def __init__(self, input_tokens: np.ndarray, output_tokens: np.ndarray) -> None:
        count = input_tokens.size
        self.input = input_tokens.tolist()
        self.output = output_tokens.tolist()
        self.first_token_s = np.full(count, math.nan)
        self.finish_s = np.full(count, math.nan)
        self.first_scheduled_s = [math.nan] * count
        self.itl_max_s = np.zeros(count)
        self.last_token_s = [math.nan] * count
        self.generated = [0] * count
        self.reserved_blocks = [0] * count
        #: Each request's token gaps in order: a float is one gap, (replica, start, stop) the
        #: replica's shared gaps of decode steps start..stop-1 (see ``Replica.step_gap_s``).
        self.pieces: list[list] = [[] for _ in range(count)]
        self.rejected = np.zeros(count, dtype=bool)
        self.preemptions = 0
        self.done: list[int] = []  # finished or rejected since the driver last looked
        self.handoffs: list[int] = []  # prefills finished in a prefill pool, KV to move

    def gap(self, rid: int, gap_s: float) -> None:
        self.pieces[rid].append(gap_s)
        self.itl_max_s[rid] = max(self.itl_max_s[rid], gap_s)

    def finish(self, rid: int, time_s: float) -> None:
        self.finish_s[rid] = time_s
        self.done.append(rid)


class Replica:
    """One engine instance: role "mixed" (aggregated), "prefill" or "decode" (disaggregated).

    Decoding sequences live in preallocated arrays (slots ``0..n-1``). They advance in lock
    step, so a slot stores ``base = context - step`` and ``last_step = remaining + step``
    against the replica's decode-step counter: a decode iteration touches no per-slot data.
    Every sequence decoded in one iteration sees the same gap since the previous decode
    iteration, kept once per step in ``step_gap_s`` (with how many sequences shared it in
    ``step_gap_count``); only a slot's first gap after joining can differ and is kept apart.
    """

    #: SGLang 0.4.6 global_config.py: init_new_token_ratio 0.7 (x schedule_conservativeness
    #: 1.0), min 0.14 x init, decay (init - min) / 600 per decode step; output tokens a
    #: request is assumed to still write are clipped at 4096
    #: (SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION).
    NEW_TOKEN_RATIO = 0.7
    MIN_NEW_TOKEN_RATIO = 0.7 * 0.14
    NEW_TOKEN_RATIO_DECAY = (0.7 - 0.7 * 0.14) / 600
    CLIP_NEW_TOKENS = 4096

    def __init__(self, index: int, role: str, layout: ReplicaLayout, knobs: EngineKnobs,
                 capacity_tokens: int, cost: StepCost, ledger: Ledger,
                 seconds_cache: dict | None = None) -> None:
        self.index, self.role, self.layout, self.cost, self.ledger = (
            index, role, layout, cost, ledger)
        self.seconds_cache = {} if seconds_cache is None else seconds_cache
        self._decode_functions: dict[int, Callable[[int], float]] = {}
        self.block = knobs.block_size
        self.total_blocks = max(int(capacity_tokens), 0) // self.block
        self.free_blocks = self.total_blocks
        trtllm = knobs.engine == "trtllm"
        self.no_evict = trtllm and knobs.capacity_policy == "guaranteed_no_evict"
        self.sglang = knobs.engine == "sglang"
        self.chunked = knobs.chunked_prefill
        # SGLang runs a prefill batch whenever it can admit one, decodes otherwise (no mixing
        # without --enable-mixed-chunk: scheduler.py get_next_batch_to_run)
        self.mixed = (self.chunked or trtllm) and not self.sglang
        self.hit_rate = knobs.prefix_cache_hit_rate
        # SGLang's admission estimate of the tokens running requests will still write
        # (schedule_policy.py PrefillAdder; global_config.py: init 0.7 x conservativeness,
        # floor 0.14 x init, decayed linearly over 600 decode steps)
        self.new_token_ratio = self.NEW_TOKEN_RATIO
        self.last_step_sum = 0
        self.watermark = 0 if trtllm else int(0.01 * self.total_blocks)
        self.max_tokens = knobs.max_num_batched_tokens
        # every running sequence takes a token of the budget each iteration
        self.max_seqs = min(knobs.max_num_seqs, knobs.max_num_batched_tokens)
        slots = self.max_seqs
        self.rid = np.zeros(slots, dtype=np.int64)
        self.base = np.zeros(slots, dtype=np.int64)
        self.last_step = np.zeros(slots, dtype=np.int64)
        self.first_shared = np.zeros(slots, dtype=np.int64)  # first step with the shared gap
        self.order = np.zeros(slots, dtype=np.int64)  # admission order (preemption victim)
        self.n = 0
        self.phase = [0] * self.block  # slots per (base mod block): who needs a block when
        self.base_sum = 0
        self.step = 0
        self.next_finish = NEVER
        self.step_gap_s = np.zeros(256)
        self.step_gap_count = np.zeros(256, dtype=np.int64)
        self.last_decode_end_s = math.nan
        self.own_gap: list[tuple[int, float]] = []  # (rid, last token) first gap is its own
        self.waiting: deque[tuple[int, int, int]] = deque()  # (rid, to prefill, KV after)
        self.prefilling: list[list[int]] = []  # [rid, done, total, order]
        self.outstanding = 0
        self.busy = False
        self.busy_s = 0.0
        self.iterations = 0
        self.next_order = 0
        self._start_s = 0.0
        self._decoding = 0
        self._chunks: list[tuple[list[int], int]] = []
        self._preempted: list[tuple[int, int, int]] = []
        self._slots_reserved = False

    # -- queue and blocks ----------------------------------------------------------------
    def enqueue(self, rid: int, prefill_tokens: int, kv_tokens: int) -> None:
        """Queue a new request (``prefill_tokens == kv_tokens``) or a transferred KV cache
        (0, prompt); the router has already counted it in ``outstanding``."""
        self.waiting.append((rid, prefill_tokens, kv_tokens))

    def has_work(self) -> bool:
        return bool(self.n or self.prefilling or self.waiting)

    def _blocks_for(self, rid: int, kv_tokens: int, slots_reserved: bool) -> int:
        if self.no_evict:  # GUARANTEED_NO_EVICT reserves prompt + output up front
            ledger = self.ledger
            tokens = ledger.input[rid] + (0 if self.role == "prefill" else ledger.output[rid])
            return -(-tokens // self.block)
        blocks = -(-kv_tokens // self.block)
        if slots_reserved and kv_tokens % self.block == 0:
            blocks += 1  # a transferred sequence joining after this step's blocks were handed
        return blocks

    def _release(self, rid: int, kv_tokens: int) -> None:
        if self.no_evict:
            self.free_blocks += self.ledger.reserved_blocks[rid]
        else:
            self.free_blocks += -(-kv_tokens // self.block)

    # -- decode slots --------------------------------------------------------------------
    def _append(self, rid: int, kv_tokens: int, remaining: int, last_token_s: float,
                order: int) -> None:
        i, step = self.n, self.step
        base = kv_tokens - step
        self.rid[i], self.base[i], self.last_step[i], self.order[i] = (
            rid, base, remaining + step, order)
        if last_token_s == self.last_decode_end_s:
            self.first_shared[i] = step
        else:
            self.first_shared[i] = step + 1
            self.own_gap.append((rid, last_token_s))
        self.phase[base % self.block] += 1
        self.base_sum += base
        self.last_step_sum += remaining + step
        self.next_finish = min(self.next_finish, remaining + step)
        self.n = i + 1

    def _close_slot(self, i: int, step: int) -> tuple[int, int]:
        """Book slot i's shared gaps up to ``step``; returns (rid, KV tokens)."""
        rid, base, first = int(self.rid[i]), int(self.base[i]), int(self.first_shared[i])
        if first < step:
            self.ledger.pieces[rid].append((self.index, first, step))
            worst = float(self.step_gap_s[first:step].max())
            self.ledger.itl_max_s[rid] = max(self.ledger.itl_max_s[rid], worst)
        self.phase[base % self.block] -= 1
        self.base_sum -= base
        return rid, base + step

    def _keep(self, keep: np.ndarray) -> None:
        n = self.n
        count = int(np.count_nonzero(keep))
        for array in (self.rid, self.base, self.last_step, self.first_shared, self.order):
            array[:count] = array[:n][keep]
        self.n = count
        self.next_finish = int(self.last_step[:count].min()) if count else NEVER
        self.last_step_sum = int(self.last_step[:count].sum())

    def book_open_slots(self) -> None:
        """At the horizon: book the gaps the still-decoding sequences have had so far."""
        for i in range(self.n):
            self._close_slot(i, self.step)

    # -- one iteration -------------------------------------------------------------------
    def start(self, now_s: float) -> float | None:
        """Form the next batch at ``now_s``; returns when it ends (None: nothing to run)."""
        if self.busy or not self.has_work():
            return None
        chunks: list[tuple[list[int], int]] = []
        self._slots_reserved = False
        self._admit(now_s, 0, chunks)  # transferred KV at the head of the queue: no prefill
        if not self.mixed:  # a prefill-only iteration when it can run one
            budget = self.max_tokens
            for entry in self.prefilling:  # SGLang's one chunked request goes on first
                budget = self._take_chunk(entry, budget, chunks)
            self._admit(now_s, budget, chunks)
        if chunks:
            self._decoding = 0  # vLLM V0 without chunking: a prefill-only iteration
        else:
            if self.n and not self.no_evict:
                self._reserve_decode_blocks()
            budget = self.max_tokens - self.n
            for entry in self.prefilling:
                if budget <= 0:
                    break
                budget = self._take_chunk(entry, budget, chunks)
            if self.mixed:
                self._admit(now_s, budget, chunks)
            self._decoding = self.n
        if self._preempted:
            self.waiting.extendleft(self._preempted)  # oldest victim ends up first
            self._preempted = []
        if not chunks and not self._decoding:
            assert not self.prefilling, "a partial prefill got no tokens"
            return None
        tokens = context = pairs = 0
        for entry, chunk in chunks:
            done = entry[1]
            tokens += chunk
            context += done + chunk  # cached + new keys the chunk ends on
            pairs += chunk * done + chunk * (chunk + 1) // 2  # its causal (query, key) pairs
        decode_context = 0
        if self._decoding:
            decode_context = self.base_sum + self._decoding * (self.step + 1)  # keys read
        if chunks:
            seconds = self._seconds(Batch(tokens, context, pairs, len(chunks), self._decoding,
                                          decode_context))
        else:
            seconds = self._decode_seconds(self._decoding)(decode_context)
        self._chunks, self._start_s, self.busy = chunks, now_s, True
        return now_s + seconds

    def _seconds(self, batch: Batch) -> float:
        seconds = self.seconds_cache.get(batch)
        if seconds is None:
            seconds = self.cost.iteration_seconds(self.layout, batch)
            assert seconds > 0, f"iteration_seconds must be positive, got {seconds}"
            if len(self.seconds_cache) < CACHE_ENTRIES:
                self.seconds_cache[batch] = seconds
        return seconds

    def decode_ahead(self, now_s: float, limit_s: float) -> float:
        """Run, from ``now_s``, the decode-only iterations that ``start`` and ``complete``
        would run one by one, without forming each batch: while each ends before
        ``limit_s``, no sequence finishes in it, every decode gets its next KV block without
        a preemption and the waiting queue's head cannot be admitted (nothing that frees
        sequences or blocks happens in between, so a head that waits now waits throughout).
        The iterations are priced and booked exactly as one by one. Returns when the last of
        them ended (``now_s`` when none ran)."""
        n = self.n
        if self.busy or not n or self.prefilling or (self.waiting and not self._head_waits()):
            return now_s
        seconds_of = self._decode_seconds(n)
        block, phase, no_evict = self.block, self.phase, self.no_evict
        step, last, free, base_sum = self.step, self.next_finish - 1, self.free_blocks, self.base_sum
        ends: list[float] = []
        busy_s, start_s = self.busy_s, now_s
        while step < last:  # the iteration ending at step + 1 finishes nobody
            need = 0 if no_evict else phase[-step % block]
            if need > free:
                break  # a preemption: left to ``start``
            end_s = start_s + seconds_of(base_sum + n * (step + 1))
            if end_s >= limit_s:
                break
            free -= need
            busy_s += end_s - start_s
            ends.append(end_s)
            start_s, step = end_s, step + 1
        if not ends:
            return now_s
        self.free_blocks, self.busy_s = free, busy_s
        self.iterations += len(ends)
        self._decoding = n
        self._end_decode_step(ends[0])  # the first may close gaps of slots that just joined
        if len(ends) > 1:
            self._book_shared_gaps(ends)
        return ends[-1]

    def _decode_seconds(self, seqs: int) -> Callable[[int], float]:
        """Seconds of a decode-only iteration of ``seqs`` sequences by their summed context:
        the cost model's ``decode_seconds`` where it has one, else ``iteration_seconds``."""
        function = self._decode_functions.get(seqs)
        if function is None:
            of_cost = getattr(self.cost, "decode_seconds", None)
            if of_cost is not None:
                function = of_cost(self.layout, seqs)
            else:
                function = lambda context: self._seconds(Batch.decode(seqs, context))
            self._decode_functions[seqs] = function
        return function

    def _book_shared_gaps(self, ends: list[float]) -> None:
        """``_end_decode_step`` for the decode steps ending at ``ends[1:]`` (``ends[0]`` is
        booked): every sequence shares their gaps and none finishes."""
        first, count = self.step, len(ends) - 1
        stop = first + count
        if stop > self.step_gap_s.size:
            grow = max(stop, self.step_gap_s.size)
            self.step_gap_s = np.concatenate([self.step_gap_s, np.zeros(grow)])
            self.step_gap_count = np.concatenate([self.step_gap_count,
                                                  np.zeros(grow, dtype=np.int64)])
        self.step_gap_s[first:stop] = np.diff(ends)
        self.step_gap_count[first:stop] = self.n
        if self.sglang:
            ratio = self.new_token_ratio
            for _ in range(count):
                ratio = max(self.MIN_NEW_TOKEN_RATIO, ratio - self.NEW_TOKEN_RATIO_DECAY)
            self.new_token_ratio = ratio
        self.step, self.last_decode_end_s = stop, ends[-1]

    def _head_waits(self) -> bool:
        """The waiting head cannot join the next decode iteration: neither where ``start``
        first looks (transferred KV, before the decodes' blocks are handed) nor, on a replica
        that mixes prefill and decode, with the token budget the decodes leave. Engines that
        run prefill apart (SGLang, vLLM V0 without chunking) admit on other terms: not
        judged here."""
        if not self.mixed:
            return False
        rid, prefill_tokens, kv_tokens = self.waiting[0]
        need = 0 if self.no_evict else self.phase[-self.step % self.block]
        first, _ = self._verdict(rid, prefill_tokens, kv_tokens, 0, False, self.free_blocks,
                                 False)
        second, _ = self._verdict(rid, prefill_tokens, kv_tokens, self.max_tokens - self.n,
                                  False, self.free_blocks - need, not self.no_evict)
        return first == WAIT and second == WAIT

    def _take_chunk(self, entry: list[int], budget: int, chunks: list) -> int:
        left = entry[2] - entry[1]
        chunk = min(left, budget) if self.chunked else left
        chunks.append((entry, chunk))
        return budget - chunk

    def _verdict(self, rid: int, prefill_tokens: int, kv_tokens: int, budget: int,
                 has_chunks: bool, free_blocks: int, slots_reserved: bool) -> tuple[int, int]:
        """Whether the waiting request can join the batch now (ADMIT), must wait (WAIT) or
        can never fit (REJECT), with the KV blocks it takes."""
        if self.n + len(self.prefilling) >= self.max_seqs:
            return WAIT, 0
        if prefill_tokens and budget <= 0:
            return WAIT, 0
        if (prefill_tokens and not self.chunked and prefill_tokens > budget
                and (has_chunks or prefill_tokens <= self.max_tokens)):
            return WAIT, 0  # whole prompts only; an oversized one runs alone
        blocks = self._blocks_for(rid, kv_tokens, slots_reserved)
        if blocks > self.total_blocks - self.watermark:
            return REJECT, blocks
        if free_blocks - blocks < self.watermark:
            return WAIT, blocks
        if self.sglang and prefill_tokens and not self._sglang_fits(rid, blocks):
            return WAIT, blocks
        return ADMIT, blocks

    def _admit(self, now_s: float, budget: int, chunks: list) -> int | None:
        """Admit waiting requests FCFS while budget, sequences and blocks allow; None if the
        head could not be admitted, else the budget left."""
        ledger = self.ledger
        while self.waiting:
            rid, prefill_tokens, kv_tokens = self.waiting[0]
            verdict, blocks = self._verdict(rid, prefill_tokens, kv_tokens, budget,
                                            bool(chunks), self.free_blocks,
                                            self._slots_reserved)
            if verdict == WAIT:
                return None
            if verdict == REJECT:
                self.waiting.popleft()  # can never fit: the engine rejects it
                self.outstanding -= 1
                ledger.rejected[rid] = True
                ledger.done.append(rid)
                continue
            self.waiting.popleft()
            self.free_blocks -= blocks
            ledger.reserved_blocks[rid] = blocks
            if math.isnan(ledger.first_scheduled_s[rid]):
                ledger.first_scheduled_s[rid] = now_s
            order, self.next_order = self.next_order, self.next_order + 1
            if not prefill_tokens:
                self._append(rid, kv_tokens, ledger.output[rid] - ledger.generated[rid],
                             ledger.last_token_s[rid], order)
                budget -= 1
                continue
            cached = 0
            if self.hit_rate and not ledger.generated[rid]:  # its prefix is cached already
                cached = min(int(self.hit_rate * prefill_tokens), prefill_tokens - 1)
            entry = [rid, cached, prefill_tokens, order]
            self.prefilling.append(entry)
            budget = self._take_chunk(entry, budget, chunks)
        return budget

    def _sglang_fits(self, rid: int, blocks: int) -> bool:
        """SGLang's PrefillAdder budget: free tokens less the output the running requests are
        expected to still write (remaining x new_token_ratio, each clipped at 4096) must hold
        the new prompt and its own clipped output estimate."""
        ledger = self.ledger
        remaining = self.last_step_sum - self.n * self.step  # decode steps the running have left
        expected = min(remaining, self.CLIP_NEW_TOKENS * self.n)
        for entry in self.prefilling:  # admitted, prompt still being prefilled
            expected += min(ledger.output[entry[0]] - ledger.generated[entry[0]],
                            self.CLIP_NEW_TOKENS)
        expected += min(ledger.output[rid] - ledger.generated[rid], self.CLIP_NEW_TOKENS)
        return (self.free_blocks - blocks) * self.block >= expected * self.new_token_ratio

    def _reserve_decode_blocks(self) -> None:
        """Hand every decode its next block, preempting the newest sequences if short."""
        need = self.phase[-self.step % self.block]
        while need > self.free_blocks and (self.n or self.prefilling):
            self._preempt_newest()
            need = self.phase[-self.step % self.block] if self.n else 0
        self.free_blocks -= need
        self._slots_reserved = True

    def _preempt_newest(self) -> None:
        ledger = self.ledger
        ledger.preemptions += 1
        self.new_token_ratio = self.NEW_TOKEN_RATIO  # SGLang retract_decode raises it again
        newest_slot = int(np.argmax(self.order[:self.n])) if self.n else -1
        newest_prefill = max(self.prefilling, key=lambda entry: entry[3], default=None)
        if newest_prefill is not None and (
                newest_slot < 0 or newest_prefill[3] > self.order[newest_slot]):
            self.prefilling.remove(newest_prefill)
            rid, total = newest_prefill[0], newest_prefill[2]
            self._release(rid, total)
            self._preempted.append((rid, total, total))
            return
        rid, kv_tokens = self._close_slot(newest_slot, self.step)
        keep = np.ones(self.n, dtype=bool)
        keep[newest_slot] = False
        self._keep(keep)
        last = self.last_decode_end_s
        for k, (own_rid, own_last) in enumerate(self.own_gap):
            if own_rid == rid:
                last = own_last
                del self.own_gap[k]
                break
        self._release(rid, kv_tokens)
        generated = kv_tokens - ledger.input[rid] + 1  # KV holds prompt + generated - 1
        ledger.generated[rid] = generated
        ledger.last_token_s[rid] = last
        recompute = ledger.input[rid] + generated
        self._preempted.append((rid, recompute, recompute))

    def complete(self, now_s: float) -> None:
        """End the running iteration at ``now_s``: emit tokens, finish and hand off."""
        self.busy = False
        self.busy_s += now_s - self._start_s
        self.iterations += 1
        if self._decoding:
            self._end_decode_step(now_s)
        chunks, self._chunks = self._chunks, []
        for entry, chunk in chunks:
            entry[1] += chunk
            if entry[1] == entry[2]:
                self.prefilling.remove(entry)
                self._prefill_done(entry, now_s)

    def _end_decode_step(self, now_s: float) -> None:
        ledger, step = self.ledger, self.step
        if step >= self.step_gap_s.size:
            self.step_gap_s = np.concatenate([self.step_gap_s, np.zeros(step)])
            self.step_gap_count = np.concatenate([self.step_gap_count,
                                                  np.zeros(step, dtype=np.int64)])
        self.step_gap_s[step] = now_s - self.last_decode_end_s
        self.step_gap_count[step] = self._decoding - len(self.own_gap)
        for rid, last in self.own_gap:
            ledger.gap(rid, now_s - last)
        self.own_gap.clear()
        self.step = step = step + 1
        self.last_decode_end_s = now_s
        if self.sglang:
            self.new_token_ratio = max(self.MIN_NEW_TOKEN_RATIO,
                                       self.new_token_ratio - self.NEW_TOKEN_RATIO_DECAY)
        if self.next_finish == step:
            done = self.last_step[:self.n] == step
            for i in np.flatnonzero(done).tolist():
                rid, kv_tokens = self._close_slot(i, step)
                self._release(rid, kv_tokens)
                ledger.generated[rid] = ledger.output[rid]
                self.outstanding -= 1
                ledger.finish(rid, now_s)
            self._keep(~done)

    def _prefill_done(self, entry: list[int], now_s: float) -> None:
        ledger = self.ledger
        rid, total, order = entry[0], entry[2], entry[3]
        generated = ledger.generated[rid]
        if generated == 0:
            ledger.first_token_s[rid] = now_s
        else:  # a recomputed sequence emits its next token
            ledger.gap(rid, now_s - ledger.last_token_s[rid])
        generated += 1
        ledger.generated[rid] = generated
        ledger.last_token_s[rid] = now_s
        if generated == ledger.output[rid]:
            self._release(rid, total)
            self.outstanding -= 1
            ledger.finish(rid, now_s)
        elif self.role == "prefill":
            self._release(rid, total)  # freed at once; the transfer is not held against it
            self.outstanding -= 1
            ledger.handoffs.append(rid)
        else:
            self._append(rid, total, ledger.output[rid] - generated, now_s, order)
