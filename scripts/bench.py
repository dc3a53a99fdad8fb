#!/usr/bin/env python3
"""`make bench`: chatfile bench on the real models, then llama.cpp on the same settings, and the ratios.

For each model (SmolLM2 Q4_1, Gemma 3 Q4_K_M) and thread count (1, 2): `chatfile bench --json`, then,
when an interpreter with llama-cpp-python is found, `scripts/bench_llamacpp.py --json` right after it
on the same prompt. The llama.cpp interpreter is $LLAMACPP_PYTHON, else this interpreter if it can
import llama_cpp, else none (then only our figures are printed).

Usage: python scripts/bench.py [--models smollm2,gemma3,PATH.gguf] [--threads 1,2] [-r REPS] [-p 128] [-n 128]
(a model is a name scripts/fetch_models.py knows or a GGUF path, e.g. the quant mixes written by
scripts/make_bench_models.py under ~/.cache/chatfile/models/bench/). "tg GB/s" is the weights a decode
step reads (every matrix; the embedding table only when it is also the output head) times tokens/s.
Benchmarks are not tests: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fetch_models  # noqa: E402


def llamacpp_python() -> str | None:
    env = os.environ.get("LLAMACPP_PYTHON")
    if env:
        return env
    r = subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True)
    return sys.executable if r.returncode == 0 else None


def run_json(cmd: list[str]) -> dict | None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  failed: {' '.join(cmd[:3])}...: {r.stderr.strip().splitlines()[-1:] }", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-p", "--prompt-tokens", type=int, default=128)
    ap.add_argument("-n", "--gen-tokens", type=int, default=128)
    a = ap.parse_args()
    lpy = llamacpp_python()
    if lpy is None:
        print("llama-cpp-python not found (set LLAMACPP_PYTHON): printing chatfile's figures only",
              file=sys.stderr)
    rows = []
    for name in a.models.split(","):
        path = name if name.endswith(".gguf") else str(fetch_models.model_path(name))
        name = os.path.basename(name)[:-5] if name.endswith(".gguf") else name
        for t in a.threads.split(","):
            common = [path, "-p", str(a.prompt_tokens), "-n", str(a.gen_tokens), "-t", t,
                      "-r", str(a.reps), "--json"]
            ours = run_json([sys.executable, "-m", "bundler.cli", "bench", *common])
            ref = run_json([lpy, str(HERE / "bench_llamacpp.py"), *common]) if lpy else None
            rows.append((name, t, ours, ref))
    width = max(9, *(len(r[0]) for r in rows))
    print(f"{'model':{width}} {'thr':>3} {'pp tok/s':>9} {'llama.cpp':>9} {'ratio':>6}   "
          f"{'tg tok/s':>9} {'llama.cpp':>9} {'ratio':>6}   {'tg GB/s':>7} {'llama.cpp':>9}")
    for name, t, ours, ref in rows:
        def cell(key):
            o = ours.get(key) if ours else None
            r = ref.get(key) if ref else None
            ratio = f"{o / r:6.2f}" if o and r else f"{'-':>6}"
            return f"{o or 0:9.1f} {r or 0:9.1f} {ratio}"
        gbps = ours.get("tg_weight_gbps", 0) if ours else 0
        ref_gbps = gbps * ref["tg_tok_s"] / ours["tg_tok_s"] if gbps and ref and ref.get("tg_tok_s") else 0
        print(f"{name:{width}} {t:>3} {cell('pp_tok_s')}   {cell('tg_tok_s')}   {gbps:7.1f} {ref_gbps:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
