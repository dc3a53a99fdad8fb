#!/usr/bin/env python3
"""Load run of the server (issue 6): N streaming clients for S seconds, some walking away early.

Starts `python -m runtime --server` on 127.0.0.1 (a free port) with the real SmolLM2 from
scripts/fetch_models.py, then runs N client threads, each sending streaming chat completions one after
another until S seconds have passed. A fraction of the requests (--disconnect) is dropped after a random
number of events, as a closed browser tab would. Meanwhile one thread asks /health every half second.

Checked, and the exit code is 1 when any fails:
- every reply read to the end is well-formed SSE: JSON `chat.completion.chunk`s, the role chunk first,
  exactly one chunk with a finish_reason ("stop" or "length"), a usage chunk that counts the tokens, then
  `data: [DONE]`;
- no request fails (status other than 200, a broken stream, an error event);
- /health answers 200 every time it is asked, and the server is idle again after the run;
- the server still answers a request after the run.

Reported: requests completed / dropped, tokens streamed, time to first token, /health latency, and the
server's resident memory (VmRSS) after warm-up and after the run, with its peak (VmHWM), and the server's
CPU time over the run per streamed token (steadier than tokens/s on a busy machine).

Traffic goes to 127.0.0.1 only; every loop is bounded by the duration (plus --grace for the requests
still in flight) and the script stops the server it started.

    python scripts/load_test.py                       # 32 clients, 60 s
    python scripts/load_test.py -n 8 -s 20            # a short run
    python scripts/load_test.py -np 4                 # the server with 4 slots (--parallel 4)
    python scripts/load_test.py --root OTHER_CHECKOUT # the same clients against another tree's server
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx   # the HTTP client the openai package ships with

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about the sea.",
    "Name three primary colors.",
    "Explain in two sentences why the sky is blue.",
    "Count from one to ten.",
    "Give me a short tip for learning a new language.",
]


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    completed: int = 0
    dropped: int = 0
    cut: int = 0                  # still running when the grace period ended
    tokens: int = 0
    ttft: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    health_times: list = field(default_factory=list)
    health_failures: list = field(default_factory=list)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def rss_kib(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"load_test: the server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"load_test: the server was not healthy after {timeout:g} s")


def check_reply(lines: list[str]) -> tuple[str | None, int]:
    """-> (what is wrong or None, completion tokens) for the `data:` payloads of one finished stream."""
    if not lines or lines[-1] != "[DONE]":
        return "stream does not end with [DONE]", 0
    try:
        chunks = [json.loads(x) for x in lines[:-1]]
    except json.JSONDecodeError as e:
        return f"event is not JSON: {e}", 0
    if not chunks:
        return "no event before [DONE]", 0
    if any("error" in c for c in chunks):
        return f"error event: {next(c for c in chunks if 'error' in c)}", 0
    if any(c.get("object") != "chat.completion.chunk" for c in chunks):
        return "event that is not a chat.completion.chunk", 0
    if len({c.get("id") for c in chunks}) != 1:
        return "events with different ids", 0
    first = chunks[0]["choices"][0]["delta"] if chunks and chunks[0]["choices"] else {}
    if first.get("role") != "assistant":
        return "first event is not the role chunk", 0
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch.get("finish_reason")]
    if len(finishes) != 1 or finishes[0] not in ("stop", "length"):
        return f"finish_reason events: {finishes}", 0
    usage = [c["usage"] for c in chunks if c.get("usage")]
    if len(usage) != 1 or chunks[-1].get("usage") != usage[0]:
        return "no usage chunk last", 0
    # the role chunk's content is null, as llama-server sends it; every other content is a string
    if not all(isinstance(ch["delta"].get("content", ""), str) or (i == 0 and ch["delta"]["content"] is None)
               for i, c in enumerate(chunks) for ch in c["choices"]):
        return "content that is not a string", 0
    n = usage[0]["completion_tokens"]
    if n < 1 or usage[0]["total_tokens"] != usage[0]["prompt_tokens"] + n:
        return f"usage does not add up: {usage[0]}", 0
    return None, n


def client(i: int, url: str, args, stop_at: float, give_up_at: float, stats: Stats) -> None:
    rng = random.Random(args.seed * 1000 + i)
    http = httpx.Client(timeout=httpx.Timeout(10, read=args.grace + args.seconds))
    try:
        while time.monotonic() < stop_at:
            drop_after = rng.randint(1, 8) if rng.random() < args.disconnect else None
            body = {"messages": [{"role": "user", "content": rng.choice(PROMPTS)}], "stream": True,
                    "max_tokens": args.max_tokens, "temperature": 0.7, "seed": rng.randrange(1 << 30),
                    "stream_options": {"include_usage": True}}
            t0 = time.monotonic()
            lines, first, cut = [], None, False
            try:
                with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        stats.fail(f"client {i}: HTTP {r.status_code}: {r.read()[:200]!r}")
                        continue
                    for line in r.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        lines.append(line[6:])
                        if first is None and len(lines) == 2:     # the role chunk, then the first token
                            first = time.monotonic() - t0
                        if drop_after is not None and len(lines) >= drop_after:
                            break                                  # closing the stream drops the connection
                        if time.monotonic() > give_up_at:
                            cut = True
                            break
            except httpx.HTTPError as e:
                stats.fail(f"client {i}: {type(e).__name__}: {e}")
                continue
            with stats.lock:
                if first is not None:
                    stats.ttft.append(first)
                if cut:
                    stats.cut += 1
                    return
                if drop_after is not None and lines[-1:] != ["[DONE]"]:
                    stats.dropped += 1
                    continue
            problem, n = check_reply(lines)
            if problem:
                stats.fail(f"client {i}: {problem}")
            else:
                with stats.lock:
                    stats.completed += 1
                    stats.tokens += n
    finally:
        http.close()


def poll_health(url: str, done: threading.Event, stats: Stats) -> None:
    while not done.is_set():
        t0 = time.monotonic()
        try:
            r = httpx.get(url + "/health", timeout=10)
            if r.status_code != 200:
                stats.health_failures.append(f"HTTP {r.status_code}")
        except httpx.HTTPError as e:
            stats.health_failures.append(f"{type(e).__name__}: {e}")
        stats.health_times.append(time.monotonic() - t0)
        done.wait(0.5)


def wait_idle(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = httpx.get(url + "/health", timeout=10).json()
        if not h.get("generating") and h.get("queued") == 0:
            return True
        time.sleep(0.2)
    return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--clients", type=int, default=32, help="concurrent streaming clients (default: 32)")
    ap.add_argument("-s", "--seconds", type=float, default=60, help="how long clients send requests (default: 60)")
    ap.add_argument("--disconnect", type=float, default=0.3,
                    help="fraction of requests dropped after 1..8 events (default: 0.3)")
    ap.add_argument("--max-tokens", type=int, default=48, help="max_tokens of each request (default: 48)")
    ap.add_argument("--grace", type=float, default=300,
                    help="seconds the requests in flight at the end may still take (default: 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-m", "--model", help="GGUF file (default: SmolLM2 from scripts/fetch_models.py)")
    ap.add_argument("-np", "--parallel", type=int, default=1, help="server slots, --parallel (default: 1)")
    ap.add_argument("-t", "--threads", type=int, default=None, help="server threads (default: all)")
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="source tree whose `python -m runtime` is the server (default: this checkout; "
                         "-np is passed only when not 1, for trees without it)")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or not 0 <= args.disconnect <= 1:
        ap.error("need --clients >= 1, --seconds > 0 and 0 <= --disconnect <= 1")

    if args.model is None:
        from fetch_models import model_path
        args.model = str(model_path("smollm2"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile("w+")    # the server's stderr, shown when something failed
    extra = (["-np", str(args.parallel)] if args.parallel != 1 else []) + \
        (["-t", str(args.threads)] if args.threads else [])
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "--server", "--nobrowser", "--host", "127.0.0.1",
                             "--port", str(port), "-m", args.model, *extra], cwd=args.root, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        wait_healthy(url, proc, timeout=300)
        # one request so the first client does not pay for compiling the prefill kernels
        httpx.post(url + "/v1/chat/completions", timeout=300,
                   json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        before, cpu0 = rss_kib(proc.pid), cpu_seconds(proc.pid)
        print(f"server pid {proc.pid} on {url} ({args.root}, -np {args.parallel}); {args.clients} clients for {args.seconds:g} s, "
              f"{args.disconnect:.0%} dropped early, max_tokens {args.max_tokens}", flush=True)

        stats, done = Stats(), threading.Event()
        t0 = time.monotonic()
        stop_at, give_up_at = t0 + args.seconds, t0 + args.seconds + args.grace
        health = threading.Thread(target=poll_health, args=(url, done, stats), daemon=True)
        health.start()
        threads = [threading.Thread(target=client, args=(i, url, args, stop_at, give_up_at, stats), daemon=True)
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, give_up_at + 30 - time.monotonic()))
        wall = time.monotonic() - t0
        idle = wait_idle(url, timeout=60)
        cpu = cpu_seconds(proc.pid) - cpu0
        done.set()
        health.join()
        after_ok = httpx.post(url + "/v1/chat/completions", timeout=300, json={
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}).status_code == 200
        after = rss_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        server_log = log.read()
        log.close()

    ttft = sorted(stats.ttft)
    pct = (lambda p: ttft[min(len(ttft) - 1, int(p * len(ttft)))]) if ttft else (lambda p: float("nan"))
    print(f"wall time            {wall:.1f} s (clients stopped starting requests at {args.seconds:g} s)")
    print(f"requests completed   {stats.completed} well-formed, {stats.tokens} tokens "
          f"({stats.tokens / wall:.1f} tokens/s overall)")
    print(f"server CPU           {cpu:.1f} s, {1000 * cpu / max(stats.tokens, 1):.1f} ms per streamed token "
          f"(the tokens of dropped requests included in the CPU, not in the count)")
    print(f"requests dropped     {stats.dropped} (client closed the stream early); {stats.cut} cut at the end")
    print(f"time to first token  median {statistics.median(ttft) if ttft else float('nan'):.2f} s, "
          f"p90 {pct(0.9):.2f} s, max {ttft[-1] if ttft else float('nan'):.2f} s")
    print(f"/health              {len(stats.health_times)} checks, max {max(stats.health_times):.3f} s, "
          f"{len(stats.health_failures)} failed")
    print(f"server RSS           {before['VmRSS'] / 1024:.1f} MiB after warm-up, {after['VmRSS'] / 1024:.1f} MiB "
          f"after the run (peak {after['VmHWM'] / 1024:.1f} MiB)")
    problems = stats.failures + [f"/health: {f}" for f in stats.health_failures]
    if not idle:
        problems.append("the server was still generating 60 s after the clients stopped")
    if not after_ok:
        problems.append("the server did not answer a request after the run")
    if stats.completed == 0:
        problems.append("no request completed")
    for p in problems[:20]:
        print("FAIL", p)
    if problems and server_log.strip():
        print("server stderr (last lines):\n" + "\n".join(server_log.splitlines()[-20:]))
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
