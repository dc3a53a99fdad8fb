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

from .constraint import Spec
from .sampler import SamplingParams
from .tool_calls import Function, ToolRequest

MAX_BODY_BYTES = 2 * 1024 * 1024   # a full 32k-token conversation is ~150 KB of JSON; 2 MiB is generous
MAX_STOP = 16                      # OpenAI allows 4; llama.cpp users send a few more
MAX_STOP_CHARS = 512               # per stop string; generate() holds back this much text at worst
MAX_TOP_LOGPROBS = 20              # OpenAI's limit
MAX_PREDICT = 2**31 - 1            # max_tokens when a context shift lets a reply outgrow the context
MAX_SEED = 2**64                   # numpy's SeedSequence takes any non-negative int; we keep it 64-bit
MAX_INT_DIGITS = 32                # longer integer literals are parsed as floats (see parse_body)
MAX_CHOICES = 16                   # `n`: choices are generated one after the other
MAX_TOOLS = 128                    # OpenAI's limit on `tools`
MAX_LOGIT_BIAS = 1024              # entries in `logit_bias` (OpenAI allows 300)


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
    n_keep: int = 0                    # llama.cpp's: positions a context shift keeps (-1: the whole prompt)
    logit_bias: dict[int, float] | None = None   # token id -> added to its logit (sampler.Sampler)
    constraint: object | None = None   # a compiled output constraint (sampler.Sampler), opaque here


@dataclass(frozen=True)
class ChatRequest:
    # [{"role": "system"|"user"|"assistant"|"tool", "content": str | None}], assistant messages with
    # "tool_calls": [{"id", "type": "function", "function": {"name", "arguments": str}}], tool messages
    # with "tool_call_id"
    messages: list[dict]
    gen: GenOptions
    stream: bool = False
    include_usage: bool = False
    n: int = 1                         # choices, generated one after the other
    tools: ToolRequest | None = None   # `tools`, `tool_choice`, `parallel_tool_calls`
    structure: Spec | None = None      # `response_format`, or llama.cpp's `json_schema` / `grammar`


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | list[int]            # text, or token ids used as they are
    gen: GenOptions
    stream: bool = False
    include_usage: bool = False
    n: int = 1
    structure: Spec | None = None      # llama.cpp's `json_schema` / `grammar`


@dataclass(frozen=True)
class Limits:
    """What a request is checked against and filled in from: the loaded model's sizes, and the sampling
    defaults the server was started with (the command line's --temp etc., as llama.cpp's server does)."""
    n_ctx: int
    vocab_size: int
    defaults: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = -1
    n_keep: int = 0                    # --keep: what a request that sets no n_keep gets
    context_shift: bool = False        # --context-shift: max_tokens may then exceed the context


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


def _check_fields(body: dict, known: frozenset, prefix: str = "") -> None:
    unknown = sorted(prefix + k for k in body if k not in known)
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
    "top_k", "min_p", "repeat_penalty", "repeat_last_n", "cache_prompt", "logit_bias", "json_schema", "grammar",
    # llama.cpp fields llama-server clients send: n_keep is read (the context shift); the others change
    # nothing here (slots are chosen by prompt, the sampler order is fixed) and are accepted
    "id_slot", "n_keep", "n_discard", "samplers", "n_cache_reuse", "min_keep", "timings_per_token",
})
_CHAT = _COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs", "response_format", "tools",
                   "tool_choice", "parallel_tool_calls"}
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
    most = MAX_PREDICT if limits.context_shift else limits.n_ctx
    max_tokens = _int(body, "max_tokens", 1, most, None)
    if "max_completion_tokens" in body:   # OpenAI's newer name wins, as in OpenAI's API
        max_tokens = _int(body, "max_completion_tokens", 1, most, None)
    return GenOptions(params=params, max_tokens=limits.max_tokens if max_tokens is None else max_tokens,
                      stop=_stop(body), logprobs=logprobs, cache_prompt=_bool(body, "cache_prompt", True),
                      logit_bias=_logit_bias(body, limits.vocab_size),
                      n_keep=_int(body, "n_keep", -1, limits.n_ctx, limits.n_keep))


def _logit_bias(body: dict, vocab_size: int) -> dict[int, float] | None:
    """OpenAI's {"token id": bias in [-100, 100]}, or llama.cpp's [[id, bias | false], ...] (false bans)."""
    value = body.get("logit_bias")
    if value is None:
        return None
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and all(isinstance(e, list) and len(e) == 2 for e in value):
        items = [(k, v) for k, v in value]
    else:
        raise _wrong("logit_bias", 'an object {"token id": bias} or an array of [token id, bias] pairs', value)
    if len(items) > MAX_LOGIT_BIAS:
        raise APIError(400, f"'logit_bias' has {len(items)} entries; at most {MAX_LOGIT_BIAS} are allowed",
                       param="logit_bias")
    bias: dict[int, float] = {}
    for key, v in items:
        tid = int(key) if isinstance(key, str) and key.strip().lstrip("-").isdigit() else key
        if isinstance(tid, bool) or not isinstance(tid, int):
            raise APIError(400, f"'logit_bias' keys must be token ids, got {str(key)[:40]!r}", param="logit_bias")
        if not 0 <= tid < vocab_size:
            raise APIError(400, f"'logit_bias' names token {tid}, outside the vocabulary (size {vocab_size})",
                           param="logit_bias")
        if v is False:
            v = -math.inf
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not -100 <= v <= 100:
            raise APIError(400, f"'logit_bias' values must be numbers from -100 to 100 (or false), got "
                                f"{str(v)[:40]}", param="logit_bias")
        bias[tid] = float(v)
    return bias or None


