"""The Anthropic API family: POST /v1/messages and /v1/messages/count_tokens, in Anthropic's shapes
(https://docs.anthropic.com/en/api/messages), for clients written against the `anthropic` SDK.

    POST /v1/messages               a Message: {"type": "message", "content": [{"type": "text", ...}],
                                    "stop_reason", "stop_sequence", "usage"}; with "stream": true the
                                    event sequence message_start, content_block_start, ping,
                                    content_block_delta..., content_block_stop, message_delta, message_stop
    POST /v1/messages/count_tokens  {"input_tokens": N}: the prompt the same request would run

A request becomes the chat this server runs anyway: `system` (a string, or text blocks concatenated as
llama.cpp does) is the first message, each message's text blocks are joined with "\\n" like OpenAI's text
parts, and the chat template renders the prompt. Sampling: `max_tokens` (required, as Anthropic requires
it), `temperature`, `top_p`, `top_k`, `stop_sequences`, and llama.cpp's extras (min_p, seed,
cache_prompt, ...); fields a request leaves out take the server's defaults, as on the OpenAI endpoints. stop_reason is "end_turn" (end of generation), "stop_sequence"
(with `stop_sequence` naming it) or "max_tokens" (max_tokens or a full context).

Accepted and ignored: `metadata`, `service_tier`, `cache_control` (the prompt cache is automatic) and
other hints, `thinking` (these models write no thinking blocks). Recent `anthropic` clients send
`temperature`, `top_p` and `top_k` only through `extra_body`; the server reads them either way.
Refused with a 400 naming the field: images and documents (the model reads text), tools and tool
blocks, an empty `messages`, unknown fields. Errors have Anthropic's shape, {"type": "error",
"error": {"type", "message"}}, which the `anthropic` client reads.
"""
from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, replace

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import api_native, api_schema
from .api_schema import APIError, GenOptions, Limits
from .server_engine import Done, Failed
from .server_http import JobStream, client_gone, client_id, collect_unless_disconnected, json_body, state

_ROLES = ("user", "assistant")
_FIELDS = frozenset({"model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature",
                     "top_p", "top_k",
                     # llama.cpp's sampling extras, as on its OpenAI endpoints
                     "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty", "seed",
                     "cache_prompt",
                     # bookkeeping and hints that change nothing here
                     "metadata", "service_tier", "thinking", "cache_control", "inference_geo", "speed",
                     "user_profile_id", "workspace_id", "diagnostics"})
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
             "frequency_penalty", "seed", "cache_prompt")
# Anthropic's error types by HTTP status
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error"}


@dataclass(frozen=True)
class MessagesRequest:
    messages: list[dict]           # OpenAI-shaped chat, the system prompt first
    gen: GenOptions
    stream: bool = False


# ---- request -> chat -------------------------------------------------------------------------------

def chat_messages(body: dict) -> list[dict]:
    """Anthropic's `system` + `messages` -> the OpenAI-shaped messages the chat template reads."""
    out = []
    if body.get("system") is not None:
        out.append({"role": "system", "content": api_schema.text_parts(body["system"], "system", sep="")})
    messages = body.get("messages")
    if messages is None:
        raise APIError(400, "missing required field 'messages'", param="messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty array of {\"role\", \"content\"}", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise APIError(400, f"'messages[{i}].role' must be \"user\" or \"assistant\"", param=f"messages[{i}]")
        if "content" not in m:
            raise APIError(400, f"missing required field 'messages[{i}].content'", param=f"messages[{i}].content")
        out.append({"role": m["role"], "content": api_schema.text_parts(m["content"], f"messages[{i}].content")})
    return out


def _check_fields(body: dict, known: frozenset) -> None:
    if "tools" in body or "tool_choice" in body:
        raise APIError(400, "'tools' are not supported by this server's Messages API", param="tools")
    unknown = sorted(k for k in body if k not in known)
    if unknown:
        raise APIError(400, f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown))}",
                       param=unknown[0])


