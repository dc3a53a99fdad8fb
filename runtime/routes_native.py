"""llama-server's own endpoints (tools/server/README.md of llama.cpp), in its shapes.

    GET  /health, /v1/health    200 {"status": "ok"} when ready, 503 {"status": "loading"} before
    GET  /props                 default_generation_settings (n_ctx, params), total_slots, chat_template,
                                model_path (the file name only), build_info
    GET  /slots                 each slot: id, n_ctx, is_processing, params, next_token, n_cached; the
                                prompt text only with --slots (?fail_on_no_slot=1: 503 when all are busy)
    POST /tokenize              {"content", "add_special", "parse_special", "with_pieces"} -> {"tokens"}
    POST /detokenize            {"tokens"} -> {"content"}
    POST /completion            llama.cpp's completion (alias /completions): prompt as text, ids or a mix,
                                n_predict, n_probs, stream (events without [DONE]), `tokens`, `timings`
    POST /infill                fill-in-the-middle with the model's FIM tokens (400 when it has none)
    POST /apply-template        {"messages"} -> {"prompt"}: the chat template's text, nothing generated
    POST /embedding(s)          per input {"index", "embedding": [[...]]} (every token's row with pooling
                                "none", else the one pooled, normalized vector)
    GET  /models                alias of /v1/models;  POST /chat/completions: alias of /v1/chat/completions

The web UI reads its sampling defaults from /props, so a bundle built with `--args "--temp 0.2"` gives
browser users 0.2, and sends only the fields its user changed.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__, api_native, api_schema, embeddings, logprobs, routes_openai
from .api_schema import APIError, GenOptions
from .server_engine import Done, Failed
from .server_http import JobStream, client_gone, client_id, collect_unless_disconnected, json_body, sse, state
from .structured import chat_text, constrain

# llama.cpp's LLAMA_DEFAULT_SEED: the seed /props reports when each request draws a fresh one
RANDOM_SEED = 0xFFFFFFFF


async def health(request: Request) -> Response:
    e = state(request).engine
    if not e.ready.is_set():
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ok", "generating": e.busy, "queued": e.queued})


async def tokenize(request: Request) -> Response:
    content, add_special, parse_special, with_pieces = api_schema.tokenize_request(await json_body(request))
    model = state(request).engine.model
    tokens = await asyncio.to_thread(model.tokenize, content, add_special, parse_special)
    if with_pieces:   # a piece that is not whole UTF-8 (part of a character) comes as its byte values
        tokens = [{"id": t, "piece": api_native.piece_json(model.tokenizer, t)} for t in tokens]
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
        "stop": [], "n_keep": st.options.n_keep, "ignore_eos": False, "stream": False, "n_probs": 0,
        "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"],
    }
    return {"id": 0, "id_task": -1, "n_ctx": st.engine.n_ctx, "speculative": False, "is_processing": False,
            "params": params}


async def slots(request: Request) -> Response:
    """llama-server's GET /slots: each slot's state. The prompt text a slot holds only with --slots, and
    only of the slots last used under the requester's own API key (every slot when there are no keys)."""
    st = state(request)
    engine = st.engine
    views = engine.slot_views()
    if request.query_params.get("fail_on_no_slot") in ("1", "true") and all(v.gen is not None for v in views):
        raise APIError(503, "no slot available", type="unavailable_error")
    idle = GenOptions(params=st.options.defaults, max_tokens=st.options.max_tokens, n_keep=st.options.n_keep)
    me = client_id(request)
    out = []
    for v in views:
        item = {"id": v.id, "id_task": v.task_id, "n_ctx": engine.n_ctx, "speculative": False,
                "is_processing": v.gen is not None,
                "params": api_native.generation_settings(api_native.CompletionRequest([], v.gen or idle),
                                                         engine.n_ctx),
                "next_token": {"has_next_token": v.gen is not None, "has_new_line": False,
                               "n_remain": v.n_remain, "n_decoded": v.n_decoded},
                "n_cached": len(v.tokens), "n_processed": v.n_processed}
        if st.options.slots_prompts and v.client == me:
            item["prompt"] = await asyncio.to_thread(engine.model.detokenize, list(v.tokens))
        out.append(item)
    return JSONResponse(out)


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


# ---- /completion and /infill -----------------------------------------------------------------------

async def completion(request: Request) -> Response:
    st = state(request)
    model = st.engine.model
    body = api_native.text_logit_bias(await json_body(request),
                                      lambda text: model.tokenize(text, add_special=False, parse_special=False))
    req = api_native.completion_request(body, st.limits)
    ids = [await asyncio.to_thread(api_native.tokenize_mixed, model, parts, True, True) for parts in req.prompts]
    return await _complete(request, req, ids)


async def infill(request: Request) -> Response:
    st = state(request)
    req = api_native.infill_request(await json_body(request), st.limits)
    ids = await asyncio.to_thread(api_native.infill_prompt_ids, st.engine.model, req, st.engine.n_ctx)
    return await _complete(request, req.completion, [ids])


