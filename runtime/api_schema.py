"""Request validation for the OpenAI-compatible API: untrusted JSON in, checked values out.

Every request body is hostile until this module has looked at it. Each check names the field and says
what was wrong, raised as an `APIError` that the server turns into OpenAI's error shape with a 4xx status
(https://platform.openai.com/docs/guides/error-codes). Nothing here touches the model: limits that need
the model (context length, vocabulary size) are passed in by the server.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from .sampler import SamplingParams

MAX_BODY_BYTES = 2 * 1024 * 1024   # a full 32k-token conversation is ~150 KB of JSON; 2 MiB is generous
MAX_STOP = 16                      # OpenAI allows 4; llama.cpp users send a few more
MAX_STOP_CHARS = 512               # per stop string; generate() holds back this much text at worst
MAX_TOP_LOGPROBS = 20              # OpenAI's limit
MAX_SEED = 2**64                   # numpy's SeedSequence takes any non-negative int; we keep it 64-bit
MAX_INT_DIGITS = 32                # longer integer literals are parsed as floats (see parse_body)
MAX_CHOICES = 16                   # `n`: choices are generated one after the other


class APIError(Exception):
    """A request the server refuses: HTTP status plus OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class GenOptions:
    """What every generating endpoint passes on to runtime.generate.generate."""
    params: SamplingParams
    max_tokens: int                    # -1: until end of generation or a full context
    stop: tuple[str, ...] = ()
    logprobs: int | None = None        # number of top alternatives per token; None: no logprobs at all
    cache_prompt: bool = True          # llama.cpp's field: false re-evaluates the whole prompt
    logit_bias: dict[int, float] | None = None   # token id -> added to its logit (sampler.Sampler)
    constraint: object | None = None   # a compiled output constraint (sampler.Sampler), opaque here


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]               # [{"role": "system"|"user"|"assistant", "content": str}]
    gen: GenOptions
    stream: bool = False
    include_usage: bool = False
    n: int = 1                         # choices, generated one after the other


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | list[int]            # text, or token ids used as they are
    gen: GenOptions
    stream: bool = False
    include_usage: bool = False
    n: int = 1


@dataclass(frozen=True)
class Limits:
    """What a request is checked against and filled in from: the loaded model's sizes, and the sampling
    defaults the server was started with (the command line's --temp etc., as llama.cpp's server does)."""
    n_ctx: int
    vocab_size: int
    defaults: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = -1


# ---- body -> dict ---------------------------------------------------------------------------------

