"""Chat templates: render `tokenizer.chat_template` (Jinja2, sandboxed) into the prompt text.

The environment copies Hugging Face transformers' `chat_template_utils` (which llama-cpp-python's
`Jinja2ChatFormatter` also copies): an `ImmutableSandboxedEnvironment` with trim_blocks/lstrip_blocks,
the loop-controls extension, a pass-through `{% generation %}` tag, `tojson` with ensure_ascii=False and
`indent`, and the globals `raise_exception`, `strftime_now`, `bos_token`, `eos_token`,
`add_generation_prompt`. Output is byte-identical to llama-cpp-python's for the same messages
(tests/test_chat_template.py against data/goldens/chat_templates.json).

System messages (llama-server's rule, common/chat.cpp `system_message_not_supported`): a template that
refuses a system message or leaves its text out (Gemma 2's raises "System role not supported") gets
the conversation with the system text put in front of the next message, joined by a newline, or dropped
when it is the only message. `ChatTemplate.prepare` does that, `chat_prompt_ids` calls it; whether the
template takes a system message is found once per template by rendering a probe conversation, as
llama.cpp's capability check does. (llama-cpp-python's own formatter, which `render` matches, raises.)

Fallback: a GGUF without `tokenizer.chat_template` gets ChatML, exactly as llama.cpp's built-in
"chatml" template writes it (`<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, then
`<|im_start|>assistant\\n` when a reply is wanted). `--chat-template` overrides either: a path to a
Jinja file, the name `chatml`, or Jinja source text.

Prompt ids: the rendered text is tokenized with special tokens parsed and nothing added (the template
writes its own BOS when the model wants one, as llama-cpp-python does); when the model adds BOS and the
template did not write it, BOS is put in front once (llama.cpp's server does the same).
"""
from __future__ import annotations

import functools
import json
import os
from datetime import datetime
from typing import Callable

import sys

import jinja2
import jinja2.ext
from jinja2.exceptions import SecurityError, TemplateError

from .ggml import Keys
from .template_limits import LimitedEnvironment, TemplateLimit, compile_template, render

# llama.cpp src/llama-chat.cpp, LLM_CHAT_TEMPLATE_CHATML
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The template does not parse, refuses the conversation (raise_exception), is unsafe, or goes past
    a limit of runtime/template_limits.py."""


_REFUSED: set[str] = set()    # model templates already reported as unusable (the warning is printed once)


class _GenerationTag(jinja2.ext.Extension):
    """HF's `{% generation %}...{% endgeneration %}` (marks assistant text for training): rendered as is."""

    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' tojson: unlike Jinja's own, no HTML escaping and non-ASCII kept as is
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message):
    raise ChatTemplateError(message)


