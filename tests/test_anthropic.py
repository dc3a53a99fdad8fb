"""The Anthropic Messages API on the real SmolLM2, driven by the official `anthropic` client:
messages.create (system, text blocks, stop_sequences, sampling fields), messages.stream and its event
sequence on the wire, count_tokens, and refusals in Anthropic's error shape."""
from __future__ import annotations

import json

import anthropic
import pytest

from server_helpers import httpx, live_server, smollm2_model  # noqa: F401

HELLO = [{"role": "user", "content": "Say hello"}]
# recent clients pass the sampling fields through extra_body (they left the method signatures)
GREEDY = {"extra_body": {"temperature": 0, "cache_prompt": False}}


@pytest.fixture(scope="module")
def client(live_server):
    return anthropic.Anthropic(base_url=live_server.url, api_key="unused", max_retries=0, timeout=300)


def _openai_chat(server, messages, max_tokens):
    return httpx.post(server.url + "/v1/chat/completions", timeout=300, json={
        "messages": messages, "max_tokens": max_tokens, "temperature": 0, "cache_prompt": False}).json()


def test_create_is_the_same_chat_as_openai(client, live_server):
    r = client.messages.create(model="any", max_tokens=12, system="You are terse.", messages=HELLO, **GREEDY)
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert [b.type for b in r.content] == ["text"]
    # the same conversation through /v1/chat/completions: same prompt, same greedy reply
    o = _openai_chat(live_server, [{"role": "system", "content": "You are terse."}, *HELLO], 12)
    assert r.content[0].text == o["choices"][0]["message"]["content"]
    assert r.usage.input_tokens + r.usage.cache_read_input_tokens == o["usage"]["prompt_tokens"]
    assert r.usage.output_tokens == o["usage"]["completion_tokens"]
    assert r.stop_reason == ("max_tokens" if o["choices"][0]["finish_reason"] == "length" else "end_turn")


def test_text_blocks_system_blocks_and_turns(client, live_server):
    blocks = [{"type": "text", "text": "What is"}, {"type": "text", "text": "the best book"}]
    r = client.messages.create(model="m", max_tokens=6, messages=[{"role": "user", "content": blocks}],
                               system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
                               **GREEDY)
    o = _openai_chat(live_server, [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "What is\nthe best book"}], 6)
    assert r.content[0].text == o["choices"][0]["message"]["content"]
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "How are you?"}]
    r = client.messages.create(model="m", max_tokens=4, messages=turns, extra_body={"top_k": 40, "top_p": 0.9})
    assert r.usage.output_tokens > 0


def test_stop_sequence_and_end_turn(client):
    r = client.messages.create(model="m", max_tokens=64, messages=[{"role": "user", "content": "Count from 1 to 20."}],
                               stop_sequences=["5"], **GREEDY)
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == "5" and "5" not in r.content[0].text
    r = client.messages.create(model="m", max_tokens=200, messages=[{"role": "user", "content": "Say yes."}], **GREEDY)
    assert r.stop_reason == "end_turn" and r.stop_sequence is None


