#!/usr/bin/env python3
"""Speed of the numba kernels on their own (issue 9's figures), by default on SmolLM2-135M-Instruct Q4_1.

Measures, at each thread count (numba.set_num_threads):
  - the matvec over all layers of each weight role (GB/s of raw GGUF bytes; SmolLM2: all Q4_1),
  - the output head matvec (SmolLM2: the tied Q8_0 token_embd, 49152 x 576),
  - one decode token's worth of matvecs: every layer matrix (SmolLM2: 210 Q4_1) + the head, one Python
    call each (tok/s; attention, norms, RoPE are not in it),
  - the prefill GEMM: every Q4_1 layer matrix times T = 128 tokens (GFLOP/s, 2 flops per weight and token),
and the compile time of the kernels SmolLM2 needs (Q4_1, Q8_0, F32), cold (empty numba cache) and from
the cache, each in a fresh process.

Where the compile target has integer dot products (runtime.kernels.takes_q8), the products run on x in
llama.cpp's 8-bit form as the model runs them; --float measures the float kernels instead.

Usage: python scripts/kernel_bench.py [--threads 1,2] [--reps 9] [--model PATH] [--json] [--no-compile]
                                      [--cpu-time] [--float]
Compare with shared/research/kernels.md. Medians; this is a shared 2-vCPU machine, expect +-10%.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

PREFILL_T = 128
# the kernels runtime/model.py calls for SmolLM2: layer matvec + prefill GEMM, head matvec, embedding rows
USED_BY_SMOLLM2 = ("Q4_1 matvec", "Q4_1 matmul", "Q8_0 matvec", "Q8_0 get_rows")


CLOCK = time.perf_counter      # main() switches to time.thread_time for --cpu-time


def _median_time(fn, reps: int) -> float:
    fn()                                                    # warm: compile/load, touch pages
    times = []
    for _ in range(reps):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return float(np.median(times))


def _q8(x: np.ndarray, qtype, use_int: bool):
    """x float32 [T, n] -> (x rounded for qtype, its 8-bit form or None), as the model prepares them."""
    from runtime import kernels, ops
    kind = ops.ACT_KIND[qtype]
    xr = np.empty_like(x)
    if not (use_int and kernels.takes_q8(qtype)):
        ops.round_activations(xr, x, kind)
        return xr, None
    T, n = x.shape
    qs, s = np.empty((T, n), np.int8), np.empty((T, n // 32), np.float32)
    d = np.empty((T, n // kernels.KERNELS[qtype].q8_block), np.float32)
    ops.quantize_activations(xr, qs, d, s, x, kind)
    return xr, (qs, d, s)


def measure(model_path: str, threads: int, reps: int, use_int: bool = True) -> dict:
    import numba
    from runtime import kernels
    from runtime.gguf import GGUFFile

    numba.set_num_threads(threads)
    f = GGUFFile(model_path)
    layers: dict[str, list] = {}                     # role -> its matrix in every layer, in layer order
    for name, t in f.tensors.items():
        parts = name.split(".")
        if parts[0] == "blk" and len(t.shape) == 2 and t.n_rows > 1:
            layers.setdefault(".".join(parts[2:-1]), []).append(t)
    n_layers = max(len(ws) for ws in layers.values())
    head = f.tensors.get("output.weight", f.tensors["token_embd.weight"])
    rng = np.random.default_rng(0)
    all_ws = [w for ws in layers.values() for w in ws] + [head]
    raw = {w.shape[0]: rng.standard_normal((1, w.shape[0])).astype(np.float32) for w in all_ws}
    prep = {(w.shape[0], w.type): _q8(raw[w.shape[0]], w.type, use_int) for w in all_ws}
    outs = {w.n_rows: np.empty(w.n_rows, np.float32) for w in all_ws}

    def mv(w):
        xr, q8 = prep[(w.shape[0], w.type)]
        kernels.matvec(w, xr[0], outs[w.n_rows], None if q8 is None else tuple(a[0] for a in q8))

    res = {"threads": threads, "roles_gbps": {}, "role_types": {}}
    for role, ws in layers.items():
        res["role_types"][role] = "+".join(sorted({w.type.name for w in ws}))
        nbytes = sum(w.data.nbytes for w in ws)

        def sweep(ws=ws):
            for w in ws:
                mv(w)
        res["roles_gbps"][role] = nbytes / _median_time(sweep, reps) / 1e9

    def head_matvec():
        mv(head)
    res["head_type"] = head.type.name
    res["head_gbps"] = head.data.nbytes / _median_time(head_matvec, reps) / 1e9

    token = [ws[i] for i in range(n_layers) for ws in layers.values() if i < len(ws)] + [head]

    def decode_token():
        for w in token:
            mv(w)
    t_tok = _median_time(decode_token, reps)
    res["decode_matvecs"] = len(token)
    res["decode_ms"] = t_tok * 1e3
    res["decode_tok_s"] = 1 / t_tok
    res["decode_gbps"] = sum(w.data.nbytes for w in token) / t_tok / 1e9

    mats = token[:-1]
    xt = {w.shape[0]: rng.standard_normal((PREFILL_T, w.shape[0])).astype(np.float32) for w in mats}
    pt = {(w.shape[0], w.type): _q8(xt[w.shape[0]], w.type, use_int) for w in mats}
    ot = {w.n_rows: np.empty((PREFILL_T, w.n_rows), np.float32) for w in mats}
    flops = sum(2 * PREFILL_T * w.shape[0] * w.n_rows for w in mats)

    def prefill():
        for w in mats:
            xr, q8 = pt[(w.shape[0], w.type)]
            kernels.matmul(w, xr, ot[w.n_rows], q8)
    t_pp = _median_time(prefill, max(3, reps // 3))
    res["prefill_T"] = PREFILL_T
    res["prefill_gflops"] = flops / t_pp / 1e9
    res["prefill_layers_tok_s"] = PREFILL_T / t_pp
    return res


_COMPILE_CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, {root!r})
from runtime import kernels
from runtime.gguf import GGUFFile
from runtime.ggml import GGMLType
t_import = time.perf_counter() - t0
c0 = time.process_time()
f = GGUFFile({model!r})
per = {{}}
norm = f.tensors["output_norm.weight"]
f32 = type(norm)("f32", GGMLType.F32, (norm.shape[0], 1), 1, norm.data.reshape(1, -1), 0)
for w in (f.tensors["blk.0.ffn_down.weight"], f.tensors["token_embd.weight"], f32):
    n = w.shape[0]
    calls = {{
        "matvec": lambda: kernels.matvec(w, np.zeros(n, np.float32), np.empty(w.n_rows, np.float32)),
        "matmul": lambda: kernels.matmul(w, np.zeros((2, n), np.float32),
                                         np.empty((2, w.n_rows), np.float32)),
        "get_rows": lambda: kernels.get_rows(w, np.zeros(1, np.int64), np.empty((1, n), np.float32)),
    }}
    for op, call in calls.items():
        t = time.perf_counter()
        call()
        per[w.type.name + " " + op] = time.perf_counter() - t
print(json.dumps({{"import_s": t_import, "per_type_s": per, "total_s": time.perf_counter() - t0,
                  "kernels_cpu_s": time.process_time() - c0}}))
"""


