"""Log-probabilities of generated tokens, in the three shapes the API speaks.

A token's `bytes` are the bytes it adds to the generated text: llama_token_to_piece with special=false,
as llama.cpp's server renders generated text (control tokens such as <|im_end|> add nothing). Each
token is looked up on its own, never decoded as text: a token that holds part of a UTF-8 character
(byte-level BPE splits an emoji over several tokens) keeps its raw bytes, so joining the `bytes` of a
completion's tokens rebuilds its text exactly (OpenAI's reason for the field).

A token's `token` string is what a person reads: the piece as text when it is whole UTF-8, else
OpenAI's spelling of raw bytes, "bytes:" followed by \\xNN escapes ("bytes:\\xf0\\x9f" for the first two
bytes of an emoji). Byte-fallback tokens (SentencePiece's <0xNN>) are spelt that way too, so two
different tokens never share a key in the legacy completions' `top_logprobs` dictionaries. Control
tokens show their text ("<|im_end|>") with empty bytes.

Shapes: OpenAI chat (`content`: a list of {token, logprob, bytes, top_logprobs}), OpenAI legacy
completions (parallel arrays plus one {token: logprob} dict per position) and llama.cpp's /completion
(`completion_probabilities`, each entry with its `id`; with post_sampling_probs, probabilities of the
distribution the token was drawn from under "prob" and "top_probs").
"""
from __future__ import annotations

import math

from .special_tokens import Attr


def token_bytes(tokenizer, tid: int) -> bytes:
    """The bytes token `tid` adds to generated text."""
    return tokenizer.token_to_piece(tid, special=False)


def token_text(tokenizer, tid: int) -> str:
    """A readable, distinct spelling of token `tid` (see the module docstring)."""
    piece = tokenizer.token_to_piece(tid, special=True)
    if not tokenizer.attrs[tid] & Attr.BYTE:
        try:
            return piece.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


def _entry(tokenizer, tid: int, logprob: float, with_id: bool, probs: bool = False) -> dict:
    entry = {"id": tid} if with_id else {}
    entry["token"] = token_text(tokenizer, tid)
    if probs:
        entry["prob"] = math.exp(logprob)
    else:
        entry["logprob"] = logprob
    entry["bytes"] = list(token_bytes(tokenizer, tid))
    return entry


def chat_content(tokenizer, pieces, with_id: bool = False, probs: bool = False) -> list[dict]:
    """OpenAI chat's logprobs.content (llama.cpp's completion_probabilities when with_id) for Pieces
    carrying token_id, logprob and top_logprobs [(id, logprob)]. probs: llama.cpp's post-sampling shape,
    probabilities under "prob" and "top_probs" (alternatives of probability 0 left out, as it does)."""
    out = []
    for p in pieces:
        entry = _entry(tokenizer, p.token_id, p.logprob, with_id, probs)
        top = [(t, lp) for t, lp in (p.top_logprobs or []) if not probs or lp > -math.inf]
        entry["top_probs" if probs else "top_logprobs"] = [_entry(tokenizer, t, lp, with_id, probs) for t, lp in top]
        out.append(entry)
    return out


def legacy_completion(tokenizer, pieces, text_start: int = 0) -> dict:
    """OpenAI /v1/completions logprobs: tokens, token_logprobs, top_logprobs (one {token: logprob} per
    position) and text_offset (character offset of each piece's released text, from `text_start`)."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    pos = text_start
    for p in pieces:
        tokens.append(token_text(tokenizer, p.token_id))
        token_logprobs.append(p.logprob)
        top.append({token_text(tokenizer, t): lp for t, lp in (p.top_logprobs or [])})
        offsets.append(pos)
        pos += len(p.text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}
