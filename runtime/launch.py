"""Starting the server: bind (with the default mode's port scan), run uvicorn, open the browser, and run
the terminal chat beside it.

    --server    API + web UI on --host:--port (default 127.0.0.1:8080); a taken port is an error
    (default)   the same on the first free port from 8080 on, the browser, and the terminal chat in the
                foreground when stdin is a terminal

The app itself (routes, guard, engine) is runtime.server.create_app.
"""
from __future__ import annotations

import socket
import sys
import threading
import time

from .escapes import printable
from .options import ChatOptions, LaunchOptions, ServerOptions
from .server import create_app
from .server_guard import ConnectionLimits, h11_protocol, is_loopback


def bind(host: str, port: int, scan: int = 1) -> socket.socket:
    """A listening socket on host:port, or the first free port of the next `scan` ones."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last_error = None
    for p in range(port, port + scan):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, p))
            sock.listen(128)
            sock.set_inheritable(True)
            return sock
        except OSError as e:
            sock.close()
            last_error = e
    raise last_error


def make_server(app, options: ServerOptions):
    import uvicorn
    limits = ConnectionLimits(header_timeout=options.request_timeout, max_connections=options.max_connections,
                              max_per_client=max(1, options.max_connections // 4))
    config = uvicorn.Config(   # connection limits are server_guard's, not uvicorn's limit_concurrency
        app, http=h11_protocol(limits), loop="asyncio", ws="none",
        lifespan="off", interface="asgi3", log_level="warning", access_log=False,
        limit_concurrency=None, timeout_keep_alive=limits.idle_timeout, timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


def serve_in_thread(server, sock: socket.socket) -> threading.Thread:
    """Start a uvicorn server on `sock` in a daemon thread; returns once it accepts connections."""
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="chatfile-server", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    return thread


def open_browser(url: str) -> None:
    import webbrowser
    try:
        opened = webbrowser.open(url)
    except Exception:   # no browser, no display, a broken BROWSER variable: printing the URL is enough
        opened = False
    if not opened:
        print(f"chatfile: could not open a browser; open {url} yourself", file=sys.stderr)


def _wait_started(server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)


def run(model, options: ServerOptions, launch: LaunchOptions, chat_options: ChatOptions | None = None) -> int:
    """Serve until stopped (Ctrl-C), or, with launch.foreground_chat, until the terminal chat ends."""
    host = options.host
    try:
        sock = bind(host, launch.port, scan=launch.port_scan)
    except OSError as e:
        print(f"error: cannot listen on {host}:{launch.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    if not is_loopback(host):
        print(f"warning: listening on {host}: anyone who can reach this machine on port {port} can use the "
              f"model{'' if options.api_keys else '; consider --api-key'}", file=sys.stderr)
    app, engine = create_app(model, options)
    server = make_server(app, options)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    url = f"http://{url_host}:{port}/"
    print(f"chatfile: {printable(engine.name)} at {url}" + (" (API key required)" if options.api_keys else ""),
          file=sys.stderr, flush=True)
    try:
        if launch.foreground_chat:
            thread = serve_in_thread(server, sock)
            if launch.open_browser:
                open_browser(url)
            from . import chat
            rc = chat.run(model, chat_options or ChatOptions(), lock=engine.lock)
            server.should_exit = True
            thread.join(timeout=5)
            return rc
        if launch.open_browser:
            threading.Thread(target=lambda: (_wait_started(server), open_browser(url)), daemon=True).start()
        server.run(sockets=[sock])
        return 0
    finally:
        engine.close()
        sock.close()
