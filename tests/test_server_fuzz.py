"""Fuzzing the real server (the synthetic llama model, so that requests that pass validation generate
quickly): request bodies on every POST endpoint the app has (found from its routes, so endpoints added
later are fuzzed too), and HTTP framing on the socket. Never a 5xx, every refusal is JSON, and the
server goes on answering.

CHATFILE_FUZZ_EXAMPLES (default 150) examples per class, derandomized; the long run is
`CHATFILE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_server_fuzz.py -q`.
"""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import runtime
from fuzz_helpers import fuzz_examples, fuzz_settings
from server_helpers import httpx, read_until_closed, start_server

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "data" / "synthetic" / "llama-Q8_0.gguf"
FUZZ_EXAMPLES = fuzz_examples(150)
FUZZ = fuzz_settings(FUZZ_EXAMPLES)


@pytest.fixture(scope="module")
def server():
    s = start_server(runtime.load(SYNTHETIC), request_timeout=1.0)     # an unfinished request: 408 after 1 s
    s.post_paths = sorted({r.path for r in s.server.config.app.app.routes if "POST" in (getattr(r, "methods", None) or ())})
    yield s
    s.stop()


# ---- request bodies --------------------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
BASES = {        # a valid body per kind of endpoint, by a word in its path
    "messages": {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]},
    "responses": {"model": "m", "input": "Hi", "max_output_tokens": 2},
    "chat": {"model": "m", "messages": MESSAGES, "max_tokens": 2},
    "completion": {"prompt": "Once", "max_tokens": 2, "n_predict": 2},
    "infill": {"input_prefix": "def f(", "input_suffix": "):", "n_predict": 2},
    "tokenize": {"content": "Hello"},
    "detokenize": {"tokens": [1, 2, 3]},
    "embedding": {"input": "Hello", "content": "Hello"},
    "template": {"messages": MESSAGES},
}


def base_for(path: str) -> dict:
    for word, body in BASES.items():
        if word in path and (word != "completion" or "chat" not in path):
            return json.loads(json.dumps(body))
    return {}


class Raw:
    """A JSON fragment written as is (numbers no Python int can print, NaN, deep nesting)."""

    def __init__(self, text: str):
        self.text = text


def dumps(value) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(dumps, value)) + "]"
    return json.dumps(value)            # ensure_ascii: a lone surrogate is written as \\udXXX


HOSTILE = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63) - 1, 1e308, -0.0, 1.5, "", "x",
                     "\ud800", "a\udfffb", "\x00", "\u202e", [], {}, [None], [[]], {"": None},
                     [{"role": "user"}], [{"role": [], "content": "x"}], [{"type": "text"}],
                     {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
                     [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]]),
    st.builds(Raw, st.sampled_from(["9" * 5000, "-" + "9" * 400, "9" * 400 + ".5", "1e400", "-1e400", "NaN",
                                    "Infinity", "-Infinity", "[" * 500 + "]" * 500, '{"a":' * 300 + "1" + "}" * 300,
                                    '"' + "\\ud83d" + '"', '"' + "\\udc00\\ud800" + '"', "1" * 32, "1" * 33])),
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(-5, 400), max_size=6),
)
FIELDS = ["messages", "prompt", "content", "tokens", "input", "max_tokens", "n_predict", "temperature", "top_p",
          "top_k", "min_p", "seed", "stop", "stream", "stream_options", "logprobs", "top_logprobs", "n",
          "logit_bias", "response_format", "tools", "tool_choice", "grammar", "json_schema", "system",
          "max_output_tokens", "instructions", "input_prefix", "input_suffix", "add_special", "with_pieces",
          "cache_prompt", "repeat_penalty", "presence_penalty", "id_slot", "n_probs", "samplers", "model",
          "metadata", "user", "frobnicate", "\ud800", "echo", "suffix", "n_keep", "ignore_eos"]


