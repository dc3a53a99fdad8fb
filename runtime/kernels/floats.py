"""Kernels for the unquantized types: F32, and F16/BF16 through a 65536-entry float32 table.

numba has no float16 on the CPU, so 16-bit weights are read as uint16 and converted by table lookup
(as ggml's `ggml_table_f32_f16` does); BF16 uses the same kernels with its own table (the bits shifted
into the top half of a float32). The quantized kernels read their fp16 scales through `F16_TABLE` too.

    matvec_*(out, w, x, table, chunk)   W [rows, n] @ x [n] -> out [rows]
    matmul_*(out, w, x, table)          x [T, n] -> out [T, rows]
    get_rows_*(out, w, ids, table)      ids [T] -> out [T, n]
with `w` float32 [rows, n] (F32; `table` unused) or uint16 [rows, n] (F16, BF16). Rows may have any
length: a tail shorter than the 32-lane accumulator is summed on its own.
"""
from __future__ import annotations

import numpy as np

from .jit import njit, prange
from .gemm import TILE, tile_gemm

LANES = 32     # per-lane accumulator width (as the block kernels), 2 zmm / 4 ymm / 8 NEON registers

# float32 value of every 16-bit pattern (numpy on aarch64 warns on the NaN patterns' cast; harmless)
with np.errstate(invalid="ignore"):
    F16_TABLE = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
BF16_TABLE = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)


# ---- F32 -------------------------------------------------------------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_f32(out, w, x, table, chunk):
    rows, n = w.shape
    nl = n // LANES * LANES
    for c in prange((rows + chunk - 1) // chunk):
        acc = np.empty(LANES, np.float32)
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            acc[:] = 0
            for b in range(0, nl, LANES):
                for j in range(LANES):
                    acc[j] += w[r, b + j] * x[b + j]
            s = acc.sum()
            for k in range(nl, n):
                s += w[r, k] * x[k]
            out[r] = s


@njit(parallel=True, fastmath=True, cache=True)
def matmul_f32(out, w, x, table):
    rows = w.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        r0 = c * TILE
        nr = min(TILE, rows - r0)
        tile_gemm(out, w[r0:r0 + nr], nr, x, r0)


@njit(cache=True)
def get_rows_f32(out, w, ids, table):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= w.shape[0]:
            raise IndexError("row id out of range")
        out[t, :] = w[ids[t]]


# ---- F16 and BF16 (uint16 rows, converted through `table`) -----------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_f16(out, w, x, table, chunk):
    rows, n = w.shape
    nl = n // LANES * LANES
    for c in prange((rows + chunk - 1) // chunk):
        acc = np.empty(LANES, np.float32)
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            acc[:] = 0
            for b in range(0, nl, LANES):
                for j in range(LANES):
                    acc[j] += table[w[r, b + j]] * x[b + j]
            s = acc.sum()
            for k in range(nl, n):
                s += table[w[r, k]] * x[k]
            out[r] = s


@njit(fastmath=True, cache=True)
def dequant_row_f16(y, row, table):
    for k in range(y.shape[0]):
        y[k] = table[row[k]]


@njit(parallel=True, fastmath=True, cache=True)
def matmul_f16(out, w, x, table):
    rows = w.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0 = c * TILE
        nr = min(TILE, rows - r0)
        for i in range(nr):
            dequant_row_f16(tile[i], w[r0 + i], table)
        tile_gemm(out, tile, nr, x, r0)


@njit(cache=True)
def get_rows_f16(out, w, ids, table):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= w.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_f16(out[t], w[ids[t]], table)
