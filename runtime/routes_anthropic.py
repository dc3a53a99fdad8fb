"""The Anthropic API family: POST /v1/messages and /v1/messages/count_tokens, in Anthropic's shapes
(https://docs.anthropic.com/en/api/messages), for clients written against the `anthropic` SDK.

    POST /v1/messages               a Message: {"type": "message", "content": [text and tool_use blocks],
                                    "stop_reason", "stop_sequence", "usage"}; with "stream": true the
                                    event sequence message_start, ping, per block content_block_start,
                                    content_block_delta..., content_block_stop, then message_delta and
                                    message_stop
    POST /v1/messages/count_tokens  {"input_tokens": N}: the prompt the same request would run

A request becomes the OpenAI-shaped chat this server runs anyway (`openai_body`): `system` (a string,
or text blocks concatenated as llama.cpp does) is the first message, a message's text blocks are joined
with "\\n" like OpenAI's text parts, `tool_use` blocks become the assistant's tool_calls and
`tool_result` blocks become tool messages; `tools` ({name, description, input_schema}) and
`tool_choice` (auto, any, tool, none) become OpenAI's, so tool calls are read and constrained exactly as
on /v1/chat/completions (runtime/structured.py) and come back as `tool_use` blocks with stop_reason
"tool_use". Sampling: `max_tokens` (required, as Anthropic requires it), `temperature`, `top_p`,
`top_k`, `stop_sequences`, and llama.cpp's extras (min_p, seed, cache_prompt, ...); fields a request
leaves out take the server's defaults. stop_reason is "end_turn", "stop_sequence" (with `stop_sequence`
naming it), "tool_use" or "max_tokens" (max_tokens or a full context). Recent `anthropic` clients send
`temperature`, `top_p` and `top_k` only through `extra_body`; the server reads them either way.

A conversation that ends with an assistant message continues it (Anthropic's prefill): the reply is
the rest of that message. Earlier `thinking` blocks of assistant turns become the message's
reasoning_content, as llama-server maps them, which templates that show reasoning (Qwen 3, ...) render.

Accepted and ignored: `metadata`, `service_tier`, `cache_control` (the prompt cache is automatic) and
other hints, the `thinking` field (no thinking blocks are written: the reply is text). Refused with a 400 naming the field:
images and documents (the model reads text), server tools, an empty `messages`, unknown fields. Errors
have Anthropic's shape, {"type": "error", "error": {"type", "message"}}, which the `anthropic` client reads.
"""
from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import api_native, api_schema
from .api_schema import APIError, ChatRequest, Limits
from .server_engine import Done, Failed
from .server_http import JobStream, client_gone, client_id, collect_unless_disconnected, json_body, state
from .structured import plan_request
from .tool_calls import CallArgs, CallStart, Content

_ROLES = ("user", "assistant")
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
             "frequency_penalty", "seed", "cache_prompt")
_FIELDS = frozenset({"model", "messages", "system", "max_tokens", "stop_sequences", "stream", "tools",
                     "tool_choice", *_SAMPLING,
                     # bookkeeping and hints that change nothing here
                     "metadata", "service_tier", "thinking", "cache_control", "inference_geo", "speed",
                     "user_profile_id", "workspace_id", "diagnostics"})
# Anthropic's error types by HTTP status
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error"}


@dataclass(frozen=True)
class MessagesRequest:
    chat: ChatRequest              # the same request as an OpenAI chat (messages, gen, tools)
    stream: bool = False


# ---- request -> OpenAI chat ------------------------------------------------------------------------