def compile_times(model_path: str) -> dict:
    """SmolLM2's kernel set (matvec, matmul, get_rows of Q4_1, Q8_0, F32), cold then cached."""
    code = _COMPILE_CHILD.format(root=str(ROOT), model=model_path)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = {}
        for label in ("cold", "cached"):
            p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               check=True)
            runs[label] = json.loads(p.stdout)
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="GGUF path (default: SmolLM2 from scripts/fetch_models.py)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time measurement")
    ap.add_argument("--float", action="store_true",
                    help="measure the float kernels even where the target has integer dot products")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the main thread's CPU clock instead of the wall clock: steadier on a "
                         "busy machine, meaningful for 1 thread only (the main thread runs the loop)")
    args = ap.parse_args(argv)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.thread_time
    if args.model is None:
        import fetch_models
        args.model = str(fetch_models.model_path("smollm2"))

    result = {"model": os.path.basename(args.model), "clock": "cpu" if args.cpu_time else "wall"}
    from runtime.kernels import cpu
    result["cpu"] = cpu.host_target()[0]
    if not args.no_compile:
        result["compile"] = compile_times(args.model)
    result["kernels"] = "float" if args.float else "integer where the target has them"
    result["runs"] = [measure(args.model, int(t), args.reps, not args.float) for t in args.threads.split(",")]

    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"model {result['model']}   cpu {result['cpu']}   clock {result['clock']}   "
          f"kernels {result['kernels']}")
    if "compile" in result:
        for label, c in result["compile"].items():
            per = ", ".join(f"{k} {v:.2f}" for k, v in c["per_type_s"].items())
            used = sum(c["per_type_s"][k] for k in USED_BY_SMOLLM2)
            print(f"compile {label}: import {c['import_s']:.2f} s; all 9 kernels of Q4_1+Q8_0+F32 "
                  f"{c['total_s'] - c['import_s']:.2f} s ({c['kernels_cpu_s']:.2f} s CPU); the 4 the "
                  f"SmolLM2 forward pass calls {used:.2f} s")
            print(f"    per kernel (s): {per}")
    for r in result["runs"]:
        print(f"--- {r['threads']} thread(s)")
        print("  matvec GB/s per role (all layers): "
              + ", ".join(f"{k} ({r['role_types'][k]}) {v:.1f}" for k, v in r["roles_gbps"].items()))
        print(f"  {r['head_type']} head matvec: {r['head_gbps']:.1f} GB/s")
        print(f"  decode token ({r['decode_matvecs']} matvecs): {r['decode_ms']:.2f} ms = "
              f"{r['decode_tok_s']:.1f} tok/s ({r['decode_gbps']:.1f} GB/s)")
        print(f"  prefill GEMM T={r['prefill_T']}: {r['prefill_gflops']:.1f} GFLOP/s "
              f"({r['prefill_layers_tok_s']:.0f} tok/s, layer matrices only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
