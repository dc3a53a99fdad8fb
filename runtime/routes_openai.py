"""The OpenAI API family: /v1/models, /v1/chat/completions, /v1/completions.

    GET  /v1/models             the one model
    POST /v1/chat/completions   OpenAI chat (stream via Server-Sent Events), llama.cpp's extra samplers
    POST /v1/completions        raw prompt (text, or token ids used as they are)

Each handler validates (api_schema), prepares the prompt and any constraint (runtime/structured.py:
tools, response_format, json_schema, grammar), submits a Job to the engine, and formats what comes back
as OpenAI's objects: a whole response, or SSE chunks ending in `data: [DONE]`; with tools, the reply is
read into message.tool_calls (streamed as delta.tool_calls) and finish_reason "tool_calls".

A conversation longer than the context keeps its system prompt and newest turns (runtime/conversation.py);
the response then says how many messages went in a top-level "dropped_messages" (in the first chunk of
a stream).
"""
from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__, api_schema, embeddings, logprobs
from .api_fields import context_exceeded
from .api_schema import APIError, GenOptions
from .conversation import ConversationTooLong, fit_messages, reply_room
from .server_engine import Done, Failed, Job
from .server_http import (JobStream, client_gone, client_id, collect_unless_disconnected, json_body, sse,
                          state)
from .structured import constrain, plan_request
from .tool_calls import CallParser, CallStart, Content


# llama.cpp's system_fingerprint is its build id, "b<build number>-<commit>"; ours names the version
SYSTEM_FINGERPRINT = f"b{__version__}-chatfile"


def usage(*dones: Done) -> dict:
    """OpenAI's usage of one or more choices of the same prompt (cached: of the first)."""
    n_generated = sum(d.n_generated for d in dones)
    return {"prompt_tokens": dones[0].n_prompt, "completion_tokens": n_generated,
            "total_tokens": dones[0].n_prompt + n_generated,
            "prompt_tokens_details": {"cached_tokens": dones[0].n_cached}}


def timings(done: Done) -> dict:
    """llama.cpp's `timings` object (the web UI shows tokens/s from it). The first token comes out of the
    prefill, so t_generate covers n_generated - 1 decode steps."""
    n_eval = done.n_prompt - done.n_cached
    n_decoded = max(done.n_generated - 1, 0)
    return {"cache_n": done.n_cached, "prompt_n": n_eval, "prompt_ms": done.t_prompt * 1e3,
            "prompt_per_second": n_eval / done.t_prompt if done.t_prompt > 0 else None,
            "predicted_n": done.n_generated, "predicted_ms": done.t_generate * 1e3,
            "predicted_per_second": n_decoded / done.t_generate if n_decoded and done.t_generate > 0 else None}


async def models(request: Request) -> Response:
    st = state(request)
    engine = st.engine
    model = engine.model
    tensors = model.gguf.tensors.values()
    # llama-server's `meta` (tools/server/README.md), plus the context this server runs with
    meta = {"vocab_type": 2 if model.tokenizer.is_bpe else 1,          # enum llama_vocab_type: BPE, SPM
            "n_vocab": engine.vocab_size, "n_ctx_train": model.config.context_length,
            "n_embd": model.config.dim, "n_params": sum(t.shape[0] * t.n_rows for t in tensors),
            "size": sum(t.nbytes for t in tensors), "n_ctx": engine.n_ctx}
    return JSONResponse({"object": "list", "data": [{
        "id": engine.name, "object": "model", "created": 0, "owned_by": "chatfile",
        "aliases": list(st.options.aliases), "tags": list(st.options.tags), "meta": meta}]})


async def chat_completions(request: Request) -> Response:
    st = state(request)
    req = api_schema.chat_request(await json_body(request), st.limits)
    # the prompt through the template (with the tools, when there are), and any constraint compiled
    engine = st.engine

    def render(messages):
        return plan_request(engine.model, engine.template, req, messages)
    plan, dropped = await asyncio.to_thread(fit_conversation, engine, req.messages, render,
                                            lambda p: len(p.prompt_ids), req.gen.max_tokens)
    return await respond(request, plan.prompt_ids, plan.gen, req.stream, req.include_usage, chat=True, n=req.n,
                         parser=plan.parser, dropped=dropped, verbose=req.verbose)


def fit_conversation(engine, messages: list[dict], render, length, max_tokens: int):
    """(render(kept messages), number dropped): the system prompt and the newest turns that fit the
    context with room for the reply; 400 context_length_exceeded when even the last message does not."""
    budget = engine.n_ctx - reply_room(engine.n_ctx, max_tokens)
    try:
        return fit_messages(messages, render, budget, engine.n_ctx, length)
    except ConversationTooLong as e:
        raise context_exceeded(e.n_tokens, e.limit, "shorten the message (the system prompt and the last "
                                                   "message alone are this long)") from None


