"""Tool calls: the call formats models are trained on, the grammar that keeps a call valid, and the parser
that turns generated text back into OpenAI's `tool_calls`, incrementally (for streaming) or at once.

    fmt = detect_format(rendered_call, name)          # HERMES, LLAMA3, MISTRAL, or GENERIC
    grammar = call_grammar(fmt, tools, vocab_ids)     # Lark text for runtime.constraint
    parser = CallParser(fmt, open_token_id)
    for piece in generation:  events = parser.feed(piece.token_id, piece.text)   # Content / CallStart / CallArgs
    events = parser.finish();  parser.content, parser.calls

Formats (what the model writes after the generation prompt):
  HERMES   Qwen 2.5/3, Hermes 2/3:   text? <tool_call>\\n{"name": N, "arguments": {...}}\\n</tool_call> (more calls)
  LLAMA3   Llama 3.1-3.3 JSON tools: <|python_tag|>? {"name": N, "parameters": {...}}   (one call, at the start)
  MISTRAL  Mistral Nemo / v3:        text? [TOOL_CALLS][{"name": N, "arguments": {...}, "id": ...}, ...]
  GENERIC  templates that know no tools: HERMES's markers, taught by a system prompt (runtime/tool_prompt.py)

The grammar is lazy where free text is allowed (tool_choice "auto"): any text, until the model writes the
format's opening marker; from there the call must be one of the tools, its name first, its arguments
valid against that tool's parameter schema. "required" and a named function force a call at once.

Provenance: the formats are those the templates in each family's tokenizer_config.json render (and
llama.cpp's common/chat.cpp parses); the code is ours.
"""
from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field

from .constraint import JSON_WHITESPACE, closed



@dataclass(frozen=True)
class Function:
    """One entry of the request's `tools` (OpenAI: {"type": "function", "function": {...}})."""
    name: str
    description: str | None = None
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False
    source: dict | None = field(default=None, compare=False)   # the request's "function" object as sent

    def openai(self) -> dict:
        """The tool in OpenAI's request shape, which is what Hugging Face chat templates read (the
        request's own object when there is one: templates write it out with its keys in their order)."""
        fn = self.source
        if fn is None:
            fn = {"name": self.name, **({"description": self.description} if self.description is not None else {}),
                  "parameters": self.parameters}
        return {"type": "function", "function": fn}


@dataclass(frozen=True)
class ToolRequest:
    functions: tuple[Function, ...]
    choice: str = "auto"              # "auto" | "none" | "required" | "function"
    forced: str | None = None         # the function's name when choice == "function"
    parallel: bool = True             # parallel_tool_calls

    def callable(self) -> tuple[Function, ...]:
        """The functions the model may call under this tool_choice."""
        if self.choice == "none":
            return ()
        if self.choice == "function":
            return tuple(f for f in self.functions if f.name == self.forced)
        return self.functions


@dataclass(frozen=True)
class CallFormat:
    name: str
    open: str                  # the marker that starts a call (or the list of calls)
    close: str                 # the marker after each call ("" when none)
    args_key: str              # "arguments" or "parameters"
    as_list: bool = False      # MISTRAL: one marker, then a JSON array of calls
    at_start_only: bool = False   # LLAMA3: a call is the whole reply, the marker optional
    id_chars: int = 24         # length of the ids we make up (Mistral's templates insist on 9)
    native: bool = True        # the template renders `tools` itself


HERMES = CallFormat("hermes", "<tool_call>", "</tool_call>", "arguments")
LLAMA3 = CallFormat("llama3", "<|python_tag|>", "", "parameters", at_start_only=True)
MISTRAL = CallFormat("mistral", "[TOOL_CALLS]", "", "arguments", as_list=True, id_chars=9)
GENERIC = CallFormat("generic", "<tool_call>", "</tool_call>", "arguments", native=False)


