"""A minimal OpenAI Responses API: POST /v1/responses (and llama-server's /responses), text and function
calls in and out; POST /v1/responses/input_tokens counts the prompt a request would run.

    input         a string, or a list of items: messages {"role", "content"} whose content is a string
                  or input_text / output_text parts (joined with "\\n", like chat text parts), and the
                  function_call / function_call_output items of an earlier turn
    instructions  the system prompt, before the input
    tools         function tools {"type": "function", "name", "description", "parameters"}, with
                  tool_choice and parallel_tool_calls: run on the server's tool calling
                  (runtime/structured.py), as on /v1/chat/completions
    max_output_tokens, temperature, top_p, stream, and llama.cpp's sampling extras as on chat

The answer is a Response object whose `output` holds a message (one output_text part) when the model
wrote text and a function_call item per call; `status` is "completed", or "incomplete" with
incomplete_details.reason "max_output_tokens" when the limit (or the context) cut it short. With
"stream": true the events are OpenAI's: response.created, response.in_progress, then per item
response.output_item.added, (for a message) response.content_part.added, response.output_text.delta...,
response.output_text.done, response.content_part.done, (for a call)
response.function_call_arguments.delta..., response.function_call_arguments.done, then
response.output_item.done, and at the end response.completed (or response.incomplete), each event with
its sequence_number. Nothing is stored: `previous_response_id` gets a 400, as do built-in tools (web
search, files, ...), images and JSON output formats.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import api_schema
from .api_schema import APIError, ChatRequest, Limits
from .server_engine import Done, Failed
from .server_http import JobStream, client_gone, client_id, collect_unless_disconnected, json_body, state
from .structured import plan_request
from .tool_calls import CallArgs, CallStart, Content

_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
             "frequency_penalty", "seed", "cache_prompt")
_FIELDS = frozenset({"model", "input", "instructions", "max_output_tokens", "stream", "tools", "tool_choice",
                     "parallel_tool_calls", "text", "previous_response_id", "background", *_SAMPLING,
                     # bookkeeping that changes no output
                     "store", "metadata", "user", "safety_identifier", "prompt_cache_key", "service_tier",
                     "truncation", "reasoning", "include", "stream_options", "personality", "conversation"})
_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}


@dataclass(frozen=True)
class ResponsesRequest:
    chat: ChatRequest              # the same request as an OpenAI chat (messages, gen, tools)
    stream: bool
    echo: dict                     # request settings the Response object repeats


# ---- request -> OpenAI chat ------------------------------------------------------------------------

def _item(i: int, item, out: list[dict]) -> None:
    name = f"input[{i}]"
    kind = item.get("type", "message") if isinstance(item, dict) else None
    if kind == "function_call":
        call = {"id": str(item.get("call_id") or item.get("id") or f"call_{i}"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
        if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls") is not None:
            out[-1]["tool_calls"].append(call)          # several calls of one turn: one assistant message
        else:
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else api_schema.text_parts(
            output, f"{name}.output", kinds=("input_text", "output_text", "text"))
        out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
    elif kind == "message":
        if item.get("role") not in _ROLES:
            raise APIError(400, f"'{name}.role' must be one of user, system, developer, assistant", param=name)
        if "content" not in item:
            raise APIError(400, f"missing required field '{name}.content'", param=name)
        text = api_schema.text_parts(item["content"], f"{name}.content", kinds=("input_text", "output_text", "text"))
        out.append({"role": _ROLES[item["role"]], "content": text})
    else:
        raise APIError(400, f"'{name}': only messages and function calls are supported"
                            + (f", not {kind[:40]!r} items" if isinstance(kind, str) else ""), param=name)


def _tools(body: dict) -> dict:
    out = {}
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise APIError(400, "'tools' must be an array of function tools", param="tools")
        converted = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or t.get("type") != "function":
                kind = t.get("type") if isinstance(t, dict) else None
                raise APIError(400, f"'tools[{i}]' must be a function tool {{\"type\": \"function\", \"name\", "
                                    f"\"parameters\"}}" + (f"; built-in tools ({str(kind)[:40]!r}) are not "
                                                           "available" if kind else ""), param=f"tools[{i}]")
            fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}
            converted.append({"type": "function", "function": fn})
        out["tools"] = converted
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        out["tool_choice"] = choice
    if body.get("parallel_tool_calls") is not None:
        out["parallel_tool_calls"] = body["parallel_tool_calls"]
    return out


def openai_body(body: dict) -> dict:
    """A Responses body -> the OpenAI chat body it means."""
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        raise APIError(400, f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown))}",
                       param=unknown[0])
    if body.get("previous_response_id") is not None:
        raise APIError(400, "'previous_response_id': responses are not stored; send the whole conversation "
                            "in 'input'", param="previous_response_id")
    if body.get("background"):
        raise APIError(400, "'background' responses are not supported", param="background")
    text = body.get("text")
    if text is not None and (not isinstance(text, dict) or text.get("format") not in (None, {"type": "text"})):
        raise APIError(400, "'text.format': only {\"type\": \"text\"} is supported", param="text")
    messages = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise APIError(400, "'instructions' must be a string", param="instructions")
        messages.append({"role": "system", "content": instructions})
    value = body.get("input")
    if value is None:
        raise APIError(400, "missing required field 'input'", param="input")
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            _item(i, item, messages)
    else:
        raise APIError(400, "'input' must be a string or a non-empty array of items", param="input")
    return {"messages": messages, **{k: body[k] for k in _SAMPLING if k in body}, **_tools(body)}


def responses_request(body: dict, limits: Limits, count_only: bool = False) -> ResponsesRequest:
    chat_body = openai_body(body)
    max_tokens = api_schema.number(body, "max_output_tokens", 1, limits.n_ctx, None, integer=True)
    if max_tokens is not None and not count_only:
        chat_body["max_tokens"] = max_tokens
    chat = api_schema.chat_request(chat_body, limits)
    echo = {"instructions": body.get("instructions"), "max_output_tokens": max_tokens,
            "metadata": body.get("metadata") or {}, "temperature": chat.gen.params.temperature,
            "top_p": chat.gen.params.top_p, "store": False, "user": body.get("user"),
            "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": body.get("parallel_tool_calls", True)}
    return ResponsesRequest(chat=chat, stream=api_schema.flag(body, "stream", False), echo=echo)


# ---- results -> Response objects -------------------------------------------------------------------

def usage(done: Done) -> dict:
    return {"input_tokens": done.n_prompt, "input_tokens_details": {"cached_tokens": done.n_cached},
            "output_tokens": done.n_generated, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": done.n_prompt + done.n_generated}


def text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def output_message(msg_id: str, text: str | None, status: str) -> dict:
    return {"type": "message", "id": msg_id, "status": status, "role": "assistant",
            "content": [] if text is None else [text_part(text)]}


def function_call(call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"type": "function_call", "id": "fc_" + call_id.removeprefix("call_"), "call_id": call_id,
            "name": name, "arguments": arguments, "status": status}


def response(resp_id: str, created: int, model: str, req: ResponsesRequest, status: str,
             output: list, done: Done | None) -> dict:
    """The Response object. status: "in_progress", "completed" or "incomplete"."""
    return {"id": resp_id, "object": "response", "created_at": created, "status": status, "model": model,
            "error": None, "background": False,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "output": output, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "text": {"format": {"type": "text"}}, "truncation": "disabled",
            "usage": usage(done) if done is not None else None, **req.echo}


def _sse(seq: list[int], kind: str, data: dict) -> str:
    seq[0] += 1
    obj = {"type": kind, "sequence_number": seq[0] - 1, **data}
    return f"event: {kind}\ndata: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


# ---- handlers --------------------------------------------------------------------------------------

async def _plan(request: Request, chat: ChatRequest):
    engine = state(request).engine
    return await asyncio.to_thread(plan_request, engine.model, engine.template, chat)


async def create_response(request: Request) -> Response:
    st = state(request)
    req = responses_request(await json_body(request), st.limits)
    plan = await _plan(request, req.chat)
    job = st.engine.submit(plan.prompt_ids, plan.gen, client=client_id(request))
    resp_id, created = "resp_" + secrets.token_hex(24), int(time.time())
    if req.stream:
        return JobStream(job, _stream(request, job, plan, req, resp_id, created))
    events = await collect_unless_disconnected(request, job)
    if events is None:
        return client_gone()
    done = events[-1]
    if isinstance(done, Failed):
        raise done.error()
    status = "completed" if done.finish_reason == "stop" else "incomplete"
    text, calls = "".join(p.text for p in events[:-1]), []
    parser = plan.parser()
    if parser is not None:
        for p in events[:-1]:
            parser.feed(p.token_id, p.text)
        parser.finish()
        text, calls = parser.content, parser.calls
    output = [output_message("msg_" + secrets.token_hex(24), text, status)] if text or not calls else []
    output += [function_call(c.id, c.name, c.arguments, "completed") for c in calls]
    return JSONResponse(response(resp_id, created, st.engine.name, req, status, output, done))


async def _stream(request: Request, job, plan, req: ResponsesRequest, resp_id: str, created: int):
    name = state(request).engine.name
    seq = [0]
    start = response(resp_id, created, name, req, "in_progress", [], None)
    yield _sse(seq, "response.created", {"response": start})
    yield _sse(seq, "response.in_progress", {"response": start})
    parser = plan.parser()
    output: list[dict] = []                 # items so far; the last one is open until the next starts
    texts: list[str] = []                   # the open message's text, or the open call's arguments

    def close(status: str) -> list[str]:
        if not output:
            return []
        item, index, whole = output[-1], len(output) - 1, "".join(texts)
        if item["type"] == "message":
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            item.update(content=[text_part(whole)], status=status)
            done = [_sse(seq, "response.output_text.done", {**where, "text": whole, "logprobs": []}),
                    _sse(seq, "response.content_part.done", {**where, "part": text_part(whole)})]
        else:
            item.update(arguments=whole, status=status)
            done = [_sse(seq, "response.function_call_arguments.done",
                         {"item_id": item["id"], "output_index": index, "name": item["name"], "arguments": whole})]
        texts.clear()
        return done + [_sse(seq, "response.output_item.done", {"output_index": index, "item": item})]

    def open_message() -> list[str]:
        out = close("completed")
        output.append(output_message("msg_" + secrets.token_hex(24), None, "in_progress"))
        index = len(output) - 1
        return out + [_sse(seq, "response.output_item.added", {"output_index": index, "item": dict(output[-1])}),
                      _sse(seq, "response.content_part.added", {"item_id": output[-1]["id"], "output_index": index,
                                                                "content_index": 0, "part": text_part("")})]

    def emit(e) -> list[str]:
        out = []
        if isinstance(e, Content) and e.text:
            if not output or output[-1]["type"] != "message":
                out += open_message()
            texts.append(e.text)
            out.append(_sse(seq, "response.output_text.delta", {
                "item_id": output[-1]["id"], "output_index": len(output) - 1, "content_index": 0,
                "delta": e.text, "logprobs": []}))
        elif isinstance(e, CallStart):
            out += close("completed")
            output.append(function_call(e.id, e.name, "", "in_progress"))
            out.append(_sse(seq, "response.output_item.added", {"output_index": len(output) - 1,
                                                                "item": dict(output[-1])}))
        elif isinstance(e, CallArgs) and e.fragment:
            texts.append(e.fragment)
            out.append(_sse(seq, "response.function_call_arguments.delta", {
                "item_id": output[-1]["id"], "output_index": len(output) - 1, "delta": e.fragment}))
        return out

    async for item in job.stream():
        if isinstance(item, Failed):
            yield _sse(seq, "error", {"code": item.error().type, "message": item.message, "param": item.param})
            return
        if isinstance(item, Done):
            status = "completed" if item.finish_reason == "stop" else "incomplete"
            for e in (parser.finish() if parser is not None else []):
                for chunk in emit(e):
                    yield chunk
            for chunk in ([] if output else open_message()) + close(status):   # nothing said: one empty message
                yield chunk
            yield _sse(seq, f"response.{status}",
                       {"response": response(resp_id, created, name, req, status, output, item)})
            return
        for e in (parser.feed(item.token_id, item.text) if parser is not None else [Content(item.text)]):
            for chunk in emit(e):
                yield chunk


async def input_tokens(request: Request) -> Response:
    """OpenAI's responses.input_tokens.count: the prompt the same request would run."""
    req = responses_request(await json_body(request), state(request).limits, count_only=True)
    plan = await _plan(request, req.chat)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": len(plan.prompt_ids)})


ROUTES = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/responses", create_response, methods=["POST"]),
    Route("/v1/responses/input_tokens", input_tokens, methods=["POST"]),
    Route("/responses/input_tokens", input_tokens, methods=["POST"]),
]