async def completions(request: Request) -> Response:
    st = state(request)
    req = api_schema.completion_request(await json_body(request), st.limits)
    model = st.engine.model
    ids = req.prompt if isinstance(req.prompt, list) else \
        await asyncio.to_thread(model.tokenize, req.prompt, True, True)
    gen = await asyncio.to_thread(constrain, model, req.gen, req.structure)
    return await respond(request, ids, gen, req.stream, req.include_usage, chat=False, n=req.n,
                         verbose=req.verbose)


async def chat_input_tokens(request: Request) -> Response:
    """llama-server's token count of a chat request (the shape of OpenAI's responses input_tokens)."""
    st = state(request)
    req = api_schema.chat_request(await json_body(request), st.limits)
    plan = await asyncio.to_thread(plan_request, st.engine.model, st.engine.template, req)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": len(plan.prompt_ids)})


# ---- generation -> OpenAI objects ------------------------------------------------------------------

def choice_options(gen: GenOptions, n: int) -> list[GenOptions]:
    """The options of each of n choices: with a fixed seed, choice i samples with seed + i (the same
    seed would give n identical choices); without one each draws its own."""
    if gen.params.seed is None:
        return [gen] * n
    return [replace(gen, params=replace(gen.params, seed=(gen.params.seed + i) % api_schema.MAX_SEED))
            for i in range(n)]


async def respond(request: Request, ids: list[int], gen: GenOptions, stream: bool, include_usage: bool,
                  chat: bool, n: int = 1, parser=None, dropped: int = 0, verbose: bool = False) -> Response:
    """Generate n choices, one after the other, as one OpenAI object or one SSE stream. `parser`: makes a
    CallParser per choice (runtime/tool_calls.py) that reads tool calls out of the reply, or None.
    `dropped`: messages left out to fit the context, reported as "dropped_messages" when any.
    `verbose`: llama-server's "__verbose" debugging object of the first choice (not when streaming), also
    given to every request when the server runs with --verbose, as llama-server does."""
    engine = state(request).engine
    verbose = verbose or state(request).options.verbose
    gens = choice_options(gen, n)
    jobs = [engine.submit(ids, gens[0], client=client_id(request))]
    head = {"id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": engine.name, "system_fingerprint": SYSTEM_FINGERPRINT}
    if stream:
        return JobStream(jobs, _stream(request, ids, gens, jobs, head, include_usage, chat, parser, dropped))
    choices, dones = [], []
    for index, g in enumerate(gens):
        if index:
            jobs.append(engine.submit(ids, g, client=client_id(request)))
        events = await collect_unless_disconnected(request, jobs[-1])
        if events is None:                   # nobody is listening any more
            return client_gone()
        last = events[-1]
        if isinstance(last, Failed):
            return JSONResponse(last.error().body(), status_code=last.status)
        pieces = events[:-1]
        text = "".join(p.text for p in pieces)
        choice = {"index": index, "finish_reason": last.finish_reason,
                  "logprobs": _logprobs(engine, pieces, chat) if g.logprobs is not None else None}
        calls = parser() if parser is not None else None
        if calls is not None:
            for p in pieces:
                calls.feed(p.token_id, p.text)
            calls.finish()
            choice["message"] = message(calls)
            choice["finish_reason"] = finish_reason(calls, last.finish_reason)
        elif chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choices.append(choice)
        dones.append(last)
    extra = {"dropped_messages": dropped} if dropped else {}
    if verbose:
        extra["__verbose"] = verbose_object(engine, ids, choices[0], dones[0])
    return JSONResponse({**head, "choices": choices, "usage": usage(*dones), "timings": timings(dones[-1]),
                         **extra})


def verbose_object(engine, ids: list[int], choice: dict, done: Done) -> dict:
    """llama-server's "__verbose" (its native /completion object), the part chatfile has: the prompt as
    the model read it, the reply, the counts and timings."""
    content = choice["message"]["content"] if "message" in choice else choice["text"]
    return {"index": 0, "content": content or "", "prompt": engine.model.detokenize(ids), "model": engine.name,
            "tokens_predicted": done.n_generated, "tokens_evaluated": done.n_prompt,
            "tokens_cached": done.n_cached, "stop": True, "timings": timings(done)}


def message(parser: CallParser) -> dict:
    """The assistant message of a reply read by `parser`: content None when it is only tool calls."""
    out = {"role": "assistant", "content": parser.content or (None if parser.calls else "")}
    if parser.calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments}} for c in parser.calls]
    return out


