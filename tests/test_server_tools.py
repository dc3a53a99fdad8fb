"""Tool calling and structured output through the official `openai` client against a real server on
127.0.0.1: SmolLM2 (its template knows no tools: the generic format) and Gemma 3 with Google's template
given through --chat-template. Calls, stream and not, with the tool result sent back for a final
answer; response_format JSON schemas validated with `jsonschema`; `parse` with pydantic models;
llama.cpp's `json_schema` / `grammar` on /v1/completions; logit_bias; and the 400s."""
from __future__ import annotations

import json
import re
import threading

import jsonschema
import openai
import pydantic
import pytest

from server_helpers import httpx, live_server, smollm2_model, start_server  # noqa: F401

FRESH = {"cache_prompt": False}   # replies that tests compare come from the same cache state
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 30},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a time zone",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 30}}, "required": ["tz"]}}}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "maxLength": 30}, "age": {"type": "integer", "minimum": 0}}}


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def arguments_valid(call, tool):
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, tool["function"]["parameters"])
    return args


def streamed_calls(chunks):
    """Reassemble tool calls from stream deltas the way OpenAI's clients do, checking the shape: the
    first delta of a call carries id, type and name; later ones only argument fragments."""
    calls: dict[int, dict] = {}
    content, finish = "", None
    for ch in chunks:
        if not ch.choices:
            continue
        d, finish = ch.choices[0].delta, ch.choices[0].finish_reason or finish
        content += d.content or ""
        for tc in d.tool_calls or ():
            if tc.index not in calls:
                assert tc.id and tc.type == "function" and tc.function.name
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments or ""}
            else:
                assert tc.id is None and not tc.function.name
                calls[tc.index]["arguments"] += tc.function.arguments or ""
    return content, [calls[i] for i in sorted(calls)], finish


def tool_round_trip(client, tools, tool_choice, stream):
    """Ask, get a call, send the result back, get the final answer."""
    kw = dict(model="any", messages=ASK, tools=tools, tool_choice=tool_choice, parallel_tool_calls=False,
              temperature=0, max_tokens=80, extra_body=FRESH)
    if stream:
        content, calls, finish = streamed_calls(client.chat.completions.create(stream=True, **kw))
        assert len(calls) == 1 and finish == "tool_calls"
        call = {"id": calls[0]["id"], "type": "function",
                "function": {"name": calls[0]["name"], "arguments": calls[0]["arguments"]}}
        assistant = {"role": "assistant", "content": content or None, "tool_calls": [call]}
        name, arguments = calls[0]["name"], calls[0]["arguments"]
    else:
        r = client.chat.completions.create(**kw)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
        assert choice.message.content is None
        call = choice.message.tool_calls[0]
        assistant = choice.message.model_dump(exclude_none=True)
        name, arguments = call.function.name, call.function.arguments
        call = {"id": call.id}
    tool = next(t for t in tools if t["function"]["name"] == name)
    args = json.loads(arguments)
    jsonschema.validate(args, tool["function"]["parameters"])
    result = {"role": "tool", "tool_call_id": call["id"], "content": json.dumps({"temperature": 21, "sky": "sunny"})}
    final = client.chat.completions.create(model="any", messages=ASK + [assistant, result], tools=tools,
                                           temperature=0, max_tokens=40, extra_body=FRESH)
    return name, arguments, final.choices[0]


def test_required_tool_call_then_final_answer(client):
    """Whole and streamed: the same call, and after the tool's result the same final answer in text."""
    whole = tool_round_trip(client, [WEATHER, TIME], "required", False)
    streamed = tool_round_trip(client, [WEATHER, TIME], "required", True)
    name, arguments, final = whole
    assert name == "get_weather" and json.loads(arguments)["city"] == "Paris"
    assert final.finish_reason == "stop" and final.message.tool_calls is None and final.message.content
    assert streamed[:2] == whole[:2] and streamed[2].message.content == final.message.content


def test_named_tool_choice(client):
    r = client.chat.completions.create(
        model="any", messages=ASK, tools=[WEATHER, TIME], temperature=0, max_tokens=60, extra_body=FRESH,
        tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False)
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    arguments_valid(calls[0], TIME)
    assert len({calls[0].id}) == 1 and calls[0].id.startswith("call_")


