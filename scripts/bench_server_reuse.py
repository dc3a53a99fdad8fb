"""What KV-cache prefix reuse saves the server on a 10-turn chat.

Plays the same 10-turn greedy conversation through the real HTTP API twice: once as clients normally do
(the server keeps its one Session, so each turn re-evaluates only what is new), once with llama.cpp's
`"cache_prompt": false` (every turn re-reads the whole history). Prints the prompt tokens evaluated and
the time per turn for both.

    .venv/bin/python scripts/bench_server_reuse.py [MODEL.gguf] [--turns 10] [--max-tokens 32]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

QUESTIONS = ["Hi! Who are you?", "Name a fruit.", "What colour is it?", "Name another fruit.",
             "Which of the two is sweeter?", "Give me a recipe with both.", "How long does it take?",
             "Can I freeze it?", "Suggest a drink to go with it.", "Thanks! Summarize our chat."]


def play(url: str, turns: int, max_tokens: int, cache_prompt: bool) -> list[tuple[int, int, float]]:
    import httpx2 as httpx
    messages, rows = [], []
    for q in QUESTIONS[:turns]:
        messages.append({"role": "user", "content": q})
        t0 = time.perf_counter()
        r = httpx.post(url + "/v1/chat/completions", timeout=600, json={
            "messages": messages, "temperature": 0, "max_tokens": max_tokens, "cache_prompt": cache_prompt})
        r.raise_for_status()
        body = r.json()
        elapsed = time.perf_counter() - t0
        messages.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
        rows.append((body["usage"]["prompt_tokens"], body["timings"]["prompt_n"], body["timings"]["prompt_ms"] / 1e3,
                     elapsed))
    return rows


def main() -> int:
    import fetch_models
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="GGUF (default: SmolLM2-135M-Instruct from the model cache)")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    import runtime
    from server_helpers import start_server
    model = runtime.load(args.model or fetch_models.model_path("smollm2"))
    server = start_server(model, n_ctx=4096)
    try:
        play(server.url, 1, 2, True)     # warm the kernels outside the measurement
        with_reuse = play(server.url, args.turns, args.max_tokens, True)
        without = play(server.url, args.turns, args.max_tokens, False)
    finally:
        server.stop()
    print("turn  prompt | reuse: evaluated  prefill  request | no reuse: evaluated  prefill  request")
    for i, ((p, e1, f1, t1), (_, e2, f2, t2)) in enumerate(zip(with_reuse, without), 1):
        print(f"{i:4d}  {p:6d} | {e1:16d} {f1:7.2f}s {t1:7.2f}s | {e2:19d} {f2:7.2f}s {t2:7.2f}s")
    (e1, f1, t1), (e2, f2, t2) = ([sum(r[k] for r in rows) for k in (1, 2, 3)] for rows in (with_reuse, without))
    print(f"total with reuse: {e1} prompt tokens evaluated, prefill {f1:.1f} s, requests {t1:.1f} s")
    print(f"total without:    {e2} prompt tokens evaluated, prefill {f2:.1f} s, requests {t2:.1f} s "
          f"({e2 / max(e1, 1):.1f}x the tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
