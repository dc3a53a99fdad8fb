"""Conversations with tools -> the messages and `tools` a chat template is rendered with.

    fmt = call_format(template)                   # the CallFormat the template implies (GENERIC if none)
    messages, extra = template_messages(template, messages, request, fmt)
    template.render(messages, **extra)            # extra = {"tools": [...]} for templates that read them

Hugging Face templates read `tools` (OpenAI's [{"type": "function", "function": {...}}]), assistant
messages with `tool_calls` whose `arguments` are objects (not the JSON strings OpenAI sends: templates
write `arguments | tojson`), and `role: "tool"` messages. We pass them that way when the template uses
them. What a template can do is found out by rendering probe conversations once, as minja (llama.cpp's
Jinja engine) does: a template "renders tools" when a probe tool's name appears in its output, and so on.

Templates that know no tools (GENERIC: SmolLM2's, Gemma 3's) get the tools described in the system
prompt, with HERMES's <tool_call> markers; their past calls are written into the assistant's text in
that form, and tool results become user turns in <tool_response> blocks (merged with a neighbouring
user turn, for templates that insist that roles alternate). A system prompt goes into the first user
turn when the template drops or refuses the system role.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .chat_template import ChatTemplate, ChatTemplateError
from .tool_calls import GENERIC, CallFormat, ToolRequest, detect_format

_PROBE = "chatfile_probe_d41d8c"      # a name no template writes by itself
_PROBE_CALL = _PROBE + "_call"


@dataclass(frozen=True)
class Capabilities:
    system_role: bool        # a system message's text reaches the prompt
    tools: bool              # `tools` reach the prompt
    tool_calls: bool         # an assistant message's tool_calls reach the prompt
    call_render: str | None = None   # how it writes a past call of _PROBE_CALL (when tools and calls reach it)


def capabilities(template: ChatTemplate) -> Capabilities:
    """Probed once per template (cached on it)."""
    caps = getattr(template, "_capabilities", None)
    if caps is None:
        user = {"role": "user", "content": "Hi"}
        tool = {"type": "function", "function": {"name": _PROBE + "_fn", "description": "probe",
                                                 "parameters": {"type": "object", "properties": {}}}}
        call = {"role": "assistant", "content": "", "tool_calls": [{
            "id": "abcdefghi", "type": "function",
            "function": {"name": _PROBE_CALL, "arguments": {"x": 1}}}]}
        call_render = _render(template, [user, call], tools=[tool])
        caps = Capabilities(
            system_role=_PROBE + "_sys" in (_render(template, [{"role": "system", "content": _PROBE + "_sys"},
                                                               user]) or ""),
            tools=_PROBE + "_fn" in (_render(template, [user], tools=[tool]) or ""),
            tool_calls=_PROBE_CALL in (call_render or ""))
        if caps.tools and caps.tool_calls:
            caps = Capabilities(caps.system_role, True, True, call_render)
        template._capabilities = caps
    return caps


def _render(template: ChatTemplate, messages: list, **extra) -> str | None:
    try:
        return template.render(messages, add_generation_prompt=False, **extra)
    except ChatTemplateError:
        return None


def call_format(template: ChatTemplate) -> CallFormat:
    """The format the model is asked to call tools in (runtime/tool_calls.py)."""
    return detect_format(capabilities(template).call_render, _PROBE_CALL)


def template_messages(template: ChatTemplate, messages: list[dict], request: ToolRequest | None,
                      fmt: CallFormat) -> tuple[list[dict], dict]:
    """-> (messages as this template wants them, extra render arguments). `messages` are validated
    OpenAI messages (runtime/api_schema.py): content a string or None, tool_calls with JSON-string
    arguments, tool messages with tool_call_id."""
    shown = request is not None and request.choice != "none"   # "none": the model is not told of tools
    names = {c["id"]: c["function"]["name"] for m in messages for c in m.get("tool_calls") or ()}
    if fmt.native:
        out = [_native(m, names) for m in messages]
        return out, ({"tools": [f.openai() for f in request.functions]} if shown else {})
    out = _generic(messages)
    if shown:
        out = _with_system(template, out, describe_tools(request))
    elif not capabilities(template).system_role:
        out = _with_system(template, out, None)
    return out, {}


def _native(m: dict, names: dict) -> dict:
    out = {"role": m["role"], "content": m.get("content") or ""}
    if "reasoning_content" in m:
        out["reasoning_content"] = m["reasoning_content"]
    if m.get("tool_calls"):
        out["tool_calls"] = [{"id": c["id"], "type": "function",
                              "function": {"name": c["function"]["name"],
                                           "arguments": _arguments(c["function"]["arguments"])}}
                             for c in m["tool_calls"]]
    if m["role"] == "tool":
        out["tool_call_id"] = m.get("tool_call_id")
        if m.get("tool_call_id") in names:
            out["name"] = names[m["tool_call_id"]]
    return out


def _arguments(text: str):
    """OpenAI's JSON-string arguments as the object templates expect (left as text if not JSON)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _generic(messages: list[dict]) -> list[dict]:
    out: list[dict] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            calls = [format_call(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]]
            content = "\n".join(([content] if content else []) + calls)
        elif role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        if out and role == "user" and out[-1]["role"] == "user" and (m["role"] == "tool" or _is_response(out[-1])):
            out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + content}
        else:
            out.append({"role": role, "content": content})
            if "reasoning_content" in m:
                out[-1]["reasoning_content"] = m["reasoning_content"]
    return out


def _is_response(m: dict) -> bool:
    return m["content"].endswith("</tool_response>")


def format_call(name: str, arguments: str) -> str:
    """One call in GENERIC's (HERMES's) form."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": _arguments(arguments)},
                                        ensure_ascii=False) + "\n</tool_call>"


def describe_tools(request: ToolRequest) -> str:
    """The system-prompt text that teaches a model with no tool template to call tools."""
    fns = request.callable()
    lines = ["You can call functions (tools). Each one is described below: its name, what it does, "
             "and the JSON schema of its arguments.", ""]
    for f in fns:
        lines.append(json.dumps({"name": f.name, "description": f.description or "",
                                 "parameters": f.parameters}, ensure_ascii=False))
    lines += ["", "To call a function, write a <tool_call> block holding one JSON object with the function's "
              "name and its arguments, like this:",
              '<tool_call>\n{"name": "function_name", "arguments": {"argument": "value"}}\n</tool_call>']
    if request.choice == "function":
        lines.append(f"Call the function {request.forced} now.")
    elif request.choice == "required":
        lines.append("You must call at least one function now.")
    else:
        lines.append("Results come back in <tool_response> blocks. When no function is needed, answer "
                     "normally.")
    if request.parallel and request.choice != "function":
        lines[-1] += " You may call several functions, one block each."
    return "\n".join(lines)


def _with_system(template: ChatTemplate, messages: list[dict], extra: str | None) -> list[dict]:
    """Add `extra` to the system prompt; move the system prompt into the first user turn when the
    template does not show a system message."""
    messages = list(messages)
    if extra is not None:
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": (messages[0]["content"] + "\n\n" + extra).lstrip()}
        else:
            messages.insert(0, {"role": "system", "content": extra})
    if messages and messages[0]["role"] == "system" and not capabilities(template).system_role:
        system = messages.pop(0)["content"]
        if messages and messages[0]["role"] == "user":
            messages[0] = {"role": "user", "content": system + "\n\n" + messages[0]["content"]}
        else:
            messages.insert(0, {"role": "user", "content": system})
    return messages
