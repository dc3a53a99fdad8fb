"""Slow and idle connections against the real server (runtime/server_guard.py, "connections"): each
test performs the attack on a socket level and checks that a well-behaved client is still served."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from server_helpers import httpx, read_until_closed, smollm2_model, start_server  # noqa: F401

HEADER_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def server(smollm2_model):
    s = start_server(smollm2_model, request_timeout=HEADER_TIMEOUT)   # max_connections: the default 256
    yield s
    s.stop()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _connect(address) -> socket.socket:
    s = socket.create_connection(address, timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")   # close: RST
    return s


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.0)
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _served(url: str) -> None:
    """A well-behaved client: /health and a one-token chat completion, each on a new connection."""
    assert httpx.get(url + "/health", timeout=30).status_code == 200
    r = httpx.post(url + "/v1/chat/completions", timeout=300, json={
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0})
    assert r.status_code == 200, r.text


def test_slow_headers_on_a_kept_alive_connection_get_408(server):
    """After one request, trickling the next request's headers does not keep the connection open."""
    s = _connect(_address(server.url))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = b""
    while b'"status"' not in first:
        first += s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    t0 = time.monotonic()
    trickle, reply = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100, b""
    s.settimeout(0.3)
    for byte in trickle:                      # one byte every 0.3 s: 30 s for all of them
        try:
            s.send(bytes([byte]))
            reply += s.recv(65536)
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if reply:
            break
    elapsed = time.monotonic() - t0
    s.close()
    assert reply.startswith(b"HTTP/1.1 408") and b"not received within" in reply, reply[:200]
    assert elapsed < HEADER_TIMEOUT + 3, elapsed


def test_silent_connection_is_closed(server):
    """A connection that never sends a byte is closed after the idle timeout (5 s), no 408 needed."""
    s = _connect(_address(server.url))
    t0 = time.monotonic()
    read_until_closed(s, 15)
    s.close()
    assert time.monotonic() - t0 < 9


@pytest.mark.parametrize("kind", ["idle", "trickling headers", "slow body"])
def test_many_idle_or_slow_connections_do_not_lock_others_out(server, kind):
    """300 connections (more than max_connections, 256) that are silent, that trickle their headers,
    or that announce a body they never send: /health and a chat completion are still served, at once."""
    address = _address(server.url)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    opening = {"idle": b"", "trickling headers": head,
               "slow body": head + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"}[kind]
    socks = []
    try:
        for _ in range(300):
            s = _connect(address)
            if opening:
                s.sendall(opening)
            socks.append(s)
        t0 = time.monotonic()
        _served(server.url)
        assert time.monotonic() - t0 < 60
        # the oldest of the attacker's connections made room; at most max_connections are open
        assert sum(_closed_by_server(s) for s in socks) >= 300 - 256
    finally:
        for s in socks:
            s.close()
    _served(server.url)


def test_attack_repeated_while_clients_are_served(server):
    """An attacker that keeps opening silent connections (1000 over the test) and a client that makes
    requests meanwhile: every request of the client is answered with 200."""
    address = _address(server.url)
    stop = threading.Event()
    opened = []

    def attack():
        socks = []
        while not stop.is_set() and len(opened) < 1000:
            try:
                socks.append(_connect(address))
                opened.append(1)
            except OSError:
                time.sleep(0.01)
        for s in socks:
            s.close()

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        while len(opened) < 300:
            time.sleep(0.05)
        statuses = [httpx.get(server.url + "/health", timeout=30).status_code for _ in range(20)]
    finally:
        stop.set()
        attacker.join()
    assert statuses == [200] * 20


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, so the server sees a 'remote' client."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))               # no packet is sent: this only picks a route
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def test_one_remote_address_cannot_take_every_connection(smollm2_model):
    """From a non-loopback address, at most max_per_client (here 8) connections: the ninth displaces
    that client's own oldest idle one, and loopback clients keep being served."""
    ip = _non_loopback_address()
    if ip is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    from runtime.launch import bind, make_server, serve_in_thread
    from runtime.options import ServerOptions
    from runtime.server import create_app
    opts = ServerOptions(host="0.0.0.0", request_timeout=HEADER_TIMEOUT, max_connections=32)  # 8 per client
    sock = bind("0.0.0.0", 0)
    app, engine = create_app(smollm2_model, opts)
    srv = make_server(app, opts)
    thread = serve_in_thread(srv, sock)
    port = sock.getsockname()[1]
    socks = []
    try:
        assert engine.ready.wait(300)
        for _ in range(12):
            socks.append(_connect((ip, port)))
            time.sleep(0.02)
        time.sleep(0.2)
        closed = [_closed_by_server(s) for s in socks]
        assert closed == [True] * 4 + [False] * 8, closed      # its own oldest four made room
        r = httpx.get(f"http://{ip}:{port}/health", timeout=30)  # and it can still be served
        assert r.status_code == 200
        for _ in range(40):                                     # loopback is not limited per address
            socks.append(_connect(("127.0.0.1", port)))
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
    finally:
        for s in socks:
            s.close()
        srv.should_exit = True
        thread.join(timeout=10)
        engine.close()


def test_at_the_limit_a_connection_whose_request_waits_unread_is_not_the_one_closed():
    """The event loop accepts a burst of connections before it reads any of them, so in a flood the
    connection of a client that has already sent its request can be the longest-waiting one: the
    registry passes over it (its bytes wait in the socket) and closes the next-longest waiting."""
    from runtime.server_guard import ConnectionLimits, _Registry

    class Waiting:                       # a connection between requests since `since`
        client = ("127.0.0.1", 0)

        def __init__(self, since, unread):
            self.since, self.unread, self.closed = since, unread, False

        def displaceable(self):
            return (0, self.since)

        def has_unread_bytes(self):
            return self.unread

        def displace(self):
            self.closed = True

    registry = _Registry(ConnectionLimits(max_connections=3))
    client, silent1, silent2 = Waiting(1.0, True), Waiting(2.0, False), Waiting(3.0, False)
    for c in (client, silent1, silent2):
        assert registry.admit(c)
    assert registry.admit(Waiting(4.0, False))
    assert (client.closed, silent1.closed, silent2.closed) == (False, True, False)
    everyone_unread = _Registry(ConnectionLimits(max_connections=1))   # all have bytes: the oldest goes
    first = Waiting(1.0, True)
    assert everyone_unread.admit(first) and everyone_unread.admit(Waiting(2.0, True)) and first.closed
