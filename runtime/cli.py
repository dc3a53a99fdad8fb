"""Command line: flags as llama.cpp/llamafile spell them, then one of four modes.

    -p TEXT | -p - | -f FILE   one-shot completion: prints only the completion to stdout (the prompt is
                               not echoed, unlike llama.cpp's llama-completion) and exits 0; logs and
                               --verbose timings go to stderr. A pipe or file gets the model's exact
                               bytes; a terminal gets them without escape sequences (as the chat does)
    --chat                     terminal chat
    --server                   OpenAI-compatible API + web UI
    (none)                     server + browser, and the terminal chat when started from a terminal

Defaults (llama.cpp's): --temp 0.8 (one-shot, server and chat alike: llamafile's chat uses 0, but tiny
models loop under greedy decoding), --top-k 40, --top-p 0.95, --min-p 0.05, --repeat-penalty 1.0 over
--repeat-last-n 64, -n -1 (until end of generation or a full context), -s -1 (random seed).
-c: 8192 (llamafile's default) capped at the model's trained context; -c 0 is the trained context.
When the KV cache of the default context would not fit in the memory available, the context is lowered
with one line saying so; an explicit -c that does not fit is an error.
-np N: the server generates N replies at once, each in a slot of its own -c positions (-c sizes each
slot, unlike llama-server, which splits -c among its slots: adding slots never shortens a conversation;
KV memory grows with the positions used, up to N x -c).
User errors (bad flag, missing or damaged model, unreadable prompt file) print one line on stderr and
exit 2.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

from .escapes import TerminalFilter, printable
from .options import DEFAULT_HOST, DEFAULT_PORT, PORT_SCAN, ChatOptions, LaunchOptions, ServerOptions
from .sampler import SamplingParams

DEFAULT_CTX = 8192
MAX_SLOTS = 64


class UsageError(Exception):
    """A mistake on the command line or in its inputs: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):           # one line instead of argparse's usage block
        raise UsageError(f"{message} (see --help)")


