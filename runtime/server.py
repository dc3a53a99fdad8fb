"""OpenAI-compatible HTTP API and the web UI, on starlette + uvicorn.

    GET  /                      the web UI (runtime/webui/), plus its js/css/vendor files
    GET  /health                200 {"status": "ok"} when ready, 503 {"status": "loading"} before
    GET  /v1/models             the one model
    POST /v1/chat/completions   OpenAI chat (stream via Server-Sent Events), llama.cpp's extra samplers
    POST /v1/completions        raw prompt
    POST /tokenize              {"content", "add_special"} -> {"tokens"}          (llama.cpp's server)
    POST /detokenize            {"tokens"} -> {"content"}

Layers, outside in: server_guard (Host/Origin/API key, header deadline) -> these routes, which read the body
under a size limit and a deadline and validate it (api_schema) -> server_engine (one worker thread, one
Session). Every refusal is OpenAI's error JSON with a 4xx status.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import api_schema
from .api_schema import APIError, GenOptions
from .sampler import SamplingParams
from .server_engine import Done, Engine, Failed, Job, piece_logprobs
from .server_guard import Guard, h11_with_header_timeout, is_loopback

log = logging.getLogger("chatfile.server")
WEBUI = Path(__file__).resolve().parent / "webui"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
PORT_SCAN = 100   # default mode: 8080 taken -> try up to 8179
# The page runs only its own files: model output rendered as HTML can never load or run anything else.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                ".txt": "text/plain; charset=utf-8"}


@dataclass(frozen=True)
class ServerOptions:
    host: str = DEFAULT_HOST
    api_key: str | None = None
    request_timeout: float = 30.0    # seconds a client has to send its headers, and again its body
    max_queue: int = 64              # requests waiting for the model before new ones get 503
    max_connections: int = 256
    chat_template: str | None = None
    defaults: SamplingParams = field(default_factory=SamplingParams)   # for fields a request leaves out
    max_tokens: int = -1


# ---- helpers ---------------------------------------------------------------------------------------

def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def read_body(request: Request, timeout: float) -> bytes:
    """The request body, refused when over MAX_BODY_BYTES (413) or not all sent within `timeout` (408)."""
    limit = api_schema.MAX_BODY_BYTES
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise APIError(413, f"request body is {length} bytes; the limit is {limit}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    chunks, size = [], 0
    stream = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - loop.time()))
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            raise APIError(408, f"request body not received within {timeout:g} s", type="timeout") from None
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)


async def _wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _sse(obj) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def _usage(done: Done) -> dict:
    return {"prompt_tokens": done.n_prompt, "completion_tokens": done.n_generated,
            "total_tokens": done.n_prompt + done.n_generated,
            "prompt_tokens_details": {"cached_tokens": done.n_cached}}


def _timings(done: Done) -> dict:
    """llama.cpp's `timings` object (the web UI shows tokens/s from it). The first token comes out of the
    prefill, so t_generate covers n_generated - 1 decode steps."""
    n_eval = done.n_prompt - done.n_cached
    n_decoded = max(done.n_generated - 1, 0)
    return {"cache_n": done.n_cached, "prompt_n": n_eval, "prompt_ms": done.t_prompt * 1e3,
            "prompt_per_second": n_eval / done.t_prompt if done.t_prompt > 0 else None,
            "predicted_n": done.n_generated, "predicted_ms": done.t_generate * 1e3,
            "predicted_per_second": n_decoded / done.t_generate if n_decoded and done.t_generate > 0 else None}


# ---- the API ---------------------------------------------------------------------------------------

class API:
    """Routes as data (`routes()`); each handler validates, submits a Job, and formats what comes back."""

    def __init__(self, engine: Engine, options: ServerOptions):
        self.engine = engine
        self.options = options
        self.limits = api_schema.Limits(n_ctx=engine.n_ctx, vocab_size=engine.vocab_size,
                                        defaults=options.defaults, max_tokens=options.max_tokens)
        self.static = {p.relative_to(WEBUI).as_posix(): p for p in WEBUI.rglob("*") if p.is_file()}

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
            Route("/", self.webui, methods=["GET", "HEAD"]),
        ] + [Route("/" + name, self.webui, methods=["GET", "HEAD"]) for name in self.static]

    async def _body(self, request: Request) -> dict:
        return api_schema.parse_body(await read_body(request, self.options.request_timeout))

    async def health(self, request: Request) -> Response:
        e = self.engine
        if not e.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "generating": e.busy, "queued": e.queued})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": self.engine.name, "object": "model", "created": 0, "owned_by": "chatfile",
            "meta": {"n_ctx": self.engine.n_ctx, "n_vocab": self.engine.vocab_size}}]})

    async def tokenize(self, request: Request) -> Response:
        content, add_special, parse_special = api_schema.tokenize_request(await self._body(request))
        tokens = await asyncio.to_thread(self.engine.model.tokenize, content, add_special, parse_special)
        return JSONResponse({"tokens": tokens})

    async def detokenize(self, request: Request) -> Response:
        tokens = api_schema.detokenize_request(await self._body(request), self.limits)
        return JSONResponse({"content": await asyncio.to_thread(self.engine.model.detokenize, tokens)})

    async def chat_completions(self, request: Request) -> Response:
        req = api_schema.chat_request(await self._body(request), self.limits)
        ids = await asyncio.to_thread(self._chat_prompt_ids, req.messages)
        return await self._respond(request, ids, req.gen, req.stream, req.include_usage, chat=True)

    async def completions(self, request: Request) -> Response:
        req = api_schema.completion_request(await self._body(request), self.limits)
        ids = req.prompt if isinstance(req.prompt, list) else \
            await asyncio.to_thread(self.engine.model.tokenize, req.prompt, True, True)
        return await self._respond(request, ids, req.gen, req.stream, req.include_usage, chat=False)

    def _chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        from .chat_template import ChatTemplateError, chat_prompt_ids
        try:
            return chat_prompt_ids(self.engine.model, self.engine.template, messages)
        except ChatTemplateError as e:
            raise APIError(400, str(e), param="messages") from None

    async def webui(self, request: Request) -> Response:
        file = self.static[request.url.path.lstrip("/") or "index.html"]   # one route per file: no traversal
        headers = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
        return Response(file.read_bytes(), media_type=STATIC_TYPES.get(file.suffix, "application/octet-stream"),
                        headers=headers)

    # ---- generation -> OpenAI objects --------------------------------------------------------------
    async def _respond(self, request: Request, ids: list[int], gen: GenOptions, stream: bool,
                       include_usage: bool, chat: bool) -> Response:
        job = self.engine.submit(ids, gen)
        head = {"id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": self.engine.name}
        if stream:
            return _JobStream(job, self._stream(job, head, include_usage, chat), media_type="text/event-stream",
                              headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        events = await self._collect_unless_disconnected(request, job)
        if events is None:                       # nobody is listening any more
            return Response(status_code=499)
        last = events[-1]
        if isinstance(last, Failed):
            return JSONResponse(APIError(500, last.message, type="server_error").body(), status_code=500)
        pieces = events[:-1]
        text = "".join(p.text for p in pieces)
        choice = {"index": 0, "finish_reason": last.finish_reason,
                  "logprobs": self._logprobs(pieces, chat) if gen.logprobs is not None else None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return JSONResponse({**head, "choices": [choice], "usage": _usage(last), "timings": _timings(last)})

    async def _collect_unless_disconnected(self, request: Request, job: Job) -> list | None:
        async def collect():
            return [item async for item in job.stream()]
        collecting = asyncio.ensure_future(collect())
        watching = asyncio.ensure_future(_wait_for_disconnect(request.receive))
        await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
        if collecting.done():
            watching.cancel()
            return collecting.result()
        collecting.cancel()                      # its job.stream() sets job.cancelled on the way out
        job.cancelled.set()
        return None

    async def _stream(self, job: Job, head: dict, include_usage: bool, chat: bool):
        """SSE: a role chunk, content chunks, a finish_reason chunk, [usage chunk], `data: [DONE]`."""
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

        def chunk(text: str | None, finish_reason=None, logprobs=None) -> dict:
            choice = {"index": 0, "logprobs": logprobs, "finish_reason": finish_reason}
            if chat:
                choice["delta"] = {} if text is None else {"content": text}
            else:
                choice["text"] = text or ""
            return {**head, "choices": [choice]}

        want_logprobs = job.gen.logprobs is not None
        if chat:
            yield _sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}]})
        async for item in job.stream():
            if isinstance(item, Failed):
                yield _sse(APIError(500, item.message, type="server_error").body())
                break
            if isinstance(item, Done):
                yield _sse({**chunk(None, item.finish_reason), "timings": _timings(item)})
                if include_usage:
                    yield _sse({**head, "choices": [], "usage": _usage(item)})
                break
            if item.text or want_logprobs:
                yield _sse(chunk(item.text, logprobs=self._logprobs([item], chat) if want_logprobs else None))
        yield "data: [DONE]\n\n"

    def _logprobs(self, pieces: list, chat: bool) -> dict:
        entries = [piece_logprobs(self.engine, p) for p in pieces]
        if chat:   # OpenAI chat: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}
            return {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()),
                                 "top_logprobs": [{"token": a, "logprob": alp, "bytes": list(a.encode())}
                                                  for a, alp in top]} for t, lp, top in entries]}
        offsets, pos = [], 0   # legacy completions: parallel arrays
        for p in pieces:
            offsets.append(pos)
            pos += len(p.text)
        return {"tokens": [t for t, _, _ in entries], "token_logprobs": [lp for _, lp, _ in entries],
                "top_logprobs": [dict(top) for _, _, top in entries], "text_offset": offsets}


class _JobStream(StreamingResponse):
    """A StreamingResponse that cancels its job however the response ends.

    job.stream() also sets `cancelled` when it is left, but when a disconnect cancels the response while
    it waits in `send`, starlette leaves the body generator suspended at a `yield`: its `finally` runs
    only when the garbage collector finalizes it, and the worker would go on generating until then."""

    def __init__(self, job: Job, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancelled.set()   # after a Done this changes nothing


# ---- app -------------------------------------------------------------------------------------------

async def _api_error(request: Request, exc: APIError) -> Response:
    return _error(exc)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request_error")
    detail = exc.detail if exc.status_code != 404 else f"no such page or endpoint: {request.url.path}"
    return _error(APIError(exc.status_code, detail, type=kind))


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    return Response(status_code=499)


async def _bug(request: Request, exc: Exception) -> Response:
    # a bug of ours: logged with its traceback, and the client still gets an error it can parse
    log.error("error in %s %s", request.method, request.url.path, exc_info=exc)
    return _error(APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))


def model_name(model) -> str:
    name = model.gguf.metadata.get("general.name")
    return name if isinstance(name, str) and name.strip() else "model"


def create_app(model, options: ServerOptions = ServerOptions()) -> tuple[Guard, Engine]:
    """The ASGI app (guard + routes) and the Engine behind it; the engine starts warming up at once."""
    engine = Engine(model, model_name(model), max_queue=options.max_queue, chat_template=options.chat_template)
    api = API(engine, options)
    app = Starlette(routes=api.routes(), exception_handlers={
        APIError: _api_error, HTTPException: _http_error, ClientDisconnect: _client_gone, Exception: _bug})
    return Guard(app, options.host, options.api_key), engine


def bind(host: str, port: int, scan: int = 1) -> socket.socket:
    """A listening socket on host:port, or the first free port of the next `scan` ones."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last_error = None
    for p in range(port, port + scan):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, p))
            sock.listen(128)
            sock.set_inheritable(True)
            return sock
        except OSError as e:
            sock.close()
            last_error = e
    raise last_error