def _blocks(content, name: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise APIError(400, f"'{name}' must be a string or an array of content blocks", param=name)
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise APIError(400, f"'{name}[{j}]' must be a content block {{\"type\": ...}}", param=name)
    return content


def _tool_result(block: dict, name: str) -> dict:
    content = block.get("content", "")
    if isinstance(content, list):
        content = api_schema.text_parts(content, f"{name}.content")
    elif not isinstance(content, str):
        raise APIError(400, f"'{name}.content' must be a string or text blocks", param=name)
    if not isinstance(block.get("tool_use_id"), str):
        raise APIError(400, f"'{name}.tool_use_id' must be the id of the tool_use it answers", param=name)
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": content}


def _message(i: int, m) -> list[dict]:
    """One Anthropic message -> OpenAI messages: tool results first (as tool messages), then the text
    and the tool calls."""
    name = f"messages[{i}]"
    if not isinstance(m, dict) or m.get("role") not in _ROLES:
        raise APIError(400, f"'{name}.role' must be \"user\" or \"assistant\"", param=name)
    if "content" not in m:
        raise APIError(400, f"missing required field '{name}.content'", param=f"{name}.content")
    texts, calls, results, thinking = [], [], [], []
    for j, block in enumerate(_blocks(m["content"], f"{name}.content")):
        kind, where = block["type"], f"{name}.content[{j}]"
        if kind == "tool_use" and m["role"] == "assistant":
            if not isinstance(block.get("name"), str) or not isinstance(block.get("input", {}), dict):
                raise APIError(400, f"'{where}' must be {{\"type\": \"tool_use\", \"id\", \"name\", \"input\": "
                                    "{...}}", param=where)
            calls.append({"id": str(block.get("id") or f"toolu_{i}_{j}"), "type": "function", "function": {
                "name": block["name"], "arguments": json.dumps(block.get("input", {}), ensure_ascii=False)}})
        elif kind == "tool_result" and m["role"] == "user":
            results.append(_tool_result(block, where))
        elif kind in ("thinking", "redacted_thinking"):    # redacted: encrypted by Anthropic, nothing to show
            if kind == "thinking" and m["role"] == "assistant" and isinstance(block.get("thinking"), str):
                thinking.append(block["thinking"])
        else:
            texts.append(block)
    out = list(results)
    text = api_schema.text_parts(texts, f"{name}.content") if texts else ""
    if calls:
        out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
    elif texts or thinking or not results:
        out.append({"role": m["role"], "content": text})
    if thinking:     # earlier reasoning, as llama-server maps it: templates that show it render it
        out[-1]["reasoning_content"] = "\n".join(thinking)
    return out


def _tools(tools, choice) -> dict:
    out: dict = {}
    if tools is not None:
        if not isinstance(tools, list):
            raise APIError(400, "'tools' must be an array of {\"name\", \"description\", \"input_schema\"}",
                           param="tools")
        converted = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or "input_schema" not in t or t.get("type") not in (None, "custom"):
                kind = t.get("type") if isinstance(t, dict) else None
                raise APIError(400, f"'tools[{i}]' must be a client tool {{\"name\", \"description\", "
                                    f"\"input_schema\"}}" + (f"; server tools ({str(kind)[:40]!r}) are not "
                                                             "available" if kind else ""), param=f"tools[{i}]")
            fn = {"name": t.get("name"), "parameters": t["input_schema"]}
            if t.get("description") is not None:
                fn["description"] = t["description"]
            converted.append({"type": "function", "function": fn})
        out["tools"] = converted
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "any", "none"):
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        else:
            raise APIError(400, "'tool_choice' must be {\"type\": \"auto\" | \"any\" | \"none\"} or "
                                "{\"type\": \"tool\", \"name\": ...}", param="tool_choice")
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    return out


def openai_body(body: dict) -> dict:
    """An Anthropic Messages body -> the OpenAI chat body it means (sampling fields as they are)."""
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        raise APIError(400, f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown))}",
                       param=unknown[0])
    messages = []
    if body.get("system") is not None:
        messages.append({"role": "system", "content": api_schema.text_parts(body["system"], "system", sep="")})
    if "messages" not in body:
        raise APIError(400, "missing required field 'messages'", param="messages")
    if not isinstance(body["messages"], list) or not body["messages"]:
        raise APIError(400, "'messages' must be a non-empty array of {\"role\", \"content\"}", param="messages")
    for i, m in enumerate(body["messages"]):
        messages += _message(i, m)
    out = {"messages": messages, **{k: body[k] for k in _SAMPLING if k in body},
           **_tools(body.get("tools"), body.get("tool_choice"))}
    if body.get("stop_sequences") is not None:
        if not isinstance(body["stop_sequences"], list):
            raise APIError(400, "'stop_sequences' must be an array of strings", param="stop_sequences")
        out["stop"] = body["stop_sequences"]
    return out


def messages_request(body: dict, limits: Limits, count_only: bool = False) -> MessagesRequest:
    chat_body = openai_body(body)
    if not count_only:
        if "max_tokens" not in body:
            raise APIError(400, "missing required field 'max_tokens'", param="max_tokens")
        chat_body["max_tokens"] = api_schema.number(body, "max_tokens", 1, limits.n_ctx, None, integer=True)
    try:
        chat = api_schema.chat_request(chat_body, limits)
    except APIError as e:   # OpenAI's names of the fields that have Anthropic names of their own
        raise APIError(e.status, e.message.replace("'stop'", "'stop_sequences'"), param=e.param) from None
    return MessagesRequest(chat=chat, stream=api_schema.flag(body, "stream", False))


# ---- results -> Anthropic objects ------------------------------------------------------------------

def stop_reason(stop_type: str, tool_use: bool = False) -> str:
    if tool_use and stop_type != "limit":
        return "tool_use"
    return {"eos": "end_turn", "word": "stop_sequence"}.get(stop_type, "max_tokens")


def usage(done: Done) -> dict:
    """Anthropic counts the prompt tokens read from the cache apart from the ones evaluated."""
    return {"input_tokens": done.n_prompt - done.n_cached, "output_tokens": done.n_generated,
            "cache_read_input_tokens": done.n_cached, "cache_creation_input_tokens": 0}


def tool_use(call) -> dict:
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        arguments = {}
    return {"type": "tool_use", "id": call.id, "name": call.name,
            "input": arguments if isinstance(arguments, dict) else {}}


