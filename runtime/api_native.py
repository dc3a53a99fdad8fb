"""llama-server's native request and response shapes (llama.cpp tools/server/README.md), as pure functions.

Requests: `/completion` (and `/completions`), `/infill`, `/apply-template`, `/tokenize` with pieces, and
llama.cpp's prompt forms, which `/v1/embeddings` shares:

    "text"                      one prompt
    [12, 34, 56]                one prompt of token ids
    [12, "text", 56]            one prompt mixing ids and text (BOS only when it starts with text)
    ["a", [1, 2], {"prompt_string": "b"}]   several prompts

Fields are checked as api_schema checks OpenAI's (the same sampling fields, limits and messages), with
llama.cpp's `logit_bias`, `grammar`, `json_schema` and `ignore_eos`. llama.cpp fields for samplers
chatfile does not have (mirostat, DRY, XTC, typical-p, dynamic temperature, ...)
are accepted at their "off" values and refused with a 400 naming the field otherwise, so a client never
silently gets other sampling than it asked for; fields that change nothing here (id_slot, the
samplers' order, ...) are accepted and ignored (n_keep is read: the context shift keeps that many). Unknown fields get a 400, as on the OpenAI endpoints.

Responses: `final()` and `partial()` build /completion's JSON (`content`, `tokens`, `stop`, `stop_type`,
`stopping_word`, `truncated`, `generation_settings`, `timings`, `completion_probabilities`, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from . import api_schema, logprobs
from .api_schema import APIError, GenOptions, Limits
from .constraint import Spec

MAX_PROMPTS = 16                # prompts per /completion request: each is a generation of its own
MAX_N_PROBS = api_schema.MAX_TOP_LOGPROBS
RANDOM_SEED = 0xFFFFFFFF        # llama.cpp's LLAMA_DEFAULT_SEED: what it reports for "a fresh seed each time"
# llama.cpp's FIM budget (format_prompt_infill): the prefix and suffix fit in one batch of n_batch tokens,
# 3/4 of it for the prefix; llama-server's default batch is 2048
INFILL_BATCH = 2048

# sampler fields chatfile lacks -> the value that turns them off (anything else is refused)
_OFF = {"typical_p": 1.0, "dynatemp_range": 0.0, "mirostat": 0, "dry_multiplier": 0.0, "xtc_probability": 0.0,
        "top_n_sigma": -1.0, "adaptive_target": -1.0, "n_indent": 0, "t_max_predict_ms": 0,
        "lora": [], "return_progress": False, "penalize_nl": False}
# fields that change nothing in chatfile's output: tuning of the samplers above, slots, timings, ...
_IGNORED = frozenset({"dynatemp_exponent", "mirostat_tau", "mirostat_eta", "dry_base", "dry_allowed_length",
                      "dry_penalty_last_n", "dry_sequence_breakers", "xtc_threshold", "adaptive_decay",
                      "min_keep", "n_discard", "id_slot", "samplers", "timings_per_token",
                      "n_cache_reuse", "model", "backend_sampling", "sse_ping_interval", "verbose"})
# sampling fields read as api_schema reads them on the OpenAI endpoints
_SAMPLING = frozenset({"temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n",
                       "presence_penalty", "frequency_penalty", "seed", "stop", "cache_prompt", "logit_bias",
                       "grammar", "json_schema", "n_keep"})
_COMPLETION = _SAMPLING | _IGNORED | set(_OFF) | {
    "prompt", "n_predict", "max_tokens", "stream", "n_probs", "return_tokens", "response_fields", "ignore_eos",
    "n_cmpl", "post_sampling_probs"}
_INFILL = (_COMPLETION - {"prompt"}) | {"prompt", "input_prefix", "input_suffix", "input_extra"}


@dataclass(frozen=True)
class CompletionRequest:
    prompts: list[list]          # per prompt: its parts, str (text) or int (token id), in order
    gen: GenOptions
    stream: bool = False
    return_tokens: bool = False
    response_fields: tuple[str, ...] = ()
    structure: Spec | None = None   # `grammar` (GBNF) or `json_schema`, compiled by structured.constrain
    ignore_eos: bool = False     # llama.cpp: end-of-generation tokens get a logit bias of -inf
    n_cmpl: int = 1              # completions of each prompt


@dataclass(frozen=True)
class InfillRequest:
    prefix: list                 # parts, like a prompt (llama.cpp tokenizes them without special tokens)
    suffix: list
    extra: list[tuple[str, str]]  # (filename, text)
    prompt: str                  # text the completion continues, after the prefix
    completion: CompletionRequest


# ---- prompts ---------------------------------------------------------------------------------------

def _is_id(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parts(value: list, name: str, vocab_size: int) -> list:
    for i, x in enumerate(value):
        if _is_id(x):
            if not 0 <= x < vocab_size:
                raise APIError(400, f"'{name}[{i}]' = {x} is not a token id (vocabulary size {vocab_size})",
                               param=name)
        elif not isinstance(x, str):
            raise APIError(400, f"'{name}[{i}]' must be a token id or a string", param=name)
    return list(value)


def _one_prompt(p, name: str, vocab_size: int, content_objects: bool = False) -> list:
    if isinstance(p, str):
        return [p]
    if isinstance(p, list):
        return _parts(p, name, vocab_size)
    if isinstance(p, dict) and "prompt_string" in p:
        if p.get("multimodal_data"):
            raise APIError(400, f"'{name}.multimodal_data': this model reads text only", param=name)
        return _one_prompt(p["prompt_string"], f"{name}.prompt_string", vocab_size)
    if content_objects and isinstance(p, dict) and isinstance(p.get("content"), list):
        # embeddings' OpenAI-style {"content": [parts]}: text parts taken as they are, one after another
        return [api_schema.text_parts(p["content"], f"{name}.content", sep="")]
    raise APIError(400, f"'{name}' must be a string, an array of token ids and strings, or "
                        "{\"prompt_string\": ...}", param=name)


def prompts(value, name: str, vocab_size: int, limit: int = MAX_PROMPTS, content_objects: bool = False) -> list[list]:
    """llama.cpp's prompt shapes (tokenize_input_prompts) -> one list of parts per prompt. A prompt of
    empty text is let through: it is BOS alone for a model that adds one, and refused once tokenized
    to nothing. content_objects: also {"content": [text parts]} (the embeddings endpoints)."""
    if isinstance(value, list) and value and not any(_is_id(x) for x in value):
        if len(value) > limit:
            raise APIError(400, f"'{name}' holds {len(value)} prompts; at most {limit} are allowed", param=name)
        out = [_one_prompt(p, f"{name}[{i}]", vocab_size, content_objects) for i, p in enumerate(value)]
    else:
        out = [_one_prompt(value, name, vocab_size, content_objects)]
    if not out or any(not p for p in out):
        raise APIError(400, f"'{name}' must not be empty", param=name)
    return out


def tokenize_mixed(model, parts: list, add_special: bool, parse_special: bool) -> list[int]:
    """Token ids of one prompt's parts (llama.cpp tokenize_mixed): BOS (add_special) only when the prompt
    starts with text; ids are taken as they are."""
    ids: list[int] = []
    for k, part in enumerate(parts):
        if isinstance(part, str):
            ids += model.tokenize(part, add_special=add_special and k == 0, parse_special=parse_special)
        else:
            ids.append(part)
    return ids


# ---- /completion -----------------------------------------------------------------------------------

def _check_known(body: dict, known: frozenset) -> None:
    unknown = sorted(k for k in body if k not in known)
    if unknown:
        raise APIError(400, f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown))}",
                       param=unknown[0])
    for name, off in _OFF.items():
        if name in body and body[name] != off and body[name] is not None:
            raise APIError(400, f"'{name}' is not supported by this server (only {off!r}, which turns it off)",
                           param=name)


def _n_predict(body: dict, limits: Limits) -> int:
    """n_predict (alias max_tokens): -1 until the end, 0 only evaluates the prompt. As llama-server does
    it: the request's value wins over the server's -n, which is only the default, and may exceed the
    context (the reply then stops when the context is full, `truncated`, unless --context-shift)."""
    name = "n_predict" if "n_predict" in body else "max_tokens"
    n = api_schema.number(body, name, -1, api_schema.MAX_PREDICT, -1, integer=True)
    return limits.max_tokens if n < 0 else n


def _options(body: dict, limits: Limits, known: frozenset, prompt_list: list[list]) -> CompletionRequest:
    _check_known(body, known)
    n_probs = api_schema.number(body, "n_probs", 0, MAX_N_PROBS, 0, integer=True)
    fields = body.get("response_fields") or []
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise APIError(400, "'response_fields' must be an array of strings", param="response_fields")
    sampling = {k: body[k] for k in _SAMPLING if k in body}
    if sampling.get("grammar") == "":
        del sampling["grammar"]                    # llama.cpp's "no grammar"
    gen = api_schema.gen_options(sampling, limits, n_probs if n_probs > 0 else None)
    post = api_schema.flag(body, "post_sampling_probs", False)
    return CompletionRequest(
        prompts=prompt_list, gen=replace(gen, max_tokens=_n_predict(body, limits), post_sampling_probs=post),
        stream=api_schema.flag(body, "stream", False),
        return_tokens=api_schema.flag(body, "return_tokens", False),
        response_fields=tuple(fields), structure=api_schema.structure_field(sampling),
        ignore_eos=api_schema.flag(body, "ignore_eos", False), n_cmpl=_n_cmpl(body, len(prompt_list)))


def _n_cmpl(body: dict, n_prompts: int) -> int:
    n = api_schema.number(body, "n_cmpl", 1, api_schema.MAX_CHOICES, 1, integer=True)
    if n * max(n_prompts, 1) > MAX_PROMPTS:
        raise APIError(400, f"{n_prompts} prompts times n_cmpl {n} is over {MAX_PROMPTS} completions", param="n_cmpl")
    return n


def text_logit_bias(body: dict, tokenize) -> dict:
    """llama.cpp's logit_bias may name text instead of a token id ([[" hello", -1]] or {" hello": -1}):
    every token of the text gets the bias. -> the body with such entries turned into token ids."""
    value = body.get("logit_bias")
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and all(isinstance(e, list) and len(e) == 2 for e in value):
        items = [tuple(e) for e in value]
    else:
        return body
    if not any(isinstance(k, str) and not k.strip().lstrip("-").isdigit() for k, _ in items):
        return body
    out = []
    for key, bias in items:
        if isinstance(key, str) and not key.strip().lstrip("-").isdigit():
            out += [[t, bias] for t in tokenize(key)]
        else:
            out.append([key, bias])
    return {**body, "logit_bias": out}


def with_ignore_eos(gen: GenOptions, tokenizer) -> GenOptions:
    """ignore_eos as llama.cpp does it: every end-of-generation token biased by -inf."""
    bias = dict(gen.logit_bias or {})
    bias.update({t: -math.inf for t in tokenizer.eog_ids})
    return replace(gen, logit_bias=bias)


def completion_request(body: dict, limits: Limits) -> CompletionRequest:
    if "prompt" not in body:
        raise APIError(400, "missing required field 'prompt'", param="prompt")
    return _options(body, limits, _COMPLETION, prompts(body["prompt"], "prompt", limits.vocab_size))


def infill_request(body: dict, limits: Limits) -> InfillRequest:
    for name in ("input_prefix", "input_suffix"):
        if name not in body:
            raise APIError(400, f"missing required field '{name}'", param=name)
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise APIError(400, "'prompt' must be a string", param="prompt")
    extra = body.get("input_extra") or []
    if not isinstance(extra, list):
        raise APIError(400, "'input_extra' must be an array of {\"filename\": string, \"text\": string}",
                       param="input_extra")
    chunks = []
    for i, chunk in enumerate(extra):
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str) or \
                not isinstance(chunk.get("filename", "tmp"), str):
            raise APIError(400, f"'input_extra[{i}]' must be {{\"filename\": string, \"text\": string}}",
                           param="input_extra")
        chunks.append((chunk.get("filename", "tmp"), chunk["text"]))
    sides = [[] if body[name] in ("", []) else _one_prompt(body[name], name, limits.vocab_size)
             for name in ("input_prefix", "input_suffix")]
    return InfillRequest(prefix=sides[0], suffix=sides[1], extra=chunks, prompt=prompt,
                         completion=_options(body, limits, _INFILL, []))


def infill_prompt_ids(model, req: InfillRequest, n_ctx: int) -> list[int]:
    """llama.cpp's format_prompt_infill: [extra context] [BOS] FIM_PRE prefix prompt FIM_SUF suffix FIM_MID.
    With FIM_REP/FIM_SEP tokens the extra context is repo-level ("myproject", one FIM_SEP file per chunk,
    then FIM_SEP "filename"); without them each chunk follows a plain-text snippet separator. The prefix
    keeps its last 3/4 batch of tokens, the suffix its first quarter batch; the extra context fills what
    the context has left."""
    tok = model.tokenizer
    fim = tok.fim
    missing = [what for what, key in (("prefix", "fim_pre"), ("suffix", "fim_suf"), ("middle", "fim_mid"))
               if fim.get(key) is None]
    if missing:
        raise APIError(400, f"infill is not supported by this model: it has no FIM {', '.join(missing)} token "
                            "(tokenizer.ggml.fim_pre_token_id and friends)", type="not_supported_error")

    def text(s: str) -> list[int]:
        return model.tokenize(s, add_special=False, parse_special=False)

    prefix = tokenize_mixed(model, req.prefix, False, False)
    suffix = tokenize_mixed(model, req.suffix, False, False)
    prompt = model.tokenize(req.prompt, add_special=False, parse_special=True)
    extra: list[int] = []
    if fim.get("fim_rep") is not None:
        extra += [fim["fim_rep"]] + text("myproject\n")
    for filename, chunk in req.extra:
        if fim.get("fim_sep") is not None:
            extra += [fim["fim_sep"]] + text(filename + "\n")
        else:
            extra += text("\n\n--- snippet ---\n\n")
        extra += text(chunk)
    if fim.get("fim_sep") is not None:
        extra += [fim["fim_sep"]] + text("filename\n")

    n_prefix = min(len(prefix), 3 * (INFILL_BATCH // 4))
    n_suffix = min(len(suffix), max(0, INFILL_BATCH // 4 - (2 + len(prompt))))
    n_predict = max(req.completion.gen.max_tokens, -1)
    n_extra = min(max(0, n_ctx - INFILL_BATCH - 2 * n_predict), len(extra))
    ids = [fim["fim_pre"]] + prefix[len(prefix) - n_prefix:] + prompt
    if tok.add_bos and tok.bos_id is not None:
        ids.insert(0, tok.bos_id)
    return extra[len(extra) - n_extra:] + ids + [fim["fim_suf"]] + suffix[:n_suffix] + [fim["fim_mid"]]


# ---- responses -------------------------------------------------------------------------------------

def generation_settings(req: CompletionRequest, n_ctx: int) -> dict:
    """llama-server's generation_settings (task_params::to_json): what the request ran with. Samplers
    chatfile lacks are reported at their "off" values."""
    gen, stream = req.gen, req.stream
    p = gen.params
    return {
        "n_ctx": n_ctx, "seed": RANDOM_SEED if p.seed is None else p.seed,
        "temperature": p.temperature, "dynatemp_range": 0.0, "dynatemp_exponent": 1.0,
        "top_k": p.top_k, "top_p": p.top_p, "min_p": p.min_p, "top_n_sigma": -1.0,
        "xtc_probability": 0.0, "xtc_threshold": 0.1, "typical_p": 1.0,
        "repeat_last_n": p.repeat_last_n, "repeat_penalty": p.repeat_penalty,
        "presence_penalty": p.presence_penalty, "frequency_penalty": p.frequency_penalty,
        "dry_multiplier": 0.0, "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": -1,
        "dry_sequence_breakers": [], "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1,
        "adaptive_target": -1.0, "adaptive_decay": 0.9,
        "stop": list(gen.stop), "max_tokens": gen.max_tokens, "n_predict": gen.max_tokens,
        "n_keep": gen.n_keep, "n_discard": 0, "ignore_eos": req.ignore_eos, "stream": stream,
        # JSON has no -inf: a banned token's bias is null, as llama.cpp's JSON writes it
        "logit_bias": [{"token": t, "bias": b if math.isfinite(b) else None}
                       for t, b in sorted((gen.logit_bias or {}).items())],
        "n_probs": gen.logprobs or 0, "min_keep": 0,
        "grammar": req.structure.source if req.structure is not None and req.structure.kind == "gbnf" else "",
        "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"],
        "timings_per_token": False, "post_sampling_probs": gen.post_sampling_probs, "lora": [],
    }


def stop_type(tokenizer, pieces: list, finish_reason: str, content: str, stops) -> tuple[str, str]:
    """(stop_type, stopping_word): "eos" (an end-of-generation token), "word" (a stop string, which one),
    "limit" (n_predict or the context). The stop string is what follows the released text in the text
    of all generated tokens."""
    if finish_reason != "stop":
        return "limit", ""
    if pieces and tokenizer.is_eog(pieces[-1].token_id):
        return "eos", ""
    full = b"".join(logprobs.token_bytes(tokenizer, p.token_id) for p in pieces).decode("utf-8", "replace")
    rest = full[len(content):]
    for s in stops:
        if rest.startswith(s):
            return "word", s
    return "eos", ""


def partial(piece, index: int, n_generated: int, n_prompt: int, probs: list | None) -> dict:
    """One streamed /completion event: a token's text and id."""
    out = {"index": index, "content": piece.text, "tokens": [piece.token_id], "stop": False, "id_slot": 0,
           "tokens_predicted": n_generated, "tokens_evaluated": n_prompt}
    if probs is not None:
        out["completion_probabilities"] = probs
    return out


