#!/usr/bin/env python3
"""Record ggml's softmax and SiLU loops, for tests/test_vexp.py.

How to regenerate (needs llama-cpp-python==0.3.36 from PyPI, built on an x86-64 CPU with AVX-512F and
AVX-512DQ, as pip builds it -march=native; CI never runs this):

    /work/llcpp/bin/python scripts/make_vexp_goldens.py     # -> data/goldens/vexp_x86_avx512.npz

Through ctypes into llama-cpp-python's libggml-cpu (scripts/make_kernel_goldens.load_ggml) it calls
    ggml_vec_soft_max_f32(n, y, x, max)    -> y = exp(x - max) and the double sum; the softmax is
                                              y * (float)(1 / sum), as ggml_compute_forward_soft_max_f32
    ggml_vec_swiglu_f32(n, y, g, u)        -> y = silu(g) * u
    ggml_vec_silu_f32(n, y, g)             -> y = silu(g) (MoE experts without a gate)
on rows of several lengths (whole 16-float chunks and leftovers), with gates over exp's whole range
(overflow to inf, results that are subnormal or zero, +-0). The AVX-512 ggml_v_expf these loops use is
what runtime/kernels/vexp.py builds for an AVX-512 compile target; the test checks it bit for bit there.
"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_kernel_goldens import load_ggml, save  # noqa: E402

LENGTHS = (1, 5, 16, 17, 100, 257, 1000, 1543)


def main() -> int:
    lib = load_ggml()
    lib.ggml_vec_soft_max_f32.restype = ctypes.c_double
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    rng = np.random.default_rng(20261204)
    out = {}
    edges = np.float32([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 1, -1, 20, -20, 87.3, -87.3, 88.7, -88.7, 89,
                        -89, 90, -90, 100, -100, 103.9, -103.9, 104, -104, 126 * 0.6931, -126 * 0.6931,
                        150, -150, 200, -200])
    for n in LENGTHS:
        scores = (rng.standard_normal(n) * rng.uniform(0.5, 12)).astype(np.float32)
        y = np.empty(n, np.float32)
        total = lib.ggml_vec_soft_max_f32(ctypes.c_int(n), ptr(y), ptr(scores), ctypes.c_float(scores.max()))
        out[f"softmax.{n}.x"] = scores
        out[f"softmax.{n}.y"] = y * np.float32(1.0 / total)
        gate = (rng.standard_normal(n) * rng.uniform(1, 40)).astype(np.float32)
        gate[:min(n, len(edges))] = edges[:n]
        rng.shuffle(gate)
        up = rng.standard_normal(n).astype(np.float32)
        lib.ggml_vec_swiglu_f32(ctypes.c_int(n), ptr(y), ptr(gate), ptr(up))
        out[f"swiglu.{n}.g"], out[f"swiglu.{n}.u"], out[f"swiglu.{n}.y"] = gate, up, y.copy()
        lib.ggml_vec_silu_f32(ctypes.c_int(n), ptr(y), ptr(gate))
        out[f"silu.{n}.y"] = y.copy()
    save(out, "vexp_x86_avx512.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
