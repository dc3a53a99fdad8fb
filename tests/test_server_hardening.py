"""Bad requests (issue 6): each gets a 4xx in OpenAI's error shape with a message naming what was wrong,
never a 500, and the server keeps serving everybody else. Runs against the real server on SmolLM2."""
from __future__ import annotations

import json
import socket
import time

import pytest

from server_helpers import httpx, live_server, smollm2_model  # noqa: F401

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "Hi"}]


def chat(**fields):
    return {"messages": OK_MESSAGES, "max_tokens": 2, **fields}


def assert_refused(r: httpx.Response, status: int, *words: str):
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    for w in words:
        assert w.lower() in error["message"].lower(), (w, error["message"])


@pytest.fixture(autouse=True)
def still_serving(live_server):
    """After every bad request the server still answers a good one."""
    yield
    assert live_server.health().status_code == 200
    r = httpx.post(live_server.url + CHAT, json=chat(temperature=0, max_tokens=1), timeout=300)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 1


BAD_JSON = [
    (b"", "empty"),
    (b"{", "not valid JSON"),
    (b"{'messages': []}", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"hello"', "must be a JSON object"),
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', "UTF-8"),   # Latin-1, not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),                              # nesting bomb
]


@pytest.mark.parametrize("raw,words", BAD_JSON, ids=[w + str(i) for i, (_, w) in enumerate(BAD_JSON)])
def test_malformed_bodies(live_server, raw, words):
    r = httpx.post(live_server.url + CHAT, content=raw, headers={"Content-Type": "application/json"}, timeout=60)
    assert_refused(r, 400, words)


BAD_FIELDS = [
    ({"max_tokens": 2}, "missing required field 'messages'"),
    ({"messages": "hi"}, "'messages' must be an array"),
    ({"messages": []}, "at least one message"),
    ({"messages": [None]}, "messages[0]"),
    ({"messages": [{"content": "hi"}]}, "role"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "text"),
    (chat(temperature="hot"), "'temperature' must be a finite number"),
    (chat(temperature=True), "'temperature'"),
    (chat(temperature=7), "between"),
    (chat(top_p=-0.1), "'top_p'"),
    (chat(max_tokens=1.5), "'max_tokens' must be an integer"),
    (chat(max_tokens=-5), "'max_tokens' must be between 1"),
    (chat(max_tokens=0), "'max_tokens' must be between 1"),
    (chat(max_tokens=10**12), "'max_tokens' must be between 1"),
    (chat(max_completion_tokens=10**30), "'max_completion_tokens'"),
    (chat(seed=10**40), "'seed'"),
    (chat(seed="7"), "'seed' must be an integer"),
    (chat(stream="yes"), "'stream' must be a boolean"),
    (chat(stream_options={"include_usage": True}), "only allowed when 'stream' is true"),
    (chat(stop=5), "'stop'"),
    (chat(stop=[""]), "empty"),
    (chat(stop=["x"] * 5000), "at most"),
    (chat(stop=["y" * 100_000]), "characters"),
    (chat(n=17), "'n' must be between 1 and 16"),
    (chat(logprobs=True, top_logprobs=500), "'top_logprobs'"),
    (chat(top_logprobs=2), "needs 'logprobs'"),
    (chat(tools=[{"type": "function"}]), "tools[0]"),
    (chat(frobnicate=1), "unknown field: 'frobnicate'"),
    (chat(top_k=-1), "'top_k'"),
]


@pytest.mark.parametrize("body,words", BAD_FIELDS, ids=[str(i) for i in range(len(BAD_FIELDS))])
def test_bad_chat_fields(live_server, body, words):
    assert_refused(httpx.post(live_server.url + CHAT, json=body, timeout=60), 400, words)


def test_nan_and_infinity(live_server):
    for raw in (b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}',
                b'{"messages": [{"role": "user", "content": "Hi"}], "top_p": Infinity}'):
        r = httpx.post(live_server.url + CHAT, content=raw, headers={"Content-Type": "application/json"}, timeout=60)
        assert_refused(r, 400, "finite number")


