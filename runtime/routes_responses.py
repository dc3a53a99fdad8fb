"""A minimal OpenAI Responses API: POST /v1/responses (and llama-server's /responses), text in, text out;
POST /v1/responses/input_tokens counts the prompt a request would run.

    input         a string, or a list of messages {"role", "content"} whose content is a string or
                  input_text / output_text parts (joined with "\\n", like chat text parts)
    instructions  the system prompt, before the input
    max_output_tokens, temperature, top_p, stream, and llama.cpp's sampling extras as on chat

The answer is a Response object: `output` holds one message with one output_text part, `status` is
"completed", or "incomplete" with incomplete_details.reason "max_output_tokens" when the limit (or the
context) cut it short. With "stream": true the events are OpenAI's: response.created,
response.in_progress, response.output_item.added, response.content_part.added,
response.output_text.delta..., response.output_text.done, response.content_part.done,
response.output_item.done, then response.completed (or response.incomplete), each with its
sequence_number. Nothing is stored: `previous_response_id` and `store: true` retrieval are not
available (previous_response_id gets a 400), nor are tools, images, files or JSON output formats.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, replace

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import api_schema
from .api_schema import APIError, GenOptions, Limits
from .server_engine import Done, Failed
from .server_http import JobStream, client_gone, client_id, collect_unless_disconnected, json_body, state

_FIELDS = frozenset({"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream",
                     "store", "metadata", "user", "safety_identifier", "prompt_cache_key", "service_tier",
                     "truncation", "text", "tools", "tool_choice", "parallel_tool_calls", "reasoning",
                     "include", "background", "previous_response_id", "stream_options",
                     "top_k", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
                     "frequency_penalty", "seed", "cache_prompt"})
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
             "frequency_penalty", "seed", "cache_prompt")
_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}


@dataclass(frozen=True)
class ResponsesRequest:
    messages: list[dict]           # OpenAI-shaped chat
    gen: GenOptions
    stream: bool
    echo: dict                     # request settings the Response object repeats


# ---- request -> chat -------------------------------------------------------------------------------

def chat_messages(body: dict) -> list[dict]:
    out = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise APIError(400, "'instructions' must be a string", param="instructions")
        out.append({"role": "system", "content": instructions})
    value = body.get("input")
    if value is None:
        raise APIError(400, "missing required field 'input'", param="input")
    if isinstance(value, str):
        return out + [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise APIError(400, "'input' must be a string or a non-empty array of messages", param="input")
    for i, item in enumerate(value):
        name = f"input[{i}]"
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            kind = item.get("type") if isinstance(item, dict) else None
            raise APIError(400, f"'{name}': only messages are supported"
                                + (f", not {kind!r} items" if isinstance(kind, str) else "")[:200], param=name)
        role = item.get("role")
        if role not in _ROLES:
            raise APIError(400, f"'{name}.role' must be one of user, system, developer, assistant", param=name)
        if "content" not in item:
            raise APIError(400, f"missing required field '{name}.content'", param=name)
        text = api_schema.text_parts(item["content"], f"{name}.content", kinds=("input_text", "output_text", "text"))
        out.append({"role": _ROLES[role], "content": text})
    return out


def _unsupported(body: dict) -> None:
    if body.get("previous_response_id") is not None:
        raise APIError(400, "'previous_response_id': responses are not stored; send the whole conversation "
                            "in 'input'", param="previous_response_id")
    if body.get("tools"):
        raise APIError(400, "'tools' are not supported by this server's Responses API", param="tools")
    if body.get("background"):
        raise APIError(400, "'background' responses are not supported", param="background")
    text = body.get("text")
    if text is not None and (not isinstance(text, dict) or text.get("format") not in (None, {"type": "text"})):
        raise APIError(400, "'text.format': only {\"type\": \"text\"} is supported", param="text")


def responses_request(body: dict, limits: Limits) -> ResponsesRequest:
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        raise APIError(400, f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown))}",
                       param=unknown[0])
    _unsupported(body)
    gen = api_schema.gen_options({k: body[k] for k in _SAMPLING if k in body}, limits, None)
    max_tokens = api_schema.number(body, "max_output_tokens", 1, limits.n_ctx, None, integer=True)
    if max_tokens is not None:
        gen = replace(gen, max_tokens=max_tokens)
    echo = {"instructions": body.get("instructions"), "max_output_tokens": max_tokens,
            "metadata": body.get("metadata") or {}, "temperature": gen.params.temperature,
            "top_p": gen.params.top_p, "store": False, "user": body.get("user")}
    return ResponsesRequest(messages=chat_messages(body), gen=gen, stream=api_schema.flag(body, "stream", False),
                            echo=echo)


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


def response(resp_id: str, created: int, model: str, req: ResponsesRequest, status: str,
             output: list, done: Done | None) -> dict:
    """The Response object. status: "in_progress", "completed" or "incomplete"."""
    return {"id": resp_id, "object": "response", "created_at": created, "status": status, "model": model,
            "error": None, "background": False,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "output": output, "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "text": {"format": {"type": "text"}},
            "tool_choice": "auto", "tools": [], "truncation": "disabled",
            "usage": usage(done) if done is not None else None, **req.echo}


def _sse(seq: list[int], kind: str, data: dict) -> str:
    seq[0] += 1
    obj = {"type": kind, "sequence_number": seq[0] - 1, **data}
    return f"event: {kind}\ndata: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


# ---- handlers --------------------------------------------------------------------------------------

async def create_response(request: Request) -> Response:
    st = state(request)
    req = responses_request(await json_body(request), st.limits)
    ids = await asyncio.to_thread(st.engine.chat_prompt_ids, req.messages)
    job = st.engine.submit(ids, req.gen, client=client_id(request))
    resp_id, msg_id, created = "resp_" + secrets.token_hex(24), "msg_" + secrets.token_hex(24), int(time.time())
    if req.stream:
        return JobStream(job, _stream(request, job, req, resp_id, msg_id, created))
    events = await collect_unless_disconnected(request, job)
    if events is None:
        return client_gone()
    done = events[-1]
    if isinstance(done, Failed):
        raise APIError(500, done.message, type="server_error")
    status = "completed" if done.finish_reason == "stop" else "incomplete"
    text = "".join(p.text for p in events[:-1])
    return JSONResponse(response(resp_id, created, st.engine.name, req, status,
                                 [output_message(msg_id, text, status)], done))


async def _stream(request: Request, job, req: ResponsesRequest, resp_id: str, msg_id: str, created: int):
    name = state(request).engine.name
    seq = [0]
    start = response(resp_id, created, name, req, "in_progress", [], None)
    where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    yield _sse(seq, "response.created", {"response": start})
    yield _sse(seq, "response.in_progress", {"response": start})
    yield _sse(seq, "response.output_item.added", {"output_index": 0,
                                                   "item": output_message(msg_id, None, "in_progress")})
    yield _sse(seq, "response.content_part.added", {**where, "part": text_part("")})
    text = ""
    async for item in job.stream():
        if isinstance(item, Failed):
            yield _sse(seq, "error", {"code": "server_error", "message": item.message, "param": None})
            return
        if isinstance(item, Done):
            status = "completed" if item.finish_reason == "stop" else "incomplete"
            yield _sse(seq, "response.output_text.done", {**where, "text": text, "logprobs": []})
            yield _sse(seq, "response.content_part.done", {**where, "part": text_part(text)})
            message = output_message(msg_id, text, status)
            yield _sse(seq, "response.output_item.done", {"output_index": 0, "item": message})
            yield _sse(seq, f"response.{status}",
                       {"response": response(resp_id, created, name, req, status, [message], item)})
            return
        if item.text:
            text += item.text
            yield _sse(seq, "response.output_text.delta", {**where, "delta": item.text, "logprobs": []})


async def input_tokens(request: Request) -> Response:
    """OpenAI's responses.input_tokens.count: the prompt the same request would run."""
    st = state(request)
    req = responses_request(await json_body(request), st.limits)
    ids = await asyncio.to_thread(st.engine.chat_prompt_ids, req.messages)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": len(ids)})


ROUTES = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/responses", create_response, methods=["POST"]),
    Route("/v1/responses/input_tokens", input_tokens, methods=["POST"]),
    Route("/responses/input_tokens", input_tokens, methods=["POST"]),
]