def final(*, index: int, content: str, tokens: list[int], model_name: str, n_prompt: int, n_cached: int,
          n_generated: int, settings: dict, prompt: str, stop: tuple[str, str], truncated: bool,
          timings: dict, probs: list | None, response_fields=()) -> dict:
    """The last /completion object (the whole answer, or the closing event of a stream)."""
    out = {
        "index": index, "content": content, "tokens": tokens, "id_slot": 0, "stop": True, "model": model_name,
        "tokens_predicted": n_generated, "tokens_evaluated": n_prompt, "generation_settings": settings,
        "prompt": prompt, "has_new_line": "\n" in content, "truncated": truncated, "stop_type": stop[0],
        "stopping_word": stop[1], "tokens_cached": n_prompt + max(n_generated - 1, 0), "timings": timings,
    }
    if probs is not None:
        out["completion_probabilities"] = probs
    return select_fields(out, response_fields) if response_fields else out


def select_fields(obj: dict, fields) -> dict:
    """llama.cpp's response_fields (json_get_nested_values): keep only these; "a/b" takes obj["a"]["b"],
    under the key "a/b"."""
    out = {}
    for path in fields:
        value, found = obj, True
        for key in path.split("/"):
            if isinstance(value, dict) and key in value:
                value = value[key]
            else:
                found = False
                break
        if found:
            out[path] = value
    return out


# ---- /tokenize with pieces, /apply-template ---------------------------------------------------------

def piece_json(tokenizer, tid: int):
    """llama-server's `piece`: the token's text when it is whole UTF-8, else its bytes as numbers."""
    piece = tokenizer.token_to_piece(tid, special=True)
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)
