"""Request fields for tools and structured output: untrusted JSON in, checked values out.

    tools(body) -> ToolRequest | None          tools, tool_choice, parallel_tool_calls
    structure(body) -> Spec | None             response_format, llama.cpp's json_schema and grammar
    logit_bias(body, vocab_size) -> {id: bias} OpenAI's object or llama.cpp's [[id, bias | false]]
    message(i, m) -> dict                      one chat message, tool calls and tool results included

Only the shapes are checked here; whether a schema or grammar compiles is found out against the model's
vocabulary (runtime/structured.py), with the same kind of 400 naming the field.
"""
from __future__ import annotations

import json
import math
import re

from .api_fields import APIError, flag, check_fields, message_content, json_type, wrong
from .constraint import Spec
from .tool_calls import Function, ToolRequest

MAX_TOOLS = 128                    # OpenAI's limit on `tools`
MAX_LOGIT_BIAS = 1024              # entries in `logit_bias` (OpenAI allows 300)
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def logit_bias(body: dict, vocab_size: int) -> dict[int, float] | None:
    """OpenAI's {"token id": bias in [-100, 100]}, or llama.cpp's [[id, bias | false], ...] (false bans)."""
    value = body.get("logit_bias")
    if value is None:
        return None
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and all(isinstance(e, list) and len(e) == 2 for e in value):
        items = [(k, v) for k, v in value]
    else:
        raise wrong("logit_bias", 'an object {"token id": bias} or an array of [token id, bias] pairs', value)
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


def structure(body: dict) -> Spec | None:
    """At most one of response_format (chat), json_schema and grammar (GBNF) constrains the output."""
    given = [k for k in ("response_format", "json_schema", "grammar") if body.get(k) not in (None, "")]
    if isinstance(body.get("response_format"), dict) and body["response_format"].get("type") == "text":
        check_fields(body["response_format"], frozenset({"type"}), "response_format.")
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
            raise wrong("grammar", "a non-empty GBNF grammar string", value)
        return Spec("gbnf", value, "grammar")
    if name == "json_schema":
        if not isinstance(value, dict):
            raise wrong("json_schema", "a JSON schema object", value)
        return Spec("json_schema", value, "json_schema")
    if not isinstance(value, dict):
        raise wrong("response_format", "an object", value)
    kind = value.get("type")
    if kind == "json_object":
        check_fields(value, frozenset({"type", "schema"}), "response_format.")
        schema = value.get("schema")        # llama.cpp's extension: json_object with a schema
        if schema is None:
            return Spec("json_object", None, "response_format")
        if not isinstance(schema, dict):
            raise wrong("response_format.schema", "a JSON schema object", schema)
        return Spec("json_schema", schema, "response_format.schema")
    if kind == "json_schema":
        check_fields(value, frozenset({"type", "json_schema"}), "response_format.")
        js = value.get("json_schema")
        if not isinstance(js, dict):
            raise wrong("response_format.json_schema", 'an object {"name", "schema", "strict"}', js)
        check_fields(js, frozenset({"name", "schema", "strict", "description"}), "response_format.json_schema.")
        if js.get("name") is not None and not isinstance(js["name"], str):   # OpenAI requires it; llama.cpp not
            raise wrong("response_format.json_schema.name", "a string", js["name"])
        flag(js, "strict", False)
        schema = js.get("schema", {})
        if not isinstance(schema, dict):
            raise wrong("response_format.json_schema.schema", "a JSON schema object", schema)
        return Spec("json_schema", schema, "response_format.json_schema.schema")
    raise APIError(400, f"'response_format.type' must be text, json_object or json_schema, got {str(kind)[:40]!r}",
                   param="response_format.type")


def tools(body: dict) -> ToolRequest | None:
    """tools, tool_choice, parallel_tool_calls -> a ToolRequest (None without tools)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    parallel = flag(body, "parallel_tool_calls", True)
    if tools is None or tools == []:
        if choice not in (None, "none"):
            raise APIError(400, "'tool_choice' needs 'tools'", param="tool_choice")
        return None
    if not isinstance(tools, list):
        raise wrong("tools", "an array of tools", tools)
    if len(tools) > MAX_TOOLS:
        raise APIError(400, f"'tools' has {len(tools)} entries; at most {MAX_TOOLS} are allowed", param="tools")
    functions = []
    for i, t in enumerate(tools):
        name = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise APIError(400, f"'{name}' must be {{\"type\": \"function\", \"function\": {{...}}}}", param=name)
        check_fields(t, frozenset({"type", "function"}), f"{name}.")
        fn = t["function"]
        check_fields(fn, frozenset({"name", "description", "parameters", "strict"}), f"{name}.function.")
        fname = fn.get("name")
        if not isinstance(fname, str) or not _FUNCTION_NAME.fullmatch(fname):
            raise APIError(400, f"'{name}.function.name' must be 1-64 letters, digits, '_', '-' or '.', got "
                                f"{str(fname)[:70]!r}", param=f"{name}.function.name")
        if any(f.name == fname for f in functions):
            raise APIError(400, f"'{name}.function.name': two tools are named {fname!r}", param=f"{name}.function.name")
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise wrong(f"{name}.function.description", "a string", description)
        parameters = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise wrong(f"{name}.function.parameters", "a JSON schema object", parameters)
        functions.append(Function(fname, description, parameters, flag(fn, "strict", False), source=fn))
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


def message(i: int, m) -> dict:
    """One message of `messages`, checked; content None only for an assistant message with tool calls."""
    if not isinstance(m, dict):
        raise wrong(f"messages[{i}]", "an object", m)
    role = m.get("role")
    if not isinstance(role, str) or role not in ROLES:
        got = repr(role[:100]) if isinstance(role, str) else json_type(role)
        raise APIError(400, f"'messages[{i}].role' must be one of system, developer, user, assistant, tool; "
                            f"got {got}", param=f"messages[{i}].role")
    calls = m.get("tool_calls") if role == "assistant" else None
    if calls is not None:
        calls = _message_calls(i, calls)
    if m.get("content") is None and not calls:
        raise APIError(400, f"missing required field 'messages[{i}].content'", param=f"messages[{i}].content")
    out = {"role": ROLES[role], "content": None if m.get("content") is None else message_content(i, m["content"])}
    if calls:
        out["tool_calls"] = calls
    reasoning = m.get("reasoning_content") if role == "assistant" else None
    if reasoning is not None:        # earlier reasoning sent back, as llama-server's clients do: templates
        if not isinstance(reasoning, str):   # that show it (Qwen 3, DeepSeek R1, ...) render it
            raise wrong(f"messages[{i}].reasoning_content", "a string", reasoning)
        out["reasoning_content"] = reasoning
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
        raise wrong(name, "an array", calls)
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