async def _complete(request: Request, req: api_native.CompletionRequest, prompts: list[list[int]]) -> Response:
    """Each prompt generated in turn, n_cmpl times each (with a fixed seed, the i-th completion of a
    prompt samples with seed + i): one object, an array for several, or one event stream."""
    for ids in prompts:
        if not ids:
            raise APIError(400, "'prompt' must not be empty", param="prompt")
    model = state(request).engine.model
    gen = await asyncio.to_thread(constrain, model, req.gen, req.structure)
    if req.ignore_eos:
        gen = api_native.with_ignore_eos(gen, model.tokenizer)
    req = replace(req, gen=gen)
    runs = [(ids, g) for ids in prompts for g in routes_openai.choice_options(gen, req.n_cmpl)]
    submit = state(request).engine.submit
    if req.stream:
        jobs = [submit(runs[0][0], runs[0][1], client=client_id(request))]
        return JobStream(jobs, _stream(request, req, runs, jobs))
    results = []
    for index, (ids, g) in enumerate(runs):
        events = await collect_unless_disconnected(request, submit(ids, g, client=client_id(request)))
        if events is None:
            return client_gone()
        if isinstance(events[-1], Failed):
            raise events[-1].error()
        results.append(_final(request, req, index, ids, events[:-1], events[-1], whole=True))
    return JSONResponse(results[0] if len(results) == 1 else results)


async def _stream(request: Request, req: api_native.CompletionRequest, runs: list, jobs: list):
    """llama.cpp's /completion events: one per token, then the closing object; no `data: [DONE]`."""
    st = state(request)
    tok = st.engine.model.tokenizer
    for index, (ids, g) in enumerate(runs):
        if index:
            jobs.append(st.engine.submit(ids, g, client=client_id(request)))
        pieces = []
        async for item in jobs[-1].stream():
            if isinstance(item, Failed):
                yield sse(item.error().body())
                return
            if isinstance(item, Done):
                yield sse(_final(request, req, index, ids, pieces, item, whole=False))
                break
            pieces.append(item)
            probs = logprobs.chat_content(tok, [item], True, req.gen.post_sampling_probs) \
                if req.gen.logprobs else None
            yield sse(api_native.partial(item, index, len(pieces), len(ids), probs))


def _final(request: Request, req: api_native.CompletionRequest, index: int, ids: list[int], pieces: list,
           done: Done, whole: bool) -> dict:
    st = state(request)
    tok = st.engine.model.tokenizer
    content = "".join(p.text for p in pieces)
    probs = logprobs.chat_content(tok, pieces, True, req.gen.post_sampling_probs) \
        if whole and req.gen.logprobs else None
    return api_native.final(
        index=index, content=content if whole else "",
        tokens=[p.token_id for p in pieces] if whole and req.return_tokens else [],
        model_name=st.engine.name, n_prompt=done.n_prompt, n_cached=done.n_cached, n_generated=done.n_generated,
        settings=api_native.generation_settings(req, st.engine.n_ctx),
        prompt=st.engine.model.detokenize(ids),
        stop=api_native.stop_type(tok, pieces, done.finish_reason, content, req.gen.stop),
        truncated=done.finish_reason == "length" and done.n_prompt + done.n_generated >= st.engine.n_ctx,
        timings=routes_openai.timings(done), probs=probs, response_fields=req.response_fields)


# ---- templates and embeddings ----------------------------------------------------------------------

async def apply_template(request: Request) -> Response:
    """The prompt a chat body would run, as text: its messages and tools through the chat template (the
    tool-use one for bodies with tools), with llama.cpp's `add_generation_prompt` (default true),
    `chat_template_kwargs` (more template variables, e.g. enable_thinking) and assistant prefill."""
    st = state(request)
    chat = api_schema.chat_request(await json_body(request), st.limits)
    _, text = await asyncio.to_thread(
        chat_text, st.engine.model, st.engine.template, chat.messages, chat.tools,
        add_generation_prompt=chat.add_generation_prompt, continue_final=chat.continue_final,
        template_kwargs=chat.template_kwargs)
    return JSONResponse({"prompt": text})


async def embedding(request: Request) -> Response:
    """llama.cpp's non-OpenAI embeddings: [{"index", "embedding": [[...], ...]}]."""
    st = state(request)
    model = st.engine.model
    req = embeddings.request(await json_body(request), st.limits, model.config.dim, native=True)
    vectors, _ = await embeddings.run(st.engine, req, embeddings.model_pooling(model.config.pooling,
                                                                               st.options.pooling))
    return JSONResponse([{"index": i, "embedding": v.tolist() if v.ndim == 2 else [v.tolist()]}
                         for i, v in enumerate(vectors)])


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/v1/health", health, methods=["GET"]),
    Route("/props", props, methods=["GET"]),
    Route("/slots", slots, methods=["GET"]),
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
    Route("/completion", completion, methods=["POST"]),
    Route("/completions", completion, methods=["POST"]),      # llama-server: the native one, not OpenAI's
    Route("/infill", infill, methods=["POST"]),
    Route("/apply-template", apply_template, methods=["POST"]),
    Route("/embedding", embedding, methods=["POST"]),
    Route("/embeddings", embedding, methods=["POST"]),
    Route("/models", routes_openai.models, methods=["GET"]),
    Route("/chat/completions", routes_openai.chat_completions, methods=["POST"]),
]
