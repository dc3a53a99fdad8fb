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


def test_several_choices(client):
    # n choices, one after the other; with a seed, choice i samples with seed + i (so they differ)
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Tell me a story."}],
                                       n=3, max_tokens=8, seed=11, temperature=1.0, extra_body=FRESH)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) > 1
    assert r.usage.completion_tokens == 24
    single = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Tell me a story."}],
                                            max_tokens=8, seed=12, temperature=1.0, extra_body=FRESH)
    assert single.choices[0].message.content == r.choices[1].message.content
    # streamed: every chunk names its choice; the texts are the same as without streaming
    chunks = list(client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Tell me a story."}], n=3, max_tokens=8, seed=11,
        temperature=1.0, stream=True, stream_options={"include_usage": True}, extra_body=FRESH))
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in range(3)]
    assert texts == [c.message.content for c in r.choices]
    assert chunks[-1].usage.completion_tokens == 24
    legacy = client.completions.create(model="m", prompt="Once upon a time", n=2, max_tokens=4, seed=5,
                                       extra_body=FRESH)
    assert [c.index for c in legacy.choices] == [0, 1]


def test_fingerprint_and_max_completion_tokens(client):
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                       max_completion_tokens=3, extra_body=FRESH)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
    assert r.system_fingerprint.startswith("b") and "chatfile" in r.system_fingerprint
    assert client.completions.create(model="m", prompt="Hi", max_tokens=2).system_fingerprint == r.system_fingerprint


def test_new_endpoints_need_the_api_key(smollm2_model):
    from server_helpers import start_server
    server = start_server(smollm2_model, api_keys=("sesame",))
    try:
        paths = ["/completion", "/completions", "/infill", "/apply-template", "/embedding", "/embeddings",
                 "/chat/completions", "/responses", "/v1/embeddings", "/v1/messages", "/v1/messages/count_tokens",
                 "/v1/responses", "/v1/responses/input_tokens", "/responses/input_tokens",
                 "/v1/chat/completions/input_tokens", "/chat/completions/input_tokens"]
        for path in paths:
            r = httpx.post(server.url + path, json={}, timeout=60)
            assert r.status_code == 401, path
            # with the key (Bearer, or x-api-key as Anthropic clients send it) the route itself answers
            for headers in ({"Authorization": "Bearer sesame"}, {"x-api-key": "sesame"}):
                assert httpx.post(server.url + path, json={}, headers=headers, timeout=60).status_code == 400, path
        assert httpx.get(server.url + "/models", timeout=60).status_code == 401
    finally:
        server.stop()


def test_alias_tags_and_verbose(smollm2_model):
    """llama-server's --alias (comma-separated; the id is the first in sorted order) names the model in
    /v1/models and in every reply; --tags are listed beside; with --verbose every reply has "__verbose"."""
    from dataclasses import fields

    from runtime import cli
    from server_helpers import start_server
    args = cli.build_parser().parse_args(["--server", "--alias", "tinyllama-2, fim,code,fim", "--tags", "chat,small",
                                          "--verbose"])
    opts = cli.server_options(args, "", None)
    assert (opts.aliases, opts.tags) == (("code", "fim", "tinyllama-2"), ("chat", "small"))
    server = start_server(smollm2_model, **{f.name: getattr(opts, f.name) for f in fields(opts)})
    try:
        (entry,) = httpx.get(server.url + "/v1/models", timeout=60).json()["data"]
        assert entry["id"] == "code" and entry["aliases"] == ["code", "fim", "tinyllama-2"]
        assert entry["tags"] == ["chat", "small"]
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        reply = client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=1)
        assert reply.model == "code"
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        raw = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=300).json()
        assert raw["__verbose"]["prompt"].endswith("<|im_start|>assistant\n")   # no "verbose" in the request
    finally:
        server.stop()


def test_assistant_prefill_and_template_fields(client, live_server, smollm2_model):
    """llama-server's prefill: a conversation ending with an assistant message continues it (the reply is
    the rest of that message); continue_final_message (vLLM's name) asks for it, false turns it off;
    add_generation_prompt and chat_template_kwargs as on /apply-template; n_predict for max_tokens."""
    asked = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]
    started = [*asked, {"role": "assistant", "content": "The best book is"}]

    def template(body):
        r = httpx.post(live_server.url + "/apply-template", json=body, timeout=300)
        return r.status_code, r.json()
    status, prompt = template({"messages": started})
    assert status == 200 and prompt["prompt"].endswith("<|im_start|>assistant\nThe best book is")
    assert template({"messages": started, "continue_final_message": True, "add_generation_prompt": False}) == \
        (status, prompt)
    off = template({"messages": started, "continue_final_message": False})[1]["prompt"]
    assert off.endswith("The best book is<|im_end|>\n<|im_start|>assistant\n")
    bare = template({"messages": asked, "add_generation_prompt": False})[1]["prompt"]
    assert bare.endswith("What is the best book<|im_end|>\n")
    # the reply goes on from the prefill: the same tokens as completing the prompt text
    r = client.chat.completions.create(model="m", messages=started, temperature=0, max_tokens=6, extra_body=FRESH)
    raw = client.completions.create(model="m", prompt=prompt["prompt"], temperature=0, max_tokens=6,
                                    extra_body=FRESH)
    assert r.choices[0].message.content == raw.choices[0].text
    assert r.usage.prompt_tokens == len(smollm2_model.tokenize(prompt["prompt"], add_special=False))
    n = client.chat.completions.create(model="m", messages=asked, temperature=0, extra_body={"n_predict": 3, **FRESH})
    assert n.usage.completion_tokens == 3
    for body, param in (({"messages": started, "continue_final_message": True, "add_generation_prompt": True},
                         "continue_final_message"),
                        ({"messages": asked, "continue_final_message": True}, "continue_final_message"),
                        ({"messages": [*started, {"role": "assistant", "content": "x"}]}, "messages"),
                        ({"messages": asked, "chat_template_kwargs": []}, "chat_template_kwargs")):
        r = httpx.post(live_server.url + "/v1/chat/completions", json={"max_tokens": 2, **body}, timeout=300)
        assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_verbose_and_the_context_error(live_server):
    """llama.cpp's `verbose`: "__verbose" carries the prompt as the model read it; a prompt over the
    context gets OpenAI's code with llama-server's type and counts."""
    messages = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]
    url = live_server.url
    prompt = httpx.post(url + "/apply-template", json={"messages": messages}, timeout=60).json()["prompt"]
    for verbose in (True, False):
        r = httpx.post(url + "/v1/chat/completions", timeout=300, json={
            "messages": messages, "max_tokens": 2, "verbose": verbose}).json()
        assert ("__verbose" in r) == verbose
    assert r["choices"] and httpx.post(url + "/v1/chat/completions", timeout=300, json={
        "messages": messages, "max_tokens": 2, "verbose": True}).json()["__verbose"]["prompt"] == prompt
    r = httpx.post(url + "/completion", timeout=300, json={"prompt": "word " * 9000, "n_predict": 1})
    err = r.json()["error"]
    assert r.status_code == 400 and err["type"] == "exceed_context_size_error"
    assert err["code"] == "context_length_exceeded" and err["n_ctx"] == live_server.engine.n_ctx
    assert err["n_prompt_tokens"] > err["n_ctx"] and "exceeds the available context size" in err["message"]
