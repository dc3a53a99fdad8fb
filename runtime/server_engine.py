"""The server's model: N slots, each with its own sequence of one KV cache, run by one worker thread with
continuous batching (llama-server's `--parallel N`).

A request becomes a Job. The worker admits waiting Jobs (first come, first served) to idle slots: to the
one whose cached prompt shares the longest prefix with the new prompt, but only among slots last used by
the same client identity (the API key a request was made with), so one client's cached prompt never
speeds up, and so never reveals itself to, another's; ties go to the least recently used slot. Then it
steps until no slot is busy. One step is one forward pass over:
- one row per slot that is generating (its last sampled token): the decode steps of all running streams
  together, the weights read once per step rather than once per stream;
- runs of the prompts being read, several in one pass (requests sent together are read together, the
  weights read once for all of them): while others generate, at most PREFILL_CHUNK tokens of each,
  so a long prompt does not freeze the running streams; when nothing else runs, PREFILL_ALONE in
  all. A pass that ends a prompt goes without the decode rows, so a new request's first token waits
  for no one's decode step.
Each slot's row is computed as it would be alone (runtime.model.Model.forward), so a greedy stream's text
does not depend on the others. Sampling, stop strings and logprobs are runtime.generate.Completion's,
one per slot with its own sampler state (constraints and tool calls work per slot).

Threads: the worker is the only thread that touches the KV cache. `lock` is held around each forward
pass, so a terminal chat in the same process (the default mode) takes turns with the server between
steps. Pieces cross from the worker to the request's event loop through an asyncio.Queue; a request that
goes away sets `Job.cancelled` and its slot is freed before the next step.

Context: every slot holds `n_ctx` positions (`-c` sizes each slot; KV memory is at most
n_slots * n_ctx * KVCache.bytes_per_position). When a generation fills its slot it ends with
finish_reason "length", or with `context_shift` the slot keeps its first n_keep positions and drops half
of the rest (llama.cpp's context shift) and goes on.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from .api_fields import context_exceeded
from .api_schema import APIError, GenOptions
from .constraint import ConstraintError
from .generate import Completion, Piece, common_prefix, keep_positions, shift_amounts
from .model import Buffers, KVCache, prompt_rows
from .sampler import Sampler

log = logging.getLogger("chatfile.server")

PREFILL_CHUNK = 64     # prompt tokens per step while other slots are generating (a multiple of 4: the
                       # GEMM's token tile, so a chunked prompt gives the numbers of a whole one)
PREFILL_ALONE = 512    # per step when nothing else runs (llama.cpp's default n_ubatch)


@dataclass
class Done:
    """The last event of a job: the finished generation's bookkeeping."""
    finish_reason: str
    n_prompt: int
    n_cached: int
    n_generated: int
    t_prompt: float
    t_generate: float


@dataclass
class Failed:
    """The last event of a job that could not finish. status 400 (with `param`, the request field) when
    the request itself broke down while generating (its grammar ran out of its per-token budget), 500 for
    a fault of ours."""
    message: str
    status: int = 500
    param: str | None = None

    def error(self) -> APIError:
        return APIError(self.status, self.message, param=self.param,
                        type="server_error" if self.status >= 500 else "invalid_request_error")


@dataclass(frozen=True)
class SlotView:
    """What GET /slots shows of a slot, copied at one moment."""
    id: int
    task_id: int                  # the running request's number, -1 when idle
    gen: GenOptions | None        # the running request's options, None when idle
    n_decoded: int                # tokens generated so far by the running request
    n_remain: int                 # tokens it may still generate (-1: until the end or a full context)
    tokens: tuple                 # what the slot's cache holds
    client: object                # the identity those tokens belong to
    n_processed: int              # requests served