def parse_body(raw: bytes) -> dict:
    """Bytes of a request body -> the JSON object it holds.

    Numbers: an integer literal of more than MAX_INT_DIGITS digits becomes a float (inf when past
    float range), so no later check or arithmetic meets an int that overflows float() or str()
    (Python refuses to convert ints of over 4300 digits at all); every field that wants an integer
    refuses it by range. Strings: JSON can spell a lone UTF-16 surrogate (`"\\ud800"`), which is no
    character and cannot be encoded; it is refused here, naming the field."""
    if not raw:
        raise APIError(400, "request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise APIError(400, f"request body is not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})")
    try:
        body = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise APIError(400, f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
    except RecursionError:
        raise APIError(400, "request body is not valid JSON: nested too deeply")
    if not isinstance(body, dict):
        raise APIError(400, f"request body must be a JSON object, got {_json_type(body)}")
    if _SURROGATE_ESCAPE.search(text):          # rare: only then walk the body to find the string
        where = _lone_surrogate(body)
        if where is not None:
            raise APIError(400, f"'{where}' contains a lone UTF-16 surrogate (\\uD800-\\uDFFF escape "
                                "without its pair), which is not a character", param=where)
    return body


def _parse_int(literal: str):
    return int(literal) if len(literal) <= MAX_INT_DIGITS else float(literal)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(body) -> str | None:
    """The path ('messages[0].content') of the first string (key or value) holding a lone surrogate.
    Iterative: the body may nest as deep as the JSON parser allowed."""
    stack = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path or "(body)"
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    return f"{path}.{key!a}" if path else ascii(key)
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


# ---- field checks ----------------------------------------------------------------------------------

def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _wrong(name: str, want: str, value) -> APIError:
    return APIError(400, f"'{name}' must be {want}, got {_json_type(value)}", param=name)


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _wrong(name, "a boolean", value)
    return value


def _int(body: dict, name: str, lo: int, hi: int, default):
    value = body.get(name)
    if value is None:
        return default
    # JSON true/false arrive as Python bools, which are ints: refuse them explicitly.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and math.isfinite(value) and not value.is_integer()):
        raise _wrong(name, "an integer", value)
    if not lo <= value <= hi:      # also a huge literal, parsed as a float (parse_body), and NaN
        raise APIError(400, f"'{name}' must be between {lo} and {hi}, got {_shown(value)}", param=name)
    return int(value)


def _num(body: dict, name: str, lo: float, hi: float, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise _wrong(name, "a finite number", value)
    if not lo <= value <= hi:
        raise APIError(400, f"'{name}' must be between {lo:g} and {hi:g}, got {_shown(value)}", param=name)
    return float(value)


def _shown(number) -> str:
    """A number for an error message: short, whatever its size."""
    if isinstance(number, float):
        return f"{number:g}" if math.isfinite(number) else "a number out of range"
    return str(number) if abs(number) < 10**15 else f"{float(number):g}"


def _check_fields(body: dict, known: frozenset) -> None:
    unknown = sorted(k for k in body if k not in known)
    if unknown:
        shown = ", ".join(repr(k[:64]) for k in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        raise APIError(400, f"unknown field{'s' if len(unknown) > 1 else ''}: {shown}", param=unknown[0][:64])


def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _wrong("stop", "a string or an array of strings", value)
    if len(stops) > MAX_STOP:
        raise APIError(400, f"'stop' has {len(stops)} strings; at most {MAX_STOP} are allowed", param="stop")
    for s in stops:
        if not s:
            raise APIError(400, "'stop' strings must not be empty", param="stop")
        if len(s) > MAX_STOP_CHARS:
            raise APIError(400, f"'stop' strings must be at most {MAX_STOP_CHARS} characters, got {len(s)}",
                           param="stop")
    return tuple(stops)


def _stream(body: dict) -> tuple[bool, bool]:
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise _wrong("stream_options", "an object", options)
    if not stream:
        raise APIError(400, "'stream_options' is only allowed when 'stream' is true", param="stream_options")
    _check_fields(options, frozenset({"include_usage", "include_obfuscation"}))
    return stream, _bool(options, "include_usage", False)


# Fields every generating endpoint shares: OpenAI's, then llama.cpp's extras. Ignored on purpose:
# `model` (one model per server), `user`, `store`, `metadata` (bookkeeping that changes no output).
_COMMON = frozenset({
    "model", "max_tokens", "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty",
    "n", "stream", "stream_options", "user", "store", "metadata",
    "top_k", "min_p", "repeat_penalty", "repeat_last_n", "cache_prompt",
})
_CHAT = _COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}
_COMPLETION = _COMMON | {"prompt", "logprobs", "echo"}


def _choices(body: dict) -> int:
    return _int(body, "n", 1, MAX_CHOICES, 1)


def _gen_options(body: dict, limits: Limits, logprobs: int | None) -> GenOptions:
    defaults = limits.defaults
    seed = _int(body, "seed", -(2**63), MAX_SEED - 1, None)
    params = SamplingParams(
        temperature=_num(body, "temperature", 0.0, 2.0, defaults.temperature),
        top_k=_int(body, "top_k", 0, limits.vocab_size, defaults.top_k),
        top_p=_num(body, "top_p", 0.0, 1.0, defaults.top_p),
        min_p=_num(body, "min_p", 0.0, 1.0, defaults.min_p),
        repeat_penalty=_num(body, "repeat_penalty", 0.0, 10.0, defaults.repeat_penalty),
        repeat_last_n=_int(body, "repeat_last_n", -1, limits.n_ctx, defaults.repeat_last_n),
        presence_penalty=_num(body, "presence_penalty", -2.0, 2.0, defaults.presence_penalty),
        frequency_penalty=_num(body, "frequency_penalty", -2.0, 2.0, defaults.frequency_penalty),
        seed=defaults.seed if seed is None else seed % MAX_SEED,   # OpenAI allows negative seeds
    )
    max_tokens = _int(body, "max_tokens", 1, limits.n_ctx, None)
    if "max_completion_tokens" in body:   # OpenAI's newer name wins, as in OpenAI's API
        max_tokens = _int(body, "max_completion_tokens", 1, limits.n_ctx, None)
    return GenOptions(params=params, max_tokens=limits.max_tokens if max_tokens is None else max_tokens,
                      stop=_stop(body), logprobs=logprobs, cache_prompt=_bool(body, "cache_prompt", True))


# ---- endpoints -------------------------------------------------------------------------------------

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _content(i: int, content) -> str:
    """A message's content: a string, or OpenAI's array of {"type": "text", "text": ...} parts, joined
    as llama.cpp joins them (common/chat.cpp): a "\n" before each part once some text is there, so
    leading empty parts add nothing."""
    name = f"messages[{i}].content"
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"'{name}[{j}]' must be {{\"type\": \"text\", \"text\": string}}; "
                                    "this model reads text only", param=name)
            if texts or part["text"]:
                texts.append(part["text"])
        return "\n".join(texts)
    raise _wrong(name, "a string or an array of text parts", content)


def messages_field(body: dict) -> list[dict]:
    """The checked `messages` of a chat body: [{"role", "content": str}], roles mapped to the template's."""
    messages = body.get("messages")
    if messages is None:
        raise APIError(400, "missing required field 'messages'", param="messages")
    if not isinstance(messages, list):
        raise _wrong("messages", "an array", messages)
    if not messages:
        raise APIError(400, "'messages' must contain at least one message", param="messages")
    checked = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _wrong(f"messages[{i}]", "an object", m)
        role = m.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            got = repr(role[:100]) if isinstance(role, str) else _json_type(role)
            raise APIError(400, f"'messages[{i}].role' must be one of system, developer, user, assistant; "
                                f"got {got}", param=f"messages[{i}].role")
        if "content" not in m:
            raise APIError(400, f"missing required field 'messages[{i}].content'", param=f"messages[{i}].content")
        checked.append({"role": _ROLES[role], "content": _content(i, m["content"])})
    return checked


def chat_request(body: dict, limits: Limits) -> ChatRequest:
    _check_fields(body, _CHAT)
    checked = messages_field(body)
    logprobs = None
    if _bool(body, "logprobs", False):
        logprobs = _int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, 0)
    elif body.get("top_logprobs") is not None:
        raise APIError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    stream, include_usage = _stream(body)
    return ChatRequest(messages=checked, gen=_gen_options(body, limits, logprobs),
                       stream=stream, include_usage=include_usage, n=_choices(body))