def _structure(body: dict) -> Spec | None:
    """At most one of response_format (chat), json_schema and grammar (GBNF) constrains the output."""
    given = [k for k in ("response_format", "json_schema", "grammar") if body.get(k) not in (None, "")]
    if isinstance(body.get("response_format"), dict) and body["response_format"].get("type") == "text":
        _check_fields(body["response_format"], frozenset({"type"}), "response_format.")
        given.remove("response_format")
    if len(given) > 1:
        raise APIError(400, f"give only one of {', '.join(map(repr, given))}: each constrains the whole output",
                       param=given[1])
    if not given:
        return None
    name = given[0]
    value = body[name]
    if name == "grammar":
        if not isinstance(value, str) or not value.strip():
            raise _wrong("grammar", "a non-empty GBNF grammar string", value)
        return Spec("gbnf", value, "grammar")
    if name == "json_schema":
        if not isinstance(value, dict):
            raise _wrong("json_schema", "a JSON schema object", value)
        return Spec("json_schema", value, "json_schema")
    if not isinstance(value, dict):
        raise _wrong("response_format", "an object", value)
    kind = value.get("type")
    if kind == "json_object":
        _check_fields(value, frozenset({"type", "schema"}), "response_format.")
        schema = value.get("schema")        # llama.cpp's extension: json_object with a schema
        if schema is None:
            return Spec("json_object", None, "response_format")
        if not isinstance(schema, dict):
            raise _wrong("response_format.schema", "a JSON schema object", schema)
        return Spec("json_schema", schema, "response_format.schema")
    if kind == "json_schema":
        _check_fields(value, frozenset({"type", "json_schema"}), "response_format.")
        js = value.get("json_schema")
        if not isinstance(js, dict):
            raise _wrong("response_format.json_schema", 'an object {"name", "schema", "strict"}', js)
        _check_fields(js, frozenset({"name", "schema", "strict", "description"}), "response_format.json_schema.")
        if js.get("name") is not None and not isinstance(js["name"], str):   # OpenAI requires it; llama.cpp not
            raise _wrong("response_format.json_schema.name", "a string", js["name"])
        _bool(js, "strict", False)
        schema = js.get("schema", {})
        if not isinstance(schema, dict):
            raise _wrong("response_format.json_schema.schema", "a JSON schema object", schema)
        return Spec("json_schema", schema, "response_format.json_schema.schema")
    raise APIError(400, f"'response_format.type' must be text, json_object or json_schema, got {str(kind)[:40]!r}",
                   param="response_format.type")


def _tools(body: dict) -> ToolRequest | None:
    """tools, tool_choice, parallel_tool_calls -> a ToolRequest (None without tools)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    parallel = _bool(body, "parallel_tool_calls", True)
    if tools is None or tools == []:
        if choice not in (None, "none"):
            raise APIError(400, "'tool_choice' needs 'tools'", param="tool_choice")
        return None
    if not isinstance(tools, list):
        raise _wrong("tools", "an array of tools", tools)
    if len(tools) > MAX_TOOLS:
        raise APIError(400, f"'tools' has {len(tools)} entries; at most {MAX_TOOLS} are allowed", param="tools")
    functions = []
    for i, t in enumerate(tools):
        name = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise APIError(400, f"'{name}' must be {{\"type\": \"function\", \"function\": {{...}}}}", param=name)
        _check_fields(t, frozenset({"type", "function"}), f"{name}.")
        fn = t["function"]
        _check_fields(fn, frozenset({"name", "description", "parameters", "strict"}), f"{name}.function.")
        fname = fn.get("name")
        if not isinstance(fname, str) or not _FUNCTION_NAME.fullmatch(fname):
            raise APIError(400, f"'{name}.function.name' must be 1-64 letters, digits, '_', '-' or '.', got "
                                f"{str(fname)[:70]!r}", param=f"{name}.function.name")
        if any(f.name == fname for f in functions):
            raise APIError(400, f"'{name}.function.name': two tools are named {fname!r}", param=f"{name}.function.name")
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise _wrong(f"{name}.function.description", "a string", description)
        parameters = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise _wrong(f"{name}.function.parameters", "a JSON schema object", parameters)
        functions.append(Function(fname, description, parameters, _bool(fn, "strict", False), source=fn))
    forced = None
    if choice is None:
        choice = "auto"
    elif isinstance(choice, dict):
        fn = choice.get("function")
        if choice.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise APIError(400, "'tool_choice' must be auto, none, required or "
                                '{"type": "function", "function": {"name": ...}}', param="tool_choice")
        forced, choice = fn["name"], "function"
        if all(f.name != forced for f in functions):
            raise APIError(400, f"'tool_choice' names {forced[:70]!r}, which is not in 'tools'", param="tool_choice")
    elif choice not in ("auto", "none", "required"):
        raise APIError(400, "'tool_choice' must be auto, none, required or "
                            '{"type": "function", "function": {"name": ...}}', param="tool_choice")
    return ToolRequest(tuple(functions), choice, forced, parallel)


# ---- endpoints -------------------------------------------------------------------------------------

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def text_parts(content, name: str, kinds: tuple[str, ...] = ("text",), sep: str = "\n") -> str:
    """A string, or an array of {"type": kind, "text": ...} parts (kind one of `kinds`: OpenAI's "text",
    the Responses API's "input_text", Anthropic's text blocks), joined as llama.cpp joins a message's text
    parts (common/chat.cpp): `sep` before each part once some text is there, so leading empty parts add
    nothing. Any other part (an image, a file, a tool block) is refused naming it: the model reads text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _wrong(name, "a string or an array of text parts", content)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds or not isinstance(part.get("text"), str):
            got = f" (got a {kind[:40]!r} part)" if isinstance(kind, str) and kind not in kinds else ""
            raise APIError(400, f"'{name}[{j}]' must be {{\"type\": \"{kinds[0]}\", \"text\": string}}; "
                                f"this model reads text only{got}", param=name)
        if texts or part["text"]:
            texts.append(part["text"])
    return sep.join(texts)


