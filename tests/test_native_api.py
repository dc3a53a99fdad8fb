"""llama-server's native endpoints on the real SmolLM2, over plain HTTP, with the response shapes its
tools/server/README.md documents: /completion (text, token ids, a mix, several prompts, streaming,
n_probs, stop words, `tokens`, `timings`), /infill (with a copy of SmolLM2 given FIM token ids, and
refused for the model itself, which has none), /apply-template, /tokenize with pieces, and the
un-prefixed aliases /completions, /chat/completions and /models."""
from __future__ import annotations

import json
import math

import pytest

import runtime
from conftest import ROOT
from runtime.gguf import GGUFFile
from runtime.ggml import ValueType

from gguf_helpers import rebuild
from server_helpers import httpx, live_server, smollm2_model, start_server  # noqa: F401

PROMPT = "I believe the meaning of life is"
GREEDY = {"temperature": 0, "cache_prompt": False}
# /completion's keys (README: "Response format"), the closing object's and a streamed token's
FINAL_KEYS = {"index", "content", "tokens", "id_slot", "stop", "model", "tokens_predicted", "tokens_evaluated",
              "generation_settings", "prompt", "has_new_line", "truncated", "stop_type", "stopping_word",
              "tokens_cached", "timings"}
PARTIAL_KEYS = {"index", "content", "tokens", "stop", "id_slot", "tokens_predicted", "tokens_evaluated"}
TIMINGS_KEYS = {"cache_n", "prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms",
                "predicted_per_second"}


def post(server, path, body, **kw):
    return httpx.post(server.url + path, json=body, timeout=300, **kw)