@st.composite
def mutated_body(draw, paths):
    path = draw(st.sampled_from(paths))
    body = base_for(path)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 2))
        if kind == 0:
            body[draw(st.sampled_from(FIELDS))] = draw(HOSTILE)
        elif kind == 1 and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        elif isinstance(body.get("messages"), list) and body["messages"]:
            i = draw(st.integers(0, len(body["messages"]) - 1))
            message = dict(body["messages"][i]) if isinstance(body["messages"][i], dict) else {}
            message[draw(st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id"]))] = draw(HOSTILE)
            body["messages"][i] = message
    if "max_tokens" not in body and draw(st.booleans()):
        body["max_tokens"] = 2
    if draw(st.integers(0, 19)) == 0:                       # not an object at all
        body = draw(HOSTILE)
    return path, dumps(body)


def test_every_post_endpoint_is_fuzzed(server):
    """The fuzz below takes its endpoints from the app: the ones known today are among them."""
    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"):
        assert path in server.post_paths


def test_request_bodies_never_get_a_5xx(server):
    client = httpx.Client(base_url=server.url, timeout=60)

    @FUZZ
    @given(mutated_body(server.post_paths))
    def check(case):
        path, raw = case
        r = client.post(path, content=raw.encode("utf-8", "surrogatepass"), headers={"Content-Type": "application/json"})
        assert r.status_code < 500 or r.status_code == 503 and "busy" in r.text, (path, raw[:300], r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert "error" in r.json(), (path, raw[:300], r.text[:300])

    try:
        check()
    finally:
        client.close()
    assert server.health().status_code == 200


# ---- HTTP framing ----------------------------------------------------------------------------------

GOOD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n")
BODY = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).encode()

FRAMING = [
    lambda h, b: (h.replace(b"POST", b"P\x00ST"), b),
    lambda h, b: (h.replace(b"HTTP/1.1", b"HTTP/9.9"), b),
    lambda h, b: (h.replace(b"HTTP/1.1", b"HTTP/1.0"), b),
    lambda h, b: (h.replace(b"/v1/chat/completions", b"http://127.0.0.1/v1/chat/completions"), b),
    lambda h, b: (h.replace(b"/v1/chat/completions", b"*"), b),
    lambda h, b: (h.replace(b"/v1/chat/completions", b"/v1/chat/completions?" + b"a=" * 3000), b),
    lambda h, b: (h.replace(b"/v1/chat/completions", b"/%2e%2e/%00/%ff"), b),
    lambda h, b: (h.replace(b"Content-Length: %d", b"Content-Length: %d\r\nContent-Length: 1"), b),
    lambda h, b: (h.replace(b"Content-Length: %d", b"Content-Length: -1"), b),
    lambda h, b: (h.replace(b"Content-Length: %d", b"Content-Length: 99999999999999999999999"), b),
    lambda h, b: (h.replace(b"Content-Length: %d", b"Content-Length: 0x10"), b),
    lambda h, b: (h.replace(b"Content-Length: %d", b"Transfer-Encoding: chunked"), b"%x\r\n%s\r\n0\r\n\r\n" % (len(b), b)),
    lambda h, b: (h.replace(b"Content-Length: %d", b"Transfer-Encoding: chunked"), b"fffffffffffffffff\r\n" + b),
    lambda h, b: (h.replace(b"Content-Length: %d", b"Transfer-Encoding: chunked"), b"5;" + b"x" * 70000 + b"\r\n"),
    lambda h, b: (h.replace(b"Content-Length: %d", b"Transfer-Encoding: gzip, chunked"), b"0\r\n\r\n"),
    lambda h, b: (h.replace(b"Content-Length: %d", b"Content-Length: %d\r\nTransfer-Encoding: chunked"), b),
    lambda h, b: (h.replace(b"Host: 127.0.0.1\r\n", b""), b),
    lambda h, b: (h.replace(b"Host: 127.0.0.1", b"Host: 127.0.0.1\r\nHost: evil.example"), b),
    lambda h, b: (h.replace(b"Host: 127.0.0.1", b"Host: \xff\xfe"), b),
    lambda h, b: (h.replace(b"Content-Type: application/json", b"Content-Type: application/json\r\n folded"), b),
    lambda h, b: (h.replace(b"Content-Type: application/json", b"X: " + b"a" * 70000), b),
    lambda h, b: (h.replace(b"Content-Type: application/json", b"\r\n".join(b"X-%d: y" % i for i in range(2000))), b),
    lambda h, b: (h.replace(b"Content-Type: application/json", b"Expect: 100-continue"), b),
    lambda h, b: (h.replace(b"Content-Type: application/json", b"Authorization: Bearer \xff"), b),
    lambda h, b: (h.replace(b"Content-Type: application/json", b"Origin: null"), b),
    lambda h, b: (h.replace(b"Connection: close", b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket"), b),
    lambda h, b: (h.replace(b"\r\n", b"\n"), b),
    lambda h, b: (h.replace(b"\r\n", b"\r"), b),
    lambda h, b: (h.replace(b": ", b":"), b),
    lambda h, b: (h.replace(b": ", b" : "), b),
    lambda h, b: (h, b + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    lambda h, b: (h, b + b"\x16\x03\x01garbage"),
    lambda h, b: (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b""),
    lambda h, b: (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), b""),
    lambda h, b: (b"GET / HTTP/1.1\r\n" * 3, b""),
    lambda h, b: (h, b[: len(b) // 2]),
]


def _exchange(address, data: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as s:
        try:
            s.sendall(data)
        except OSError:                             # the server may close on garbage before reading it all
            pass
        return read_until_closed(s)


def test_http_framing(server):
    host, port = server.url.removeprefix("http://").split(":")
    address = (host, int(port))

    @FUZZ
    @given(st.lists(st.sampled_from(range(len(FRAMING))), min_size=1, max_size=3), st.binary(max_size=8),
           st.integers(0, 400))
    def check(mutations, noise, at):
        head, body = GOOD, BODY
        for m in mutations:
            head, body = FRAMING[m](head, body)
        if b"%d" in head:
            head = head.replace(b"%d", str(len(body)).encode())
        data = head + body
        if noise:                                    # a few random bytes somewhere
            at = min(at, len(data))
            data = data[:at] + noise + data[at:]
        reply = _exchange(address, data)
        for status in re.findall(rb"^HTTP/1\.[01] (\d{3})", reply, re.M):
            assert int(status) < 500 or int(status) == 503, (mutations, data[:200], reply[:300])

    check()
    assert server.health().status_code == 200