def finish_reason(parser: CallParser | None, reason: str) -> str:
    """OpenAI's "tool_calls" when a reply that ended by itself made calls."""
    return "tool_calls" if parser is not None and parser.calls and reason == "stop" else reason


def delta(events: list) -> dict:
    """Parser events -> one stream delta: content, and tool_calls as OpenAI streams them (id, type and
    name first with empty arguments, then argument fragments under the same index)."""
    out: dict = {}
    calls: list[dict] = []
    for e in events:
        if isinstance(e, Content):
            out["content"] = out.get("content", "") + e.text
        elif isinstance(e, CallStart):
            calls.append({"index": e.index, "id": e.id, "type": "function",
                          "function": {"name": e.name, "arguments": ""}})
        elif calls and calls[-1]["index"] == e.index:
            calls[-1]["function"]["arguments"] += e.fragment
        else:
            calls.append({"index": e.index, "function": {"arguments": e.fragment}})
    if calls:
        out["tool_calls"] = calls
    return out


async def _stream(request: Request, ids: list[int], gens: list[GenOptions], jobs: list[Job], head: dict,
                  include_usage: bool, chat: bool, parser=None, dropped: int = 0):
    """SSE per choice: a role chunk, content (and tool call) chunks, a finish_reason chunk; then [a usage
    chunk] and `data: [DONE]`. Choices come one after the other, each chunk naming its `index`. The
    first chunk carries "dropped_messages" when messages were left out."""
    engine = state(request).engine
    head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
    dones = []
    for index, g in enumerate(gens):
        def chunk(text: str | None, finish_reason=None, logprobs=None, events=None) -> dict:
            choice = {"index": index, "logprobs": logprobs, "finish_reason": finish_reason}
            if events is not None:
                choice["delta"] = delta(events)
            elif chat:
                choice["delta"] = {} if text is None else {"content": text}
            else:
                choice["text"] = text or ""
            return {**head, "choices": [choice]}

        if index:
            jobs.append(engine.submit(ids, g, client=client_id(request)))
        want_logprobs = g.logprobs is not None
        calls = parser() if parser is not None else None
        if chat:
            extra = {"dropped_messages": dropped} if dropped and not index else {}
            # content null in the role chunk, as llama-server sends it (OpenAI sends "")
            yield sse({**head, "choices": [{"index": index, "delta": {"role": "assistant", "content": None},
                                            "logprobs": None, "finish_reason": None}], **extra})
        async for item in jobs[-1].stream():
            if isinstance(item, Failed):
                yield sse(item.error().body())
                yield "data: [DONE]\n\n"
                return
            if isinstance(item, Done):
                reason = item.finish_reason
                if calls is not None:
                    rest = calls.finish()
                    if rest:
                        yield sse(chunk(None, events=rest))
                    reason = finish_reason(calls, reason)
                yield sse({**chunk(None, reason), "timings": timings(item)})
                dones.append(item)
                break
            lp = _logprobs(engine, [item], chat) if want_logprobs else None
            if calls is not None:
                events = calls.feed(item.token_id, item.text)
                if events or want_logprobs:
                    yield sse(chunk(None, logprobs=lp, events=events))
            elif item.text or want_logprobs:
                yield sse(chunk(item.text, logprobs=lp))
    if include_usage and dones:
        yield sse({**head, "choices": [], "usage": usage(*dones), "timings": timings(dones[0])})
    yield "data: [DONE]\n\n"


def _logprobs(engine, pieces: list, chat: bool) -> dict:
    tokenizer = engine.model.tokenizer
    if chat:   # OpenAI chat: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}
        return {"content": logprobs.chat_content(tokenizer, pieces)}
    return logprobs.legacy_completion(tokenizer, pieces)   # legacy completions: parallel arrays


async def create_embeddings(request: Request) -> Response:
    st = state(request)
    model = st.engine.model
    req = embeddings.request(await json_body(request), st.limits, model.config.dim)
    pooling = embeddings.model_pooling(model.config.pooling, st.options.pooling)
    if pooling == "none":
        raise APIError(400, "this server pools embeddings by 'none' (one vector per token), which OpenAI's "
                            "embeddings cannot carry: use POST /embeddings, or restart with --pooling mean",
                       param="input", type="not_supported_error")
    vectors, n_tokens = await embeddings.run(st.engine, req, pooling)
    return JSONResponse(embeddings.openai_response(req, vectors, n_tokens, st.engine.name))


ROUTES = [
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", create_embeddings, methods=["POST"]),
    Route("/v1/chat/completions/input_tokens", chat_input_tokens, methods=["POST"]),
    Route("/chat/completions/input_tokens", chat_input_tokens, methods=["POST"]),
]
