"""The server's one model: a single worker thread runs one generation at a time, in arrival order.

Why one worker and one Session: the model and its KV cache are not shared between threads (numba's
parallel kernels must not be entered from two threads at once), and keeping one Session is what lets a
continuing conversation reuse the KV cache of its shared prefix (runtime.generate does the matching).
Requests wait in the executor's FIFO queue, so none is lost; the event loop never blocks on the model,
so /health answers while a generation runs.

Pieces cross from the worker thread to the request's event loop through an asyncio.Queue. When the
client goes away, the request sets `Job.cancelled`; the worker checks it before starting and after every
token and closes the Generation at once.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .api_schema import APIError, GenOptions
from .generate import Generation, generate

log = logging.getLogger("chatfile.server")


@dataclass
class Done:
    """The last event of a job: the finished Generation's bookkeeping."""
    finish_reason: str
    n_prompt: int
    n_cached: int
    n_generated: int
    t_prompt: float
    t_generate: float


@dataclass
class Failed:
    message: str


class Job:
    """One request's generation. The worker thread fills `events`; the request's coroutine drains it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_ids: list[int], gen: GenOptions):
        self.loop = loop
        self.prompt_ids = prompt_ids
        self.gen = gen
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


class Engine:
    """Owns the model, its one Session and the worker thread."""

    def __init__(self, model, name: str, max_queue: int = 64, chat_template: str | None = None):
        from .chat_template import ChatTemplate
        self.model = model
        self.name = name
        self.template = ChatTemplate.for_model(model, chat_template)
        self.session = model.new_session()
        self.n_ctx = self.session.n_ctx
        self.vocab_size = model.config.vocab_size
        self.n_slots = 1
        self.max_queue = max_queue
        # held around every use of the model, so a foreground terminal chat in the same process and this
        # worker take turns (see runtime.chat); the worker is the only thread that touches self.session
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.busy = False
        self.queued = 0             # jobs submitted and not yet started (read on the event loop)
        self.stats_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatfile-generate")
        self._pool.submit(self._warm_up)

    # ---- worker thread -----------------------------------------------------------------------------
    def _warm_up(self) -> None:
        """One token through the model so the first request does not pay for loading the kernels."""
        try:
            with self.lock:
                ids = self.model.tokenize("Hello", add_special=True, parse_special=False)[:1] or [0]
                self.session.eval(ids)
                self.session.truncate(0)
        except Exception:
            log.exception("warm-up failed")   # the first request will show the same error to its client
        finally:
            self.ready.set()

    def _run(self, job: Job) -> None:
        # busy before the queue count drops: /health never shows an idle moment between two jobs
        self.busy = True
        with self.stats_lock:
            self.queued -= 1
        gen: Generation | None = None
        try:
            if job.cancelled.is_set():      # the client left while waiting its turn
                return
            with self.lock:
                g = job.gen
                if not g.cache_prompt:
                    self.session.truncate(0)
                gen = generate(self.model, self.session, job.prompt_ids, g.params, max_tokens=g.max_tokens,
                               stop=list(g.stop), logprobs=g.logprobs, logit_bias=g.logit_bias,
                               constraint=g.constraint)
                for piece in gen:
                    if job.cancelled.is_set():
                        log.info("client gone: generation stopped after %d tokens", gen.n_generated)
                        break
                    job.emit(piece)
                gen.close()
                log.info("generation ended: %s, %d tokens", gen.finish_reason, gen.n_generated)
                if not job.cancelled.is_set():
                    job.emit(Done(gen.finish_reason, gen.n_prompt, gen.n_cached, gen.n_generated,
                                  gen.t_prompt, gen.t_generate))
        except Exception as e:
            log.exception("generation failed")
            if gen is not None:
                gen.close()
            job.emit(Failed(f"generation failed: {type(e).__name__}: {e}"))
        finally:
            self.busy = False

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
            raise APIError(400, f"the prompt is {len(prompt_ids)} tokens but the context holds {self.n_ctx}: "
                                "shorten the conversation", param="messages", code="context_length_exceeded")
        if self.queued >= self.max_queue:
            raise APIError(503, f"server busy: {self.queued} requests are already waiting; retry later",
                           type="server_busy")
        job = Job(asyncio.get_running_loop(), prompt_ids, gen)
        with self.stats_lock:
            self.queued += 1
        self._pool.submit(self._run, job)
        return job

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