@pytest.mark.parametrize("path,body,words", [
    ("/v1/completions", {"max_tokens": 2}, "missing required field 'prompt'"),
    ("/v1/completions", {"prompt": ""}, "must not be empty"),
    ("/v1/completions", {"prompt": {"a": 1}}, "'prompt' must be"),
    ("/v1/completions", {"prompt": [1, 10**9]}, "not a token id"),
    ("/v1/completions", {"prompt": "x", "logprobs": 99}, "'logprobs'"),
    ("/v1/completions", {"prompt": "x", "echo": True}, "'echo'"),
    ("/tokenize", {}, "missing required field 'content'"),
    ("/tokenize", {"content": ["a"]}, "'content' must be a string"),
    ("/tokenize", {"content": "a", "add_special": "no"}, "'add_special' must be a boolean"),
    ("/detokenize", {"tokens": "abc"}, "'tokens' must be an array"),
    ("/detokenize", {"tokens": [-1]}, "not a token id"),
    ("/detokenize", {"tokens": [True]}, "'tokens' must be an array of integer"),
])
def test_bad_fields_other_endpoints(live_server, path, body, words):
    assert_refused(httpx.post(live_server.url + path, json=body, timeout=60), 400, words)


def test_prompt_longer_than_context(live_server):
    n_ctx = live_server.engine.n_ctx
    long_text = "hello " * (n_ctx + 50)
    r = httpx.post(live_server.url + CHAT, json={"messages": [{"role": "user", "content": long_text}]}, timeout=120)
    assert_refused(r, 400, "context holds", str(n_ctx))
    assert r.json()["error"]["code"] == "context_length_exceeded"
    r = httpx.post(live_server.url + "/v1/completions", json={"prompt": long_text, "stream": True}, timeout=120)
    assert_refused(r, 400, "context holds")


def test_body_over_the_limit(live_server):
    from runtime.api_schema import MAX_BODY_BYTES
    big = {"messages": [{"role": "user", "content": "a" * (MAX_BODY_BYTES + 10)}]}
    assert_refused(httpx.post(live_server.url + CHAT, json=big, timeout=60), 413, "limit")
    # no Content-Length (chunked): counted while it arrives
    def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"a" * 65536
        yield b'"}]}'
    assert_refused(httpx.post(live_server.url + CHAT, content=chunks(), timeout=60), 413, "limit")


def test_unknown_route_and_method(live_server):
    assert_refused(httpx.get(live_server.url + "/v1/nothing", timeout=60), 404, "no such")
    assert_refused(httpx.get(live_server.url + "/../../etc/passwd", timeout=60), 404, "no such")
    assert_refused(httpx.get(live_server.url + CHAT, timeout=60), 405)
    assert_refused(httpx.delete(live_server.url + "/v1/models", timeout=60), 405)


def raw_exchange(url: str, data: bytes, wait: float) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(data)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except (socket.timeout, ConnectionResetError):   # the server may close on unread garbage
            pass
        return received


def test_slow_body_gets_408_and_others_are_served(live_server):
    """A client that announces 1000 bytes and sends 10 is cut off after request_timeout (5 s here)."""
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n").encode()
    import threading
    answer = {}
    t = threading.Thread(target=lambda: answer.setdefault("r", raw_exchange(live_server.url, head + b'{"messages"', 15)))
    t.start()
    time.sleep(0.5)
    r = httpx.post(live_server.url + CHAT, json=chat(temperature=0), timeout=60)   # served meanwhile
    assert r.status_code == 200
    t.join()
    status_line, _, rest = answer["r"].partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer["r"][:200]
    assert b"not received within" in rest


def test_slow_headers_get_408(live_server):
    t0 = time.monotonic()
    reply = raw_exchange(live_server.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n", 15)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - t0 < 14    # 5 s, not the 15 s the client would wait


def test_garbage_on_the_wire(live_server):
    reply = raw_exchange(live_server.url, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 5)
    assert reply.startswith(b"HTTP/1.1 400") or reply == b""   # a TLS hello to a plain-HTTP port
    reply = raw_exchange(live_server.url, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 200_000 + b"\r\n\r\n", 5)
    assert reply.startswith(b"HTTP/1.1 4") or reply == b""


def test_many_requests_in_a_burst(live_server):
    """A burst of bad and good requests: every one answered, none lost, no 5xx."""
    import concurrent.futures as cf
    bodies = [chat(temperature=0), {"messages": []}, chat(max_tokens=-1), chat(temperature=0)] * 6
    with cf.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda b: httpx.post(live_server.url + CHAT, json=b, timeout=600).status_code,
                                 bodies))
    assert statuses == [200, 400, 400, 200] * 6


