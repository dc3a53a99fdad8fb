"""The OpenAI-compatible server on the real SmolLM2 model, driven by the official `openai` client and plain
HTTP: chat and completions, streaming and not, logprobs, stop strings, seeds, tokenize, KV-cache reuse,
many clients at once, disconnects, the API key and the Host/Origin checks, and the `python -m runtime`
entry points (greedy output through the API equals `-p --temp 0`)."""
from __future__ import annotations

import json
import logging
import math
import socket
import subprocess
import threading
import time

import numpy as np
import openai
import pytest

from server_helpers import (free_port, httpx, live_server, runtime_cmd, smollm2_model, sse_events,  # noqa: F401
                            start_server, wait_healthy, ROOT)

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


# Prefill (a batch) and decode (one token) take different kernels whose float rounding differs, so a greedy
# reply can depend on how much of its prompt was already in the KV cache. Replies that tests compare are
# therefore made from the same cache state: FRESH re-evaluates the whole prompt (llama.cpp's cache_prompt).
FRESH = {"cache_prompt": False}


def greedy_chat(client, messages, max_tokens=24, fresh=True, **kw):
    return client.chat.completions.create(model="any", messages=messages, temperature=0, max_tokens=max_tokens,
                                          extra_body=FRESH if fresh else None, **kw)


def log_softmax(logits):
    z = logits.astype(np.float64)
    return z - (z.max() + math.log(np.exp(z - z.max()).sum()))


# ---- endpoints -------------------------------------------------------------------------------------

def test_health_and_models(live_server, client, smollm2_model):
    r = live_server.health()
    assert r.status_code == 200 and r.json()["status"] == "ok"
    models = client.models.list().data
    assert [m.id for m in models] == [smollm2_model.gguf.metadata["general.name"]]