def build_parser(prog: str = "chatfile") -> argparse.ArgumentParser:
    ap = _Parser(prog=prog, description="Chat with a GGUF language model, offline.",
                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("-m", "--model", metavar="GGUF", help="model file (default: the model embedded in this file)")
    mode = ap.add_argument_group("modes (default: server + browser + terminal chat)")
    mode.add_argument("-p", "--prompt", metavar="TEXT", help="complete TEXT and exit ('-' reads stdin)")
    mode.add_argument("-f", "--file", metavar="FILE", help="complete the text of FILE and exit")
    mode.add_argument("--chat", action="store_true", help="terminal chat")
    mode.add_argument("--server", action="store_true", help="API and web UI only")
    g = ap.add_argument_group("generation")
    g.add_argument("-n", "--n-predict", type=int, default=-1, metavar="N",
                   help="tokens to generate, -1 = until end of text (default: -1)")
    g.add_argument("--temp", type=float, default=0.8, metavar="T", help="temperature, 0 = greedy (default: 0.8)")
    g.add_argument("--top-k", type=int, default=40, metavar="K", help="0 = off (default: 40)")
    g.add_argument("--top-p", type=float, default=0.95, metavar="P", help="1.0 = off (default: 0.95)")
    g.add_argument("--min-p", type=float, default=0.05, metavar="P", help="0.0 = off (default: 0.05)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, metavar="X", help="1.0 = off (default: 1.0)")
    g.add_argument("--repeat-last-n", type=int, default=64, metavar="N",
                   help="penalty window, 0 = off, -1 = whole context (default: 64)")
    g.add_argument("--presence-penalty", type=float, default=0.0, metavar="X", help="(default: 0.0)")
    g.add_argument("--frequency-penalty", type=float, default=0.0, metavar="X", help="(default: 0.0)")
    g.add_argument("-s", "--seed", type=int, default=-1, metavar="N", help="-1 = random (default: -1)")
    g.add_argument("-c", "--ctx-size", type=int, default=None, metavar="N",
                   help=f"context size (of each server slot), 0 = the model's (default: {DEFAULT_CTX}, at "
                        "most the model's)")
    g.add_argument("--context-shift", action=argparse.BooleanOptionalAction, default=False,
                   help="when a reply fills the context, drop the older half of it (after --keep tokens) "
                        "and go on, instead of stopping (default: off)")
    g.add_argument("--keep", type=int, default=0, metavar="N",
                   help="tokens of the prompt a context shift keeps, -1 = all (default: 0, plus BOS)")
    g.add_argument("-t", "--threads", type=int, default=None, metavar="N", help="CPU threads (default: all)")
    c = ap.add_argument_group("chat")
    c.add_argument("--system", metavar="TEXT", help="system prompt for the terminal chat")
    c.add_argument("--chat-template", metavar="JINJA|FILE",
                   help="override the model's chat template: Jinja text, a file, or 'chatml'")
    s = ap.add_argument_group("server")
    s.add_argument("--host", default=None, help="address to listen on (default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default: 8080, or the next free one)")
    s.add_argument("--api-key", metavar="KEY[,KEY...]",
                   help="require 'Authorization: Bearer KEY' on API calls; several comma-separated keys are "
                        "separate clients, which never share a cached prompt")
    s.add_argument("--nobrowser", action="store_true", help="do not open a browser")
    s.add_argument("--pooling", choices=("none", "mean", "cls", "last"), default=None,
                   help="how /v1/embeddings pools a text's tokens (default: the model's own, else mean)")
    s.add_argument("--embedding", "--embeddings", dest="embeddings", action="store_true",
                   help="accepted for llama-server scripts; the embeddings endpoints are always on")
    s.add_argument("-np", "--parallel", type=int, default=1, metavar="N",
                   help="requests generated at once, each in its own slot of -c positions (default: 1)")
    s.add_argument("--slots", action="store_true",
                   help="GET /slots also shows the prompt text of each slot (default: state only)")
    s.add_argument("-a", "--alias", metavar="NAME[,NAME...]",
                   help="the model's name in the API (/v1/models and each reply's 'model'); with several, "
                        "the first in sorted order, as llama-server (default: the GGUF's general.name)")
    s.add_argument("--tags", metavar="TAG[,TAG...]", help="tags GET /v1/models lists for the model")
    ap.add_argument("--verbose", action="store_true",
                    help="log loading and timings to stderr; the server's completions also carry llama-server's "
                         "'__verbose' object (the prompt as the model read it)")
    return ap


# ---- argparse -> options objects (the only place that reads `args`) ---------------------------------

def sampling_params(args) -> SamplingParams:
    return SamplingParams(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
                          presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                          seed=None if args.seed < 0 else args.seed)


def context_size(args, model) -> int:
    """-c as given, 0 = the trained context; unset: DEFAULT_CTX, unless the model was trained on less."""
    trained = model.config.context_length
    if args.ctx_size is None:
        return min(DEFAULT_CTX, trained)
    return args.ctx_size or trained


def fit_to_memory(args, model, n_ctx: int, n_seqs: int) -> int:
    """n_ctx, unless n_seqs KV caches of it would not fit in the memory available (runtime/memory.py):
    the default context is lowered with one line saying so; one the user chose (-c) is an error."""
    from .memory import MIN_CTX, available_bytes, fit_context, gib
    from .model import KVCache
    per_position = KVCache.bytes_per_position(model.config)
    available = available_bytes()
    fits = fit_context(n_ctx, n_seqs, per_position, available)
    if fits == n_ctx:
        return n_ctx
    need = f"the KV cache for {n_ctx} positions{f' x {n_seqs} slots' if n_seqs > 1 else ''} would take " \
           f"{gib(n_seqs * n_ctx * per_position)}, more than the {gib(available)} of memory available"
    if not fits:
        raise UsageError(f"{need}, and not even {MIN_CTX} positions fit ({gib(per_position)} each)")
    if args.ctx_size is not None:
        raise UsageError(f"{need}: give a smaller -c (at most {fits} fit)")
    print(f"chatfile: {need}: using a context of {fits} positions (-c to choose)", file=sys.stderr, flush=True)
    return fits


def chat_options(args, n_ctx: int) -> ChatOptions:
    system = _utf8_argument(args.system, "--system") if args.system else None
    return ChatOptions(params=sampling_params(args), max_tokens=args.n_predict, system=system,
                       chat_template=args.chat_template, n_ctx=n_ctx, context_shift=args.context_shift,
                       n_keep=args.keep)


def api_keys(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    keys = tuple(k.strip() for k in value.split(","))
    if not all(keys):
        raise UsageError("--api-key: empty key in the comma-separated list")
    return keys


def server_options(args, model_path: str, n_ctx: int) -> ServerOptions:
    return ServerOptions(host=args.host or DEFAULT_HOST, api_keys=api_keys(args.api_key),
                         chat_template=args.chat_template, defaults=sampling_params(args),
                         max_tokens=args.n_predict, model_path=model_path, pooling=args.pooling, n_ctx=n_ctx,
                         n_slots=args.parallel, context_shift=args.context_shift, n_keep=args.keep,
                         slots_prompts=args.slots, aliases=_names(args.alias), tags=_names(args.tags),
                         verbose=args.verbose)


def _names(text: str | None) -> tuple[str, ...]:
    # "a, b,a" -> ("a", "b"): comma-separated, blanks dropped, each once, sorted (llama-server's std::set)
    return tuple(sorted({n.strip() for n in (text or "").split(",") if n.strip()}))


def launch_options(args, interactive: bool) -> LaunchOptions:
    return LaunchOptions(port=DEFAULT_PORT if args.port is None else args.port,
                         port_scan=1 if args.server else PORT_SCAN,
                         open_browser=not args.server and not args.nobrowser,
                         foreground_chat=not args.server and interactive)


def check_args(args) -> None:
    """Mistakes found before the model loads."""
    if args.prompt is not None and args.file is not None:
        raise UsageError("give the prompt with -p or -f, not both")
    if args.ctx_size is not None and args.ctx_size < 0:
        raise UsageError(f"-c/--ctx-size must be 0 or more, got {args.ctx_size}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"-t/--threads must be 1 or more, got {args.threads}")
    if not 1 <= args.parallel <= MAX_SLOTS:
        raise UsageError(f"-np/--parallel must be between 1 and {MAX_SLOTS}, got {args.parallel}")
    if args.keep < -1:
        raise UsageError(f"--keep must be -1 or more, got {args.keep}")
    api_keys(args.api_key)


def log(args, message):
    if args.verbose:
        print(message, file=sys.stderr, flush=True)


def read_prompt(args) -> str:
    """-p TEXT, -p - (stdin) or -f FILE; like llama.cpp, one trailing newline of a file or stdin is dropped."""
    if args.file is not None:
        try:
            with open(args.file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise UsageError(f"cannot read prompt file {args.file}: {e.strerror or e}") from None
    elif args.prompt == "-":
        data = sys.stdin.buffer.read()
    else:
        return _utf8_argument(args.prompt, "prompt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"prompt is not UTF-8 text: {e}") from None
    return text[:-1] if text.endswith("\n") else text


def _utf8_argument(value: str, what: str) -> str:
    """A command-line argument as UTF-8 text. Python decodes argv with surrogateescape, so bytes that
    are not UTF-8 arrive as lone surrogates, which no tokenizer can take: refuse them here."""
    try:
        return os.fsencode(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} is not UTF-8 text: {e}") from None


def loaded() -> None:
    """Turn the garbage collector back on once the model is loaded. The executable starts with it off
    (stubs/entry.py, runtime/__main__.py): the imports and the tokenizer's tables make a few hundred
    thousand objects that live as long as the process, and the ~240 collections that walked over them
    while they were made cost 0.06-0.09 s of a launch. gc.freeze() keeps what exists now out of every
    later collection (the server's too); what the run allocates from here on is collected as usual."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def load_model(args, embedded):
    from . import load
    from .bundle import find_model
    from .config import ModelError
    from .gguf import GGUFError
    from .tokenizer import TokenizerError
    path, offset = find_model(args.model, embedded)
    if not os.path.isfile(path):
        raise UsageError(f"model file not found: {path}")
    t0 = time.perf_counter()
    try:
        model = load(path, offset=offset, n_threads=args.threads)
    except (GGUFError, ModelError, TokenizerError) as e:
        raise UsageError(f"cannot load {path}: {e}") from None
    loaded()
    log(args, f"loaded {path} in {time.perf_counter() - t0:.2f} s: {context_size(args, model)} context")
    from . import warmup
    warmup.first_launch(model, path, offset)          # a bundle's first run on this machine only
    return model, path


def run_prompt(model, args, n_ctx: int) -> int:
    """One-shot: the completion alone on stdout, byte-exact UTF-8."""
    from .generate import generate
    prompt = read_prompt(args)
    ids = model.tokenize(prompt, add_special=True, parse_special=True)
    if not ids:
        raise UsageError("empty prompt: give some text with -p or -f")
    session = model.new_session(n_ctx)
    gen = generate(model, session, ids, sampling_params(args), max_tokens=args.n_predict,
                   context_shift=args.context_shift, n_keep=args.keep)
    out = sys.stdout.buffer
    # a terminal gets the text without the model's escape sequences; a pipe gets its exact bytes
    shown = TerminalFilter().feed if sys.stdout.isatty() else None
    text_end = ""
    for piece in gen:
        out.write((shown(piece.text) if shown else piece.text).encode("utf-8"))
        out.flush()
        text_end = (text_end + piece.text)[-1:]
    if shown and text_end != "\n":
        out.write(b"\n")                  # keep the shell prompt on its own line; pipes get exact bytes
        out.flush()
    if gen.context_full:
        print(f"chatfile: context full ({session.n_ctx} tokens): stopped; raise -c for longer output",
              file=sys.stderr)
    n_new = gen.n_prompt - gen.n_cached
    log(args, f"prompt: {n_new} tokens in {gen.t_prompt:.2f} s ({n_new / max(gen.t_prompt, 1e-9):.1f} tok/s); "
              f"generated: {gen.n_generated} tokens, {gen.n_generated - 1} decode steps in {gen.t_generate:.2f} s "
              f"({max(gen.n_generated - 1, 0) / max(gen.t_generate, 1e-9):.1f} tok/s); "
              f"finish: {gen.finish_reason}")
    return 0


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix (one line, exit 2). Evaluated only when something was
    raised, so that a `-p` run never imports the chat template's Jinja2 (0.1 s) just to name its
    error: a ChatTemplateError can only come from a module already imported."""
    from .bundle import BundleError
    from .generate import PromptTooLong
    errors = [UsageError, BundleError, PromptTooLong]
    chat_template = sys.modules.get(__package__ + ".chat_template")
    if chat_template is not None:
        errors.append(chat_template.ChatTemplateError)
    return tuple(errors)


def main(argv=None, *, embedded: tuple[str, int] | None = None) -> int:
    """Parse, load, dispatch. embedded = (executable, payload offset) inside a bundle; -m overrides it."""
    prog = os.path.basename(embedded[0]) if embedded else "chatfile"
    try:
        args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
        check_args(args)
        model, model_path = load_model(args, embedded)
        one_shot = args.prompt is not None or args.file is not None
        # KV caches: one session (-p, --chat), the server's slots, plus the terminal chat beside them
        n_seqs = 1 if one_shot or args.chat else args.parallel + (not args.server and sys.stdin.isatty())
        n_ctx = fit_to_memory(args, model, context_size(args, model), n_seqs)
        if one_shot:
            return run_prompt(model, args, n_ctx)
        if args.chat:
            from . import chat
            return chat.run(model, chat_options(args, n_ctx))
        from . import launch
        return launch.run(model, server_options(args, model_path, n_ctx),
                          launch_options(args, sys.stdin.isatty()), chat_options(args, n_ctx))
    except _user_errors() as e:
        print(f"{prog}: error: {printable(str(e))}", file=sys.stderr)   # it may quote the model file
        return 2
    except BrokenPipeError:                # `| head`: the reader is gone, nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:                   # unreadable model file and the like
        print(f"{prog}: error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
