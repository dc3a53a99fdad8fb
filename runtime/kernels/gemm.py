"""The prefill micro-kernel shared by every type: a float32 weight tile times a block of tokens.

Each type's `matmul_*` dequantizes TILE rows of W into a float32 tile once (16 x n floats stay in L2)
and hands it here, so the dequantization cost is paid once per row and not once per (row, token).
The inner loop over k carries a 2-rows x 4-tokens register tile: 8 independent accumulators that LLVM
turns into 8 vector accumulators, 6 loads per 8 FMAs (docs/KERNELS.md: 74-79 GFLOP/s on
one thread against 43 for a plain dot per (row, token)).

numba's cache does not notice edits to a callee in another module: after changing this file in a
source checkout, clear the `__pycache__` of runtime/kernels (the bundled app keys its cache on a hash
of all kernel sources).
"""
from __future__ import annotations

import numpy as np

from .jit import njit
TILE = 16        # weight rows dequantized per tile: 16 x n float32 stays in L2 for any n we meet


@njit(fastmath=True, cache=True)
def tile_gemm(out, tile, nr, x, r0):
    # tile [TILE, n] (first nr rows valid) @ x [T, n]^T -> out[:, r0:r0+nr]; out [T, rows]
    T, n = x.shape
    pairs = nr // 2 * 2
    quads = T // 4 * 4
    for i in range(0, pairs, 2):
        for t in range(0, quads, 4):
            s00 = s01 = s02 = s03 = np.float32(0)
            s10 = s11 = s12 = s13 = np.float32(0)
            for k in range(n):
                w0 = tile[i, k]
                w1 = tile[i + 1, k]
                x0 = x[t, k]
                x1 = x[t + 1, k]
                x2 = x[t + 2, k]
                x3 = x[t + 3, k]
                s00 += w0 * x0
                s01 += w0 * x1
                s02 += w0 * x2
                s03 += w0 * x3
                s10 += w1 * x0
                s11 += w1 * x1
                s12 += w1 * x2
                s13 += w1 * x3
            out[t, r0 + i] = s00
            out[t + 1, r0 + i] = s01
            out[t + 2, r0 + i] = s02
            out[t + 3, r0 + i] = s03
            out[t, r0 + i + 1] = s10
            out[t + 1, r0 + i + 1] = s11
            out[t + 2, r0 + i + 1] = s12
            out[t + 3, r0 + i + 1] = s13
    # edges: the last tokens when T is not a multiple of 4, the last row when nr is odd
    for i in range(nr):
        t0 = quads if i < pairs else 0
        for t in range(t0, T):
            s = np.float32(0)
            for k in range(n):
                s += tile[i, k] * x[t, k]
            out[t, r0 + i] = s
