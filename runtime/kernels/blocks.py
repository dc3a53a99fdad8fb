"""numba helpers shared by the block-type kernel files (legacy.py, kquants.py)."""
from __future__ import annotations

import numpy as np

from .jit import njit


@njit(inline="always")
def fp16(row, o, f16):
    # the fp16 at byte offset o of row, as float32 (through the 65536-entry table f16)
    return f16[np.int32(row[o]) | (np.int32(row[o + 1]) << 8)]


@njit(inline="always")
def block_sums(x, size):
    # x [nb * size] -> [nb], the sum of each block of `size` values (the xs of the dot products
    # whose mins leave the vector loop: size 32, or 16 for Q2_K)
    xs = np.empty(x.shape[0] // size, np.float32)
    for b in range(xs.shape[0]):
        s = np.float32(0)
        for j in range(size):
            s += x[b * size + j]
        xs[b] = s
    return xs
