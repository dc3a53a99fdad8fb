"""Terminal chat: the model's chat template, streamed replies, one KV cache kept across turns.

Input: one line is one message. A line ending in `\\` continues on the next line; a line that is `\"\"\"`
opens a block that the next `\"\"\"` line closes (llamafile's convention). Commands: /help, /clear
(forget the conversation, keep the system prompt), /exit. Ctrl-C stops the reply being written (what was
written stays in the conversation) and, at the prompt, discards the line; Ctrl-D quits. After each
reply a dimmed line on stderr gives tokens/s. When the conversation outgrows the context, its oldest
messages (after the system prompt) are dropped with a one-line notice, keeping room for the reply
(runtime/conversation.py). When stdin is not a terminal, messages are read line by line with the same
rules and no prompt is shown.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

from .chat_template import CHATML, ChatTemplate, ChatTemplateError, chat_prompt_ids
from .conversation import ConversationTooLong, drop_oldest, fit_messages, reply_room
from .escapes import TerminalFilter, printable
from .ggml import Keys
from .generate import PromptTooLong, generate
from .options import ChatOptions

HELP = """commands:
  /help     this help
  /clear    start a new conversation (the system prompt stays)
  /exit     quit (or Ctrl-D)
  Ctrl-C    stop the reply being written
multi-line input: end a line with \\ to continue it, or put \"\"\" on a line before and after the text"""


class Terminal:
    """Where the chat reads and writes: stdin/stdout/stderr, with colors only on a terminal."""

    def __init__(self, stdin=None, stdout=None, stderr=None):
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.interactive = self.stdin.isatty()
        self.model_text = TerminalFilter()            # the model's escape sequences never reach the terminal
        if hasattr(self.stdin, "reconfigure"):        # input that is not UTF-8: U+FFFD, not a traceback
            self.stdin.reconfigure(errors="replace")
        if self.interactive:
            with contextlib.suppress(ImportError):   # line editing and history where the platform has it
                import readline  # noqa: F401

    def read_line(self, prompt: str) -> str:
        """One line without its newline; EOFError at the end of input."""
        if self.interactive:
            return input(prompt)
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")

    def read_message(self) -> str:
        """One message, multi-line rules applied (module docstring)."""
        line = self.read_line(">>> ")
        if line.strip() == '"""':
            lines = []
            while (line := self.read_line("... ")).strip() != '"""':
                lines.append(line)
            return "\n".join(lines)
        lines = []
        while line.endswith("\\"):
            lines.append(line[:-1])
            line = self.read_line("... ")
        return "\n".join(lines + [line])

    def write(self, text: str):
        self.stdout.write(self.model_text.feed(text))
        self.stdout.flush()

    def note(self, text: str):
        text = printable(text)                        # it may quote the model file (a template's message)
        dim = self.stderr.isatty()
        self.stderr.write(f"\x1b[2m{text}\x1b[0m\n" if dim else text + "\n")
        self.stderr.flush()


class StopFlag:
    """SIGINT sets the flag while a reply is written (the main thread's handler is restored after);
    checked between tokens, so the KV cache is never left half-written."""

    def __init__(self):
        self.is_set = False

    @contextlib.contextmanager
    def armed(self):
        self.is_set = False
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, lambda *_: setattr(self, "is_set", True))
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def run(model, options: ChatOptions, *, lock=None, terminal: Terminal | None = None) -> int:
    """The chat loop. `lock` (the server's, in the default mode) is held while the model computes."""
    term = terminal or Terminal()
    template = ChatTemplate.for_model(model, options.chat_template)
    stops = [s for s in {template.eos_token, "<|im_end|>" if template.source == CHATML else ""} if s]
    system = [{"role": "system", "content": options.system}] if options.system else []
    messages = list(system)
    session = model.new_session(options.n_ctx)
    budget = session.n_ctx - reply_room(session.n_ctx, options.max_tokens)   # the rest: for the reply
    stop_flag = StopFlag()
    lock = lock or contextlib.nullcontext()

    if template.source == CHATML and not options.chat_template and not model.gguf.metadata.get(Keys.CHAT_TEMPLATE):
        term.note("note: the model has no chat template; using ChatML")   # (one it cannot use: for_model said so)
    if term.interactive:
        term.note(f"chatting with {_model_name(model)} ({session.n_ctx} tokens of context). /help for help")

    while True:
        try:
            text = term.read_message()
        except EOFError:
            if term.interactive:
                term.write("\n")
            return 0
        except KeyboardInterrupt:
            term.write("\n")
            term.note("(Ctrl-D or /exit to quit)")
            continue
        command = text.strip()
        if command in ("/exit", "/quit", "/bye"):
            return 0
        if command == "/help":
            term.note(HELP)
            continue
        if command == "/clear":
            messages = list(system)
            term.note("(new conversation)")
            continue
        if command.startswith("/") and " " not in command:
            term.note(f"unknown command {command}; /help lists them")
            continue
        if not command:
            continue

        messages.append({"role": "user", "content": text})
        try:
            ids, dropped = fit_messages(messages, lambda m: chat_prompt_ids(model, template, m), budget,
                                        session.n_ctx)
            if dropped:
                messages = drop_oldest(messages, dropped)
                term.note(f"(the {dropped} oldest message{'s' if dropped > 1 else ''} no longer fit the "
                          f"context of {session.n_ctx} tokens and {'were' if dropped > 1 else 'was'} dropped)")
            gen = generate(model, session, ids, options.params, max_tokens=options.max_tokens, stop=stops,
                           context_shift=options.context_shift, n_keep=options.n_keep)
        except (ConversationTooLong, PromptTooLong) as e:
            messages.pop()
            term.note(f"the message does not fit: {e}")
            continue
        except ChatTemplateError as e:      # the template refuses this conversation (raise_exception)
            messages.pop()
            term.note(f"the chat template refused the message: {e}")
            continue
        reply = []
        with stop_flag.armed(), lock:
            for piece in gen:
                term.write(piece.text)
                reply.append(piece.text)
                if stop_flag.is_set:
                    gen.close()
        term.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})
        # the first token comes from the prefill; the other n - 1 each took one decode step
        rate = f"{(gen.n_generated - 1) / gen.t_generate:.1f}" if gen.n_generated > 1 else "-"
        status = "stopped" if stop_flag.is_set else ("context full" if gen.context_full else "")
        term.note(f"[{gen.n_generated} tokens, {rate} tok/s; prompt {gen.n_prompt - gen.n_cached} new "
                  f"+ {gen.n_cached} cached tokens in {gen.t_prompt:.2f} s{'; ' + status if status else ''}]")


def _model_name(model) -> str:
    name = getattr(model.config, "name", "") or ""
    return printable(name) or "the model"
