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

Ends: "stop" (EOG token, stop string, a complete constraint, or close()), "length" (max_tokens reached,
or the context is full: then context_full is True and the cache is never overrun). With context_shift,
a full context is shifted instead (llama.cpp's: keep n_keep positions, discard half of the rest) and the
generation goes on. A prompt that does not fit the context raises PromptTooLong before anything is
evaluated.
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


class Completion:
    """One request's token-by-token state, apart from how its logits are computed: sampling, the text
    (UTF-8 and stop-string hold-back), logprobs and the end conditions. `generate` drives one with a
    Session; the server's engine drives one per slot with batched forward passes. Same logits in, same
    Pieces out.

    Per token: `piece = c.step(logits, history)` samples the next token (history: the ids in context,
    for the penalties) and returns its Piece; once `c.finish_reason` is set the generation is over,
    else `c.token` is to be evaluated next. `c.full(n_past)` says whether a context of n_past cached
    tokens has room for that token."""

    def __init__(self, tokenizer, sampler: Sampler, n_prompt: int, max_tokens: int, stop, logprobs,
                 post_sampling: bool = False):
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.max_tokens = max_tokens
        self.stops = [s for s in stop if s]
        self.logprobs = logprobs
        self.post_sampling = post_sampling   # logprobs of the distribution sampled from, not of the logits
        self.decoder = StreamDecoder(tokenizer)
        self.pending = ""               # released by the decoder, held back from the caller
        self.finish_reason: str | None = None
        self.context_full = False       # ended ("length") because the context was full
        self.n_shifted = 0              # context shifts made while generating
        self.n_prompt = n_prompt
        self.n_cached = 0
        self.n_generated = 0
        self.t_prompt = 0.0             # the prefill
        self.t_generate = 0.0           # from there to the last token sampled (n_generated - 1 decode steps)
        self.token: int | None = None   # the last sampled token, to be evaluated next

    def step(self, logits, history) -> Piece:
        token = self.sampler.sample(logits, history)
        lp = top = None
        if self.logprobs is not None:
            lp, top = self.sampler.drawn_from(token, self.logprobs) if self.post_sampling else \
                log_softmax_top(logits, token, self.logprobs)
        self.n_generated += 1
        self.token = token
        complete = self.sampler.accept(token)    # True: a constraint (grammar, JSON schema) is complete
        if self.tokenizer.is_eog(token):
            return self._finish("stop", Piece(token, self.pending + self.decoder.flush(), lp, top))
        self.pending += self.decoder.feed(token)
        stops = self.stops
        if stops:
            hit = min((i for i in (self.pending.find(s) for s in stops) if i >= 0), default=-1)
            if hit >= 0:
                return self._finish("stop", Piece(token, self.pending[:hit], lp, top))
        if complete:
            return self._finish("stop", Piece(token, self.pending + self.decoder.flush(), lp, top))
        if 0 <= self.max_tokens <= self.n_generated:
            return self._finish("length", Piece(token, self.pending + self.decoder.flush(), lp, top))
        cut = hold_back(self.pending, stops) if stops else len(self.pending)
        text, self.pending = self.pending[:cut], self.pending[cut:]
        return Piece(token, text, lp, top)

    def _finish(self, reason: str, piece: Piece) -> Piece:
        self.finish_reason = reason
        self.pending = ""
        return piece

    def end_full(self) -> Piece:
        """The context is full and will not be shifted: end with "length", releasing the held-back text
        (a Piece of the last token with no token of its own: token_id -1 is never emitted as a token)."""
        self.context_full = True
        self.finish_reason = "length"
        text, self.pending = self.pending + self.decoder.flush(), ""
        return Piece(-1, text, None, None)

    def close(self) -> None:
        if self.finish_reason is None:
            self.finish_reason = "stop"


def keep_positions(n_keep: int, n_prompt: int, add_bos: bool) -> int:
    """Positions a context shift keeps for a request's n_keep (llama-server's rule): -1 keeps the
    whole prompt, else n_keep tokens after the BOS (which is always kept)."""
    return n_prompt if n_keep < 0 else n_keep + (1 if add_bos else 0)


def shift_amounts(n_past: int, n_ctx: int, n_keep: int) -> tuple[int, int]:
    """llama-server's context shift: keep the first n_keep positions (at most n_ctx - 4), discard half
    of the rest. -> (n_keep, n_discard)."""
    n_keep = max(0, min(n_keep, n_ctx - 4))
    n_left = n_past - n_keep
    return n_keep, max(0, min(n_left // 2, n_left - 1))


class Generation:
    """Iterate for Pieces. finish_reason, context_full, n_prompt, n_cached, n_generated, t_prompt (the
    prefill) and t_generate (from there to the last token sampled: n_generated - 1 decode steps) are
    final once iteration has ended. close() (from any thread) stops before the next token."""

    def __init__(self, session, prompt_ids, completion: Completion, context_shift: bool, n_keep: int):
        self._c = completion
        self._closed = False
        self._steps = self._run(session, list(prompt_ids), context_shift, n_keep)

    def __getattr__(self, name):          # finish_reason, n_generated, ... live on the Completion
        return getattr(self._c, name)

    def __iter__(self):
        return self

    def __next__(self) -> Piece:
        if self._closed:
            raise StopIteration
        return next(self._steps)

    def close(self):
        """Stop early (client went away, Ctrl-C): no further token is evaluated."""
        self._closed = True
        self._c.close()

    def _run(self, session, prompt_ids, context_shift, n_keep):
        c = self._c
        # prefill: keep what the cache already holds (at least the last prompt token is re-evaluated,
        # its logits are needed)
        t0 = time.perf_counter()
        c.n_cached = min(common_prefix(session.tokens, prompt_ids), len(prompt_ids) - 1)
        session.truncate(c.n_cached)
        logits = session.eval(prompt_ids[c.n_cached:])
        c.t_prompt = time.perf_counter() - t0

        t0 = time.perf_counter()
        if c.max_tokens == 0:
            c.finish_reason = "length"
            return
        while True:
            piece = c.step(logits, session.tokens)
            c.t_generate = time.perf_counter() - t0
            if c.finish_reason is not None:
                yield piece
                return
            if len(session.tokens) >= session.n_ctx:           # no room for the token just sampled
                n_keep_now, n_discard = shift_amounts(len(session.tokens), session.n_ctx, n_keep)
                if not context_shift or n_discard == 0:
                    piece.text += c.end_full().text
                    yield piece
                    return
                session.shift(n_keep_now, n_discard)
                c.n_shifted += 1
            yield piece
            if self._closed:
                return
            logits = session.eval([c.token])


def generate(model, session, prompt_ids, params: SamplingParams, max_tokens: int = -1,
             stop=(), logprobs: int | None = None, logit_bias: dict[int, float] | None = None,
             constraint=None, context_shift: bool = False, n_keep: int = 0) -> Generation:
    """Generate after `prompt_ids` in `session` (see the module docstring). max_tokens < 0: until an
    end-of-generation token or a full context. logprobs: None for none, k >= 0 for the chosen token's
    logprob plus the k best alternatives. logit_bias and constraint go to the Sampler; when the
    sampler says a constraint is complete, the generation ends with "stop". context_shift: when the
    context fills, keep its first positions (n_keep tokens after BOS, -1: the whole prompt) and discard
    half of the rest (llama.cpp's context shift) instead of ending with "length"."""
    if len(prompt_ids) == 0:
        raise ValueError("empty prompt: nothing to continue from")
    if len(prompt_ids) > session.n_ctx:
        raise PromptTooLong(f"the prompt is {len(prompt_ids)} tokens but the context holds {session.n_ctx}")
    sampler = Sampler(params, logit_bias=logit_bias, constraint=constraint)
    completion = Completion(model.tokenizer, sampler, len(prompt_ids), max_tokens, stop, logprobs)
    keep = keep_positions(n_keep, len(prompt_ids), model.tokenizer.add_bos)
    return Generation(session, prompt_ids, completion, context_shift, keep)
