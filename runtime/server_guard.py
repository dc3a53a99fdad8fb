"""What stands between the network and the routes: Host/Origin checks, the API key, a header timeout.

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
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

PUBLIC_PATHS = ("/health", "/v1/health")
API_PREFIXES = ("/v1/", "/tokenize", "/detokenize", "/props", "/slots")


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


def h11_with_header_timeout(timeout: float):
    """uvicorn's h11 protocol, plus a deadline for a client to finish sending its request headers.

    uvicorn times out idle keep-alive connections but not a client that opens a connection and trickles
    its headers forever (slowloris); such a client gets a 408 and is disconnected. The body has its own
    deadline in the route (server.read_body).
    """

    class Protocol(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._header_deadline = self.loop.call_later(timeout, self._headers_too_slow)

        def handle_events(self):
            super().handle_events()
            if self.cycle is not None and self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def connection_lost(self, exc):
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
            super().connection_lost(exc)

        def _headers_too_slow(self):
            self._header_deadline = None
            if self.cycle is None and not self.transport.is_closing():
                body = _error_body(f"request headers not received within {timeout:g} s", "timeout")
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                     b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                self.transport.close()

    return Protocol

