"""Sampling: llama.cpp's default chain over one logits vector, with a seeded numpy Generator.

Order (llama.cpp common/sampling.cpp and llama-cpp-python's `_init_sampler`):
    penalties -> top_k -> top_p -> min_p -> temperature -> draw
top_p and min_p look at the untempered distribution; temperature only shapes the final draw.
temperature <= 0 is greedy: argmax of the penalized logits (llama.cpp's greedy sampler sits after the
penalties too). Same seed, same logits, same history -> same token.

Cost at vocab 262k: the penalties touch only the last `repeat_last_n` ids, top_k is an argpartition,
and only the survivors are sorted. With top_k off, min_p (a cut relative to the max logit, so it can
be taken first without changing the result) bounds the sort, else a growing argpartition head that
holds top_p of the mass (a full sort only when that takes most of the vocabulary: a flat distribution
with top_k and min_p both off); with nothing to truncate there is no sort at all.
Measured (tests/test_sampler.py::test_cheap_at_gemma_vocab): llama.cpp's defaults at vocab 262,144
cost about 3 ms a token, a tenth of one full sort.

Around that chain, as llama.cpp's common_sampler puts it:
- `logit_bias` {token id: bias} is added to the logits first (-inf bans a token);
- a constraint (runtime/constraint.py: a JSON schema or grammar) is checked on the token the chain
  chose; only when the grammar refuses it is the whole chain run again on the logits with every
  refused token masked out (common_sampler_sample's "resampling"). The mask over the vocabulary is
  therefore computed only on the rare refused token, and a greedy pick is exactly the best allowed
  token either way. `accept(token)` advances the grammar and says when it is complete.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:          # llama.cpp's defaults
    temperature: float = 0.8   # <= 0: greedy
    top_k: int = 40            # <= 0: off
    top_p: float = 0.95        # >= 1: off
    min_p: float = 0.05        # <= 0: off
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64    # penalty window over the latest tokens; 0: off, -1: the whole context
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None    # None (or -1 on the command line): fresh OS entropy


def apply_penalties(logits, history, repeat_penalty, presence_penalty, frequency_penalty):
    # logits float32 [vocab], history int [n] -> penalized copy float32 [vocab]
    # llama.cpp llama_sampler_penalties_apply: repeat divides positive logits and multiplies negative
    # ones, then frequency (per occurrence) and presence (once) are subtracted.
    out = np.array(logits, dtype=np.float32, copy=True)
    if len(history) == 0:
        return out
    ids, counts = np.unique(np.asarray(history, dtype=np.int64), return_counts=True)
    z = out[ids]
    z = np.where(z <= 0, z * repeat_penalty, z / repeat_penalty)
    out[ids] = z - counts * frequency_penalty - presence_penalty
    return out


def candidates(logits, top_k, top_p, min_p):
    # logits float32 [vocab] -> (ids int [n] by descending logit, logits [n], log-normalizer)
    # The log-normalizer is over the set top_p must normalize against: the top_k set, else the vocab.
    # Only a superset of what top_p and min_p keep is sorted (see the module docstring).
    vocab = logits.shape[0]
    if not 0 < top_k < vocab and top_p >= 1.0 and min_p <= 0:   # nothing truncates: no sort, no normalizer
        return np.arange(vocab), logits, 0.0
    if 0 < top_k < vocab:
        ids = np.argpartition(-logits, top_k - 1)[:top_k]
        z = logits[ids].astype(np.float64)
        lse = _logsumexp(z)
    else:
        z_all = logits.astype(np.float64)
        lse = _logsumexp(z_all)
        if min_p > 0:       # relative to the max logit, so it commutes with top_p: cut first
            ids = np.flatnonzero(z_all >= z_all.max() + math.log(min_p))
        else:               # grow a top-k head until it holds top_p of the mass (with a flat
                            # distribution and top_k, min_p off, this ends in a full sort)
            k = 64
            while True:
                ids = np.argpartition(-z_all, k - 1)[:k] if k < vocab else np.arange(vocab)
                if k >= vocab or np.exp(z_all[ids] - lse).sum() >= top_p:
                    break
                k *= 8
        z = z_all[ids]
    order = np.argsort(-z, kind="stable")
    return ids[order], z[order], lse


def top_p_cut(z, lse, top_p):
    # z float64 [n] descending -> how many to keep: the shortest head whose probability reaches top_p
    if top_p >= 1.0:
        return len(z)
    cum = np.cumsum(np.exp(z - lse))
    return min(int(np.searchsorted(cum, top_p, side="left")) + 1, len(z))


def min_p_cut(z, min_p):
    # z float64 [n] descending -> how many to keep: logit >= max + log(min_p), i.e. p >= min_p * p_max
    if min_p <= 0:
        return len(z)
    return max(1, int(np.count_nonzero(z >= z[0] + math.log(min_p))))


def truncate(logits, top_k, top_p, min_p):
    # logits float32 [vocab] -> the survivors of top_k, top_p, min_p: (ids int [n], logits float64 [n]),
    # by descending logit (in vocabulary order when none of the three is on)
    ids, z, lse = candidates(logits, top_k, top_p, min_p)
    n = top_p_cut(z, lse, top_p)
    n = min(n, min_p_cut(z[:n], min_p))
    return ids[:n], z[:n]


def _logsumexp(z):
    m = z.max()
    return m + math.log(np.exp(z - m).sum())


class Sampler:
    """The chain for one generation. Owns the numpy Generator so a seeded run repeats exactly, and the
    state of its constraint (so each generation, each server slot, has its own)."""

    def __init__(self, params: SamplingParams, logit_bias: dict[int, float] | None = None, constraint=None):
        self.params = params
        seed = params.seed if params.seed is not None and params.seed >= 0 else None
        self.rng = np.random.default_rng(seed)
        self.bias_ids = self.bias = None
        if logit_bias:
            self.bias_ids = np.fromiter(logit_bias.keys(), dtype=np.int64, count=len(logit_bias))
            self.bias = np.fromiter(logit_bias.values(), dtype=np.float32, count=len(logit_bias))
        self.constraint = constraint.start() if constraint is not None else None
        self._drawn = None     # (ids, logits / temperature) the last token was drawn from; None: greedy

    def sample(self, logits: np.ndarray, history) -> int:
        """Next token id from logits float32 [vocab]; `history` = the ids in context, oldest first."""
        if self.bias is not None:
            logits = logits.copy()
            logits[self.bias_ids] += self.bias
        token = self._chain(logits, history)
        if self.constraint is None or self.constraint.allows(token):
            return token
        allowed = self.constraint.mask(logits.shape[0])
        return self._chain(np.where(allowed, logits, np.float32(-np.inf)), history)

    def accept(self, token: int) -> bool:
        """Record the token the generation kept; True when the constraint is complete (the generation then
        ends with finish_reason "stop"). Without a constraint there is nothing to complete."""
        return self.constraint.advance(token) if self.constraint is not None else False

    def drawn_from(self, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
        """llama.cpp's post-sampling probabilities of the last sample() (its token `token`): (log of the
        token's probability, [(id, logprob)] of the k likeliest) in the distribution it was drawn from,
        after the penalties, top_k/top_p/min_p and the temperature; a greedy pick had probability 1."""
        if self._drawn is None:
            return 0.0, [(token, 0.0)][:k]
        ids, z = self._drawn
        lse = _logsumexp(z)
        at = np.flatnonzero(ids == token)
        chosen = float(z[at[0]]) - lse if at.size else -math.inf
        k = min(k, len(ids))
        if k <= 0:
            return chosen, []
        best = np.argpartition(-z, k - 1)[:k]
        best = best[np.argsort(-z[best], kind="stable")]
        return chosen, [(int(ids[i]), float(z[i]) - lse) for i in best]

    def _chain(self, logits: np.ndarray, history) -> int:
        p = self.params
        if p.repeat_last_n != 0 and (p.repeat_penalty != 1.0 or p.presence_penalty != 0.0
                                     or p.frequency_penalty != 0.0):
            window = history if p.repeat_last_n < 0 else history[-p.repeat_last_n:]
            logits = apply_penalties(logits, window, p.repeat_penalty, p.presence_penalty, p.frequency_penalty)
        if p.temperature <= 0:
            self._drawn = None
            return int(np.argmax(logits))
        ids, z = truncate(logits, p.top_k, p.top_p, p.min_p)
        self._drawn = (ids, z / p.temperature)
        cum = np.cumsum(np.exp((z - z.max()) / p.temperature), dtype=np.float64)
        i = int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right"))
        return int(ids[min(i, len(ids) - 1)])