def message(msg_id: str, model: str, text: str, calls: list, stop: tuple[str, str], done: Done) -> dict:
    blocks = [{"type": "text", "text": text}] if text or not calls else []
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": blocks + [tool_use(c) for c in calls], "stop_reason": stop_reason(stop[0], bool(calls)),
            "stop_sequence": stop[1] or None, "usage": usage(done)}


def event(name: str, data: dict) -> str:
    """One Anthropic SSE event: its name on an `event:` line, the object (with "type") on `data:`."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **data}, ensure_ascii=False, separators=(',', ':'))}\n\n"


def error_body(e: APIError) -> dict:
    kind = _ERROR_TYPES.get(e.status, "api_error" if e.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": e.message}}


# ---- handlers --------------------------------------------------------------------------------------

def _anthropic_errors(handler):
    """Refusals in Anthropic's error shape (the guard's 401/403, outside the routes, stay OpenAI's)."""
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except APIError as e:
            return JSONResponse(error_body(e), status_code=e.status)
    return wrapped


async def _plan(request: Request, chat: ChatRequest):
    engine = state(request).engine
    return await asyncio.to_thread(plan_request, engine.model, engine.template, chat)


@_anthropic_errors
async def create_message(request: Request) -> Response:
    st = state(request)
    req = messages_request(await json_body(request), st.limits)
    plan = await _plan(request, req.chat)
    job = st.engine.submit(plan.prompt_ids, plan.gen, client=client_id(request))
    msg_id = "msg_" + secrets.token_hex(12)
    if req.stream:
        return JobStream(job, _stream(request, job, plan, req, msg_id))
    events = await collect_unless_disconnected(request, job)
    if events is None:
        return client_gone()
    done = events[-1]
    if isinstance(done, Failed):
        raise done.error()
    pieces = events[:-1]
    text = "".join(p.text for p in pieces)
    stop = api_native.stop_type(st.engine.model.tokenizer, pieces, done.finish_reason, text, req.chat.gen.stop)
    calls = plan.parser()
    if calls is not None:
        for p in pieces:
            calls.feed(p.token_id, p.text)
        calls.finish()
        text = calls.content
    return JSONResponse(message(msg_id, st.engine.name, text, calls.calls if calls else [], stop, done))


async def _stream(request: Request, job, plan, req: MessagesRequest, msg_id: str):
    """message_start, ping, then each content block as it comes (text, tool_use with its input as
    input_json_delta fragments), message_delta, message_stop."""
    st = state(request)
    yield event("message_start", {"message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": st.engine.name, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": len(plan.prompt_ids), "output_tokens": 0, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0}}})
    yield event("ping", {})
    calls = plan.parser()
    blocks: list[str] = []                  # the type of each block opened so far; the last one is open
    pieces, text, n_calls = [], "", 0

    def close() -> list[str]:
        return [event("content_block_stop", {"index": len(blocks) - 1})] if blocks else []

    def emit(e) -> list[str]:
        out = []
        if isinstance(e, Content) and e.text:
            if not blocks or blocks[-1] != "text":
                out += close() + [event("content_block_start", {"index": len(blocks),
                                                                "content_block": {"type": "text", "text": ""}})]
                blocks.append("text")
            out.append(event("content_block_delta", {"index": len(blocks) - 1,
                                                     "delta": {"type": "text_delta", "text": e.text}}))
        elif isinstance(e, CallStart):
            out += close() + [event("content_block_start", {"index": len(blocks), "content_block": {
                "type": "tool_use", "id": e.id, "name": e.name, "input": {}}})]
            blocks.append("tool_use")
        elif isinstance(e, CallArgs) and e.fragment:
            out.append(event("content_block_delta", {"index": len(blocks) - 1,
                                                     "delta": {"type": "input_json_delta", "partial_json": e.fragment}}))
        return out

    async for item in job.stream():
        if isinstance(item, Failed):
            yield event("error", error_body(item.error()))
            return
        if isinstance(item, Done):
            for e in (calls.finish() if calls is not None else []):
                for chunk in emit(e):
                    yield chunk
            if not blocks:                  # nothing at all was said: one empty text block
                yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
                blocks.append("text")
            for chunk in close():
                yield chunk
            n_calls = len(calls.calls) if calls is not None else 0
            stop = api_native.stop_type(st.engine.model.tokenizer, pieces, item.finish_reason, text,
                                        req.chat.gen.stop)
            yield event("message_delta", {"delta": {"stop_reason": stop_reason(stop[0], n_calls > 0),
                                                    "stop_sequence": stop[1] or None}, "usage": usage(item)})
            yield event("message_stop", {})
            return
        pieces.append(item)
        text += item.text
        for e in (calls.feed(item.token_id, item.text) if calls is not None else [Content(item.text)]):
            for chunk in emit(e):
                yield chunk


@_anthropic_errors
async def count_tokens(request: Request) -> Response:
    req = messages_request(await json_body(request), state(request).limits, count_only=True)
    plan = await _plan(request, req.chat)
    return JSONResponse({"input_tokens": len(plan.prompt_ids)})


ROUTES = [
    Route("/v1/messages", create_message, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
