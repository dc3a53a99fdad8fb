"""Several conversations at once (`--parallel`): a real SmolLM2 server on 127.0.0.1 with 4 slots, driven
by the official `openai` client. Concurrent greedy streams get exactly the text each gets alone, a new
request is admitted while others stream, and requests under different API keys never share a cached
prompt (the probing attack of SECURITY.md)."""
from __future__ import annotations

import threading

import openai
import pytest

from server_helpers import smollm2_model, start_server  # noqa: F401

PROMPTS = ["Write a long story about a dragon who learns to bake bread.",
           "Describe, in detail, how a steam engine works.",
           "Tell me everything you know about the history of the bicycle.",
           "Write a long letter to a friend about a trip to the mountains."]


@pytest.fixture(scope="module")
def server(smollm2_model):
    s = start_server(smollm2_model, n_slots=4, n_ctx=1024)
    yield s
    s.stop()


def client(url, key="unused"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)


def greedy_text(c, prompt, max_tokens, stream=False):
    kw = dict(model="m", messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=max_tokens,
              extra_body={"cache_prompt": False})
    if not stream:
        return c.chat.completions.create(**kw).choices[0].message.content
    return "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(stream=True, **kw)
                   if ch.choices)


@pytest.mark.slow
def test_concurrent_greedy_streams_equal_each_alone(server):
    c = client(server.url)
    alone = [greedy_text(c, p, 40) for p in PROMPTS]
    together = [None] * len(PROMPTS)

    def run(i):
        together[i] = greedy_text(c, PROMPTS[i], 40, stream=True)
    steps = server.engine.n_steps
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    # they ran together: one forward pass carried the decode rows of at least 3 streams, and there were
    # fewer passes than the 4 x 40 tokens of the streams one after another
    assert server.engine.peak_decoding >= 3
    assert server.engine.n_steps - steps < 4 * 40
