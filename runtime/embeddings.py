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

import asyncio
import base64
from dataclasses import dataclass

import numpy as np

from . import api_native, api_schema
from .api_schema import APIError, Limits

POOLINGS = ("none", "mean", "cls", "last")
MAX_INPUTS = 2048               # OpenAI's limit of inputs per request
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


# ---- requests: POST /v1/embeddings (OpenAI) and /embeddings (llama.cpp) -----------------------------

@dataclass(frozen=True)
class EmbeddingRequest:
    inputs: list[list]           # per input: its parts, text or token ids (llama.cpp's prompt forms)
    norm: int = 2                # embd_normalize
    base64: bool = False         # encoding_format "base64": little-endian float32 bytes


_FIELDS = frozenset({"input", "content", "model", "encoding_format", "user", "embd_normalize", "dimensions"})


def request(body: dict, limits: Limits, dim: int, native: bool = False) -> EmbeddingRequest:
    """`input` (or llama.cpp's `content`): a string, token ids, a mix, or a list of those. dim: the
    model's embedding size."""
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        raise APIError(400, f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown))}",
                       param=unknown[0])
    name = "input" if "input" in body or not native else "content"
    if name not in body:
        raise APIError(400, f"missing required field '{name}'", param=name)
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise APIError(400, "'encoding_format' must be \"float\" or \"base64\"", param="encoding_format")
    if body.get("dimensions") not in (None, dim):
        raise APIError(400, f"'dimensions' must be {dim}, this model's embedding size "
                            "(vectors are not shortened)", param="dimensions")
    return EmbeddingRequest(inputs=api_native.prompts(body[name], name, limits.vocab_size, limit=MAX_INPUTS,
                                                      content_objects=True),
                            norm=api_schema.number(body, "embd_normalize", -1, 64, 2, integer=True),
                            base64=fmt == "base64")


async def run(engine, req: EmbeddingRequest, pooling: str) -> tuple[list[np.ndarray], int]:
    """(one vector per input, tokens read). The model runs under the engine's lock, between generations."""
    model = engine.model

    def work():
        ids = [api_native.tokenize_mixed(model, parts, True, True) for parts in req.inputs]
        for i, x in enumerate(ids):
            if not x:
                raise APIError(400, f"input {i} is empty", param="input")
            if len(x) > engine.n_ctx:
                raise APIError(400, f"input {i} is too large: {len(x)} tokens, but the context holds "
                                    f"{engine.n_ctx}", param="input", code="context_length_exceeded")
        with engine.lock:
            return [embed(model, x, pooling, req.norm) for x in ids], sum(map(len, ids))
    return await asyncio.to_thread(work)


def openai_response(req: EmbeddingRequest, vectors: list[np.ndarray], n_tokens: int, model_name: str) -> dict:
    """OpenAI's embeddings list. base64: each vector's float32 bytes, as the openai client decodes them."""
    def item(i, v):
        if req.base64:   # llama-server also names the format in each item
            return {"object": "embedding", "index": i, "encoding_format": "base64",
                    "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()}
        return {"object": "embedding", "index": i, "embedding": v.tolist()}
    return {"object": "list", "model": model_name, "data": [item(i, v) for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
