"""Fixtures for the server tests: the real SmolLM2 model behind a real uvicorn server on 127.0.0.1.

The server runs in this process (a thread) so tests can give it short timeouts and look at its Engine;
tests/test_server.py also starts it the way users do, as `python -m runtime --server`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx   # the HTTP client the openai package ships with
import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class LiveServer:
    url: str          # "http://127.0.0.1:PORT"
    engine: object    # runtime.server_engine.Engine
    server: object    # uvicorn.Server
    thread: object

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.close()

    def health(self) -> httpx.Response:
        return httpx.get(self.url + "/health", timeout=10)


def start_server(model, **options) -> LiveServer:
    from runtime.launch import bind, make_server, serve_in_thread
    from runtime.options import ServerOptions
    from runtime.server import create_app
    opts = ServerOptions(**options)
    sock = bind("127.0.0.1", 0)
    app, engine = create_app(model, opts)
    server = make_server(app, opts)
    thread = serve_in_thread(server, sock)
    if not engine.ready.wait(timeout=300):
        raise RuntimeError("server engine did not warm up in 300 s")
    return LiveServer(f"http://127.0.0.1:{sock.getsockname()[1]}", engine, server, thread)


@pytest.fixture(scope="session")
def smollm2_model(smollm2_path):
    import runtime
    return runtime.load(smollm2_path)


@pytest.fixture(scope="module")
def live_server(smollm2_model):
    # short enough that the slow-client tests are quick, long enough that a loaded 2-core CI machine
    # never takes this long to read an ordinary request
    server = start_server(smollm2_model, request_timeout=5.0)
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


def runtime_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime", *args]


def run_cli(*args, stdin: bytes | None = None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m runtime ARGS` from this checkout, to the end: its exit code, stdout and stderr bytes.
    An argument given as bytes is passed as those bytes (a command line that is not UTF-8)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run([sys.executable, "-m", "runtime", *argv], input=stdin, capture_output=True, cwd=ROOT,
                          env=env, timeout=timeout)


def sse_events(response: httpx.Response) -> list:
    """The `data:` payloads of a Server-Sent Events response, JSON-decoded ("[DONE]" kept as is)."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def read_until_closed(s: socket.socket, timeout: float | None = None) -> bytes:
    """Everything the server sends on `s` until it closes the connection (or a recv waits `timeout`
    seconds; None keeps the socket's own timeout)."""
    if timeout is not None:
        s.settimeout(timeout)
    received = b""
    try:
        while chunk := s.recv(65536):
            received += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return received
