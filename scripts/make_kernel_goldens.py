#!/usr/bin/env python3
"""Record ggml's own dot products of quantized rows with 8-bit activations, for tests/test_intdot.py.

How to regenerate (needs llama-cpp-python==0.3.36 from PyPI, built for an x86-64 CPU with AVX2;
CI never runs this):

    /work/llcpp/bin/python scripts/make_kernel_goldens.py     # -> data/goldens/vec_dot_x86.npz

For each weight type whose llama.cpp product is ggml_vec_dot on x86 (Q4_1 Q5_0 Q5_1 Q8_0 Q5_K Q6_K IQ4_XS; Q4_0
and Q4_K (and IQ4_NL) are repacked into 8-row groups on AVX2 machines and multiplied by ggml_gemv/gemm_*_8x8, whose
arithmetic runtime/kernels/intdot.py follows and the model goldens check) it draws ROWS
random rows of N weights (random bytes, fp16 scales set to realistic values) and one activation vector
x, then calls, through ctypes into llama-cpp-python's libggml-cpu:
    quantize_row_q8_0 / q8_1 / q8_K(x)        the 8-bit activations ggml multiplies with
    ggml_vec_dot_<type>_q8_<...>(row, q8)     one float per row: what llama.cpp's matmul writes
and stores the rows, x, ggml's raw 8-bit blocks and the dot products. The x86 code of these functions
(ggml-cpu/arch/x86/quants.c, AVX2 and AVX512-VNNI paths) sums the same integer lanes in the same order,
so the golden holds for any x86 CPU with AVX2.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.ggml import QUANT_SIZES, GGMLType, row_nbytes  # noqa: E402
from runtime.quants import field_offsets  # noqa: E402

ROWS, N = 8, 512
# type -> (ggml vec_dot suffix, activation type, bytes of one activation block)
TYPES = {
    "Q4_1": ("q4_1_q8_1", "q8_1", 36), "Q5_0": ("q5_0_q8_0", "q8_0", 34),
    "Q5_1": ("q5_1_q8_1", "q8_1", 36), "Q8_0": ("q8_0_q8_0", "q8_0", 34),
    "Q5_K": ("q5_K_q8_K", "q8_K", 292), "Q6_K": ("q6_K_q8_K", "q8_K", 292),
    "IQ4_XS": ("iq4_xs_q8_K", "q8_K", 292),
}


def load_ggml() -> ctypes.CDLL:
    import llama_cpp
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    for name in ("libggml-base.so", "libggml-cpu.so"):
        lib = ctypes.CDLL(glob.glob(os.path.join(libdir, name))[0], mode=ctypes.RTLD_GLOBAL)
    lib.ggml_cpu_init()
    return lib


def random_rows(qtype, rng) -> np.ndarray:
    block, size = QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (ROWS * N // block, size), dtype=np.uint8)
    for name, (a, b) in field_offsets(qtype).items():
        if name in ("d", "dmin", "m"):
            v = rng.uniform(1e-3, 0.05, blocks.shape[0]) * rng.choice([-1.0, 1.0], blocks.shape[0])
            blocks[:, a:b] = v.astype("<f2").view(np.uint8).reshape(-1, 2)
    return blocks.reshape(ROWS, row_nbytes(qtype, N))


def main() -> int:
    lib = load_ggml()
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    rng = np.random.default_rng(20261204)
    out = {}
    for name, (dot, act, act_bytes) in TYPES.items():
        rows = random_rows(GGMLType[name], rng)
        x = (rng.standard_normal(N) * rng.uniform(0.1, 4)).astype(np.float32)
        q8 = np.zeros(N // (256 if act == "q8_K" else 32) * act_bytes, np.uint8)
        getattr(lib, f"quantize_row_{act}")(ptr(x), ptr(q8), ctypes.c_int64(N))
        ref = np.zeros(ROWS, np.float32)
        vec_dot = getattr(lib, f"ggml_vec_dot_{dot}")
        for r in range(ROWS):
            row = np.ascontiguousarray(rows[r])
            vec_dot(ctypes.c_int(N), ptr(ref[r:]), ctypes.c_size_t(0), ptr(row), ctypes.c_size_t(0),
                    ptr(q8), ctypes.c_size_t(0), ctypes.c_int(1))
        out.update({f"{name}.rows": rows, f"{name}.x": x, f"{name}.q8": q8, f"{name}.dot": ref})
    save(out, "vec_dot_x86.npz")
    return 0


def save(arrays: dict, name: str) -> None:
    """Write the arrays to data/goldens/NAME (compressed) and say so."""
    path = ROOT / "data" / "goldens" / name
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