def completion_request(body: dict, limits: Limits) -> CompletionRequest:
    _check_fields(body, _COMPLETION)
    if "prompt" not in body:
        raise APIError(400, "missing required field 'prompt'", param="prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]   # the openai client wraps a single prompt this way for some call styles
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompt = token_ids(prompt, "prompt", limits.vocab_size)
    elif not isinstance(prompt, str):
        raise _wrong("prompt", "a string or an array of token ids", prompt)
    if not prompt:
        raise APIError(400, "'prompt' must not be empty", param="prompt")
    if _bool(body, "echo", False):
        raise APIError(400, "'echo' is not supported", param="echo")
    logprobs = _int(body, "logprobs", 0, MAX_TOP_LOGPROBS, None)
    stream, include_usage = _stream(body)
    return CompletionRequest(prompt=prompt, gen=_gen_options(body, limits, logprobs),
                             stream=stream, include_usage=include_usage, n=_choices(body))


def token_ids(value, name: str, vocab_size: int) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise _wrong(name, "an array of integer token ids", value)
    for i, t in enumerate(value):
        if not 0 <= t < vocab_size:
            raise APIError(400, f"'{name}[{i}]' = {t} is not a token id (vocabulary size {vocab_size})", param=name)
    return value


def tokenize_request(body: dict) -> tuple[str, bool, bool, bool]:
    """-> (content, add_special, parse_special, with_pieces), llama.cpp's defaults: add_special false,
    parse_special true, with_pieces false."""
    _check_fields(body, frozenset({"content", "add_special", "parse_special", "with_pieces"}))
    content = body.get("content")
    if content is None:
        raise APIError(400, "missing required field 'content'", param="content")
    if not isinstance(content, str):
        raise _wrong("content", "a string", content)
    return (content, _bool(body, "add_special", False), _bool(body, "parse_special", True),
            _bool(body, "with_pieces", False))


def detokenize_request(body: dict, limits: Limits) -> list[int]:
    _check_fields(body, frozenset({"tokens"}))
    if "tokens" not in body:
        raise APIError(400, "missing required field 'tokens'", param="tokens")
    return token_ids(body["tokens"], "tokens", limits.vocab_size)


# ---- shared with the other request shapes (api_native, api_anthropic, api_responses) ---------------

gen_options = _gen_options     # (body, limits, logprobs) -> GenOptions from the sampling fields
flag = _bool                   # (body, name, default) -> bool


def number(body: dict, name: str, lo, hi, default, integer: bool = False):
    """A number field within [lo, hi] (an integer when `integer`), or `default` when absent or null."""
    return _int(body, name, lo, hi, default) if integer else _num(body, name, lo, hi, default)