def test_stream_with_the_client(client):
    whole = client.messages.create(model="m", max_tokens=10, messages=HELLO, **GREEDY)
    with client.messages.stream(model="m", max_tokens=10, messages=HELLO, **GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


def test_stream_event_sequence_on_the_wire(live_server):
    with httpx.stream("POST", live_server.url + "/v1/messages", timeout=300, json={
            "model": "m", "max_tokens": 5, "messages": HELLO, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    names = [line[7:] for line in lines if line.startswith("event: ")]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in data] == names                    # every event names its data's type
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert set(names[3:-3]) == {"content_block_delta"} and len(names[3:-3]) >= 1
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = data[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert data[2]["content_block"] == {"type": "text", "text": ""} and data[2]["index"] == 0
    assert all(d["delta"]["type"] == "text_delta" for d in data[3:-3])
    assert data[-2]["delta"]["stop_reason"] == "max_tokens" and data[-2]["usage"]["output_tokens"] == 5


def test_count_tokens(client, live_server):
    n = client.messages.count_tokens(model="m", system="You are terse.", messages=HELLO).input_tokens
    o = _openai_chat(live_server, [{"role": "system", "content": "You are terse."}, *HELLO], 1)
    assert n == o["usage"]["prompt_tokens"]


@pytest.mark.parametrize("body,words", [
    ({"messages": HELLO}, "max_tokens"),
    ({"max_tokens": 5}, "messages"),
    ({"max_tokens": 5, "messages": []}, "messages"),
    ({"max_tokens": 0, "messages": HELLO}, "max_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "role"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]}, "image"),
    ({"max_tokens": 5, "messages": HELLO, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     "server tools"),
    ({"max_tokens": 5, "messages": HELLO, "tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"max_tokens": 5, "messages": HELLO, "stop_sequences": "x"}, "stop_sequences"),
    ({"max_tokens": 5, "messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"max_tokens": 5, "messages": HELLO, "frobnicate": 1}, "frobnicate"),
])
def test_refusals_in_anthropic_shape(live_server, body, words):
    r = httpx.post(live_server.url + "/v1/messages", json={"model": "m", **body}, timeout=60)
    assert r.status_code == 400
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert words in err["error"]["message"]


def test_client_raises_on_refusal(client):
    with pytest.raises(anthropic.BadRequestError, match="non-empty"):
        client.messages.create(model="m", max_tokens=5, messages=[])


# ---- tool use: Anthropic's tools and blocks over the server's tool calling ---------------------------

WEATHER = {"name": "get_weather", "description": "Get the current weather in a city",
           "input_schema": {"type": "object", "additionalProperties": False, "required": ["city"],
                            "properties": {"city": {"type": "string", "maxLength": 30}}}}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def test_tool_use_round_trip(client, live_server):
    r = client.messages.create(model="m", max_tokens=80, messages=ASK, tools=[WEATHER],
                               tool_choice={"type": "any", "disable_parallel_tool_use": True}, **GREEDY)
    assert r.stop_reason == "tool_use"
    uses = [b for b in r.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and isinstance(uses[0].input["city"], str)
    # the same request through the OpenAI API makes the same call
    o = httpx.post(live_server.url + "/v1/chat/completions", timeout=300, json={
        "messages": ASK, "max_tokens": 80, "temperature": 0, "cache_prompt": False, "tool_choice": "required",
        "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": WEATHER["name"], "description": WEATHER["description"],
                                                    "parameters": WEATHER["input_schema"]}}]}).json()
    call = o["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == uses[0].input
    # the result goes back as a tool_result block; the answer is text that ends the turn
    follow = [*ASK, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                            "content": [{"type": "text", "text": "Sunny, 24 degrees"}]}]}]
    answer = client.messages.create(model="m", max_tokens=60, messages=follow, tools=[WEATHER], **GREEDY)
    assert answer.content[0].type == "text" and answer.content[0].text
    n = client.messages.count_tokens(model="m", messages=follow, tools=[WEATHER]).input_tokens
    assert n > client.messages.count_tokens(model="m", messages=ASK).input_tokens


def test_tool_use_streamed(client):
    whole = client.messages.create(model="m", max_tokens=80, messages=ASK, tools=[WEATHER],
                                   tool_choice={"type": "tool", "name": "get_weather",
                                                "disable_parallel_tool_use": True}, **GREEDY)
    with client.messages.stream(model="m", max_tokens=80, messages=ASK, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather",
                                                "disable_parallel_tool_use": True}, **GREEDY) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.model_dump(exclude={"id"}) for b in final.content] == \
        [b.model_dump(exclude={"id"}) for b in whole.content]                  # call ids are fresh each time
    starts = [e for e in events if e.type == "content_block_start"]
    assert [e.index for e in starts] == list(range(len(final.content)))
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)


def test_prefill_continues_the_assistant_turn(client, live_server):
    """A last assistant message is the start of the reply (Anthropic's prefill, llama-server's too): the
    content returned is what follows it."""
    turns = [{"role": "user", "content": "What is the best book?"},
             {"role": "assistant", "content": "The best book is"}]
    r = client.messages.create(model="any", max_tokens=6, messages=turns, **GREEDY)
    o = _openai_chat(live_server, turns, 6)
    assert r.content[0].text == o["choices"][0]["message"]["content"]
    prompt = httpx.post(live_server.url + "/apply-template", json={"messages": turns}, timeout=60).json()["prompt"]
    assert prompt.endswith("<|im_start|>assistant\nThe best book is")


def test_thinking_history_reaches_the_template():
    """Earlier thinking blocks become the assistant message's reasoning_content (as llama-server maps
    them), which a template that shows reasoning renders (Qwen 3's, with its real vocabulary); OpenAI
    bodies may send reasoning_content back the same way."""
    from conftest import ROOT
    from runtime.api_schema import Limits, chat_request
    from runtime.chat_template import ChatTemplate
    from runtime.routes_anthropic import messages_request
    from runtime.structured import chat_text
    from test_tool_calls import VocabOnly
    model = VocabOnly(ROOT / "data" / "vocab" / "qwen3-vocab.gguf")
    template = ChatTemplate((ROOT / "data" / "templates" / "Qwen-Qwen3-0.6B.jinja").read_text())
    limits = Limits(n_ctx=4096, vocab_size=model.tokenizer.vocab_size)
    turns = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": [{"type": "thinking", "thinking": "I should ask the tool.",
                                                "signature": "x"},
                                               {"type": "tool_use", "id": "t1", "name": "get_weather",
                                                "input": {"city": "Paris"}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "18 C"}]}]
    req = messages_request({"max_tokens": 8, "tools": [WEATHER], "messages": turns}, limits).chat
    _, text = chat_text(model, template, req.messages, req.tools)
    assert "<think>\nI should ask the tool.\n</think>" in text and '"city": "Paris"' in text
    without = messages_request({"max_tokens": 8, "tools": [WEATHER], "messages": [
        turns[0], {"role": "assistant", "content": turns[1]["content"][1:]}, turns[2]]}, limits).chat
    assert "I should ask" not in chat_text(model, template, without.messages, without.tools)[1]
    chat = chat_request({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello",
                                                                          "reasoning_content": "Greet back."}],
                         "continue_final_message": False}, limits)
    assert "<think>\nGreet back.\n</think>\n\nHello" in chat_text(model, template, chat.messages)[1]