def events(server, path, body) -> list[dict]:
    with httpx.stream("POST", server.url + path, json=body, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and "data: [DONE]" not in lines   # no [DONE] here
    return [json.loads(line[6:]) for line in lines]


def test_completion_shape_and_limit(live_server, smollm2_model):
    r = post(live_server, "/completion", {"prompt": PROMPT, "n_predict": 8, "return_tokens": True, **GREEDY})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == FINAL_KEYS and set(body["timings"]) >= TIMINGS_KEYS
    n_prompt = len(smollm2_model.tokenize(PROMPT))
    assert body["tokens_evaluated"] == body["timings"]["prompt_n"] == n_prompt
    assert body["tokens_predicted"] == body["timings"]["predicted_n"] == len(body["tokens"]) == 8
    assert body["stop"] is True and body["stop_type"] == "limit" and body["truncated"] is False
    assert smollm2_model.detokenize(body["tokens"]) == body["content"]
    assert body["prompt"] == PROMPT and body["model"] == live_server.engine.name
    settings = body["generation_settings"]
    assert settings["n_predict"] == 8 and settings["temperature"] == 0 and settings["n_ctx"] == live_server.engine.n_ctx
    # without return_tokens, `tokens` stays empty (README)
    assert post(live_server, "/completion", {"prompt": PROMPT, "n_predict": 2, **GREEDY}).json()["tokens"] == []


def test_prompt_as_ids_and_as_a_mix_equals_text(live_server, smollm2_model):
    ids = smollm2_model.tokenize(PROMPT)
    head, tail = PROMPT.split(" the ", 1)
    mixed = [*smollm2_model.tokenize(head), " the " + tail]
    texts = {post(live_server, "/completion", {"prompt": p, "n_predict": 6, **GREEDY}).json()["content"]
             for p in (PROMPT, ids, mixed)}
    assert len(texts) == 1
    # several prompts: an array of results, in order
    both = post(live_server, "/completion", {"prompt": [PROMPT, ids], "n_predict": 6, **GREEDY}).json()
    assert [b["index"] for b in both] == [0, 1] and {b["content"] for b in both} == texts
    # n_cmpl completions of each prompt, prompt by prompt; with a seed, the i-th samples with seed + i
    runs = post(live_server, "/completion", {"prompt": [PROMPT, "Once upon a time"], "n_cmpl": 2, "n_predict": 6,
                                             "seed": 3, "temperature": 1.0, "cache_prompt": False}).json()
    assert [r["index"] for r in runs] == [0, 1, 2, 3] and runs[0]["prompt"] == runs[1]["prompt"] == PROMPT
    assert runs[0]["content"] != runs[1]["content"]
    again = post(live_server, "/completion", {"prompt": PROMPT, "n_predict": 6, "seed": 4, "temperature": 1.0,
                                              "cache_prompt": False}).json()
    assert again["content"] == runs[1]["content"]


def test_stream_events_match_the_whole_answer(live_server):
    whole = post(live_server, "/completion", {"prompt": PROMPT, "n_predict": 8, **GREEDY}).json()
    evs = events(live_server, "/completions", {"prompt": PROMPT, "n_predict": 8, "stream": True, **GREEDY})
    *tokens, last = evs
    assert all(set(e) == PARTIAL_KEYS and e["stop"] is False and len(e["tokens"]) == 1 for e in tokens)
    assert "".join(e["content"] for e in tokens) == whole["content"]
    assert set(last) == FINAL_KEYS and last["stop"] is True and last["content"] == "" and last["tokens"] == []
    assert last["stop_type"] == "limit" and last["timings"]["predicted_n"] == 8


def test_stop_word_and_end_of_generation(live_server):
    body = post(live_server, "/completion", {"prompt": "Count: 1, 2, 3, 4,", "n_predict": 32, "stop": [" 6"],
                                             **GREEDY}).json()
    assert body["stop_type"] == "word" and body["stopping_word"] == " 6" and " 6" not in body["content"]
    chat = "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n"
    body = post(live_server, "/completion", {"prompt": chat, "n_predict": 64, **GREEDY}).json()
    assert body["stop_type"] == "eos" and body["stopping_word"] == ""


def test_n_probs(live_server, smollm2_model):
    body = post(live_server, "/completion", {"prompt": PROMPT, "n_predict": 4, "n_probs": 3, **GREEDY}).json()
    probs = body["completion_probabilities"]
    assert len(probs) == 4
    for p in probs:
        assert set(p) == {"id", "token", "bytes", "logprob", "top_logprobs"} and p["logprob"] <= 0
        assert len(p["top_logprobs"]) == 3 and p["top_logprobs"][0]["id"] == p["id"]      # greedy
        assert bytes(p["bytes"]) == smollm2_model.tokenizer.token_to_piece(p["id"], special=False)
    assert b"".join(bytes(p["bytes"]) for p in probs) == body["content"].encode()
    streamed = events(live_server, "/completion", {"prompt": PROMPT, "n_predict": 4, "n_probs": 3, "stream": True,
                                                   **GREEDY})
    assert [e["completion_probabilities"][0]["id"] for e in streamed[:-1]] == [p["id"] for p in probs]


def test_post_sampling_probs(live_server):
    """llama.cpp's post_sampling_probs: probabilities of the distribution each token was drawn from
    (after top_k/top_p/min_p and the temperature) under "prob"/"top_probs"; greedy picks have 1."""
    body = {"prompt": PROMPT, "n_predict": 1, "n_probs": 5, "temperature": 0.8, "top_k": 2, "cache_prompt": False}
    pre = post(live_server, "/completion", body).json()["completion_probabilities"][0]["top_logprobs"]
    r = post(live_server, "/completion", {**body, "post_sampling_probs": True}).json()
    assert r["generation_settings"]["post_sampling_probs"] is True
    tok = r["completion_probabilities"][0]
    top = tok["top_probs"]
    assert "logprob" not in tok and [t["id"] for t in top] == [t["id"] for t in pre[:2]]   # top_k 2 survive
    assert sum(t["prob"] for t in top) == pytest.approx(1.0)
    assert math.log(top[0]["prob"] / top[1]["prob"]) == pytest.approx((pre[0]["logprob"] - pre[1]["logprob"]) / 0.8,
                                                                       rel=1e-4)
    assert tok["prob"] == next(t["prob"] for t in top if t["id"] == tok["id"])
    greedy = events(live_server, "/completion", {**body, "temperature": 0, "n_predict": 2, "stream": True,
                                                 "post_sampling_probs": True})
    for e in greedy[:-1]:
        (p,) = e["completion_probabilities"]
        assert p["prob"] == 1.0 and [t["id"] for t in p["top_probs"]] == [p["id"]]


def test_fields(live_server):
    # llama.cpp's fields for samplers chatfile lacks: fine when off, a 400 naming them when on
    ok = post(live_server, "/completion", {"prompt": "Hi", "n_predict": 1, "mirostat": 0, "typical_p": 1.0,
                                           "dry_multiplier": 0, "n_keep": 4, "samplers": ["top_k"], "id_slot": -1})
    assert ok.status_code == 200
    for field, value in (("mirostat", 2), ("typical_p", 0.5), ("xtc_probability", 0.5), ("frobnicate", 1)):
        r = post(live_server, "/completion", {"prompt": "Hi", field: value})
        assert r.status_code == 400 and field in r.json()["error"]["message"]
    for body in ({}, {"prompt": ""}, {"prompt": []}, {"prompt": [[]]}, {"prompt": [10**9]},
                 {"prompt": "x", "n_predict": "5"},
                 {"prompt": {"prompt_string": "x", "multimodal_data": ["AAAA"]}}):
        r = post(live_server, "/completion", body)
        assert r.status_code == 400 and r.json()["error"]["message"]
    # response_fields keeps the fields asked for, "a/b" brought to the top under its path
    body = post(live_server, "/completion", {"prompt": "Hi", "n_predict": 2,
                                             "response_fields": ["content", "generation_settings/n_predict"]}).json()
    assert set(body) == {"content", "generation_settings/n_predict"} and body["generation_settings/n_predict"] == 2


def test_grammar_json_schema_logit_bias_ignore_eos(live_server, smollm2_model):
    body = post(live_server, "/completion", {"prompt": "My favourite colour is", "n_predict": 8,
                                             "grammar": 'root ::= " red" | " blue"', **GREEDY}).json()
    assert body["content"] in (" red", " blue") and body["generation_settings"]["grammar"]
    body = post(live_server, "/completion", {"prompt": "A person:", "n_predict": 64, **GREEDY, "json_schema": {
        "type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}}).json()
    assert isinstance(json.loads(body["content"])["age"], int)
    # logit_bias in llama.cpp's form: [[id, false]] bans a token
    first = post(live_server, "/completion", {"prompt": PROMPT, "n_predict": 1, "return_tokens": True,
                                              **GREEDY}).json()["tokens"][0]
    banned = post(live_server, "/completion", {"prompt": PROMPT, "n_predict": 1, "return_tokens": True,
                                               "logit_bias": [[first, False]], **GREEDY}).json()
    assert banned["tokens"][0] != first
    # ... or names text, every token of which gets the bias (llama.cpp's string form)
    text = smollm2_model.detokenize([first])
    as_text = post(live_server, "/completion", {"prompt": PROMPT, "n_predict": 1, "return_tokens": True,
                                                "logit_bias": {text: -100}, **GREEDY}).json()
    assert as_text["tokens"][0] != first
    # ignore_eos: a reply that ends by itself goes on to n_predict
    chat = "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n"
    body = post(live_server, "/completion", {"prompt": chat, "n_predict": 40, "ignore_eos": True, **GREEDY}).json()
    assert body["stop_type"] == "limit" and body["tokens_predicted"] == 40
    assert body["generation_settings"]["ignore_eos"] is True
    assert {b["token"] for b in body["generation_settings"]["logit_bias"]} == smollm2_model.tokenizer.eog_ids
    assert all(b["bias"] is None for b in body["generation_settings"]["logit_bias"])   # -inf, as llama.cpp


def test_n_predict_is_the_request_s():
    """As llama-server: the request's n_predict wins over the server's -n (only the default, also for -1),
    and may exceed the context (the reply then stops when the context is full)."""
    from runtime.api_native import completion_request
    from runtime.api_schema import Limits
    limits = Limits(n_ctx=64, vocab_size=100, max_tokens=4)
    assert completion_request({"prompt": "x", "n_predict": 100}, limits).gen.max_tokens == 100
    assert completion_request({"prompt": "x", "max_tokens": 2}, limits).gen.max_tokens == 2
    for body in ({"prompt": "x"}, {"prompt": "x", "n_predict": -1}):
        assert completion_request(body, limits).gen.max_tokens == 4


def test_tokenize_with_pieces(live_server, smollm2_model):
    r = post(live_server, "/tokenize", {"content": "cat 媽 🤗", "with_pieces": True}).json()["tokens"]
    ids = smollm2_model.tokenize("cat 媽 🤗", add_special=False)
    assert [t["id"] for t in r] == ids
    # whole UTF-8 pieces as text, parts of a character as their byte values (README's example)
    assert r[0]["piece"] == "cat"
    rebuilt = b"".join(t["piece"].encode() if isinstance(t["piece"], str) else bytes(t["piece"]) for t in r)
    assert rebuilt == "cat 媽 🤗".encode() and any(isinstance(t["piece"], list) for t in r)


def test_apply_template_and_aliases(live_server, smollm2_model):
    messages = [{"role": "user", "content": "Hello"}]
    prompt = post(live_server, "/apply-template", {"messages": messages}).json()["prompt"]
    assert prompt.endswith("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    # llama.cpp's add_generation_prompt, and tools rendered as the chat endpoint renders them
    bare = post(live_server, "/apply-template", {"messages": messages, "add_generation_prompt": False}).json()
    assert bare["prompt"] == prompt[:-len("<|im_start|>assistant\n")]
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    with_tools = post(live_server, "/apply-template", {"messages": messages, "tools": [tool]}).json()["prompt"]
    assert "get_time" in with_tools and "get_time" not in prompt
    n = post(live_server, "/v1/chat/completions/input_tokens", {"messages": messages, "tools": [tool]}).json()
    assert n["input_tokens"] == len(smollm2_model.tokenize(with_tools, add_special=False))
    a = post(live_server, "/chat/completions", {"messages": messages, "max_tokens": 4, **GREEDY}).json()
    b = post(live_server, "/v1/chat/completions", {"messages": messages, "max_tokens": 4, **GREEDY}).json()
    assert a["object"] == "chat.completion" and a["choices"][0]["message"] == b["choices"][0]["message"]
    assert a["usage"]["prompt_tokens"] == len(smollm2_model.tokenize(prompt, add_special=False))
    models = httpx.get(live_server.url + "/models", timeout=60).json()
    assert models == httpx.get(live_server.url + "/v1/models", timeout=60).json()
    meta = models["data"][0]["meta"]          # llama-server's keys
    assert meta["n_vocab"] == 49152 and meta["n_embd"] == 576 and meta["vocab_type"] == 2
    assert 130e6 < meta["n_params"] < 140e6 and meta["size"] < 110e6 and meta["n_ctx_train"] == 8192


def test_infill_refused_without_fim_tokens(live_server):
    r = post(live_server, "/infill", {"input_prefix": "def f(", "input_suffix": "):\n"})
    assert r.status_code == 400 and "FIM" in r.json()["error"]["message"]


# Hermes 2 Pro's second template, for requests with tools
TOOL_USE_TEMPLATE = (ROOT / "data" / "templates" / "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja").read_text()


@pytest.fixture(scope="module")
def fim_server(smollm2_path, tmp_path_factory):
    """SmolLM2 with FIM ids in its metadata, as a code model ships them (pre/suf/mid/sep; <reponame>
    is found by its text, as llama.cpp finds FIM_REP), and a second template for requests with tools
    (tokenizer.chat_template.tool_use, as Hermes 2 Pro's GGUFs carry one)."""
    ids = {"fim_pre": 8, "fim_suf": 9, "fim_mid": 10, "fim_sep": 5}   # <issue_start> ... <file_sep>
    path = tmp_path_factory.mktemp("fim") / "smollm2-fim.gguf"
    keys = {f"tokenizer.ggml.{k}_token_id": (ValueType.UINT32, v) for k, v in ids.items()}
    keys["tokenizer.chat_template.tool_use"] = (ValueType.STRING, TOOL_USE_TEMPLATE)
    path.write_bytes(rebuild(GGUFFile(smollm2_path), keys))
    server = start_server(runtime.load(path))
    yield server
    server.stop()


def test_infill_prompt_is_llama_cpp_s(fim_server):
    body = post(fim_server, "/infill", {
        "input_extra": [{"filename": "llama.h", "text": "LLAMA_API int32_t llama_n_threads();\n"}],
        "input_prefix": "int main() {\n", "prompt": "    int n_threads = llama_", "input_suffix": "}\n",
        "n_predict": 4, **GREEDY}).json()
    # repo-level pattern (llama.cpp format_prompt_infill): FIM_REP project, FIM_SEP per file, then the hole
    assert body["prompt"] == ("<reponame>myproject\n<file_sep>llama.h\nLLAMA_API int32_t llama_n_threads();\n"
                              "<file_sep>filename\n<issue_start>int main() {\n    int n_threads = llama_"
                              "<issue_comment>}\n<issue_closed>")
    assert body["tokens_predicted"] >= 1 and set(body) == FINAL_KEYS
    streamed = events(fim_server, "/infill", {"input_prefix": "x = [", "input_suffix": "]", "n_predict": 3,
                                              "stream": True, **GREEDY})
    assert streamed[-1]["stop"] is True and streamed[-1]["prompt"] == "<reponame>myproject\n<file_sep>filename\n" \
                                                                      "<issue_start>x = [<issue_comment>]<issue_closed>"
    for bad in ({"input_prefix": "x"}, {"input_suffix": "x"},
                {"input_prefix": "", "input_suffix": "", "input_extra": [{"filename": 1, "text": "a"}]},
                {"input_prefix": "", "input_suffix": "", "input_extra": [{}]},
                {"input_prefix": "", "input_suffix": "", "prompt": 5}):
        assert post(fim_server, "/infill", bad).status_code == 400


def test_apply_template_picks_the_tool_use_template(fim_server):
    """Bodies with tools render with the GGUF's tool-use template, as the chat endpoint (and llama.cpp)
    picks it; without tools, or with tool_choice "none", the main template renders."""
    messages = [{"role": "user", "content": "Hello"}]
    tool = {"type": "function", "function": {"name": "get_time", "description": "Time now",
                                    "parameters": {"type": "object"}}}
    with_tools = post(fim_server, "/apply-template", {"messages": messages, "tools": [tool]}).json()["prompt"]
    assert "You are a function calling AI model" in with_tools and '"name": "get_time"' in with_tools
    for body in ({"messages": messages}, {"messages": messages, "tools": [tool], "tool_choice": "none"}):
        prompt = post(fim_server, "/apply-template", body).json()["prompt"]
        assert "function calling" not in prompt and prompt.endswith("<|im_start|>assistant\n")