def _environment() -> LimitedEnvironment:
    # transformers' sandbox, with limits on time, size and depth (runtime/template_limits.py)
    env = LimitedEnvironment(
        loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.limit_filters()
    return env


class ChatTemplate:
    """One compiled chat template plus the BOS/EOS token texts it may write."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "",
                 now: Callable[[], datetime] = datetime.now):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._now = now   # the clock behind strftime_now (tests pin it)
        try:
            self._template = compile_template(_environment(), source)
        except TemplateError as e:
            line = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
            raise ChatTemplateError(f"chat template does not parse{line}: {e.message or e}") from None
        except TemplateLimit as e:
            raise ChatTemplateError(f"chat template refused: {e}") from None
        except Exception as e:     # a 5000-digit literal: ValueError; anything else the parser raises
            raise ChatTemplateError(f"chat template does not parse: {_one_line(e)}") from None

    @classmethod
    def for_model(cls, model, override: str | None = None) -> "ChatTemplate":
        """The model's own template (or ChatML when it has none), unless `override` (see load_override)."""
        tok = model.tokenizer
        tokens = {"bos_token": _token_text(tok, tok.bos_id), "eos_token": _token_text(tok, tok.eos_id)}
        if override:
            return cls(load_override(override), **tokens)
        source = model.gguf.metadata.get(Keys.CHAT_TEMPLATE) or CHATML
        try:
            return cls(source, **tokens)
        except ChatTemplateError as e:   # the file's own template: say so once and go on, as llama-server does
            if source not in _REFUSED:
                _REFUSED.add(source)
                print(f"chatfile: warning: the model's {e}; using ChatML instead", file=sys.stderr, flush=True)
            return cls(CHATML, **tokens)

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list | None = None,
               **extra) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}, ...]). `tools`: OpenAI's tool
        list, always defined (None without tools), as transformers and llama-cpp-python pass it;
        `extra`: more template variables."""
        try:
            return render(
                self._template, messages=messages, bos_token=self.bos_token, eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt, raise_exception=_raise_exception,
                strftime_now=self._strftime_now, tools=tools, **extra)
        except SecurityError as e:
            raise ChatTemplateError(f"chat template refused: it tries to reach Python internals ({e})") from None
        except ChatTemplateError:
            raise
        except TemplateLimit as e:
            raise ChatTemplateError(f"chat template stopped: {e}") from None
        except TemplateError as e:
            raise ChatTemplateError(f"chat template failed: {e.message or e}") from None
        except Exception as e:
            # e.g. a message without "content" or content of the wrong type for this template; the
            # template is the file's code, so whatever it raises (Jinja's own filters assert) is its failure
            raise ChatTemplateError(f"chat template failed on these messages: {_one_line(e)}") from None


    @functools.cached_property
    def supports_system_role(self) -> bool:
        """Whether a system message's text reaches the prompt (llama.cpp common/jinja/caps.cpp probes
        with [system, user] and checks that the system content is used). A template that fails the
        probe without a system message too counts as supporting it: its failure is not about roles."""
        marker = "System message 7f3c"
        user = {"role": "user", "content": "User message"}
        try:
            return marker in self.render([{"role": "system", "content": marker}, user])
        except ChatTemplateError:
            pass
        try:
            self.render([user])
        except ChatTemplateError:
            return True
        return False

    def prepare(self, messages: list[dict]) -> list[dict]:
        """The conversation as llama-server hands it to this template: a leading system message the
        template cannot take goes in front of the next message's text (or away when alone)."""
        if not messages or messages[0].get("role") != "system" or self.supports_system_role:
            return messages
        if len(messages) == 1:
            return []
        system, text = messages[0].get("content"), messages[1].get("content")
        if not isinstance(system, str) or not isinstance(text, (str, type(None))):
            return messages                  # content parts: left to the template, as llama.cpp fails there
        return [{**messages[1], "content": system + "\n" + (text or "")}, *messages[2:]]

    def _strftime_now(self, fmt) -> str:
        # C strftime makes ~12 characters of one "%c": a long format is the one large thing it can make
        if not isinstance(fmt, str) or len(fmt) > 256:
            raise ChatTemplateError("chat template failed: strftime_now takes a format of at most 256 characters")
        return self._now().strftime(fmt)


def load_override(value: str) -> str:
    """--chat-template: an existing file holds Jinja source; `chatml` names the built-in; else Jinja text."""
    if value == "chatml":
        return CHATML
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ChatTemplateError(f"cannot read chat template file {value}: {e}") from None
    return value


def chat_prompt_ids(model, template: ChatTemplate, messages: list[dict],
                    add_generation_prompt: bool = True, **extra) -> list[int]:
    """Token ids of the rendered conversation, BOS exactly once when the model uses one. `extra`: more
    template variables, e.g. `tools` (runtime/tool_prompt.py prepares conversations with tools)."""
    text = template.render(template.prepare(messages), add_generation_prompt=add_generation_prompt, **extra)
    return rendered_ids(model, text)


def rendered_ids(model, text: str) -> list[int]:
    """Token ids of a rendered chat prompt: special tokens parsed, BOS exactly once when the model uses
    one (templates that write it themselves get no second)."""
    ids = model.tokenize(text, add_special=False, parse_special=True)
    tok = model.tokenizer
    if tok.add_bos and tok.bos_id is not None and tok.bos_id >= 0 and ids[:1] != [tok.bos_id]:
        ids.insert(0, tok.bos_id)
    return ids


def _one_line(e: Exception) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= 300 else text[:297] + "..."


def _token_text(tok, token_id) -> str:
    # llama-cpp-python passes llama_token_get_text(id): the raw vocabulary entry, "" when there is none
    if token_id is None or token_id < 0:
        return ""
    return tok.tokens[token_id]
