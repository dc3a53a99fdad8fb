"""What stands between the network and the routes: Host/Origin checks, the API key, connection limits.

- DNS rebinding: a page on evil.example can make its own name resolve to 127.0.0.1 and then talk to us as
  "same origin". The browser still sends `Host: evil.example`, so only Host names we know are let in:
  IP literals, `localhost` (and `*.localhost`), the host we were told to bind, and this machine's name when
  bound to every interface.
- Cross-origin requests: a page elsewhere can still POST to 127.0.0.1 with a "simple" request that needs no
  CORS preflight. Browsers send `Origin` on those, so any request whose Origin is not our own is refused.
  We never send CORS headers, so nothing cross-origin can read a response either.
- `--api-key`: every API route needs `Authorization: Bearer KEY` (or llama.cpp's `X-Api-Key: KEY`); the
  static web UI and /health do not, so the page can load and ask for the key. Several keys may be given;
  the index of the one a request matched goes into the ASGI scope as `scope["chatfile.client"]` (the
  key itself never does), and the engine never lets two identities share a cached prompt.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import select
import socket
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

PUBLIC_PATHS = ("/health", "/v1/health")
API_PREFIXES = ("/v1/", "/tokenize", "/detokenize", "/props", "/slots",
                # llama-server's own paths: /completion(s), /infill, /apply-template, /embedding(s),
                # and its un-prefixed aliases of the OpenAI routes
                "/completion", "/infill", "/apply-template", "/embedding", "/models", "/chat/", "/responses")


def _error_body(message: str, type: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "param": None, "code": None}}).encode()


def host_name(host_header: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:8080' -> '::1', 'Example.com.' -> 'example.com'."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    if host_header.count(":") == 1:
        host_header = host_header.split(":", 1)[0]
    return host_header.rstrip(".").lower()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_host_names(bind_host: str) -> frozenset[str]:
    names = {"localhost", host_name(bind_host)}
    if bind_host in ("0.0.0.0", "::", ""):   # every interface: the machine's own name reaches it too
        hostname = socket.gethostname().lower()
        names |= {hostname, hostname.split(".", 1)[0]}
    return frozenset(names)


class Guard:
    """ASGI middleware in front of the whole app."""

    def __init__(self, app, bind_host: str, api_keys: tuple[str, ...] = ()):
        self.app = app
        self.allowed = allowed_host_names(bind_host)
        self.api_keys = tuple(k.encode() for k in api_keys)

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        if name in self.allowed or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)   # an IP literal cannot be a rebound name
            return True
        except ValueError:
            return False

    def client(self, key: str | None) -> int | None:
        """The index of the API key `key` matches (every key compared, in constant time each), or None."""
        if key is None:
            return None
        given = key.encode("latin-1")
        matched = None
        for i, k in enumerate(self.api_keys):
            if hmac.compare_digest(given, k) and matched is None:
                matched = i
        return matched

    def refusal(self, scope) -> tuple[int, str, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        if host is not None and not self.host_allowed(host):
            return 403, f"Host {host!r} is not allowed (DNS rebinding protection); " \
                        "use http://127.0.0.1 or start the server with --host set to this name", "forbidden"
        origin = headers.get("origin")
        if origin is not None and (host is None or origin.lower() != f"{scope['scheme']}://{host}".lower()):
            return 403, f"cross-origin request from {origin!r} refused", "forbidden"
        path = scope["path"]
        if self.api_keys and path.startswith(API_PREFIXES) and path not in PUBLIC_PATHS:
            key = headers.get("x-api-key")
            auth = headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
            client = self.client(key)
            if client is None:
                return 401, "invalid or missing API key: send 'Authorization: Bearer KEY'", "authentication_error"
            scope["chatfile.client"] = client
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refused = self.refusal(scope)
            if refused is not None:
                status, message, type = refused
                body = _error_body(message, type)
                await send({"type": "http.response.start", "status": status, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


# ---- connections --------------------------------------------------------------------------------
#
# Slow and idle clients. uvicorn times out a keep-alive connection only while no byte arrives, never a
# fresh connection that stays silent, and its `limit_concurrency` counts open connections, so 256 idle
# sockets made every request get 503. Instead:
# - every request's headers must arrive within `header_timeout` of the connection opening or of the
#   previous response (408 and close), so trickling bytes keeps no connection open;
# - a connection that sends nothing for `idle_timeout` (fresh, or between requests) is closed;
# - at `max_connections`, a new connection closes the one that has waited longest without a request in
#   progress (idle, or still sending its headers; not one whose bytes wait unread in its socket), else
#   the oldest one still sending its body; only when every connection is being answered is the new one
#   refused (503). Connections being answered are bounded by the engine's queue, so a well-behaved
#   client always gets in;
# - one remote address (not loopback, where every local client looks the same) holds at most
#   `max_per_client` connections: past that it displaces its own, never someone else's.

@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 30.0      # seconds from connection (or previous response) to a full header
    idle_timeout: float = 5.0         # seconds without a byte before an idle connection is closed
    max_connections: int = 256
    max_per_client: int = 64          # per remote address, loopback excepted (server.py: a quarter)


class _Registry:
    """The open connections of one server, for choosing which one makes room for a new one."""

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self.open: dict = {}                              # protocol -> its remote address
        self.per_address: dict[str, int] = {}

    def admit(self, proto) -> bool:
        """Register a new connection, closing another to make room; False: refuse this one."""
        address = proto.client[0] if proto.client else ""
        self.open[proto] = address
        self.per_address[address] = self.per_address.get(address, 0) + 1
        if address and not is_loopback(address) and self.per_address[address] > self.limits.max_per_client:
            if not self._make_room(proto, lambda p: self.open[p] == address):
                return False
        if len(self.open) > self.limits.max_connections:
            return self._make_room(proto, lambda p: True)
        return True

    def _make_room(self, newcomer, among) -> bool:
        candidates = sorted((p for p in self.open if p is not newcomer and among(p) and p.displaceable() is not None),
                            key=lambda p: p.displaceable())
        # a connection whose request already sits unread in its socket is not idle: the event loop accepts
        # a burst of new connections before it reads any of them, so in a flood of 256 or more a client
        # that had just sent its request became the longest-waiting one and was reset
        victim = next((p for p in candidates if not p.has_unread_bytes()), candidates[0] if candidates else None)
        if victim is None:
            self.forget(newcomer)
            return False
        self.forget(victim)
        victim.displace()
        return True

    def forget(self, proto) -> None:
        address = self.open.pop(proto, None)
        if address is not None:
            self.per_address[address] -= 1
            if not self.per_address[address]:
                del self.per_address[address]


def _raw_response(status: str, message: str, type: str) -> bytes:
    body = _error_body(message, type)
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (status.encode(), len(body), body))


def h11_protocol(limits: ConnectionLimits):
    """uvicorn's h11 protocol class with the connection rules above (pass as uvicorn's `http`, with
    `limit_concurrency=None` and `timeout_keep_alive=limits.idle_timeout`)."""
    registry = _Registry(limits)

    class Protocol(H11Protocol):
        _header_deadline = None
        _since = 0.0                  # when its current phase began: waiting for a request, or receiving one

        def connection_made(self, transport):
            super().connection_made(transport)
            if not registry.admit(self):
                transport.write(_raw_response("503 Service Unavailable", f"server busy: all "
                                              f"{limits.max_connections} connections are being answered",
                                              "server_busy"))
                transport.close()
                return
            self._await_request()
            # uvicorn arms its keep-alive timer only after a response: a silent new connection too
            self.timeout_keep_alive_task = self.loop.call_later(limits.idle_timeout, self.timeout_keep_alive_handler)

        def _await_request(self):
            self._since = self.loop.time()
            self._cancel_deadline()
            self._header_deadline = self.loop.call_later(limits.header_timeout, self._headers_too_slow)

        def _cancel_deadline(self):
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def handle_events(self):
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:              # a request's headers arrived
                self._cancel_deadline()
                self._since = self.loop.time()

        def on_response_complete(self):
            super().on_response_complete()           # may already start a pipelined request
            if not self.transport.is_closing() and self._between_requests():
                self._await_request()

        def connection_lost(self, exc):
            self._cancel_deadline()
            registry.forget(self)
            super().connection_lost(exc)

        def displaceable(self) -> tuple | None:
            """Sort key among connections that may be closed to make room (None: being answered):
            waiting for a request first, then still sending a body; longest waiting first."""
            if self._between_requests():
                return (0, self._since)
            if self.cycle.more_body and not self.cycle.response_started:
                return (1, self._since)
            return None

        def has_unread_bytes(self) -> bool:
            """Bytes (or the end) from the client wait in the socket, not yet read by the event loop."""
            sock = self.transport.get_extra_info("socket")
            if sock is None:
                return False
            try:
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLIN)
                return bool(poller.poll(0))
            except (AttributeError, OSError, ValueError):     # no poll() here, or the socket is gone
                return False

        def displace(self):
            self._cancel_deadline()
            if not self._between_requests():
                self.cycle.keep_alive = False
            self.transport.close()

        def _headers_too_slow(self):
            self._header_deadline = None
            if self._between_requests() and not self.transport.is_closing():
                self.transport.write(_raw_response("408 Request Timeout", "request headers not received "
                                                   f"within {limits.header_timeout:g} s", "timeout"))
                self.transport.close()

    return Protocol
