"""Request validation for the OpenAI-compatible API: untrusted JSON in, checked values out.

Every request body is hostile until this module has looked at it. Each check names the field and says
what was wrong, raised as an `APIError` that the server turns into OpenAI's error shape with a 4xx status
(https://platform.openai.com/docs/guides/error-codes). Nothing here touches the model: limits that need
the model (context length, vocabulary size) are passed in by the server. The one-field checks and
APIError live in runtime/api_fields.py, the tool and structured-output fields in runtime/api_tools.py.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from . import api_fields, api_tools
from .api_fields import APIError, check_fields, flag, integer, json_type, real, text_parts, wrong  # noqa: F401
from .constraint import Spec
from .sampler import SamplingParams
from .tool_calls import ToolRequest

MAX_BODY_BYTES = 2 * 1024 * 1024   # a full 32k-token conversation is ~150 KB of JSON; 2 MiB is generous
MAX_STOP = 16                      # OpenAI allows 4; llama.cpp users send a few more
MAX_STOP_CHARS = 512               # per stop string; generate() holds back this much text at worst
MAX_TOP_LOGPROBS = 20              # OpenAI's limit
MAX_PREDICT = 2**31 - 1            # max_tokens when a context shift lets a reply outgrow the context
MAX_SEED = 2**64                   # numpy's SeedSequence takes any non-negative int; we keep it 64-bit
MAX_INT_DIGITS = 32                # longer integer literals are refused (see parse_body)
MAX_CHOICES = 16                   # `n`: choices are generated one after the other


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
    post_sampling_probs: bool = False  # llama.cpp's: logprobs of the distribution sampled from (Sampler.drawn_from)


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
    verbose: bool = False              # llama.cpp's "__verbose" in the (non-streamed) answer
    # llama.cpp's template controls: a conversation ending with an assistant message continues that
    # message (a prefill) unless continue_final_message is false; chat_template_kwargs are more
    # template variables (enable_thinking, ...)
    add_generation_prompt: bool = True
    continue_final: bool = False
    template_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | list[int]            # text, or token ids used as they are
    gen: GenOptions
    stream: bool = False
    include_usage: bool = False
    n: int = 1
    structure: Spec | None = None      # llama.cpp's `json_schema` / `grammar`
    verbose: bool = False


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

    Refused here, naming the field, wherever in the body they are (so no later check, arithmetic or
    echo of an ignored field meets them): an integer of more than MAX_INT_DIGITS digits (Python cannot
    even print one of over 4300), a number past float range (`1e400`), NaN and Infinity (which JSON
    does not have; Python's parser accepts them), and a lone UTF-16 surrogate (`"\\ud800"`), which is
    no character and cannot be encoded."""
    if not raw:
        raise APIError(400, "request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise APIError(400, f"request body is not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})")
    bad: list[_BadNumber] = []
    try:
        body = json.loads(text, parse_int=lambda s: _number(s, int, bad), parse_float=lambda s: _number(s, float, bad),
                          parse_constant=lambda s: _number(s, None, bad))
    except json.JSONDecodeError as e:
        raise APIError(400, f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
    except RecursionError:
        raise APIError(400, "request body is not valid JSON: nested too deeply")
    if not isinstance(body, dict):
        raise APIError(400, f"request body must be a JSON object, got {json_type(body)}")
    if bad:                                       # rare: only then walk the body to find the field
        where, number = _first(body, lambda v: isinstance(v, _BadNumber))
        raise APIError(400, f"'{where}' {number.reason}", param=where)
    if _SURROGATE_ESCAPE.search(text):
        found = _first(body, lambda v: isinstance(v, str) and _SURROGATE.search(v))
        if found is not None:
            raise APIError(400, f"'{found[0]}' contains a lone UTF-16 surrogate (\\uD800-\\uDFFF escape "
                                "without its pair), which is not a character", param=found[0])
    return body


class _BadNumber:
    def __init__(self, reason: str):
        self.reason = reason


def _number(literal: str, kind, bad: list):
    if kind is int and len(literal.lstrip("-")) <= MAX_INT_DIGITS:
        return int(literal)
    if kind is float:
        value = float(literal)
        if math.isfinite(value):
            return value
        reason = "is a number out of range"
    elif kind is int:
        reason = f"is a number of {len(literal.lstrip('-'))} digits; at most {MAX_INT_DIGITS} are accepted"
    else:
        reason = f"must be a finite number (JSON has no {literal})"
    bad.append(_BadNumber(reason))
    return bad[-1]


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _first(body, test) -> tuple[str, object] | None:
    """(path, value) of the first value in document order for which test(value) holds, keys included
    ('messages[0].content'). Iterative: the body may nest as deep as the JSON parser allowed."""
    stack = [("", body)]
    while stack:
        path, value = stack.pop()
        if test(value):
            return path or "(body)", value
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                name = f"{path}.{key}" if path else key
                if test(key):
                    return ascii(name), key
                stack.append((name, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None


# ---- field checks ----------------------------------------------------------------------------------

def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise wrong("stop", "a string or an array of strings", value)
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
    stream = flag(body, "stream", False)
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise wrong("stream_options", "an object", options)
    if not stream:
        raise APIError(400, "'stream_options' is only allowed when 'stream' is true", param="stream_options")
    check_fields(options, frozenset({"include_usage", "include_obfuscation"}))
    return stream, flag(options, "include_usage", False)


# Fields every generating endpoint shares: OpenAI's, then llama.cpp's extras. Ignored on purpose:
# `model` (one model per server), `user`, `store`, `metadata` (bookkeeping that changes no output).
_COMMON = frozenset({
    "model", "max_tokens", "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty",
    "n", "stream", "stream_options", "user", "store", "metadata",
    "top_k", "min_p", "repeat_penalty", "repeat_last_n", "cache_prompt", "logit_bias", "json_schema", "grammar",
    # llama.cpp fields llama-server clients send: n_keep is read (the context shift); the others change
    # nothing here (slots are chosen by prompt, the sampler order is fixed) and are accepted
    "id_slot", "n_keep", "n_discard", "samplers", "n_cache_reuse", "min_keep", "timings_per_token",
    "n_predict",   # llama.cpp's name for max_tokens (-1: the server's default); max_tokens wins
    "verbose",     # llama.cpp's: the answer also carries "__verbose" (the prompt as text, counts, timings)
})
_CHAT = _COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs", "response_format", "tools",
                   "tool_choice", "parallel_tool_calls",
                   "add_generation_prompt", "continue_final_message", "chat_template_kwargs"}
# variables the chat template gets from the server, which chat_template_kwargs cannot replace
_TEMPLATE_RESERVED = frozenset({"messages", "bos_token", "eos_token", "add_generation_prompt", "raise_exception",
                                "strftime_now", "tools"})
_COMPLETION = _COMMON | {"prompt", "logprobs", "echo"}


def _choices(body: dict) -> int:
    return integer(body, "n", 1, MAX_CHOICES, 1)


def _gen_options(body: dict, limits: Limits, logprobs: int | None) -> GenOptions:
    defaults = limits.defaults
    seed = integer(body, "seed", -(2**63), MAX_SEED - 1, None)
    params = SamplingParams(
        temperature=real(body, "temperature", 0.0, 2.0, defaults.temperature),
        top_k=integer(body, "top_k", 0, limits.vocab_size, defaults.top_k),
        top_p=real(body, "top_p", 0.0, 1.0, defaults.top_p),
        min_p=real(body, "min_p", 0.0, 1.0, defaults.min_p),
        repeat_penalty=real(body, "repeat_penalty", 0.0, 10.0, defaults.repeat_penalty),
        repeat_last_n=integer(body, "repeat_last_n", -1, limits.n_ctx, defaults.repeat_last_n),
        presence_penalty=real(body, "presence_penalty", -2.0, 2.0, defaults.presence_penalty),
        frequency_penalty=real(body, "frequency_penalty", -2.0, 2.0, defaults.frequency_penalty),
        seed=defaults.seed if seed is None else seed % MAX_SEED,   # OpenAI allows negative seeds
    )
    most = MAX_PREDICT if limits.context_shift else limits.n_ctx
    max_tokens = integer(body, "max_tokens", 1, most, None)
    if max_tokens is None and body.get("n_predict", -1) != -1:
        max_tokens = integer(body, "n_predict", 1, most, None)
    if "max_completion_tokens" in body:   # OpenAI's newer name wins, as in OpenAI's API
        max_tokens = integer(body, "max_completion_tokens", 1, most, None)
    return GenOptions(params=params, max_tokens=limits.max_tokens if max_tokens is None else max_tokens,
                      stop=_stop(body), logprobs=logprobs, cache_prompt=flag(body, "cache_prompt", True),
                      logit_bias=api_tools.logit_bias(body, limits.vocab_size),
                      n_keep=integer(body, "n_keep", -1, limits.n_ctx, limits.n_keep))


# ---- endpoints -------------------------------------------------------------------------------------



def messages_field(body: dict) -> list[dict]:
    """The checked `messages` of a chat body: [{"role", "content": str | None}] (roles mapped to the
    template's), with `tool_calls` on assistant messages and `tool_call_id` on tool messages."""
    messages = body.get("messages")
    if messages is None:
        raise APIError(400, "missing required field 'messages'", param="messages")
    if not isinstance(messages, list):
        raise wrong("messages", "an array", messages)
    if not messages:
        raise APIError(400, "'messages' must contain at least one message", param="messages")
    return [api_tools.message(i, m) for i, m in enumerate(messages)]


def chat_request(body: dict, limits: Limits) -> ChatRequest:
    check_fields(body, _CHAT)
    checked = messages_field(body)
    logprobs = None
    if flag(body, "logprobs", False):
        logprobs = integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, 0)
    elif body.get("top_logprobs") is not None:
        raise APIError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    stream, include_usage = _stream(body)
    generation_prompt, continue_final = _continuation(body, checked)
    return ChatRequest(messages=checked, gen=_gen_options(body, limits, logprobs),
                       stream=stream, include_usage=include_usage, n=_choices(body), tools=api_tools.tools(body),
                       structure=api_tools.structure(body), verbose=flag(body, "verbose", False),
                       add_generation_prompt=generation_prompt,
                       continue_final=continue_final, template_kwargs=template_kwargs(body))


def _continuation(body: dict, messages: list[dict]) -> tuple[bool, bool]:
    """(add_generation_prompt, continue the last message), as llama-server decides them: a conversation
    that ends with an assistant message (without tool calls) continues it, the reply being the rest of
    that message; `continue_final_message` (vLLM's name) asks for that explicitly, false turns it off."""
    last = messages[-1]
    value = body.get("continue_final_message")
    if value not in (None, True, False, "content"):
        raise wrong("continue_final_message", 'a boolean or "content"', value) if not isinstance(value, str) else \
            APIError(400, f"'continue_final_message' {value!r} is not supported (true or \"content\")",
                     param="continue_final_message")
    generation_prompt = flag(body, "add_generation_prompt", True)
    if value in (True, "content"):
        if body.get("add_generation_prompt") is True:
            raise APIError(400, "'add_generation_prompt' and 'continue_final_message' cannot both be true",
                           param="continue_final_message")
        if last["role"] != "assistant" or last.get("tool_calls"):
            raise APIError(400, "'continue_final_message' needs the last message to be an assistant message "
                                "without tool calls", param="continue_final_message")
        return False, True
    if value is False or last["role"] != "assistant" or last.get("tool_calls"):
        return generation_prompt, False
    if len(messages) >= 2 and messages[-2]["role"] == "assistant":
        raise APIError(400, "the conversation ends with 2 assistant messages: only the last message may be "
                            "an assistant message to continue", param="messages")
    return False, True


def template_kwargs(body: dict) -> dict:
    """llama.cpp's `chat_template_kwargs`: more variables for the chat template (e.g. enable_thinking);
    the ones the renderer sets itself are left out."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise wrong("chat_template_kwargs", "an object", kwargs)
    return {k: v for k, v in kwargs.items() if k not in _TEMPLATE_RESERVED}


def completion_request(body: dict, limits: Limits) -> CompletionRequest:
    check_fields(body, _COMPLETION)
    if "prompt" not in body:
        raise APIError(400, "missing required field 'prompt'", param="prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]   # the openai client wraps a single prompt this way for some call styles
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompt = token_ids(prompt, "prompt", limits.vocab_size)
    elif not isinstance(prompt, str):
        raise wrong("prompt", "a string or an array of token ids", prompt)
    if not prompt:
        raise APIError(400, "'prompt' must not be empty", param="prompt")
    if flag(body, "echo", False):
        raise APIError(400, "'echo' is not supported", param="echo")
    logprobs = integer(body, "logprobs", 0, MAX_TOP_LOGPROBS, None)
    stream, include_usage = _stream(body)
    return CompletionRequest(prompt=prompt, gen=_gen_options(body, limits, logprobs),
                             stream=stream, include_usage=include_usage, n=_choices(body),
                             structure=api_tools.structure(body), verbose=flag(body, "verbose", False))


def token_ids(value, name: str, vocab_size: int) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise wrong(name, "an array of integer token ids", value)
    for i, t in enumerate(value):
        if not 0 <= t < vocab_size:
            raise APIError(400, f"'{name}[{i}]' = {t} is not a token id (vocabulary size {vocab_size})", param=name)
    return value


def tokenize_request(body: dict) -> tuple[str, bool, bool, bool]:
    """-> (content, add_special, parse_special, with_pieces), llama.cpp's defaults: add_special false,
    parse_special true, with_pieces false."""
    check_fields(body, frozenset({"content", "add_special", "parse_special", "with_pieces"}))
    content = body.get("content")
    if content is None:
        raise APIError(400, "missing required field 'content'", param="content")
    if not isinstance(content, str):
        raise wrong("content", "a string", content)
    return (content, flag(body, "add_special", False), flag(body, "parse_special", True),
            flag(body, "with_pieces", False))


def detokenize_request(body: dict, limits: Limits) -> list[int]:
    check_fields(body, frozenset({"tokens"}))
    if "tokens" not in body:
        raise APIError(400, "missing required field 'tokens'", param="tokens")
    return token_ids(body["tokens"], "tokens", limits.vocab_size)


# ---- shared with the other request shapes (api_native, api_anthropic, api_responses) ---------------

gen_options = _gen_options     # (body, limits, logprobs) -> GenOptions from the sampling fields
structure_field = api_tools.structure   # (body) -> Spec | None from response_format / json_schema / grammar


def number(body: dict, name: str, lo, hi, default, integer: bool = False):
    """A number field within [lo, hi] (an integer when `integer`), or `default` when absent or null."""
    return api_fields.integer(body, name, lo, hi, default) if integer else real(body, name, lo, hi, default)
