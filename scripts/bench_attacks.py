#!/usr/bin/env python3
"""The hardening's attacks, measured on any checkout: run it against the tree before a change and after.

    python scripts/bench_attacks.py [--tree DIR] [--only split,cache,headers,idle]

--tree is a checkout of this repository (default: the one holding this script); its `runtime` is run in
a child process (this script's Python and packages), so an old tree can be measured with a new venv:
    git archive COMMIT | tar -x -C /tmp/before && python scripts/bench_attacks.py --tree /tmp/before
- split: CPU seconds to tokenize "<|im_end|>" (SmolLM2) and "a\\n" (Gemma 3, whose newline is a
  user-defined token) repeated 100,000 and 200,000 times, against plain text of the same size.
- cache: resident memory (VmRSS) of a process after tokenizing three different 1.9-million-character
  words with SmolLM2's tokenizer.
- headers: a server (SmolLM2, default options); after one GET /health on a kept-alive connection, the
  next request's header bytes trickle one every 0.5 s: seconds until the server closes it (cut at 70).
- idle: 300 idle TCP connections to that server, then GET /health from a new client: status and seconds.
Models come from scripts/fetch_models.py's cache. Figures are wall-clock where they say seconds of a
connection, CPU otherwise; the load average is printed beside them.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

_SPLIT = r"""
import sys, time
from runtime.gguf import GGUFFile
from runtime.tokenizer import Tokenizer
def cpu(tok, text):
    t0 = time.process_time(); tok.tokenize(text, add_special=False, parse_special=True)
    return time.process_time() - t0
for path, unit in ((sys.argv[1], "<|im_end|>"), (sys.argv[2], "a\n")):
    tok = Tokenizer.from_metadata(GGUFFile(path).metadata)
    for n in (100000, 200000):
        hostile, plain = unit * n, ("The cat sat. " * n)[:len(unit) * n]
        print(f"{path.rsplit('/', 1)[-1]}: {unit!r} x {n}: {cpu(tok, hostile):.2f} s CPU; "
              f"plain text of the same size: {cpu(tok, plain):.2f} s", flush=True)
"""

_CACHE = r"""
import random, sys, time
from runtime.gguf import GGUFFile
from runtime.tokenizer import Tokenizer
def rss():
    return next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))
tok = Tokenizer.from_metadata(GGUFFile(sys.argv[1]).metadata)
tok.tokenize("warm up", add_special=False)
print(f"RSS after loading the tokenizer: {rss()} MB", flush=True)
rng = random.Random(0)
for i in range(3):
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1_900_000))
    t0 = time.process_time()
    tok.tokenize(word, add_special=False)
    print(f"after word {i + 1} (1.9 M chars, {time.process_time() - t0:.1f} s CPU): RSS {rss()} MB", flush=True)
"""


def child(tree: Path, code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", code, *args], cwd=tree, check=True,
                   env=dict(os.environ, PYTHONPATH=str(tree)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tree: Path, model: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "-m", model, "--server", "--port", str(port)],
                            cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if _get(port, "/health")[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start in 900 s")


def _get(port: int, path: str, timeout: float = 30) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def _length(response: bytes) -> int:
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    return next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length:")), 0)


def slow_headers(port: int) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = b""
    while b"\r\n\r\n" not in first or len(first.split(b"\r\n\r\n", 1)[1]) < _length(first):
        first += s.recv(65536)
    print(f"first request on the connection: {first.split(b' ', 2)[1].decode()}", flush=True)
    t0 = time.monotonic()
    outcome = "still open"
    for b in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000:
        if time.monotonic() - t0 > 70:
            break
        try:
            s.sendall(bytes([b]))
            s.settimeout(0.5)
            answer = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            outcome = "closed (reset)"
            break
        outcome = answer.split(b"\r\n", 1)[0].decode(errors="replace") if answer else "closed"
        break
    s.close()
    print(f"trickled headers on a kept-alive connection: {outcome} after {time.monotonic() - t0:.1f} s", flush=True)


def idle(port: int) -> None:
    idle_sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
    time.sleep(1)
    t0 = time.monotonic()
    try:
        status = _get(port, "/health", timeout=30)[0]
    except OSError as e:
        status = f"{type(e).__name__}"
    print(f"GET /health with 300 idle connections open: {status} in {time.monotonic() - t0:.2f} s", flush=True)
    for s in idle_sockets:
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--only", default="split,cache,headers,idle")
    args = ap.parse_args()
    from fetch_models import model_path
    smollm2, gemma3 = str(model_path("smollm2")), str(model_path("gemma3"))
    tree = args.tree.resolve()
    only = args.only.split(",")
    print(f"tree: {tree}   load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if "split" in only:
        child(tree, _SPLIT, smollm2, gemma3)
    if "cache" in only:
        child(tree, _CACHE, smollm2)
    if "headers" in only or "idle" in only:
        proc, port = start_server(tree, smollm2)
        try:
            if "headers" in only:
                slow_headers(port)
            if "idle" in only:
                idle(port)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