def test_parallel_tool_calls_whole_and_streamed(client):
    """parallel_tool_calls (the default): two calls in one reply, indices 0 and 1 in the stream, the same
    calls whole and streamed; both results sent back give a final answer in text."""
    ask = [{"role": "user", "content": "I need two things: the weather in Berlin, and the local time in Europe/Berlin."}]
    kw = dict(model="any", messages=ask, tools=[WEATHER, TIME], tool_choice="required", temperature=0,
              max_tokens=100, extra_body=FRESH)
    r = client.chat.completions.create(**kw).choices[0]
    assert r.finish_reason == "tool_calls" and len(r.message.tool_calls) == 2
    tools = {t["function"]["name"]: t for t in (WEATHER, TIME)}
    for call in r.message.tool_calls:
        arguments_valid(call, tools[call.function.name])
    assert len({call.id for call in r.message.tool_calls}) == 2
    _, streamed, finish = streamed_calls(client.chat.completions.create(stream=True, **kw))
    assert finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in streamed] == [(c.function.name, c.function.arguments)
                                                                for c in r.message.tool_calls]
    results = [{"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
               for call, result in zip(r.message.tool_calls, ({"temperature": 12}, {"time": "14:05"}))]
    final = client.chat.completions.create(model="any", messages=ask + [r.message.model_dump(exclude_none=True)]
                                           + results, tools=[WEATHER, TIME], temperature=0, max_tokens=30,
                                           extra_body=FRESH).choices[0]
    assert final.message.content and final.finish_reason in ("stop", "length")


@pytest.mark.parametrize("choice", ["none", "auto"])
def test_tool_choice_none_and_auto_answer_in_text(client, choice):
    """"none" shows the model no tools; under "auto" a greeting gets a text answer (the lazy grammar lets
    free text through until a call opens)."""
    r = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Say hi."}],
                                       tools=[WEATHER], tool_choice=choice, temperature=0, max_tokens=20,
                                       extra_body=FRESH)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")


def test_pydantic_function_tool_parse(client):
    class GetWeather(pydantic.BaseModel):
        city: str = pydantic.Field(max_length=30)
        unit: str = pydantic.Field(pattern="^(celsius|fahrenheit)$")

    r = client.chat.completions.parse(model="any", messages=ASK, tools=[openai.pydantic_function_tool(GetWeather)],
                                      tool_choice="required", parallel_tool_calls=False, temperature=0,
                                      max_tokens=60, extra_body=FRESH)
    call = r.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, GetWeather)
    assert call.function.parsed_arguments.city


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_response_format_json_schema_validates(client, stream):
    kw = dict(model="any", messages=[{"role": "user", "content": "Invent a person with a name and an age."}],
              response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                                      "strict": True}},
              temperature=0, max_tokens=60, extra_body=FRESH)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                       if c.choices)
    else:
        r = client.chat.completions.create(**kw)
        assert r.choices[0].finish_reason == "stop"
        text = r.choices[0].message.content
    jsonschema.validate(json.loads(text), PERSON)


def test_parse_with_pydantic_model(client):
    class City(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=40)
        country: str = pydantic.Field(max_length=40)
        # bounded: a JSON number is not (llguidance lets digits run on), and SmolLM2 may loop in one
        population: str = pydantic.Field(max_length=20)

    r = client.chat.completions.parse(model="any", messages=[{"role": "user", "content": "Describe Paris."}],
                                      response_format=City, temperature=0, max_tokens=80, extra_body=FRESH)
    assert isinstance(r.choices[0].message.parsed, City)


def test_json_object_and_length(client):
    r = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "A cat, as JSON."}],
                                       response_format={"type": "json_object"}, temperature=0, max_tokens=4,
                                       extra_body=FRESH)
    assert r.choices[0].finish_reason == "length"   # cut before the JSON closed, as OpenAI says it


def test_completions_grammar_and_json_schema(live_server):
    url = live_server.url + "/v1/completions"
    r = httpx.post(url, timeout=300, json={"prompt": "Q: Is fire hot?\nA:", "grammar": 'root ::= " " ("yes" | "no")',
                                           "temperature": 0, "max_tokens": 8})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] in (" yes", " no")
    r = httpx.post(url, timeout=300, json={"prompt": "A person as JSON:", "json_schema": PERSON, "temperature": 0,
                                           "max_tokens": 40})
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), PERSON)


def test_logit_bias(client):
    kw = dict(model="any", messages=[{"role": "user", "content": "Say hello."}], temperature=0, max_tokens=1,
              extra_body=FRESH, logprobs=True)
    first = client.chat.completions.create(**kw).choices[0].logprobs.content[0].token
    tid = httpx.post(str(client.base_url).replace("/v1/", "/tokenize"),
                     json={"content": first}).json()["tokens"][0]
    again = client.chat.completions.create(logit_bias={str(tid): -100}, **kw)
    assert again.choices[0].logprobs.content[0].token != first