class Job:
    """One request's generation. The worker thread fills `events`; the request's coroutine drains it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_ids: list[int], gen: GenOptions, client=None,
                 id: int = 0):
        self.id = id
        self.loop = loop
        self.prompt_ids = prompt_ids
        self.gen = gen
        self.client = client
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def emit(self, item) -> None:   # worker thread -> event loop
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:        # the loop is closed: the server is shutting down
            self.cancelled.set()

    async def stream(self):
        """Pieces as they come, then one Done or Failed. Leaving early (disconnect) cancels the job."""
        try:
            while True:
                item = await self.events.get()
                yield item
                if isinstance(item, (Done, Failed)):
                    return
        finally:
            self.cancelled.set()


class _Task:
    """A job running in a slot."""

    def __init__(self, job: Job, completion: Completion, n_cached: int):
        self.job = job
        self.completion = completion
        self.n_fed = n_cached           # prompt tokens in the slot's cache so far
        self.decoding = False           # the prompt is in; completion.token is the next row to evaluate
        self.t_start = time.perf_counter()
        self.t_first = 0.0              # when the prompt was done


class Slot:
    """One sequence of the engine's KV cache and what it holds."""

    def __init__(self, index: int):
        self.id = index
        self.tokens: list[int] = []     # what the slot's sequence of the cache holds
        self.client = None              # identity of the requests whose tokens these are
        self.task: _Task | None = None
        self.last_used = 0.0
        self.n_processed = 0            # requests served


