#!/usr/bin/env python3
"""Several conversations at once: what `--parallel N` buys, measured against the same requests one after
another on the same server.

Starts `python -m runtime --server -np N -t T` on 127.0.0.1 (SmolLM2 from scripts/fetch_models.py unless
-m is given) and reports, each over --reps repetitions (median and spread):
- aggregate: K greedy streaming chat completions of --tokens tokens each, first one after another, then
  all K at once; completion tokens per second of wall time of each, and the ratio;
- identical: how many of the K concurrent greedy texts equal the same request's text alone;
- time to first token of one more request, alone, and while K - 1 others are streaming; the ratio;
- the server's CPU time per completion token one after another and all at once, and their ratio (the
  figure to read on a busy machine, where wall-clock ratios are noise);
- the KV cache bytes per position (fp16) against a float32 cache.

With --forward, no server: the CPU time per token of Model.forward with B = 1, 2, 4 decode rows (one per
sequence, as the engine batches the slots), and 4 x B=1 over B=4.

    python scripts/bench_slots.py                     # -np 4, 4 clients, 96 tokens, 2 threads, 3 reps
    python scripts/bench_slots.py -np 1               # the same with one slot (today's behaviour)
    python scripts/bench_slots.py --forward -t 1      # forward-pass CPU time only
    python scripts/bench_slots.py --chat              # a 30-turn chat in a 512-token context (-np 1)
    python scripts/bench_slots.py --api openai        # the aggregate runs through the official openai
    python scripts/bench_slots.py --api openai-whole  # client, streamed / not streamed

With --chat: a 30-turn greedy chat (16-token replies) against a server with a 512-token context (-c 512
unless -c is given): how many turns were answered (a reply, not an error), how many had text, and how
many messages the server dropped at the last turn.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from load_test import cpu_seconds  # noqa: E402  (scripts/, on the path above)

PROMPTS = [
    "Write a long story about a dragon who learns to bake bread.",
    "Describe, in detail, how a steam engine works.",
    "Tell me everything you know about the history of the bicycle.",
    "Write a long letter to a friend about a trip to the mountains.",
    "Explain how plants turn sunlight into food, step by step.",
    "Write a detailed recipe for a vegetable soup, with tips.",
    "Describe a busy market in a small town on a Saturday morning.",
    "Write a long poem about the sea and the people who sail on it.",
]


def stream(url: str, prompt: str, tokens: int) -> dict:
    """One greedy streaming chat completion: its text, completion tokens, time to first token, end."""
    body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": tokens,
            "stream": True, "stream_options": {"include_usage": True}, "cache_prompt": False}
    t0 = time.perf_counter()
    text, first, usage = [], None, None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for ch in chunk["choices"]:
                if ch["delta"].get("content"):
                    if first is None:
                        first = time.perf_counter() - t0
                    text.append(ch["delta"]["content"])
    return {"text": "".join(text), "tokens": usage["completion_tokens"], "ttft": first,
            "t0": t0, "end": time.perf_counter()}


def with_openai(url: str, prompt: str, tokens: int, streamed: bool) -> dict:
    """The same request through the official openai client (a new client per request, as separate
    programs would), streamed or not; ttft is None when not streamed."""
    import openai
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    t0 = time.perf_counter()
    args = dict(model="any", messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=tokens,
                extra_body={"cache_prompt": False})
    first = None
    if streamed:
        text, n = [], 0
        for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args):
            if chunk.usage:
                n = chunk.usage.completion_tokens
            for ch in chunk.choices:
                if ch.delta.content:
                    if first is None:
                        first = time.perf_counter() - t0
                    text.append(ch.delta.content)
        text = "".join(text)
    else:
        r = client.chat.completions.create(**args)
        text, n = r.choices[0].message.content, r.usage.completion_tokens
    client.close()
    return {"text": text, "tokens": n, "ttft": first, "t0": t0, "end": time.perf_counter()}


def request(url: str, prompt: str, tokens: int, api: str) -> dict:
    """One greedy chat completion by the chosen client: "httpx" (streamed, this script's own SSE reader),
    "openai" (the official client, streamed) or "openai-whole" (not streamed)."""
    if api == "httpx":
        return stream(url, prompt, tokens)
    return with_openai(url, prompt, tokens, streamed=api == "openai")


def concurrently(url: str, prompts: list[str], tokens: int, api: str = "httpx") -> list[dict]:
    out: list = [None] * len(prompts)

    def one(i):
        out[i] = request(url, prompts[i], tokens, api)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def ttft_under_load(url: str, others: list[str], newcomer: str, tokens: int) -> float:
    """Time to first token of `newcomer` sent once every one of `others` is streaming."""
    started = [threading.Event() for _ in others]
    results: list = [None] * len(others)

    def other(i):
        body = {"messages": [{"role": "user", "content": others[i]}], "temperature": 0, "max_tokens": tokens,
                "stream": True, "cache_prompt": False}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
            for line in r.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    started[i].set()
        started[i].set()
        results[i] = True
    threads = [threading.Thread(target=other, args=(i,)) for i in range(len(others))]
    for t in threads:
        t.start()
    for e in started:
        e.wait()
    ttft = stream(url, newcomer, 8)["ttft"]
    for t in threads:
        t.join()
    return ttft


def forward_cpu(model_path: str, threads: int, reps: int) -> int:
    """CPU ms per token of Model.forward with B decode rows of B sequences (each 64 positions in)."""
    import numpy as np
    import runtime
    from runtime.model import Buffers, KVCache
    m = runtime.load(model_path, n_threads=threads)
    n, p, steps = 4, 64, 8
    kv, buf = KVCache(m, n, p + 2 + 4 * steps * reps), Buffers(m.config, p, heads=n)
    i64 = lambda v: np.array(v, np.int64)         # noqa: E731
    for s in range(n):                             # a 64-token prompt in each sequence
        m.forward(kv, buf, i64(range(100 + s, 100 + s + p)), i64([s] * p), i64(range(p)), 0, i64([p - 1]))
    pos, per_token = p, {}
    for b in (1, 2, 4):
        rows = i64(range(b))
        m.forward(kv, buf, i64([200] * b), rows, i64([pos] * b), b, rows)      # compile, warm caches
        pos, per = pos + 1, []
        for _ in range(reps):
            c0 = time.process_time()
            for _ in range(steps):
                m.forward(kv, buf, i64([200] * b), rows, i64([pos] * b), b, rows)
                pos += 1
            per.append((time.process_time() - c0) / steps / b * 1000)
        per_token[b] = statistics.median(per)
        print(f"B={b}  {spread(per)} ms CPU per token")
    print(f"4 x B=1 / B=4: {per_token[1] / per_token[4]:.2f}x  ({Path(model_path).name}, -t {threads}, "
          f"{reps} reps of {steps} passes; load average {os.getloadavg()[0]:.2f})")
    return 0


def long_chat(url: str, turns: int, tokens: int) -> None:
    messages = [{"role": "system", "content": "You are a cheerful assistant who always answers briefly."}]
    answered = with_text = most = 0
    dropped = errors = None
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Question {turn}: tell me one fact about the number "
                                                    f"{turn * 7 + 3} and why it is interesting."})
        r = httpx.post(url + "/v1/chat/completions", timeout=600, json={
            "messages": messages, "temperature": 0, "max_tokens": tokens})
        if r.status_code != 200:
            errors = f"turn {turn}: {r.status_code} {r.text[:200]}"
            messages.append({"role": "assistant", "content": ""})
            continue
        body = r.json()
        reply = body["choices"][0]["message"]["content"] or ""
        answered += 1
        with_text += bool(reply.strip())
        dropped = body.get("dropped_messages", 0)
        most = max(most, body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"])
        messages.append({"role": "assistant", "content": reply})
    print(f"{answered}/{turns} turns answered ({with_text} with text); the last turn dropped {dropped} of "
          f"{len(messages) - 1} messages; largest prompt + reply {most} tokens")
    if errors:
        print(f"first refusal: {errors}")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", help="GGUF (default: SmolLM2 from the model cache)")
    ap.add_argument("-np", "--parallel", type=int, default=4, help="server slots (default: 4)")
    ap.add_argument("-k", "--clients", type=int, default=4, help="concurrent requests (default: 4)")
    ap.add_argument("-n", "--tokens", type=int, default=96, help="max_tokens per request (default: 96)")
    ap.add_argument("-t", "--threads", type=int, default=2, help="server threads (default: 2)")
    ap.add_argument("-c", "--ctx-size", type=int, help="positions per slot (default: 2048; 512 with --chat)")
    ap.add_argument("-r", "--reps", type=int, default=3, help="repetitions (default: 3)")
    ap.add_argument("--api", choices=("httpx", "openai", "openai-whole"), default="httpx",
                    help="client of the aggregate runs: this script's SSE reader (default), the official "
                         "openai client streamed, or not streamed")
    ap.add_argument("--forward", action="store_true", help="only Model.forward's CPU time per token, no server")
    ap.add_argument("--chat", action="store_true", help="a 30-turn chat in a 512-token context, no load")
    args = ap.parse_args(argv)
    if args.model is None:
        from fetch_models import model_path
        args.model = str(model_path("smollm2"))
    if args.forward:
        return forward_cpu(args.model, args.threads, max(args.reps, 5))
    if args.chat:
        args.parallel = 1
    if args.ctx_size is None:
        args.ctx_size = 512 if args.chat else 2048
    from server_helpers import free_port, wait_healthy
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "--server", "--nobrowser", "--port", str(port),
                             "-m", args.model, "-np", str(args.parallel), "-t", str(args.threads),
                             "-c", str(args.ctx_size)], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prompts = (PROMPTS * (args.clients // len(PROMPTS) + 1))[:args.clients]
    try:
        wait_healthy(url, proc)
        if args.chat:
            long_chat(url, 30, 16)
            return 0
        concurrently(url, prompts[:2], 4)                      # compile/load every kernel first
        seq_rate, par_rate, ratios, same, alone_ttft, loaded_ttft = [], [], [], [], [], []
        seq_cpu, par_cpu = [], []
        for _ in range(args.reps):
            t0, c0 = time.perf_counter(), cpu_seconds(proc.pid)
            alone = [request(url, p, args.tokens, args.api) for p in prompts]
            n = sum(r["tokens"] for r in alone)
            seq = n / (time.perf_counter() - t0)
            seq_cpu.append((cpu_seconds(proc.pid) - c0) / n * 1000)
            t0, c0 = time.perf_counter(), cpu_seconds(proc.pid)
            together = concurrently(url, prompts, args.tokens, args.api)
            n = sum(r["tokens"] for r in together)
            par = n / (time.perf_counter() - t0)
            par_cpu.append((cpu_seconds(proc.pid) - c0) / n * 1000)
            seq_rate.append(seq)
            par_rate.append(par)
            ratios.append(par / seq)
            same.append(sum(a["text"] == b["text"] for a, b in zip(alone, together)))
            alone_ttft.append(statistics.median(stream(url, prompts[-1], 8)["ttft"] for _ in range(3)))
            loaded_ttft.append(ttft_under_load(url, prompts[:args.clients - 1], prompts[-1], args.tokens))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    import runtime
    from runtime.model import KVCache
    config = runtime.load(args.model).config
    kv16 = KVCache.bytes_per_position(config)
    print(f"{Path(args.model).name}, -np {args.parallel}, {args.clients} clients ({args.api}) x {args.tokens} "
          f"tokens, -t {args.threads}, {args.reps} reps; load average {os.getloadavg()[0]:.2f}")
    print(f"one after another    {spread(seq_rate)} tok/s")
    print(f"all at once          {spread(par_rate)} tok/s")
    print(f"ratio                {spread(ratios)}x")
    print(f"server CPU per token {spread(seq_cpu)} ms one after another, {spread(par_cpu)} ms all at once; "
          f"ratio {spread([a / b for a, b in zip(seq_cpu, par_cpu)])}x")
    print(f"identical texts      {min(same)}/{args.clients} (worst rep; {same})")
    print(f"TTFT alone           {spread(alone_ttft)} s")
    print(f"TTFT, {args.clients - 1} streaming  {spread(loaded_ttft)} s; "
          f"ratio {spread([b / a for a, b in zip(alone_ttft, loaded_ttft)])}x")
    print(f"KV bytes/position    {kv16} (fp16), float32 would be {2 * kv16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
