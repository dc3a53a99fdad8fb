#!/usr/bin/env python3
"""Several conversations at once: what `--parallel N` buys, measured against the same requests one after
another on the same server.

Starts `python -m runtime --server -np N -t T` on 127.0.0.1 (SmolLM2 from scripts/fetch_models.py unless
-m is given) and reports, each over --reps repetitions (median and spread):
- aggregate: K greedy streaming chat completions of --tokens tokens each, first one after another, then
  all K at once; completion tokens per second of wall time of each, and the ratio;
- identical: how many of the K concurrent greedy texts equal the same request's text alone;
- time to first token of one more request, alone, and while K - 1 others are streaming; the ratio;
- the KV cache bytes per position (fp16) against a float32 cache.

    python scripts/bench_slots.py                     # -np 4, 4 clients, 96 tokens, 2 threads, 3 reps
    python scripts/bench_slots.py -np 1               # the same with one slot (today's behaviour)
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


def concurrently(url: str, prompts: list[str], tokens: int) -> list[dict]:
    out: list = [None] * len(prompts)

    def one(i):
        out[i] = stream(url, prompts[i], tokens)
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


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", help="GGUF (default: SmolLM2 from the model cache)")
    ap.add_argument("-np", "--parallel", type=int, default=4, help="server slots (default: 4)")
    ap.add_argument("-k", "--clients", type=int, default=4, help="concurrent requests (default: 4)")
    ap.add_argument("-n", "--tokens", type=int, default=96, help="max_tokens per request (default: 96)")
    ap.add_argument("-t", "--threads", type=int, default=2, help="server threads (default: 2)")
    ap.add_argument("-c", "--ctx-size", type=int, default=2048, help="positions per slot (default: 2048)")
    ap.add_argument("-r", "--reps", type=int, default=3, help="repetitions (default: 3)")
    args = ap.parse_args(argv)
    if args.model is None:
        from fetch_models import model_path
        args.model = str(model_path("smollm2"))
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
        concurrently(url, prompts[:2], 4)                      # compile/load every kernel first
        seq_rate, par_rate, ratios, same, alone_ttft, loaded_ttft = [], [], [], [], [], []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            alone = [stream(url, p, args.tokens) for p in prompts]
            seq = sum(r["tokens"] for r in alone) / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            together = concurrently(url, prompts, args.tokens)
            par = sum(r["tokens"] for r in together) / (time.perf_counter() - t0)
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
    print(f"{Path(args.model).name}, -np {args.parallel}, {args.clients} clients x {args.tokens} tokens, "
          f"-t {args.threads}, {args.reps} reps; load average {os.getloadavg()[0]:.2f}")
    print(f"one after another    {spread(seq_rate)} tok/s")
    print(f"all at once          {spread(par_rate)} tok/s")
    print(f"ratio                {spread(ratios)}x")
    print(f"identical texts      {min(same)}/{args.clients} (worst rep; {same})")
    print(f"TTFT alone           {spread(alone_ttft)} s")
    print(f"TTFT, {args.clients - 1} streaming  {spread(loaded_ttft)} s; "
          f"ratio {spread([b / a for a, b in zip(alone_ttft, loaded_ttft)])}x")
    print(f"KV bytes/position    {kv16} (fp16), float32 would be {2 * kv16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