class Engine:
    """Owns the model's KV cache, the slots and the worker thread."""

    def __init__(self, model, name: str, n_slots: int = 1, n_ctx: int | None = None, max_queue: int = 64,
                 chat_template: str | None = None, context_shift: bool = False):
        from .chat_template import ChatTemplate
        c = model.config
        self.model = model
        self.name = name
        self.template = ChatTemplate.for_model(model, chat_template)
        self.n_ctx = n_ctx or c.context_length
        self.n_slots = n_slots
        self.vocab_size = c.vocab_size
        self.max_queue = max_queue
        self.context_shift = context_shift
        self.kv = KVCache(model, n_slots, self.n_ctx)
        self.slots = [Slot(i) for i in range(n_slots)]
        self._buf = Buffers(c, rows=n_slots + PREFILL_ALONE, heads=n_slots + 1)
        # several prompts in one pass only where each row keeps its bits (Model.gemm_tails_are_rows)
        self.shared_prefill = model.gemm_tails_are_rows()
        # held around every forward pass, so a foreground terminal chat in the same process and this
        # worker take turns (see runtime.chat)
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self._cv = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._closed = False
        self._n_jobs = 0
        self.n_steps = 0                # forward passes so far
        self.peak_decoding = 0          # most slots generating in one forward pass
        self.peak_reading = 0           # most prompts read in one forward pass
        self._worker = threading.Thread(target=self._run, name="chatfile-engine", daemon=True)
        self._worker.start()

    # ---- state, read from any thread -------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return any(s.task is not None for s in self.slots)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def slot_views(self) -> list[SlotView]:
        views = []
        for s in self.slots:
            t = s.task
            if t is None:
                views.append(SlotView(s.id, -1, None, 0, 0, tuple(s.tokens), s.client, s.n_processed))
                continue
            c = t.completion
            remain = c.max_tokens - c.n_generated if c.max_tokens >= 0 else -1
            views.append(SlotView(s.id, t.job.id, t.job.gen, c.n_generated, remain, tuple(s.tokens), s.client,
                                  s.n_processed))
        return views

    # ---- event loop --------------------------------------------------------------------------------
    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        """The prompt of a conversation through this server's chat template; 400 when the template
        refuses it. (Any thread: it touches the tokenizer, not the model.)"""
        from .chat_template import ChatTemplateError, chat_prompt_ids
        try:
            return chat_prompt_ids(self.model, self.template, messages)
        except ChatTemplateError as e:
            raise APIError(400, str(e), param="messages") from None

    def submit(self, prompt_ids: list[int], gen: GenOptions, client=None) -> Job:
        """Queue a generation. `client`: the requester's identity (see server_http.client_id)."""
        if len(prompt_ids) >= self.n_ctx:
            raise context_exceeded(len(prompt_ids), self.n_ctx, "shorten the conversation")
        with self._cv:
            self._n_jobs += 1
            job = Job(asyncio.get_running_loop(), prompt_ids, gen, client, self._n_jobs)
            if len(self._waiting) >= self.max_queue:
                raise APIError(503, f"server busy: {len(self._waiting)} requests are already waiting; "
                                    "retry later", type="server_busy")
            self._waiting.append(job)
            self._cv.notify()
        return job

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()

    # ---- worker thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        self._warm_up()
        while True:
            with self._cv:
                while not self._closed and not (self._waiting and self._idle_slot()) and not self.busy:
                    self._cv.wait()
                if self._closed:
                    return
                self._admit()
            if self.busy:
                try:
                    self._step()
                except Exception as e:       # a bug of ours: every running request hears of it
                    log.exception("generation failed")
                    for s in self.slots:
                        if s.task is not None:
                            s.task.job.emit(Failed(f"generation failed: {type(e).__name__}: {e}"))
                            self._release(s, keep_cache=False)

    def _warm_up(self) -> None:
        """One token through the model so the first request does not pay for loading the kernels."""
        try:
            with self.lock:
                ids = self.model.tokenize("Hello", add_special=True, parse_special=False)[:1] or [0]
                self.model.forward(self.kv, self._buf, np.array(ids, np.int64), np.zeros(1, np.int64),
                                   np.zeros(1, np.int64), n_decode=1, logit_rows=np.zeros(1, np.int64))
        except Exception:
            log.exception("warm-up failed")   # the first request will show the same error to its client
        finally:
            self.ready.set()

    def _idle_slot(self) -> bool:
        return any(s.task is None for s in self.slots)

    def _admit(self) -> None:
        """Waiting jobs, oldest first, into idle slots (called with _cv held)."""
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled.is_set():          # the client left while waiting its turn
                self._waiting.popleft()
                continue
            idle = [s for s in self.slots if s.task is None]
            if not idle:
                return
            self._waiting.popleft()
            ids = job.prompt_ids

            def shared(s: Slot) -> int:         # never across identities
                return common_prefix(s.tokens, ids) if s.client == job.client else 0
            slot = max(idle, key=lambda s: (shared(s), -s.last_used))
            g = job.gen
            n_cached = min(shared(slot), len(ids) - 1) if g.cache_prompt else 0
            del slot.tokens[n_cached:]
            slot.client = job.client
            sampler = Sampler(g.params, logit_bias=g.logit_bias, constraint=g.constraint)
            completion = Completion(self.model.tokenizer, sampler, len(ids), g.max_tokens, g.stop, g.logprobs,
                                    g.post_sampling_probs)
            completion.n_cached = n_cached
            slot.task = _Task(job, completion, n_cached)

    def _step(self) -> None:
        """One forward pass: a row for each generating slot, and/or runs of the slots' prompts."""
        for s in self.slots:
            if s.task is not None and s.task.job.cancelled.is_set():
                log.info("client gone: generation stopped after %d tokens", s.task.completion.n_generated)
                self._release(s)
        decoding = [s for s in self.slots if s.task is not None and s.task.decoding]
        reading = sorted((s for s in self.slots if s.task is not None and not s.task.decoding),
                         key=lambda s: s.task.t_start)
        runs = self._prefill_runs(reading, bool(decoding))
        if not self.shared_prefill:
            runs = runs[:1]
        if any(s.task.n_fed + len(chunk) == len(s.task.job.prompt_ids) for s, chunk in runs):
            decoding = []         # a pass that ends prompts goes without the decode rows: a new request's
                                  # first token waits for no one's decode step (the others wait one pass)
        # rows: one per generating slot, then the prompt runs laid out by model.prompt_rows (the last
        # 1-3 tokens of every run but the last among the decode rows, the rest in one GEMM), so each
        # row has the bits it gets alone (see Model.forward), and a lone prompt is one GEMM
        layout, n_tails = prompt_rows([len(chunk) for _, chunk in runs])
        rows = [(s, -1) for s in decoding] + [(runs[k][0], i) for k, i in layout]
        n_decode = len(decoding) + n_tails
        ids, seq, pos, last = [], [], [], {}      # last: slot id -> row of its prompt's last token
        for s, i in rows:
            t = s.task
            if i < 0:
                ids.append(t.completion.token)
                pos.append(len(s.tokens))
            else:
                if t.n_fed + i == len(t.job.prompt_ids) - 1:
                    last[s.id] = len(ids)
                ids.append(t.job.prompt_ids[t.n_fed + i])
                pos.append(len(s.tokens) + i)
            seq.append(s.id)
        logit_rows = list(range(len(decoding))) + [last[s.id] for s, _ in runs if s.id in last]
        if not ids:
            return
        with self.lock:
            logits = self.model.forward(self.kv, self._buf, np.array(ids, np.int64), np.array(seq, np.int64),
                                        np.array(pos, np.int64), n_decode=n_decode,
                                        logit_rows=np.array(logit_rows, np.int64))
        now = time.perf_counter()
        self.n_steps += 1
        self.peak_decoding = max(self.peak_decoding, len(decoding))
        self.peak_reading = max(self.peak_reading, len(runs))
        for i, s in enumerate(decoding):
            s.tokens.append(ids[i])
            self._advance(s, logits[i], now)
        row = len(decoding)
        for s, chunk in runs:
            t = s.task
            s.tokens += chunk
            t.n_fed += len(chunk)
            if s.id in last:
                t.completion.t_prompt = now - t.t_start
                t.t_first = now
                t.decoding = True
                self._advance(s, logits[row], now)
                row += 1

    @staticmethod
    def _prefill_runs(reading: list[Slot], decoding: bool) -> list[tuple[Slot, list[int]]]:
        """The prompt tokens to read in this pass: [(slot, its next tokens)], from `reading` (the slots
        still reading their prompts, oldest request first). While others generate, each prompt gives
        at most PREFILL_CHUNK tokens to a pass, so a long prompt does not freeze the running streams;
        otherwise PREFILL_ALONE tokens per pass in all, oldest first. Several prompts share a pass (the
        GEMM reads the weights once for all of them: requests sent together are read together). Every
        run but the one that ends a prompt has a multiple of 4 tokens (the GEMM's token tile)."""
        runs, budget = [], PREFILL_ALONE
        for s in reading:
            rest = s.task.job.prompt_ids[s.task.n_fed:]
            n = min(len(rest), budget, PREFILL_CHUNK if decoding else budget)
            if n < len(rest):
                n = n // 4 * 4
            if n == 0:
                break
            runs.append((s, rest[:n]))
            budget -= n
        return runs

    def _advance(self, slot: Slot, logits, now: float) -> None:
        """Sample the slot's next token from its logits and pass its Piece on; end the job when done."""
        t = slot.task
        c = t.completion
        if c.max_tokens == 0:
            c.finish_reason = "length"
            self._finish(slot)
            return
        try:
            piece: Piece = c.step(logits, slot.tokens)
        except ConstraintError as e:     # this request's grammar broke down: it alone fails, with a 400
            log.info("constraint failed after %d tokens: %s", c.n_generated, e)
            t.job.emit(Failed(str(e), 400, e.param))
            self._release(slot)
            return
        c.t_generate = now - t.t_first
        if c.finish_reason is None and len(slot.tokens) >= self.n_ctx:   # no room for the new token
            n_keep, n_discard = shift_amounts(len(slot.tokens), self.n_ctx, self._n_keep(t))
            if self.context_shift and n_discard > 0:
                with self.lock:
                    self.model.shift_kv(self.kv, slot.id, n_keep, n_discard, len(slot.tokens))
                del slot.tokens[n_keep:n_keep + n_discard]
                c.n_shifted += 1
            else:
                piece.text += c.end_full().text
        t.job.emit(piece)
        if c.finish_reason is not None:
            self._finish(slot)

    def _n_keep(self, t: _Task) -> int:
        return keep_positions(t.job.gen.n_keep, t.completion.n_prompt, self.model.tokenizer.add_bos)

    def _finish(self, slot: Slot) -> None:
        c = slot.task.completion
        log.info("generation ended: %s, %d tokens", c.finish_reason, c.n_generated)
        slot.task.job.emit(Done(c.finish_reason, c.n_prompt, c.n_cached, c.n_generated, c.t_prompt,
                                c.t_generate))
        self._release(slot)

    def _release(self, slot: Slot, keep_cache: bool = True) -> None:
        if not keep_cache:
            slot.tokens.clear()
        slot.task = None
        slot.last_used = time.monotonic()
        slot.n_processed += 1

