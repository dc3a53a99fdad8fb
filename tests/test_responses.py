"""The minimal OpenAI Responses API on the real SmolLM2, through the official `openai` client's
responses.create: text in and out, instructions, message lists, the streaming event sequence, the
"incomplete" status, function tools (a call, its output sent back, streamed arguments), and refusals of
what is not there (stored responses, built-in tools)."""
from __future__ import annotations

import json

import openai
import pytest

from server_helpers import httpx, live_server, smollm2_model  # noqa: F401

FRESH = {"temperature": 0, "extra_body": {"cache_prompt": False}}
MESSAGES = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_create_matches_chat(client):
    r = client.responses.create(model="m", input=MESSAGES, max_output_tokens=8, **FRESH)
    chat = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8, **FRESH)
    assert r.id.startswith("resp_") and r.object == "response"
    assert [o.type for o in r.output] == ["message"] and r.output[0].id.startswith("msg_")
    assert r.output_text == chat.choices[0].message.content
    assert r.usage.input_tokens == chat.usage.prompt_tokens and r.usage.output_tokens == 8
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"


def test_instructions_and_plain_input(client):
    r = client.responses.create(model="m", instructions="Book", input="What is the best book",
                                max_output_tokens=8, **FRESH)
    parts = client.responses.create(model="m", max_output_tokens=8, **FRESH, input=[
        {"role": "developer", "content": [{"type": "input_text", "text": "Book"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is the best book"}]}])
    assert r.output_text == parts.output_text
    done = client.responses.create(model="m", input="Say yes.", max_output_tokens=200, **FRESH)
    assert done.status == "completed" and done.incomplete_details is None


def test_stream_events(client):
    whole = client.responses.create(model="m", input=MESSAGES, max_output_tokens=8, **FRESH)
    events = list(client.responses.create(model="m", input=MESSAGES, max_output_tokens=8, stream=True, **FRESH))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    msg_id = events[2].item.id
    assert all(e.item_id == msg_id for e in events[3:-2])
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == events[-1].response.output_text


@pytest.mark.parametrize("body,words", [
    ({}, "input"),
    ({"input": []}, "input"),
    ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "built-in tools"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "reasoning"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]}, "input_image"),
    ({"input": "x", "text": {"format": {"type": "json_object"}}}, "text.format"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "frobnicate": 1}, "frobnicate"),
])
def test_refusals(live_server, body, words):
    r = httpx.post(live_server.url + "/v1/responses", json={"model": "m", **body}, timeout=60)
    assert r.status_code == 400 and words in r.json()["error"]["message"]


def test_input_tokens(client, live_server):
    # OpenAI's client counts a request's input; llama-server's chat twin counts a chat body the same way
    n = client.responses.input_tokens.count(model="m", input=MESSAGES).input_tokens
    chat = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1, **FRESH)
    assert n == chat.usage.prompt_tokens
    for path in ("/v1/chat/completions/input_tokens", "/chat/completions/input_tokens"):
        r = httpx.post(live_server.url + path, json={"messages": MESSAGES}, timeout=60).json()
        assert r == {"object": "response.input_tokens", "input_tokens": n}


WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                          "properties": {"city": {"type": "string", "maxLength": 30}}}}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def test_function_call_round_trip(client):
    r = client.responses.create(model="m", input=ASK, tools=[WEATHER], tool_choice="required",
                                parallel_tool_calls=False, max_output_tokens=80, **FRESH)
    calls = [o for o in r.output if o.type == "function_call"]
    assert r.status == "completed" and len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str) and calls[0].id.startswith("fc_")
    follow = [*ASK, {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
                     "arguments": calls[0].arguments},
              {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 24 degrees"}]
    answer = client.responses.create(model="m", input=follow, tools=[WEATHER], max_output_tokens=40, **FRESH)
    assert answer.output[0].type == "message" and answer.output_text
    # streamed: the call's arguments arrive as deltas and add up to the whole call's
    events = list(client.responses.create(model="m", input=ASK, tools=[WEATHER], tool_choice="required",
                                          parallel_tool_calls=False, max_output_tokens=80, stream=True, **FRESH))
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].arguments == deltas == calls[0].arguments
    final = events[-1].response
    assert events[-1].type == "response.completed" and final.output[-1].arguments == calls[0].arguments
    assert [e.sequence_number for e in events] == list(range(len(events)))