def detect_format(rendered_call: str | None, name: str) -> CallFormat:
    """The call format a chat template writes, read from how it renders a past call of function `name`
    with arguments {...} (`rendered_call`; None when the template does not render tools and calls, see
    runtime/tool_prompt.py). A format not listed here (XML arguments, `[ARGS]`, `<tool_calls>[...]`,
    `<|tool_call|>`, ...) gets GENERIC: it is what the model would write that decides, and the same
    marker with other insides (GLM's `<tool_call>name<arg_key>`) is another format."""
    if rendered_call is None:
        return GENERIC
    n = re.escape(json.dumps(name))
    for fmt, pattern in ((HERMES, r"<tool_call>\s*\{\s*\"name\":\s*" + n + r"\s*,\s*\"arguments\":"),
                         (MISTRAL, r"\[TOOL_CALLS\]\s*\[\s*\{\s*\"name\":\s*" + n + r"\s*,\s*\"arguments\":"),
                         (LLAMA3, r"\{\s*\"name\":\s*" + n + r"\s*,\s*\"parameters\":")):
        if re.search(pattern, rendered_call):
            return fmt
    return GENERIC


def new_call_id(fmt: CallFormat) -> str:
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(fmt.id_chars))
    return body if fmt.id_chars < 24 else "call_" + body


# ---- grammar -----------------------------------------------------------------------------------------

