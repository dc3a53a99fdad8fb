"""llama-server's own endpoints (tools/server/README.md of llama.cpp), in its shapes.

    GET  /health, /v1/health    200 {"status": "ok"} when ready, 503 {"status": "loading"} before
    GET  /props                 default_generation_settings (n_ctx, params), total_slots, chat_template,
                                model_path (the file name only), build_info
    POST /tokenize              {"content", "add_special", "parse_special"} -> {"tokens"}
    POST /detokenize            {"tokens"} -> {"content"}

The web UI reads its sampling defaults from /props, so a bundle built with `--args "--temp 0.2"` gives
browser users 0.2, and sends only the fields its user changed.
"""
from __future__ import annotations

import asyncio
import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__, api_schema
from .server_http import json_body, state

# llama.cpp's LLAMA_DEFAULT_SEED: the seed /props reports when each request draws a fresh one
RANDOM_SEED = 0xFFFFFFFF


async def health(request: Request) -> Response:
    e = state(request).engine
    if not e.ready.is_set():
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ok", "generating": e.busy, "queued": e.queued})


async def tokenize(request: Request) -> Response:
    content, add_special, parse_special = api_schema.tokenize_request(await json_body(request))
    tokens = await asyncio.to_thread(state(request).engine.model.tokenize, content, add_special, parse_special)
    return JSONResponse({"tokens": tokens})


async def detokenize(request: Request) -> Response:
    st = state(request)
    tokens = api_schema.detokenize_request(await json_body(request), st.limits)
    return JSONResponse({"content": await asyncio.to_thread(st.engine.model.detokenize, tokens)})


def generation_settings(st) -> dict:
    """llama-server's `default_generation_settings`: what a request that sets nothing gets."""
    d = st.options.defaults
    params = {
        "n_predict": st.options.max_tokens, "max_tokens": st.options.max_tokens,
        "seed": RANDOM_SEED if d.seed is None else d.seed,
        "temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p, "min_p": d.min_p,
        "repeat_last_n": d.repeat_last_n, "repeat_penalty": d.repeat_penalty,
        "presence_penalty": d.presence_penalty, "frequency_penalty": d.frequency_penalty,
        "stop": [], "n_keep": 0, "ignore_eos": False, "stream": False, "n_probs": 0,
        "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"],
    }
    return {"id": 0, "id_task": -1, "n_ctx": st.engine.n_ctx, "speculative": False, "is_processing": False,
            "params": params}


async def props(request: Request) -> Response:
    st = state(request)
    return JSONResponse({
        "default_generation_settings": generation_settings(st),
        "total_slots": st.engine.n_slots,
        "model_path": os.path.basename(st.options.model_path),
        "chat_template": st.engine.template.source,
        "modalities": {"vision": False, "audio": False},
        "build_info": f"chatfile {__version__}",
        "is_sleeping": False,
    })


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/v1/health", health, methods=["GET"]),
    Route("/props", props, methods=["GET"]),
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
]
