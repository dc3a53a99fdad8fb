"""The options of a run, frozen, built in one place (runtime.cli, from argparse) and passed down.

Options flow one way: the command line -> these objects -> chat.run / launch.run / server.create_app.
No module below the CLI reads argparse, and none of these objects is changed once built.

    ChatOptions     the terminal chat (also the one beside the server in the default mode)
    ServerOptions   the HTTP API: what create_app needs (guard, limits, defaults a request leaves out)
    LaunchOptions   how the server is started: port, port scan, browser, foreground chat
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .sampler import SamplingParams

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
PORT_SCAN = 100   # default mode: 8080 taken -> try up to 8179


@dataclass(frozen=True)
class ChatOptions:
    params: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = -1               # per reply; -1: until end of generation or a full context
    system: str | None = None          # system prompt
    n_ctx: int | None = None           # the conversation's context; None: the model's trained context
    context_shift: bool = False        # a reply that fills the context shifts it instead of stopping
    n_keep: int = 0                    # prompt tokens a context shift keeps (-1: all)
    chat_template: str | None = None   # Jinja text, a file, or "chatml"; None: the model's own


@dataclass(frozen=True)
class ServerOptions:
    host: str = DEFAULT_HOST
    api_keys: tuple[str, ...] = ()     # any of them is accepted; empty: no key needed
    request_timeout: float = 30.0      # seconds a client has to send its headers, and again its body
    max_queue: int = 64                # requests waiting for the model before new ones get 503
    max_connections: int = 256
    chat_template: str | None = None
    defaults: SamplingParams = field(default_factory=SamplingParams)   # for fields a request leaves out
    max_tokens: int = -1
    model_path: str = ""               # shown by GET /props (the file name only)
    pooling: str | None = None         # embeddings: --pooling; None: the GGUF's, else "mean"
    n_ctx: int | None = None           # positions per slot; None: the model's trained context
    n_slots: int = 1                   # sequences generated at once (--parallel)
    context_shift: bool = False        # a full slot shifts its context instead of ending with "length"
    n_keep: int = 0                    # prompt tokens a context shift keeps by default (-1: all)
    slots_prompts: bool = False        # GET /slots shows each slot's prompt text (--slots)
    aliases: tuple[str, ...] = ()      # --alias: the model's names in the API (the id is the first, sorted)
    tags: tuple[str, ...] = ()         # --tags: listed by GET /v1/models, as llama-server does
    verbose: bool = False              # --verbose: every non-streamed completion carries "__verbose"


@dataclass(frozen=True)
class LaunchOptions:
    port: int = DEFAULT_PORT
    port_scan: int = 1                 # ports tried from `port` on (default mode: PORT_SCAN)
    open_browser: bool = False
    foreground_chat: bool = False      # the terminal chat in this process while the server runs
