"""The one generator: prompt ids in, Pieces out. The terminal chat, the one-shot CLI, the server and the
tests all consume it.

    gen = generate(model, session, prompt_ids, SamplingParams(seed=1), max_tokens=64, stop=["\\n\\n"])
    for piece in gen:                  # one Piece per sampled token
        print(piece.text, end="")
    gen.finish_reason, gen.n_cached    # set once the loop is over

Steps: reuse the longest common prefix of `session.tokens` and the prompt (the KV cache already holds
it), evaluate the rest in one prefill, then sample / detokenize / evaluate one token at a time.

Text: a streaming detokenizer never releases half a UTF-8 character, and text that could be the start
of a stop string is held back until it is known not to be one, so a stop string is matched across
token boundaries and never emitted. The token that completes a stop string still yields its Piece
(with the text before the stop string). The last Piece of a generation ended by an end-of-generation
token is that token, carrying whatever text was still held back (usually ""); it is counted in
n_generated, as llama.cpp counts it.

Ends: "stop" (EOG token, stop string, or close()), "length" (max_tokens reached, or the context is
full: then context_full is True; the cache is never overrun and nothing is shifted out).
A prompt that does not fit the context raises PromptTooLong before anything is evaluated.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .sampler import Sampler, SamplingParams
from .tokenizer import StreamDecoder


class PromptTooLong(ValueError):
    """The prompt needs more positions than the session's context holds."""


@dataclass
class Piece:                   # one generated token
    token_id: int
    text: str                  # text released by this step (UTF-8 and stop-string hold-back applied; may be "")
    logprob: float | None      # of the chosen token (log-softmax of the raw logits), when asked for
    top_logprobs: list[tuple[int, float]] | None   # the `logprobs` most likely ids, best first


def common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def log_softmax_top(logits, token_id, k):
    # logits float32 [vocab] -> (logprob of token_id, [(id, logprob)] of the k best, best first)
    # exp in float32 (fast, after the max is taken out), summed in float64
    m = float(logits.max())
    lse = m + math.log(np.exp(logits - np.float32(m)).sum(dtype=np.float64))
    top = []
    if k > 0:
        k = min(k, logits.shape[0])
        ids = np.argpartition(-logits, k - 1)[:k]
        ids = ids[np.argsort(-logits[ids], kind="stable")]
        top = [(int(i), float(logits[i]) - lse) for i in ids]
    return float(logits[token_id]) - lse, top


def hold_back(text, stops) -> int:
    # -> how much of `text` is safe to release: up to the first suffix that starts some stop string
    for i in range(max(0, len(text) - max(map(len, stops)) + 1), len(text)):
        tail = text[i:]
        if any(s.startswith(tail) for s in stops):
            return i
    return len(text)


class Generation:
    """Iterate for Pieces. finish_reason, context_full, n_prompt, n_cached, n_generated, t_prompt (the
    prefill) and t_generate (from there to the last token sampled: n_generated - 1 decode steps) are
    final once iteration has ended. close() (from any thread) stops before the next token."""

    def __init__(self, model, session, prompt_ids, sampler, max_tokens, stop, logprobs):
        self.finish_reason: str | None = None
        self.context_full = False
        self.n_prompt = len(prompt_ids)
        self.n_cached = 0
        self.n_generated = 0
        self.t_prompt = 0.0
        self.t_generate = 0.0
        self._closed = False
        self._steps = self._run(model, session, list(prompt_ids), sampler, max_tokens,
                                [s for s in stop if s], logprobs)

    def __iter__(self):
        return self

    def __next__(self) -> Piece:
        if self._closed:
            raise StopIteration
        return next(self._steps)

    def close(self):
        """Stop early (client went away, Ctrl-C): no further token is evaluated."""
        self._closed = True
        if self.finish_reason is None:
            self.finish_reason = "stop"

    def _run(self, model, session, prompt_ids, sampler, max_tokens, stops, logprobs):
        tokenizer = model.tokenizer
        n_ctx = session.n_ctx
        decoder = StreamDecoder(tokenizer)
        if max_tokens is None or max_tokens < 0:
            max_tokens = n_ctx + 1      # never reached: the context fills first

        # prefill: keep what the cache already holds (at least the last prompt token is re-evaluated,
        # its logits are needed)
        t0 = time.perf_counter()
        self.n_cached = min(common_prefix(session.tokens, prompt_ids), len(prompt_ids) - 1)
        session.truncate(self.n_cached)
        logits = session.eval(prompt_ids[self.n_cached:])
        self.t_prompt = time.perf_counter() - t0

        pending = ""                    # released by the decoder, held back from the caller
        t0 = time.perf_counter()
        while True:
            if max_tokens == 0:
                self.finish_reason = "length"
                return
            token = sampler.sample(logits, session.tokens)
            lp, top = log_softmax_top(logits, token, logprobs) if logprobs is not None else (None, None)
            self.n_generated += 1
            self.t_generate = time.perf_counter() - t0

            complete = sampler.accept(token)    # True: a constraint (grammar, JSON schema) is complete
            if tokenizer.is_eog(token):
                self.finish_reason = "stop"
                yield Piece(token, pending + decoder.flush(), lp, top)
                return
            pending += decoder.feed(token)
            if stops:
                hit = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
                if hit >= 0:
                    self.finish_reason = "stop"
                    yield Piece(token, pending[:hit], lp, top)
                    return
            if complete:
                self.finish_reason = "stop"
                yield Piece(token, pending + decoder.flush(), lp, top)
                return
            if self.n_generated >= max_tokens or len(session.tokens) >= n_ctx:
                self.finish_reason = "length"
                self.context_full = self.n_generated < max_tokens
                yield Piece(token, pending + decoder.flush(), lp, top)
                return
            cut = hold_back(pending, stops) if stops else len(pending)
            text, pending = pending[:cut], pending[cut:]
            yield Piece(token, text, lp, top)
            if self._closed:
                return
            logits = session.eval([token])


def generate(model, session, prompt_ids, params: SamplingParams, max_tokens: int = -1,
             stop=(), logprobs: int | None = None, logit_bias: dict[int, float] | None = None,
             constraint=None) -> Generation:
    """Generate after `prompt_ids` in `session` (see the module docstring). max_tokens < 0: until an
    end-of-generation token or a full context. logprobs: None for none, k >= 0 for the chosen token's
    logprob plus the k best alternatives. logit_bias and constraint go to the Sampler; when the
    sampler says a constraint is complete, the generation ends with "stop"."""
    if len(prompt_ids) == 0:
        raise ValueError("empty prompt: nothing to continue from")
    if len(prompt_ids) > session.n_ctx:
        raise PromptTooLong(f"the prompt is {len(prompt_ids)} tokens but the context holds {session.n_ctx}")
    sampler = Sampler(params, logit_bias=logit_bias, constraint=constraint)
    return Generation(model, session, prompt_ids, sampler, max_tokens, stop, logprobs)
