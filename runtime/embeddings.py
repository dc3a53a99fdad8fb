"""Embeddings: a text's hidden states pooled into one vector, as llama.cpp's server computes them.

    vector = embed(model, ids, "mean")        # float32 [dim], L2-normalized
    rows = embed(model, ids, "none")          # float32 [n_tokens, dim], not normalized

What is pooled is llama.cpp's `t_embd`: the hidden state of every position after the final RMS norm,
before the output head (Session.hidden). Each input runs in its own short Session from position 0,
with causal attention as in generation, so an embedding never depends on what else the server did.

Pooling (llama.cpp src/llama-graph.cpp, build_pooling): "mean" averages the positions, "cls" takes the
first, "last" the last, "none" returns every position. The GGUF may declare one in
`{arch}.pooling_type` (embedding models do); a chat model declares none, and then chatfile pools by
"mean" unless told otherwise (`--pooling`). llama-server would pool by "none" there and refuse
/v1/embeddings; "mean" is what makes a chat model's /v1/embeddings usable, and it is what
sentence-embedding users expect of a decoder without a declared pooling.

Normalization (common_embd_normalize, the `embd_normalize` field): -1 none, 0 max-absolute scaled to
the int16 range, 1 taxicab, 2 Euclidean (llama-server's default for pooled vectors), p > 2 p-norm.
Per-token rows ("none") are returned as they are, as llama-server does.
"""
from __future__ import annotations

import numpy as np

POOLINGS = ("none", "mean", "cls", "last")
DEFAULT_POOLING = "mean"


def model_pooling(declared: str | None, override: str | None = None) -> str:
    """The pooling to use: --pooling, else the GGUF's, else DEFAULT_POOLING. "rank" (rerankers'
    classification head) is not supported and falls back to the default."""
    if override:
        return override
    return declared if declared in POOLINGS else DEFAULT_POOLING


def pool(hidden: np.ndarray, pooling: str) -> np.ndarray:
    # hidden [T, dim] -> [dim] ("mean", "cls", "last") or [T, dim] ("none")
    if pooling == "mean":
        return hidden.astype(np.float64).mean(axis=0).astype(np.float32)
    if pooling == "cls":
        return hidden[0].copy()
    if pooling == "last":
        return hidden[-1].copy()
    if pooling == "none":
        return hidden
    raise ValueError(f"unknown pooling {pooling!r} (known: {', '.join(POOLINGS)})")


def normalize(v: np.ndarray, norm: int) -> np.ndarray:
    # v [dim] -> [dim], common_embd_normalize: sum in float64, one float32 scale
    x = v.astype(np.float64)
    if norm == -1:
        total = 1.0
    elif norm == 0:
        total = np.abs(x).max(initial=0.0) / 32760.0
    elif norm == 2:
        total = float(np.sqrt((x * x).sum()))
    else:
        total = float((np.abs(x) ** norm).sum() ** (1.0 / norm))
    scale = np.float32(1.0 / total) if total > 0 else np.float32(0.0)
    return v * scale


def embed(model, ids: list[int], pooling: str, norm: int = 2) -> np.ndarray:
    """The embedding of token ids: [dim] pooled and normalized, or [T, dim] for pooling "none"."""
    session = model.new_session(len(ids))
    pooled = pool(session.hidden(ids), pooling)
    return pooled if pooling == "none" else normalize(pooled, norm)