@pytest.mark.parametrize("body,param,words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object",
                                                                                         "if": {}}}}},
     "response_format.json_schema.schema", "if"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": 5, "schema": {}}}},
     "response_format.json_schema.name", "a string"),
    ({"grammar": "root ::= nothing-here"}, "grammar", "nothing-here"),
    ({"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "grammar", "only one"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name", "letters"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
    ({"tool_choice": "required"}, "tool_choice", "needs 'tools'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "string", "format": "no-such-format"}}}}}], "tool_choice": "required"}, "tools",
     "no-such-format"),
    ({"logit_bias": {"999999999": 1}}, "logit_bias", "outside the vocabulary"),
    ({"logit_bias": {"5": 1000}}, "logit_bias", "-100 to 100"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "tool_call_id"),
])
def test_bad_requests_get_400_naming_the_field(live_server, body, param, words):
    r = httpx.post(live_server.url + "/v1/chat/completions", timeout=60,
                   json={"messages": ASK, "max_tokens": 4, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err


# ---- Gemma 3 (262k vocabulary) with Google's instruct template -----------------------------------------

@pytest.fixture(scope="module")
def gemma_client(gemma3_path):
    import runtime
    from make_template_goldens import GEMMA3_IT_TEMPLATE
    server = start_server(runtime.load(gemma3_path), chat_template=GEMMA3_IT_TEMPLATE)
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_gemma_tool_round_trip(gemma_client, stream):
    name, arguments, final = tool_round_trip(gemma_client, [WEATHER], "required", stream)
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    assert final.message.content or final.message.tool_calls


@pytest.mark.slow
def test_gemma_json_schema(gemma_client):
    r = gemma_client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Invent a person."}], temperature=0, max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


# ---- several slots at once (--parallel) --------------------------------------------------------------

HOSTILE_SCHEMA = {"type": "string", "pattern": "^(.{0,80}){0,80}x$"}   # exceeds the per-token budget at once
PARALLEL = {   # name -> (request, stream): each slot has its own grammar state, parser and sampler
    "schema": (dict(messages=[{"role": "user", "content": "Invent a person with a name and an age."}],
                    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
                    temperature=0.8, seed=7, max_tokens=60), False),
    "tools": (dict(messages=ASK, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False,
                   temperature=0, max_tokens=60),
              True),
    "grammar": (dict(messages=[{"role": "user", "content": "List three fruits."}], temperature=0.8, seed=3,
                     max_tokens=40, extra_body={"grammar": 'root ::= item ("," " "? item){2}\nitem ::= [a-z]+'}),
                True),
    "hostile": (dict(messages=[{"role": "user", "content": "Write a sentence."}], temperature=0, max_tokens=40,
                     extra_body={"json_schema": HOSTILE_SCHEMA}), False),
}


def outcome(client, request, stream):
    """(content, [(name, arguments)], finish_reason), or the refusal as (status, param, names the limit)."""
    kw = dict(model="any", **request)
    kw["extra_body"] = {**FRESH, **kw.get("extra_body", {})}
    try:
        if stream:
            content, calls, finish = streamed_calls(client.chat.completions.create(stream=True, **kw))
            return content, [(c["name"], c["arguments"]) for c in calls], finish
        choice = client.chat.completions.create(**kw).choices[0]
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or ()]
        return choice.message.content, calls, choice.finish_reason
    except openai.APIStatusError as e:
        return e.status_code, e.body.get("param"), "per token" in e.body.get("message", "")


@pytest.fixture(scope="module")
def four_slots(smollm2_model):
    server = start_server(smollm2_model, n_slots=4, n_ctx=1024)
    yield server
    server.stop()


@pytest.mark.slow
def test_constraints_and_tool_calls_in_several_slots_at_once(four_slots):
    """A JSON schema (sampled), a streamed tool call, a GBNF grammar (sampled) and a grammar that breaks
    down while decoding, all at once: each gets exactly what it gets alone, and the broken one fails alone
    with a 400 naming its field while the others finish."""
    client = openai.OpenAI(base_url=four_slots.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    alone = {name: outcome(client, *PARALLEL[name]) for name in PARALLEL}
    together = {}

    def run(name):
        together[name] = outcome(client, *PARALLEL[name])
    threads = [threading.Thread(target=run, args=(name,)) for name in PARALLEL]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    assert four_slots.engine.peak_decoding >= 3      # they really ran in one forward pass
    content, _, finish = alone["schema"]
    assert finish == "stop"
    jsonschema.validate(json.loads(content), PERSON)
    _, calls, finish = alone["tools"]
    assert finish == "tool_calls" and calls
    for name, arguments in calls:
        tool = next(t for t in (WEATHER, TIME) if t["function"]["name"] == name)
        jsonschema.validate(json.loads(arguments), tool["function"]["parameters"])
    assert re.fullmatch(r"[a-z]+(, ?[a-z]+){2}", alone["grammar"][0]), alone["grammar"]
    assert alone["hostile"] == (400, "json_schema", True)
