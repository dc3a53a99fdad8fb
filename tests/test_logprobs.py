"""Logprobs of tokens that hold part of a UTF-8 character, on the real SmolLM2 through the `openai` client.

SmolLM2's byte-level BPE spells 🤗 as three tokens (F0 9F | A4 | 97) and most kana as two. Each token's
`bytes` must be its own raw bytes, so that joining them rebuilds the reply exactly, and the legacy
completions' `top_logprobs` dictionaries must keep different tokens under different keys."""
from __future__ import annotations

import openai
import pytest

from server_helpers import live_server, smollm2_model  # noqa: F401

# a prompt whose reply does not hang on a near tie: llama.cpp's first token leads by 2.9
EMOJI = [{"role": "user", "content": "Reply with these three emoji only: 🤗🤗🤗"}]


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def _joined(entries) -> bytes:
    return b"".join(bytes(e.bytes) for e in entries)


def test_chat_logprob_bytes_rebuild_the_reply(client):
    # 9 tokens: three whole emoji, each split over three tokens none of which is UTF-8 on its own
    r = client.chat.completions.create(model="m", messages=EMOJI, temperature=0, max_tokens=9, logprobs=True,
                                       top_logprobs=3, extra_body={"cache_prompt": False})
    content = r.choices[0].message.content
    entries = r.choices[0].logprobs.content
    assert content == "🤗🤗🤗"
    assert [e.bytes for e in entries[:3]] == [[0xF0, 0x9F], [0xA4], [0x97]]
    assert _joined(entries) == content.encode()
    assert entries[0].token == "bytes:\\xf0\\x9f"            # OpenAI's spelling of raw bytes, never U+FFFD
    assert all("\ufffd" not in e.token for e in entries)
    for e in entries:                                          # alternatives carry their own raw bytes too
        assert e.top_logprobs[0].bytes == e.bytes              # greedy: the chosen token is the best one
        assert len({t.token for t in e.top_logprobs}) == 3


def test_streamed_logprob_bytes_rebuild_the_reply(client):
    chunks = list(client.chat.completions.create(
        model="m", messages=EMOJI, temperature=0, max_tokens=9, logprobs=True, stream=True,
        extra_body={"cache_prompt": False}))
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(entries) == 9 and text == "🤗🤗🤗"
    assert _joined(entries) == text.encode()


def test_completion_top_logprobs_keep_tokens_apart(client, smollm2_model):
    # a completion in kana: the alternatives at each position include several partial-character tokens,
    # which a U+FFFD spelling would merge under one key
    prompt = "<|im_start|>user\nWrite the Japanese word for cat.<|im_end|>\n<|im_start|>assistant\n"
    r = client.completions.create(model="m", prompt=prompt, temperature=0, max_tokens=6, logprobs=5,
                                  extra_body={"cache_prompt": False})
    lp = r.choices[0].logprobs
    assert all(len(top) == 5 for top in lp.top_logprobs)      # five alternatives, five keys
    tok = smollm2_model.tokenizer
    ids = smollm2_model.tokenize(r.choices[0].text, add_special=False)
    assert b"".join(tok.token_to_piece(i, special=False) for i in ids) == r.choices[0].text.encode()
    assert any(t.startswith("bytes:") for t in lp.tokens)      # the reply does split a character
    for t, top in zip(lp.tokens, lp.top_logprobs):
        assert max(top, key=top.get) == t                      # greedy: the chosen token leads its dict