def make_server(app, options: ServerOptions):
    import uvicorn
    config = uvicorn.Config(
        app, http=h11_with_header_timeout(options.request_timeout), loop="asyncio", ws="none",
        lifespan="off", interface="asgi3", log_level="warning", access_log=False,
        limit_concurrency=options.max_connections, timeout_keep_alive=5, timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


def serve_in_thread(server, sock: socket.socket) -> threading.Thread:
    """Start a uvicorn server on `sock` in a daemon thread; returns once it accepts connections."""
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="chatfile-server", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    return thread


def _open_browser(url: str) -> None:
    import webbrowser
    try:
        opened = webbrowser.open(url)
    except Exception:   # no browser, no display, a broken BROWSER variable: printing the URL is enough
        opened = False
    if not opened:
        print(f"chatfile: could not open a browser; open {url} yourself", file=sys.stderr)


def run(model, args, *, foreground_chat: bool) -> int:
    """--server: API + web UI. Default mode: the same on the next free port from 8080, the browser, and
    the terminal chat in the foreground when `foreground_chat` (stdin is a TTY)."""
    from .cli import sampling_params
    server_mode = args.server
    host = args.host or DEFAULT_HOST
    port = DEFAULT_PORT if args.port is None else args.port
    options = ServerOptions(host=host, api_key=args.api_key or None, chat_template=args.chat_template,
                            defaults=sampling_params(args), max_tokens=args.n_predict)
    try:
        sock = bind(host, port, scan=1 if server_mode else PORT_SCAN)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    if not is_loopback(host):
        print(f"warning: listening on {host}: anyone who can reach this machine on port {port} can use the "
              f"model{'' if options.api_key else '; consider --api-key'}", file=sys.stderr)
    app, engine = create_app(model, options)
    server = make_server(app, options)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    url = f"http://{url_host}:{port}/"
    print(f"chatfile: {engine.name} at {url}" + (" (API key required)" if options.api_key else ""),
          file=sys.stderr, flush=True)
    open_browser = not server_mode and not args.nobrowser
    try:
        if foreground_chat:
            thread = serve_in_thread(server, sock)
            if open_browser:
                _open_browser(url)
            from . import chat
            rc = chat.run(model, args, lock=engine.lock)
            server.should_exit = True
            thread.join(timeout=5)
            return rc
        if open_browser:
            threading.Thread(target=lambda: (_wait_started(server), _open_browser(url)), daemon=True).start()
        server.run(sockets=[sock])
        return 0
    finally:
        engine.close()
        sock.close()


def _wait_started(server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
