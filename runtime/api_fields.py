"""The building blocks of request validation: the error every refusal raises, and checks of one field.

Each check names the field and says what was wrong, as an `APIError` that the server turns into
OpenAI's error shape with a 4xx status (https://platform.openai.com/docs/guides/error-codes). The
request shapes built from them are in runtime/api_schema.py (and api_tools.py, api_native.py, ...).
"""
from __future__ import annotations

import math


class APIError(Exception):
    """A request the server refuses: HTTP status plus OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code
        self.extra = extra or {}       # more keys of the error object

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code,
                          **self.extra}}


def context_exceeded(n_tokens: int, n_ctx: int, advice: str, param: str = "messages") -> APIError:
    """A prompt too long for the context: OpenAI's code, llama-server's type, wording and counts (its
    clients read n_prompt_tokens and n_ctx to shorten the conversation)."""
    return APIError(400, f"the request ({n_tokens} tokens) exceeds the available context size: the context "
                         f"holds {n_ctx} tokens; {advice}", param=param, type="exceed_context_size_error",
                    code="context_length_exceeded", extra={"n_prompt_tokens": n_tokens, "n_ctx": n_ctx})


# ---- field checks ----------------------------------------------------------------------------------

def json_type(value) -> str:
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


def wrong(name: str, want: str, value) -> APIError:
    return APIError(400, f"'{name}' must be {want}, got {json_type(value)}", param=name)


def flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise wrong(name, "a boolean", value)
    return value


def integer(body: dict, name: str, lo: int, hi: int, default):
    value = body.get(name)
    if value is None:
        return default
    # JSON true/false arrive as Python bools, which are ints: refuse them explicitly.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and math.isfinite(value) and not value.is_integer()):
        raise wrong(name, "an integer", value)
    if not lo <= value <= hi:      # also inf and NaN, which parse_body refuses but a caller may pass
        raise APIError(400, f"'{name}' must be between {lo} and {hi}, got {_shown(value)}", param=name)
    return int(value)


def real(body: dict, name: str, lo: float, hi: float, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise wrong(name, "a finite number", value)
    if not lo <= value <= hi:
        raise APIError(400, f"'{name}' must be between {lo:g} and {hi:g}, got {_shown(value)}", param=name)
    return float(value)


def _shown(number) -> str:
    """A number for an error message: short, whatever its size."""
    if isinstance(number, float):
        return f"{number:g}" if math.isfinite(number) else "a number out of range"
    return str(number) if abs(number) < 10**15 else f"{float(number):g}"


def check_fields(body: dict, known: frozenset, prefix: str = "") -> None:
    unknown = sorted(prefix + k for k in body if k not in known)
    if unknown:
        shown = ", ".join(repr(k[:64]) for k in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        raise APIError(400, f"unknown field{'s' if len(unknown) > 1 else ''}: {shown}", param=unknown[0][:64])


def text_parts(content, name: str, kinds: tuple[str, ...] = ("text",), sep: str = "\n") -> str:
    """A string, or an array of {"type": kind, "text": ...} parts (kind one of `kinds`: OpenAI's "text",
    the Responses API's "input_text", Anthropic's text blocks), joined as llama.cpp joins a message's text
    parts (common/chat.cpp): `sep` before each part once some text is there, so leading empty parts add
    nothing. Any other part (an image, a file, a tool block) is refused naming it: the model reads text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise wrong(name, "a string or an array of text parts", content)
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


def message_content(i: int, content) -> str:
    return text_parts(content, f"messages[{i}].content")