def messages_request(body: dict, limits: Limits) -> MessagesRequest:
    _check_fields(body, _FIELDS)
    if "max_tokens" not in body:
        raise APIError(400, "missing required field 'max_tokens'", param="max_tokens")
    stops = body.get("stop_sequences")
    sampling = {k: body[k] for k in _SAMPLING if k in body}
    if stops is not None:
        if not isinstance(stops, list):
            raise APIError(400, "'stop_sequences' must be an array of strings", param="stop_sequences")
        sampling["stop"] = stops
    try:
        gen = api_schema.gen_options(sampling, limits, None)
    except APIError as e:
        raise APIError(e.status, e.message.replace("'stop'", "'stop_sequences'"), param=e.param) from None
    max_tokens = api_schema.number(body, "max_tokens", 1, limits.n_ctx, None, integer=True)
    return MessagesRequest(messages=chat_messages(body), gen=replace(gen, max_tokens=max_tokens),
                           stream=api_schema.flag(body, "stream", False))


# ---- results -> Anthropic objects ------------------------------------------------------------------

def stop_reason(stop_type: str) -> str:
    return {"eos": "end_turn", "word": "stop_sequence"}.get(stop_type, "max_tokens")


def usage(done: Done) -> dict:
    """Anthropic counts the prompt tokens read from the cache apart from the ones evaluated."""
    return {"input_tokens": done.n_prompt - done.n_cached, "output_tokens": done.n_generated,
            "cache_read_input_tokens": done.n_cached, "cache_creation_input_tokens": 0}


def message(msg_id: str, model: str, text: str, stop: tuple[str, str], done: Done) -> dict:
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": stop_reason(stop[0]),
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


async def _prompt(request: Request, messages: list[dict]) -> list[int]:
    return await asyncio.to_thread(state(request).engine.chat_prompt_ids, messages)


@_anthropic_errors
async def create_message(request: Request) -> Response:
    st = state(request)
    req = messages_request(await json_body(request), st.limits)
    ids = await _prompt(request, req.messages)
    job = st.engine.submit(ids, req.gen, client=client_id(request))
    msg_id = "msg_" + secrets.token_hex(12)
    if req.stream:
        return JobStream(job, _stream(request, job, ids, req, msg_id))
    events = await collect_unless_disconnected(request, job)
    if events is None:
        return client_gone()
    done = events[-1]
    if isinstance(done, Failed):
        raise APIError(500, done.message)
    pieces = events[:-1]
    text = "".join(p.text for p in pieces)
    stop = api_native.stop_type(st.engine.model.tokenizer, pieces, done.finish_reason, text, req.gen.stop)
    return JSONResponse(message(msg_id, st.engine.name, text, stop, done))


async def _stream(request: Request, job, ids: list[int], req: MessagesRequest, msg_id: str):
    st = state(request)
    yield event("message_start", {"message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": st.engine.name, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": len(ids), "output_tokens": 0, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0}}})
    yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    yield event("ping", {})
    pieces, text = [], ""
    async for item in job.stream():
        if isinstance(item, Failed):
            yield event("error", error_body(APIError(500, item.message)))
            return
        if isinstance(item, Done):
            stop = api_native.stop_type(st.engine.model.tokenizer, pieces, item.finish_reason, text, req.gen.stop)
            yield event("content_block_stop", {"index": 0})
            yield event("message_delta", {"delta": {"stop_reason": stop_reason(stop[0]),
                                                    "stop_sequence": stop[1] or None}, "usage": usage(item)})
            yield event("message_stop", {})
            return
        pieces.append(item)
        if item.text:
            text += item.text
            yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": item.text}})


@_anthropic_errors
async def count_tokens(request: Request) -> Response:
    body = await json_body(request)
    _check_fields(body, _FIELDS)     # a whole /v1/messages body is fine; max_tokens is not needed
    ids = await _prompt(request, chat_messages(body))
    return JSONResponse({"input_tokens": len(ids)})


ROUTES = [
    Route("/v1/messages", create_message, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