def _content(i: int, content) -> str:
    return text_parts(content, f"messages[{i}].content")


def messages_field(body: dict) -> list[dict]:
    """The checked `messages` of a chat body: [{"role", "content": str | None}] (roles mapped to the
    template's), with `tool_calls` on assistant messages and `tool_call_id` on tool messages."""
    messages = body.get("messages")
    if messages is None:
        raise APIError(400, "missing required field 'messages'", param="messages")
    if not isinstance(messages, list):
        raise _wrong("messages", "an array", messages)
    if not messages:
        raise APIError(400, "'messages' must contain at least one message", param="messages")
    return [_message(i, m) for i, m in enumerate(messages)]


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
                       stream=stream, include_usage=include_usage, n=_choices(body), tools=_tools(body),
                       structure=_structure(body))


def _message(i: int, m) -> dict:
    """One message of `messages`, checked; content None only for an assistant message with tool calls."""
    if not isinstance(m, dict):
        raise _wrong(f"messages[{i}]", "an object", m)
    role = m.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        got = repr(role[:100]) if isinstance(role, str) else _json_type(role)
        raise APIError(400, f"'messages[{i}].role' must be one of system, developer, user, assistant, tool; "
                            f"got {got}", param=f"messages[{i}].role")
    calls = m.get("tool_calls") if role == "assistant" else None
    if calls is not None:
        calls = _message_calls(i, calls)
    if m.get("content") is None and not calls:
        raise APIError(400, f"missing required field 'messages[{i}].content'", param=f"messages[{i}].content")
    out = {"role": _ROLES[role], "content": None if m.get("content") is None else _content(i, m["content"])}
    if calls:
        out["tool_calls"] = calls
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str):
            raise APIError(400, f"'messages[{i}].tool_call_id' must be the string id of the call this answers",
                           param=f"messages[{i}].tool_call_id")
        out["tool_call_id"] = call_id
    return out


def _message_calls(i: int, calls) -> list[dict]:
    name = f"messages[{i}].tool_calls"
    if not isinstance(calls, list):
        raise _wrong(name, "an array", calls)
    checked = []
    for j, c in enumerate(calls):
        fn = c.get("function") if isinstance(c, dict) else None
        arguments = fn.get("arguments") if isinstance(fn, dict) else None
        if isinstance(arguments, dict):          # ollama's clients send the object itself
            arguments = json.dumps(arguments, ensure_ascii=False)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or \
                not isinstance(arguments, (str, type(None))) or not isinstance(c.get("id", ""), str):
            raise APIError(400, f"'{name}[{j}]' must be {{\"id\": string, \"type\": \"function\", \"function\": "
                                '{"name": string, "arguments": JSON text}}', param=f"{name}[{j}]")
        checked.append({"id": c.get("id") or f"call_{i}_{j}", "type": "function",
                        "function": {"name": fn["name"], "arguments": arguments or "{}"}})
    return checked


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
                             stream=stream, include_usage=include_usage, n=_choices(body),
                             structure=_structure(body))


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
structure_field = _structure   # (body) -> Spec | None from response_format / json_schema / grammar


def number(body: dict, name: str, lo, hi, default, integer: bool = False):
    """A number field within [lo, hi] (an integer when `integer`), or `default` when absent or null."""
    return _int(body, name, lo, hi, default) if integer else _num(body, name, lo, hi, default)