def test_error_shape_is_what_openai_client_reads(live_server):
    import openai
    c = openai.OpenAI(base_url=live_server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="m", messages=[], max_tokens=2)
    assert "at least one message" in str(e.value)
    with pytest.raises(openai.BadRequestError, match="'n' must be between 1 and 16"):
        c.chat.completions.create(model="m", messages=OK_MESSAGES, n=30)
    assert json.loads(httpx.get(live_server.url + "/health", timeout=60).text)["status"] == "ok"


HUGE = "9" * 5000           # over Python's 4300-digit limit for int <-> str
BIG = "9" * 400             # overflows float()
# (path, raw body, the status, the field the 4xx must name): numbers too large for any type, a
# wrongly typed role, lone UTF-16 surrogates, in every place and on every endpoint
HOSTILE_BODIES = [
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": %s}' % HUGE, 400, "max_tokens"),
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "seed": -%s}' % HUGE, 400, "seed"),
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "temperature": %s}' % BIG, 400, "temperature"),
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "temperature": %s.5}' % BIG, 400, "temperature"),
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "top_p": %se%s}' % (BIG, BIG), 400, "top_p"),
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "top_k": %s}' % BIG, 400, "top_k"),
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1e400}', 400, "max_tokens"),
    (CHAT, '{"messages": [{"role": "user", "content": %s}]}' % HUGE, 400, "messages[0].content"),
    (CHAT, '{"messages": [{"role": %s, "content": "Hi"}]}' % HUGE, 400, "messages[0].role"),
    (CHAT, '{"messages": [{"role": [], "content": "Hi"}]}', 400, "messages[0].role"),
    (CHAT, '{"messages": [{"role": {"a": 1}, "content": "Hi"}]}', 400, "messages[0].role"),
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "user": "u",'
           ' "metadata": {"x": [1, %s]}}' % HUGE, 400, "metadata.x[1]"),     # ignored fields too: an echo
    ("/v1/responses", '{"input": "Hi", "max_output_tokens": 2, "metadata": {"a": 1e400}}', 400, "metadata.a"),
    ("/v1/responses", '{"input": "Hi", "max_output_tokens": 2, "metadata": {"a": NaN}}', 400, "metadata.a"),
    ("/v1/responses", '{"input": "Hi", "max_output_tokens": 2, "metadata": {"a": %s}}' % BIG, 400, "metadata.a"),
    (CHAT, '{"messages": [{"role": "user", "content": "a\\ud800b"}]}', 400, "messages[0].content"),
    (CHAT, '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
     400, "messages[0].content[0].text"),
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "stop": ["\\ud83d"]}', 400, "stop[0]"),
    (CHAT, '{"messages": [{"role": "user", "content": "Hi"}], "\\udc00": 1}', 400, "udc00"),
    (CHAT, '{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}], "max_tokens": 1}', 200, None),
    ("/v1/completions", '{"prompt": [1, %s]}' % HUGE, 400, "prompt"),
    ("/v1/completions", '{"prompt": "Hi", "logprobs": %s}' % BIG, 400, "logprobs"),
    ("/v1/completions", '{"prompt": "\\ud800"}', 400, "prompt"),
    ("/v1/completions", '{"prompt": ["\\ud800"]}', 400, "prompt[0]"),
    ("/tokenize", '{"content": "x\\udbff"}', 400, "content"),
    ("/tokenize", '{"content": %s}' % HUGE, 400, "content"),
    ("/detokenize", '{"tokens": [%s]}' % HUGE, 400, "tokens"),
    ("/detokenize", '{"tokens": [-%s]}' % BIG, 400, "tokens"),
]


@pytest.mark.parametrize("path,raw,status,field", HOSTILE_BODIES,
                         ids=[f"{p}-{i}" for i, (p, *_) in enumerate(HOSTILE_BODIES)])
def test_hostile_numbers_types_and_surrogates(live_server, path, raw, status, field):
    r = httpx.post(live_server.url + path, content=raw.encode(), timeout=120,
                   headers={"Content-Type": "application/json"})
    if status == 200:
        assert r.status_code == 200, r.text
        return
    assert_refused(r, 400, field)
    assert field in r.json()["error"]["param"]
    assert len(r.text) < 2000                       # the message quotes no 5000-digit number