def test_chat_non_streaming(client):
    r = greedy_chat(client, QUESTION)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_matches_non_streaming(live_server, client):
    whole = greedy_chat(client, QUESTION, max_tokens=20)
    chunks = list(greedy_chat(client, QUESTION, max_tokens=20, stream=True,
                              stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # the raw wire format: `data:` events ending in `data: [DONE]`
    with httpx.stream("POST", live_server.url + "/v1/chat/completions", timeout=300, json={
            "messages": QUESTION, "temperature": 0, "max_tokens": 5, "stream": True, **FRESH}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]" and events[0]["object"] == "chat.completion.chunk"


def test_max_tokens_and_finish_reason_length(client):
    r = greedy_chat(client, STORY, max_tokens=7)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 7
    r = client.chat.completions.create(model="m", messages=STORY, temperature=0, max_completion_tokens=3,
                                       extra_body=FRESH)
    assert r.usage.completion_tokens == 3


def test_stop_string(client):
    full = greedy_chat(client, STORY, max_tokens=24).choices[0].message.content
    words = full.split()
    stop = " " + words[len(words) // 2]            # a word from the middle of the greedy reply
    r = greedy_chat(client, STORY, max_tokens=24, stop=[stop, "unlikely-never-seen"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[:full.index(stop)]


def test_seed_reproducible(client):
    def sample(seed):
        return client.chat.completions.create(model="m", messages=STORY, temperature=1.0, top_p=1.0, seed=seed,
                                              max_tokens=12, extra_body=FRESH).choices[0].message.content
    a, b, c = sample(1234), sample(1234), sample(99)
    assert a == b
    assert a != c


def test_sampling_extras_accepted(client):
    r = client.chat.completions.create(model="m", messages=QUESTION, max_tokens=8, temperature=0.7, seed=5,
                                       presence_penalty=0.5, frequency_penalty=0.5,
                                       extra_body={"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.1})
    assert r.usage.completion_tokens > 0


def test_chat_logprobs_match_the_model(client, smollm2_model):
    from runtime.chat_template import ChatTemplate, chat_prompt_ids
    r = greedy_chat(client, QUESTION, max_tokens=6, logprobs=True, top_logprobs=3)
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    for e in entries:
        assert len(e.top_logprobs) == 3
        assert e.logprob == pytest.approx(e.top_logprobs[0].logprob)   # greedy takes the best token
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
    # the first token's logprob, recomputed from the model's own logits for the same prompt
    ids = chat_prompt_ids(smollm2_model, ChatTemplate.for_model(smollm2_model), QUESTION)
    lp = log_softmax(smollm2_model.logits(ids))
    best = int(np.argmax(lp))
    assert entries[0].token == smollm2_model.detokenize([best])
    assert entries[0].logprob == pytest.approx(lp[best], abs=1e-3)


def test_completions_raw_prompt_and_logprobs(live_server, client, smollm2_model):
    prompt = "The three primary colors are"
    r = client.completions.create(model="m", prompt=prompt, temperature=0, max_tokens=8, logprobs=2, extra_body=FRESH)
    choice = r.choices[0]
    assert choice.text and r.usage.completion_tokens == 8
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 8
    assert "".join(lp.tokens) == choice.text
    ids = smollm2_model.tokenize(prompt, add_special=True)
    first = log_softmax(smollm2_model.logits(ids))
    assert lp.token_logprobs[0] == pytest.approx(first.max(), abs=1e-3)
    # streamed text completions carry the same text
    with httpx.stream("POST", live_server.url + "/v1/completions", timeout=300, json={
            "prompt": prompt, "temperature": 0, "max_tokens": 8, "stream": True, **FRESH}) as s:
        events = sse_events(s)
    assert "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"]) == choice.text


def test_tokenize_detokenize(live_server, smollm2_model):
    text = "Hello, world! Ünïcödé 🙂"
    r = httpx.post(live_server.url + "/tokenize", json={"content": text, "add_special": False}, timeout=60)
    assert r.status_code == 200
    tokens = r.json()["tokens"]
    assert tokens == smollm2_model.tokenize(text, add_special=False)
    r = httpx.post(live_server.url + "/detokenize", json={"tokens": tokens}, timeout=60)
    assert r.json() == {"content": text}


def test_continuing_conversation_reuses_kv_cache(client):
    messages = [{"role": "user", "content": "Name a fruit."}]
    first = greedy_chat(client, messages, max_tokens=12, fresh=False)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Name another one."}]
    second = greedy_chat(client, messages, max_tokens=12, fresh=False)
    cached = second.usage.prompt_tokens_details.cached_tokens
    # everything up to the end of the first prompt is still in the KV cache (and usually its reply too)
    assert cached >= first.usage.prompt_tokens - 1
    assert cached < second.usage.prompt_tokens


# ---- many clients ----------------------------------------------------------------------------------

def test_concurrent_streams_with_disconnects(live_server, client):
    # every client below finds the prompt cached (all but its last token) as the reference's second run does
    greedy_chat(client, QUESTION, max_tokens=24, fresh=False)
    reference = greedy_chat(client, QUESTION, max_tokens=24, fresh=False).choices[0].message.content
    results, errors = {}, []

    def worker(i):
        try:
            with httpx.stream("POST", live_server.url + "/v1/chat/completions", timeout=600, json={
                    "messages": QUESTION, "temperature": 0, "max_tokens": 24, "stream": True}) as r:
                assert r.status_code == 200
                text, n = "", 0
                for line in r.iter_lines():
                    if i % 3 == 2 and n == 3:        # every third client walks away after 3 events
                        results[i] = None
                        return
                    if line.startswith("data: ") and line != "data: [DONE]":
                        n += 1
                        chunk = json.loads(line[6:])
                        if chunk["choices"]:
                            text += chunk["choices"][0]["delta"].get("content") or ""
                    if line == "data: [DONE]":
                        results[i] = text
        except Exception as e:  # reported below with the client number
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    health_times = []
    while any(t.is_alive() for t in threads):   # /health answers while the model is busy
        t0 = time.monotonic()
        assert live_server.health().status_code == 200
        health_times.append(time.monotonic() - t0)
        time.sleep(0.2)
    for t in threads:
        t.join()
    assert errors == []
    finished = [t for t in results.values() if t is not None]
    assert len(results) == 8 and len(finished) == 6
    assert all(t == reference for t in finished)
    # /health never waits for the model: 8 queued 24-token replies take far longer than this on a busy machine
    assert max(health_times) < 5.0
    wait_idle(live_server)
    assert greedy_chat(client, QUESTION, max_tokens=24, fresh=False).choices[0].message.content == reference


def wait_idle(server, timeout=10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        h = server.health().json()
        if not h["generating"] and h["queued"] == 0:
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"server still generating {timeout} s later: {server.health().json()}")


def server_log(caplog) -> list[str]:
    return [f"{r.threadName}: {r.getMessage()}" for r in caplog.records if r.name.startswith("chatfile")]


def test_disconnect_stops_generation_at_once(live_server, caplog):
    caplog.set_level(logging.INFO, logger="chatfile.server")
    wait_idle(live_server, timeout=60)
    caplog.clear()          # only this request's log: an earlier test's job may have ended during the wait
    # greedy SmolLM2 keeps counting for a long time after this prompt
    with httpx.stream("POST", live_server.url + "/v1/completions", timeout=300, json={
            "prompt": "1, 2, 3, 4, 5, 6, 7,", "temperature": 0, "max_tokens": 2000, "stream": True, **FRESH}) as r:
        events, lines = [], r.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 4:
                break
        assert len(events) == 4 and "[DONE]" not in events[-1], events
        health = live_server.health().json()
        if not health["generating"]:       # say why: what came after, and what the server logged
            rest = [line for _, line in zip(range(8), lines)]
            raise AssertionError(f"not generating after 4 events: {health}; next lines {rest}; "
                                 f"server log {server_log(caplog)}")
    # the worker notices the closed connection within a token or two (a few more while the test thread
    # gets round to closing it on a loaded machine): the token count, not the time, shows it stopped early
    wait_idle(live_server, timeout=60)
    stopped = [m for m in server_log(caplog) if "client gone: generation stopped after" in m]
    assert len(stopped) == 1, server_log(caplog)
    assert int(stopped[0].rsplit("after ", 1)[1].split()[0]) < 200, stopped


def test_non_streaming_disconnect_stops_generation(live_server, caplog):
    caplog.set_level(logging.INFO, logger="chatfile.server")
    wait_idle(live_server, timeout=60)
    caplog.clear()
    body = json.dumps({"prompt": "1, 2, 3, 4, 5, 6, 7,", "temperature": 0, "max_tokens": 2000, **FRESH}).encode()
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 60
        while not live_server.health().json()["generating"]:   # its generation has started
            assert time.monotonic() < deadline, server_log(caplog)
            time.sleep(0.02)
    # the client hung up without reading anything: the generation stops long before its 2000 tokens
    wait_idle(live_server, timeout=60)
    stopped = [m for m in server_log(caplog) if "client gone: generation stopped after" in m]
    assert len(stopped) == 1, server_log(caplog)
    assert int(stopped[0].rsplit("after ", 1)[1].split()[0]) < 200, stopped


# ---- security --------------------------------------------------------------------------------------

def test_api_key_guards_every_api_route(smollm2_model):
    server = start_server(smollm2_model, api_keys=("s3cret",))
    try:
        u = server.url
        for method, path, body in [("GET", "/v1/models", None), ("POST", "/v1/chat/completions", {}),
                                   ("POST", "/v1/completions", {}), ("POST", "/tokenize", {"content": "a"}),
                                   ("POST", "/detokenize", {"tokens": [1]}), ("GET", "/props", None)]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = httpx.request(method, u + path, json=body, headers=headers, timeout=60)
                assert r.status_code == 401, (path, headers)
                assert "API key" in r.json()["error"]["message"]
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(u + "/v1/models", headers=good, timeout=60).status_code == 200
        assert httpx.post(u + "/tokenize", json={"content": "a"}, headers={"X-Api-Key": "s3cret"},
                          timeout=60).status_code == 200
        assert httpx.get(u + "/health", timeout=60).status_code == 200          # public: load balancers, the UI
        assert httpx.get(u + "/", timeout=60).status_code == 200                # the page asks for the key itself
        c = openai.OpenAI(base_url=u + "/v1", api_key="s3cret", max_retries=0)
        assert c.chat.completions.create(model="m", messages=QUESTION, max_tokens=2).usage.completion_tokens == 2
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=u + "/v1", api_key="nope", max_retries=0).models.list()
    finally:
        server.stop()


@pytest.mark.parametrize("headers", [
    {"Host": "evil.example"},                                  # DNS rebinding: a foreign name for 127.0.0.1
    {"Host": "evil.example:8080"},
    {"Origin": "http://evil.example"},                         # a cross-origin page POSTing to us
    {"Origin": "null"},
    {"Origin": "http://localhost:1"},                          # another local site is another origin
])
def test_cross_origin_and_rebinding_refused(live_server, headers):
    for method, path in [("POST", "/v1/chat/completions"), ("GET", "/"), ("GET", "/v1/models")]:
        r = httpx.request(method, live_server.url + path, headers=headers,
                          json={"messages": QUESTION, "max_tokens": 1} if method == "POST" else None, timeout=60)
        assert r.status_code == 403, (path, headers)
        assert "access-control-allow-origin" not in r.headers
        assert r.json()["error"]["type"] == "forbidden"


def test_same_origin_and_local_names_allowed(live_server):
    port = live_server.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        r = httpx.get(live_server.url + "/v1/models", headers={"Host": host, "Origin": f"http://{host}"}, timeout=60)
        assert r.status_code == 200, host
        assert "access-control-allow-origin" not in r.headers
    r = httpx.get(live_server.url + "/", timeout=60)
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]


# ---- entry points ----------------------------------------------------------------------------------

def cli_greedy(model_path, prompt, n):
    out = subprocess.run(runtime_cmd("-m", str(model_path), "-p", prompt, "--temp", "0", "-n", str(n)),
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli_server_matches_cli_prompt(smollm2_path, smollm2_model):
    """`python -m runtime --server` as users start it; its greedy completion equals `-p --temp 0`. The
    sampling flags it was started with are the defaults GET /props reports (llama-server's shape: the web
    UI reads them), and each of several comma-separated API keys is accepted."""
    prompt, n = "The best thing about living by the sea is", 24
    port = free_port()
    proc = subprocess.Popen(runtime_cmd("--server", "--port", str(port), "--nobrowser", "-m", str(smollm2_path),
                                        "--temp", "0.2", "--top-k", "7", "--min-p", "0.1", "--top-p", "0.9",
                                        "-s", "5", "-n", "50", "--api-key", "k1,k2"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        assert httpx.get(url + "/props", timeout=60).status_code == 401
        props = httpx.get(url + "/props", headers={"Authorization": "Bearer k2"}, timeout=60).json()
        c = openai.OpenAI(base_url=url + "/v1", api_key="k1", max_retries=0, timeout=300)
        api_text = c.completions.create(model="m", prompt=prompt, temperature=0, max_tokens=n,
                                        extra_body=FRESH).choices[0].text
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in stderr
    assert "warning" not in stderr.lower()
    assert cli_greedy(smollm2_path, prompt, n).rstrip("\n") == api_text.rstrip("\n")
    settings = props["default_generation_settings"]
    assert settings["n_ctx"] == 8192 and props["total_slots"] == 1
    assert {k: settings["params"][k] for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                                               "seed", "n_predict", "max_tokens")} == {
        "temperature": 0.2, "top_k": 7, "top_p": 0.9, "min_p": 0.1, "repeat_penalty": 1.0, "seed": 5,
        "n_predict": 50, "max_tokens": 50}
    assert props["chat_template"] == smollm2_model.gguf.metadata["tokenizer.chat_template"]
    assert props["model_path"] == smollm2_path.name and "/" not in props["model_path"]


def test_default_mode_takes_next_free_port_and_other_hosts_warn(smollm2_path):
    """No mode flag and no TTY: the server starts on the next free port; --host 0.0.0.0 prints a warning."""
    taken = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen(1)
        proc = subprocess.Popen(runtime_cmd("--port", str(taken), "--nobrowser", "-m", str(smollm2_path)),
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            line = ""
            deadline = time.monotonic() + 300
            while "http://" not in line and time.monotonic() < deadline and proc.poll() is None:
                line = proc.stderr.readline()
            assert f"http://127.0.0.1:{taken + 1}/" in line or f"http://127.0.0.1:{taken + 2}/" in line, line
            wait_healthy("http://" + line.split("http://", 1)[1].split("/", 1)[0], proc)
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    port = free_port()
    proc = subprocess.Popen(runtime_cmd("--server", "--host", "0.0.0.0", "--port", str(port), "-m",
                                        str(smollm2_path)), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "warning: listening on 0.0.0.0" in stderr


def test_default_mode_on_a_terminal_runs_chat_and_server_together(smollm2_path):
    """Started from a terminal with no mode flag: the URL is printed, the terminal chat runs in the
    foreground and the API answers at the same time (the two take turns on the model); /exit stops both."""
    import pexpect
    port = free_port()
    child = pexpect.spawn(runtime_cmd()[0], runtime_cmd("-m", str(smollm2_path), "--nobrowser", "--port", str(port),
                                                        "--temp", "0", "-n", "6")[1:],
                          cwd=str(ROOT), encoding="utf-8", timeout=300)
    try:
        child.expect(f"http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        child.expect("chatting with")
        api_reply = {}
        t = threading.Thread(target=lambda: api_reply.setdefault("r", httpx.post(
            url + "/v1/chat/completions", timeout=300,
            json={"messages": QUESTION, "temperature": 0, "max_tokens": 6})))
        t.start()
        child.sendline("Hello!")
        child.expect(r"\[\d+ tokens")                # the chat's reply and its stats line
        t.join()
        assert api_reply["r"].status_code == 200
        assert api_reply["r"].json()["usage"]["completion_tokens"] == 6
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)