def _hoisted(fn: Function, defs: dict) -> dict:
    """fn.parameters with its `$defs`/`definitions` moved into `defs` (the grammar's JSON document root,
    where `#/$defs/...` references resolve once the parameters sit inside a call object)."""
    prefix = f"#/$defs/{fn.name}."

    def walk(node):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "$ref" and isinstance(v, str):
                    for old in ("#/$defs/", "#/definitions/"):
                        if v.startswith(old):
                            v = prefix + v[len(old):]
                    out[k] = v if v != "#" else f"#/$defs/{fn.name}"
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    params = walk(closed(fn.parameters))
    for key in ("$defs", "definitions"):
        for name, schema in (params.pop(key, None) or {}).items():
            defs[f"{fn.name}.{name}"] = schema
    if isinstance(params, dict) and any(isinstance(v, str) and v == f"#/$defs/{fn.name}" for v in _refs(params)):
        defs[fn.name] = params
    return params


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _call_schema(fmt: CallFormat, fn: Function, defs: dict) -> dict:
    props = {"name": {"const": fn.name}, fmt.args_key: _hoisted(fn, defs)}
    if fmt is MISTRAL:       # Mistral's own template writes the id after the arguments
        props["id"] = {"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}
    return {"type": "object", "properties": props, "required": ["name", fmt.args_key],
            "additionalProperties": False}


def _json(schema: dict, defs: dict | None = None) -> str:
    return "%json " + json.dumps({**schema, **({"$defs": defs} if defs else {}), "x-guidance": JSON_WHITESPACE})


def call_grammar(fmt: CallFormat, request: ToolRequest, open_token: int | None,
                 answer_schema: dict | None = None) -> str | None:
    """Lark grammar text for the reply under `request`, or None when nothing is constrained (no tool
    may be called and no answer schema). `open_token`: the id of fmt.open when the vocabulary has it as
    one control token (the grammar then names it `<[id]>`; text can never spell a control token).
    `answer_schema`: response_format's schema for a reply that is not a call."""
    fns = request.callable()
    if not fns:
        return None if answer_schema is None else "start: " + _json(closed(answer_schema)) + "\n"
    defs: dict = {}
    calls = [_call_schema(fmt, f, defs) for f in fns]
    call = {"anyOf": calls} if len(calls) > 1 else calls[0]
    opener = f"<[{open_token}]>" if open_token is not None else json.dumps(fmt.open)
    rules = {"WS": r"/[ \t\n]*/", "TEXT": "/(?s:.*)/"}
    if fmt.as_list:            # [TOOL_CALLS][{...}, {...}]
        rules["call_list"] = _json({"type": "array", "items": call, "minItems": 1,
                                    **({} if request.parallel else {"maxItems": 1})}, defs)
        first, more = "WS call_list", ""
    else:                      # <tool_call>{...}</tool_call> (WS <tool_call>{...}</tool_call>)*
        rules["call"] = _json(call, defs)
        close = f" WS {json.dumps(fmt.close)}" if fmt.close else ""
        first = f"WS call{close}"
        more = f" (WS {opener} WS call{close})*" if request.parallel and not fmt.at_start_only else ""
    if fmt.at_start_only:
        rules["calls"] = f"{opener}? {first}"
        # a reply that is not a call must not open with "{"
        rules["answer"] = _json(closed(answer_schema)) if answer_schema else r"/[ \t\n]*([^{ \t\n](?s:.*))?/"
        rules["start"] = "WS calls" if request.choice != "auto" else "answer | WS calls"
    else:
        rules["calls"] = f"{opener} {first}{more}"
        rules["answer"] = _json(closed(answer_schema)) if answer_schema else "TEXT"
        if request.choice != "auto":
            rules["start"] = "WS calls"
        elif open_token is not None:
            # text cannot contain a control token: the text before a call needs no laziness
            rules["start"] = "answer | TEXT calls"
        else:
            # `head` ends at the first opening marker, so from there on the call is checked (a greedy
            # TEXT would swallow the marker and the call with it): llguidance's lazy lexemes
            rules["head[lazy]"] = f"TEXT {opener}"
            rules["start"] = f"answer | head {first}{more}"
    return "%llguidance {}\n" + "".join(f"{name}: {body}\n" for name, body in rules.items())


# ---- parsing -----------------------------------------------------------------------------------------

@dataclass
class Content:
    text: str


@dataclass
class CallStart:
    index: int
    id: str
    name: str


@dataclass
class CallArgs:
    index: int
    fragment: str


@dataclass
class Call:
    id: str
    name: str
    arguments: str            # the JSON text of the arguments object, as the model wrote it
    complete: bool = False


class _CallObject:
    """Scans one JSON object {"name": N, "<args_key>": {...}, ...} character by character as it arrives
    (the grammar guarantees it is valid JSON). Knows the name once its string has closed, and the
    arguments' text as it grows (`args`, `args_open`: more may follow)."""

    def __init__(self, args_key: str):
        self.args_key = args_key
        self.depth = 0
        self.in_string = self.escaped = False
        self.expect = "key"           # at depth 1: "key" | "colon" | "value" | "comma"
        self.key = None               # the key whose value is being read
        self.literal: list[str] | None = None   # a depth-1 string being read (a key, or the name)
        self.name: str | None = None
        self.args: list[str] = []
        self.args_open = False        # inside the arguments value
        self.args_scalar = False      # ... which is a number/true/false/null: its end is seen late
        self.done = False

    def push(self, c: str) -> None:
        if self.args_open:
            self.args.append(c)
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif c == "\\":
                self.escaped = True
            elif c == '"':
                self.in_string = False
                if self.depth == 1:
                    self._end_string()
                return
            if self.literal is not None:
                self.literal.append(c)
            return
        if self.depth == 1 and self.expect == "value" and c not in " \t\r\n":
            self.expect = "comma"
            if self.key == self.args_key:
                self.args_open, self.args_scalar = True, c not in '{["'
                self.args.append(c)
        if c == '"':
            self.in_string = True
            if self.depth == 1:
                self.literal = [] if self.expect == "key" or self.key == "name" else None
        elif c in "{[":
            self.depth += 1
        elif c in "}]":
            self.depth -= 1
            if self.depth == 0:
                self._end_scalar()
                self.done = True
            elif self.depth == 1 and self.args_open:
                self.args_open = False
        elif self.depth == 1 and c == ":":
            self.expect = "value"
        elif self.depth == 1 and c == ",":
            self._end_scalar()
            self.expect = "key"

    def _end_string(self):
        text = json.loads('"' + "".join(self.literal) + '"') if self.literal is not None else None
        self.literal = None
        if self.expect == "key":
            self.key, self.expect = text, "colon"
        elif self.key == "name":
            self.name = text
        if self.args_open:            # the arguments were a string
            self.args_open = False

    def _end_scalar(self):
        if self.args_open and self.args_scalar:   # it ended at this "," or "}": not part of it
            self.args_open = False
            self.args.pop()
            while self.args and self.args[-1] in " \t\r\n":
                self.args.pop()

    def settled_args(self) -> int:
        """How many characters of `args` are final."""
        return len(self.args) if not (self.args_open and self.args_scalar) else 0


class CallParser:
    """Generated text -> content and calls, as events (for streaming) and as a whole (for the rest).

    feed(token_id, text) takes one generated Piece: the control token that opens calls in MISTRAL or
    LLAMA3 has no text of its own, so it is recognized by id. Content that might be the start of the
    opening marker is held back until it is known not to be (as stop strings are). A call is reported
    (CallStart) once its name is complete, then its arguments (CallArgs) as they come; `calls` holds
    only calls whose JSON object closed when generation ended (see finish)."""

    def __init__(self, fmt: CallFormat, open_token: int | None = None):
        self.fmt = fmt
        self.open_token = open_token
        self.content = ""
        self.calls: list[Call] = []
        self._pending = ""            # content held back: it may be the start of fmt.open
        self._in_calls = False
        self._started = False         # LLAMA3: seen something other than whitespace
        self._obj: _CallObject | None = None
        self._call: Call | None = None   # the call being read, once its name is known
        self._sent = 0                # characters of its arguments already reported

    def feed(self, token_id: int, text: str) -> list:
        if self.open_token is not None and token_id == self.open_token:
            text = self.fmt.open + text
        if not self._in_calls:
            events, text = self._content(text)
            if not self._in_calls:
                return events
        else:
            events = []
        for c in text:
            if self._obj is None:
                if c == "{":          # anything else between calls is markers, separators, whitespace
                    self._obj, self._call, self._sent = _CallObject(self.fmt.args_key), None, 0
                    self._obj.push(c)
                continue
            self._obj.push(c)
            events.extend(self._report())
        return events

    def finish(self) -> list:
        """The end of generation: held-back content is content after all; an unfinished call is dropped."""
        events = []
        if self._pending and not self._in_calls:
            events.append(self._emit(self._pending))
        self._pending = ""
        self.calls = [c for c in self.calls if c.complete]
        return events

    def _emit(self, text: str) -> Content:
        self.content += text
        return Content(text)

    def _content(self, text: str) -> tuple[list, str]:
        """Content mode: -> (events, the text after the opening marker when calls begin)."""
        text, self._pending = self._pending + text, ""
        fmt = self.fmt
        if fmt.at_start_only:
            if self._started:
                return ([self._emit(text)] if text else []), ""
            stripped = text.lstrip()
            if not stripped:
                self._pending = text
                return [], ""
            if fmt.open.startswith(stripped) and stripped != fmt.open:   # maybe the marker, in pieces
                self._pending = text
                return [], ""
            self._started = True
            if stripped.startswith("{") or stripped.startswith(fmt.open):
                self._in_calls = True
                return [], stripped[len(fmt.open):] if stripped.startswith(fmt.open) else stripped
            return [self._emit(text)], ""
        at = text.find(fmt.open)
        if at < 0:
            keep = _partial_suffix(text, fmt.open)
            text, self._pending = text[:len(text) - keep], text[len(text) - keep:]
            return ([self._emit(text)] if text else []), ""
        self._in_calls = True
        return ([self._emit(text[:at])] if at > 0 else []), text[at + len(fmt.open):]

    def _report(self) -> list:
        obj, events = self._obj, []
        if obj.name is not None and self._call is None:
            self._call = Call(new_call_id(self.fmt), obj.name, "")
            self.calls.append(self._call)
            events.append(CallStart(len(self.calls) - 1, self._call.id, self._call.name))
        if self._call is not None and obj.settled_args() > self._sent:
            fragment = "".join(obj.args[self._sent:obj.settled_args()])
            self._sent = obj.settled_args()
            self._call.arguments += fragment
            events.append(CallArgs(len(self.calls) - 1, fragment))
        if obj.done:
            if self._call is not None:
                self._call.complete = True
            self._obj = None
        return events


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0
