"""The HTTP app: `create_app` assembles the API families' routes, the web UI and the error handlers.

    routes_native   /health, /props, /tokenize, /detokenize, /completion, /infill, /apply-template,
                    /embeddings, ...                              (llama-server's own endpoints)
    routes_openai   /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings
    routes_anthropic  /v1/messages, /v1/messages/count_tokens   (Anthropic's Messages API)
    routes_responses  /v1/responses                              (OpenAI's Responses API, text only)
    this module     GET / and the web UI's files (runtime/webui/)

An API family is one module holding a plain list of starlette Routes (`ROUTES`); its handlers reach the
engine, the options and the request limits through `server_http.state(request)`. Adding a family is
one module and one line in `API_FAMILIES`.

Layers, outside in: server_guard (Host/Origin/API key, connection limits) -> the routes, which read the
body under a size limit and a deadline and validate it (api_schema) -> server_engine (the model).
Every refusal is OpenAI's error JSON with a 4xx status. Starting the server (binding, the port scan,
the browser, the terminal chat beside it) is runtime.launch.
"""
from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from . import api_schema, routes_anthropic, routes_native, routes_openai, routes_responses
from .api_schema import APIError
from .options import ServerOptions
from .server_engine import Engine
from .server_guard import Guard
from .server_http import AppState, client_gone, error_response

log = logging.getLogger("chatfile.server")
API_FAMILIES = (routes_native, routes_openai, routes_anthropic, routes_responses)
WEBUI = Path(__file__).resolve().parent / "webui"
# The page runs only its own files: model output rendered as HTML can never load or run anything else.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                ".txt": "text/plain; charset=utf-8", ".woff2": "font/woff2"}


def webui_routes() -> list[Route]:
    """GET / and one route per file of runtime/webui/ (no path is ever joined from the request)."""
    files = {p.relative_to(WEBUI).as_posix(): p for p in WEBUI.rglob("*") if p.is_file()}
    headers = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
               "Content-Security-Policy": CSP, "Cache-Control": "no-cache"}

    def serve(path: Path):
        async def handler(request: Request) -> Response:
            return Response(path.read_bytes(), headers=headers,
                            media_type=STATIC_TYPES.get(path.suffix, "application/octet-stream"))
        return handler

    routes = [Route("/" + name, serve(p), methods=["GET", "HEAD"]) for name, p in files.items()]
    if "index.html" in files:
        routes.insert(0, Route("/", serve(files["index.html"]), methods=["GET", "HEAD"]))
    return routes


# ---- errors ----------------------------------------------------------------------------------------

async def _api_error(request: Request, exc: APIError) -> Response:
    return error_response(exc)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request_error")
    detail = exc.detail if exc.status_code != 404 else f"no such page or endpoint: {request.url.path}"
    return error_response(APIError(exc.status_code, detail, type=kind))


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    return client_gone()


async def _bug(request: Request, exc: Exception) -> Response:
    # a bug of ours: logged with its traceback, and the client still gets an error it can parse
    log.error("error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))


# ---- app -------------------------------------------------------------------------------------------

def model_name(model) -> str:
    name = model.gguf.metadata.get("general.name")
    return name if isinstance(name, str) and name.strip() else "model"


def create_app(model, options: ServerOptions = ServerOptions()) -> tuple[Guard, Engine]:
    """The ASGI app (guard + routes) and the Engine behind it; the engine starts warming up at once."""
    name = options.aliases[0] if options.aliases else model_name(model)
    engine = Engine(model, name, n_slots=options.n_slots, n_ctx=options.n_ctx,
                    max_queue=options.max_queue, chat_template=options.chat_template,
                    context_shift=options.context_shift)
    limits = api_schema.Limits(n_ctx=engine.n_ctx, vocab_size=engine.vocab_size,
                               defaults=options.defaults, max_tokens=options.max_tokens, n_keep=options.n_keep,
                               context_shift=options.context_shift)
    routes = [route for family in API_FAMILIES for route in family.ROUTES] + webui_routes()
    app = Starlette(routes=routes, exception_handlers={
        APIError: _api_error, HTTPException: _http_error, ClientDisconnect: _client_gone, Exception: _bug})
    app.state.chatfile = AppState(engine=engine, options=options, limits=limits)
    return Guard(app, options.host, options.api_keys), engine
