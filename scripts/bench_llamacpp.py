#!/usr/bin/env python3
"""llama.cpp on the same benchmark as `chatfile bench`, printing the same keys (for `make bench`).

Run with the interpreter that has llama-cpp-python (here /work/llcpp/bin/python):
    python scripts/bench_llamacpp.py MODEL.gguf [-p 128] [-n 128] [-t THREADS] [-r REPS] [--json]

Same test as bundler/bench.py: the same prompt (BOS + seeded random ids, from `bench_prompt`), pp = one
`llama_decode` of the whole prompt, tg = n greedy argmax steps after it (one decode per token, logits
read and argmax'd in numpy), one warm-up round, median and best over REPS. Settings as in
shared/research/llamacpp_baseline.md: n_batch = n_ubatch = 512, n_threads = n_threads_batch = THREADS,
mmap, flash attention off (llama-cpp-python's default). Exit code 3 when llama-cpp-python is missing.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # keep numpy's BLAS off the cores llama.cpp uses

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bundler.bench import add_arguments, bench_prompt, report, summarize  # noqa: E402

MISSING = 3


def _round(llm, prompt: list[int], n: int, start_token: int) -> tuple[float, float]:
    n_vocab = llm.n_vocab()

    def last_logits():
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))

    llm.reset()                                       # the next eval drops every cached position
    t0 = time.perf_counter()
    if prompt:
        llm.eval(prompt)
        token = int(np.argmax(last_logits()))
    else:
        token = start_token
    t_pp = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        llm.eval([token])
        token = int(np.argmax(last_logits()))
    return t_pp, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        from llama_cpp import Llama
    except ImportError:
        print("bench_llamacpp: llama-cpp-python is not installed in this interpreter", file=sys.stderr)
        return MISSING
    p, n = args.prompt_tokens, args.gen_tokens
    threads = args.threads or os.cpu_count()
    t0 = time.perf_counter()
    llm = Llama(model_path=args.model, n_ctx=max(p + n + 1, 64), n_batch=512, n_ubatch=512,
                n_threads=threads, n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - t0
    bos = llm.token_bos()
    bos = bos if bos >= 0 else None
    prompt = bench_prompt(p, llm.n_vocab(), bos)
    start = bos if bos is not None else 0

    _round(llm, prompt, n, start)                     # warm-up
    rounds = [_round(llm, prompt, n, start) for _ in range(args.reps)]
    report(summarize("llama.cpp", args.model, threads, p, n, rounds, load_s), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
