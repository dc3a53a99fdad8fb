"""`chatfile bench MODEL.gguf [-p 128] [-n 128] [-t THREADS] [-r REPS] [--json]`, after llama-bench.

pp: one prefill of p prompt tokens (BOS, then seeded random ids, as llama-bench builds its prompt),
timed as a single `Session.eval`. tg: n greedy decode steps right after that prompt, one
`Session.eval([token])` each, argmax included. One warm-up round first (it also compiles or loads the
numba kernels), then the median (and best) over REPS rounds. scripts/bench_llamacpp.py runs llama.cpp
with the same settings and prints the same keys, so the two can be put side by side.

Benchmarks are not tests: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

PROMPT_SEED = 1234


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.gguf", help="GGUF model to benchmark")
    p.add_argument("-p", "--prompt-tokens", type=int, default=128, metavar="P",
                   help="prompt tokens in the prefill test (default 128)")
    p.add_argument("-n", "--gen-tokens", type=int, default=128, metavar="N",
                   help="greedy decode steps after the prompt (default 128)")
    p.add_argument("-t", "--threads", type=int, default=None, metavar="THREADS",
                   help="kernel threads (default: all CPUs)")
    p.add_argument("-r", "--reps", type=int, default=3, metavar="REPS",
                   help="timed rounds after one warm-up (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def bench_prompt(n_tokens: int, vocab_size: int, bos_id: int | None) -> list[int]:
    """BOS followed by seeded random ids (llama-bench's prompt), the same in every engine."""
    ids = np.random.default_rng(PROMPT_SEED).integers(0, vocab_size, n_tokens).tolist()
    if bos_id is not None and n_tokens:
        ids[0] = bos_id
    return ids


def decode_weight_bytes(gguf) -> int:
    """Bytes of weights a decode step reads: every matrix, except token_embd when a separate
    output.weight exists (then only one embedding row is read). Experts count in full."""
    tensors = gguf.tensors
    untied = "output.weight" in tensors
    return sum(t.data.nbytes for name, t in tensors.items()
               if len(t.shape) >= 2 and not (untied and name == "token_embd.weight"))


def summarize(engine: str, model: str, threads: int, p: int, n: int, rounds: list[tuple[float, float]],
              load_s: float, weight_bytes: int | None = None) -> dict:
    """The result object both bench scripts print. rounds: (pp seconds, tg seconds) per timed round;
    weight_bytes: what a decode step reads (decode_weight_bytes), for the decode GB/s."""
    pp = [p / a for a, _ in rounds] if p else [0.0]
    tg = [n / b for _, b in rounds] if n else [0.0]
    r = {
        "engine": engine, "model": os.path.basename(model), "threads": threads,
        "prompt_tokens": p, "gen_tokens": n, "reps": len(rounds),
        "pp_tok_s": statistics.median(pp), "tg_tok_s": statistics.median(tg),
        "pp_tok_s_max": max(pp), "tg_tok_s_max": max(tg),
        "load_s": load_s, "rounds": [[round(a, 2), round(b, 2)] for a, b in zip(pp, tg)],
    }
    if weight_bytes:
        r["weight_bytes_per_token"] = weight_bytes
        r["tg_weight_gbps"] = weight_bytes * r["tg_tok_s"] / 1e9
    return r


def print_table(r: dict, out=sys.stdout) -> None:
    print(f"{r['engine']}  {r['model']}  threads {r['threads']}  reps {r['reps']}  "
          f"load {r['load_s']:.2f} s", file=out)
    print(f"  {'test':<8}{'tok/s':>10}{'best':>10}", file=out)
    print(f"  {'pp' + str(r['prompt_tokens']):<8}{r['pp_tok_s']:>10.1f}{r['pp_tok_s_max']:>10.1f}",
          file=out)
    print(f"  {'tg' + str(r['gen_tokens']):<8}{r['tg_tok_s']:>10.1f}{r['tg_tok_s_max']:>10.1f}", file=out)
    if "tg_weight_gbps" in r:
        print(f"  decode reads {r['weight_bytes_per_token'] / 1e6:.0f} MB of weights per token: "
              f"{r['tg_weight_gbps']:.1f} GB/s", file=out)


def report(r: dict, as_json: bool) -> None:
    """Print one benchmark result: a JSON object (--json) or the table; shared with bench_llamacpp.py."""
    if as_json:
        print(json.dumps(r))
    else:
        print_table(r)


def _round(session, prompt: list[int], n: int, start_token: int) -> tuple[float, float]:
    # one (pp seconds, tg seconds) round from an empty cache; with no prompt, decode from start_token
    session.truncate(0)
    t0 = time.perf_counter()
    token = int(np.argmax(session.eval(prompt))) if prompt else start_token
    t_pp = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        token = int(np.argmax(session.eval([token])))
    return t_pp, time.perf_counter() - t0


def run(args) -> int:
    import numba

    import runtime
    from runtime.config import ModelError
    from runtime.ggml import Keys
    from runtime.gguf import GGUFError

    p, n = args.prompt_tokens, args.gen_tokens
    if p < 0 or n < 0 or args.reps < 1 or (args.threads is not None and args.threads < 1):
        print("chatfile bench: -p and -n must be >= 0, -r and -t >= 1", file=sys.stderr)
        return 2
    if not os.path.isfile(args.model):
        print(f"chatfile bench: no such file: {args.model}", file=sys.stderr)
        return 2
    threads = args.threads or numba.config.NUMBA_NUM_THREADS
    t0 = time.perf_counter()
    try:
        model = runtime.load(args.model, n_threads=threads)
    except (GGUFError, ModelError) as e:
        print(f"chatfile bench: {args.model}: {e}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - t0
    bos = model.gguf.metadata.get(Keys.BOS_ID)
    prompt = bench_prompt(p, model.config.vocab_size, bos)
    session = model.new_session(p + n + 1)

    start = bos if bos is not None else 0
    _round(session, prompt, n, start)                   # warm-up: compiles or loads the kernels
    rounds = [_round(session, prompt, n, start) for _ in range(args.reps)]
    report(summarize("chatfile", args.model, threads, p, n, rounds, load_s,
                     decode_weight_bytes(model.gguf)), args.json)
    return 0
