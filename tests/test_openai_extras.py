"""OpenAI request shapes beyond the basics, on the real SmolLM2 through the official `openai` client:
text parts of a message, several choices (`n`), `max_completion_tokens`, `system_fingerprint`."""
from __future__ import annotations

import openai
import pytest

from server_helpers import httpx, live_server, smollm2_model  # noqa: F401

FRESH = {"cache_prompt": False}


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_text_parts_are_joined_with_newlines(client):
    # llama.cpp joins a message's text parts with "\n" (a "\n" before each part once there is text)
    parts = [{"type": "text", "text": ""}, {"type": "text", "text": "What is"},
             {"type": "text", "text": "the best book"}]
    a = client.chat.completions.create(model="m", messages=[{"role": "user", "content": parts}],
                                       temperature=0, max_tokens=8, extra_body=FRESH)
    b = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "What is\nthe best book"}],
                                       temperature=0, max_tokens=8, extra_body=FRESH)
    glued = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "What isthe best book"}],
                                           temperature=0, max_tokens=8, extra_body=FRESH)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens != glued.usage.prompt_tokens
    assert a.choices[0].message.content == b.choices[0].message.content
