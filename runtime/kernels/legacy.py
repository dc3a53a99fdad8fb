"""Kernels for the 32-weight block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Block layouts (ggml-common.h; `d`, `m` are fp16, read through the float32 table `f16`):
    Q4_0  d, qs[16]           w[j] = d * (lo(qs[j]) - 8),      w[j+16] = d * (hi(qs[j]) - 8)
    Q4_1  d, m, qs[16]        w[j] = d * lo(qs[j]) + m,        w[j+16] = d * hi(qs[j]) + m
    Q5_0  d, qh[4], qs[16]    5th bit of w[j] is bit j of the little-endian uint32 qh; minus 16
    Q5_1  d, m, qh[4], qs[16] same 5 bits, times d plus m
    Q8_0  d, qs[32] int8      w[j] = d * qs[j]

Per type, with `data` the raw blocks uint8 [rows, row_nbytes] and x float32:
    matvec_*(out, data, x, f16, chunk)   W [rows, n] @ x [n] -> out [rows]
    dequant_row_*(y, row, f16)           one row -> y float32 [n]
    matmul_*(out, data, x, f16)          x [T, n] -> out [T, rows]
    get_rows_*(out, data, ids, f16)      ids [T] -> out [T, n]

matvec is the decode hot path (shared/research/kernels.md): prange over chunks of rows; in each row a
per-lane accumulator `acc` (slot j collects position j of every block) is summed once at the end, so the
inner loop is zero-extend, int-to-float, FMA over whole vector registers. Summing each block to a scalar
instead was 4-5x slower. `np.int32(...)` keeps nibble arithmetic in 32-bit lanes (numba types it int64).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import TILE, tile_gemm

QK = 32                                  # weights per block


@njit(inline="always")
def _fp16(row, o, f16):
    # the fp16 at byte offset o of row, as float32
    return f16[np.int32(row[o]) | (np.int32(row[o + 1]) << 8)]


@njit(inline="always")
def _u16(row, o):
    # the little-endian uint16 at byte offset o, as int32 (Q5: qh is read as two halves so every
    # bit test stays in 32-bit lanes; a uint32 needs int64 lanes in numba, 20% slower)
    return np.int32(np.int32(row[o]) | (np.int32(row[o + 1]) << 8))


@njit(inline="always")
def _hbit(half, bit, set_value, clear_value):
    # the 5th bit of a Q5 weight as a float term: set_value when `half & bit`, else clear_value
    # (a select on a bit test vectorizes; a variable shift per lane does not, cheaply)
    return np.float32(set_value) if np.int32(half & bit) != 0 else np.float32(clear_value)


# ---- Q4_0: 18 bytes = d | qs[16] -------------------------------------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q4_0(out, data, x, f16, chunk):
    rows, nb = data.shape[0], x.shape[0] // QK
    for c in prange((rows + chunk - 1) // chunk):
        acc = np.empty(QK, np.float32)
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            row = data[r]
            acc[:] = 0
            for b in range(nb):
                o, xo = b * 18, b * QK
                d = _fp16(row, o, f16)
                for j in range(16):
                    q = np.int32(row[o + 2 + j])
                    acc[j] += d * np.float32(np.int32(q & 15) - 8) * x[xo + j]
                    acc[j + 16] += d * np.float32(np.int32(q >> 4) - 8) * x[xo + 16 + j]
            out[r] = acc.sum()


@njit(fastmath=True, cache=True)
def dequant_row_q4_0(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 18, b * QK
        d = _fp16(row, o, f16)
        for j in range(16):
            q = np.int32(row[o + 2 + j])
            y[yo + j] = d * np.float32(np.int32(q & 15) - 8)
            y[yo + 16 + j] = d * np.float32(np.int32(q >> 4) - 8)


@njit(parallel=True, fastmath=True, cache=True)
def matmul_q4_0(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0 = c * TILE
        nr = min(TILE, rows - r0)
        for i in range(nr):
            dequant_row_q4_0(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(cache=True)
def get_rows_q4_0(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q4_0(out[t], data[ids[t]], f16)


# ---- Q4_1: 20 bytes = d | m | qs[16] ---------------------------------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q4_1(out, data, x, f16, chunk):
    rows, nb = data.shape[0], x.shape[0] // QK
    for c in prange((rows + chunk - 1) // chunk):
        acc = np.empty(QK, np.float32)
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            row = data[r]
            acc[:] = 0
            for b in range(nb):
                o, xo = b * 20, b * QK
                d = _fp16(row, o, f16)
                m = _fp16(row, o + 2, f16)
                for j in range(16):
                    q = np.int32(row[o + 4 + j])
                    acc[j] += (d * np.float32(np.int32(q & 15)) + m) * x[xo + j]
                    acc[j + 16] += (d * np.float32(np.int32(q >> 4)) + m) * x[xo + 16 + j]
            out[r] = acc.sum()


@njit(fastmath=True, cache=True)
def dequant_row_q4_1(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 20, b * QK
        d = _fp16(row, o, f16)
        m = _fp16(row, o + 2, f16)
        for j in range(16):
            q = np.int32(row[o + 4 + j])
            y[yo + j] = d * np.float32(np.int32(q & 15)) + m
            y[yo + 16 + j] = d * np.float32(np.int32(q >> 4)) + m


@njit(parallel=True, fastmath=True, cache=True)
def matmul_q4_1(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0 = c * TILE
        nr = min(TILE, rows - r0)
        for i in range(nr):
            dequant_row_q4_1(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(cache=True)
def get_rows_q4_1(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q4_1(out[t], data[ids[t]], f16)



@njit(inline="always")
def _rows_q4_1(out, data, x, f16, r0, r1):
    # rows r0..r1-1 of matvec_q4_1's loop, for matvec3_q4_1 (inlined: as a called function LLVM
    # loses the aliasing facts and the loop ran several times slower)
    nb = x.shape[0] // QK
    acc = np.empty(QK, np.float32)
    for r in range(r0, r1):
        row = data[r]
        acc[:] = 0
        for b in range(nb):
            o, xo = b * 20, b * QK
            d = _fp16(row, o, f16)
            m = _fp16(row, o + 2, f16)
            for j in range(16):
                q = np.int32(row[o + 4 + j])
                acc[j] += (d * np.float32(np.int32(q & 15)) + m) * x[xo + j]
                acc[j + 16] += (d * np.float32(np.int32(q >> 4)) + m) * x[xo + 16 + j]
        out[r] = acc.sum()


@njit(parallel=True, fastmath=True, cache=True)
def matvec3_q4_1(o0, o1, o2, d0, d1, d2, x, f16, chunk):
    # W0 @ x -> o0, W1 @ x -> o1, W2 @ x -> o2 (Q/K/V, or gate/up with a W2 of 0 rows) in one
    # parallel launch: every launch wakes and joins the worker threads (9 us passive, 3 us spinning,
    # measured), and a decode layer has 7 products; the chunks of all three share one prange.
    n0 = (d0.shape[0] + chunk - 1) // chunk
    n1 = (d1.shape[0] + chunk - 1) // chunk
    n2 = (d2.shape[0] + chunk - 1) // chunk
    for c in prange(n0 + n1 + n2):
        if c < n0:
            _rows_q4_1(o0, d0, x, f16, c * chunk, min(d0.shape[0], (c + 1) * chunk))
        elif c < n0 + n1:
            c1 = c - n0
            _rows_q4_1(o1, d1, x, f16, c1 * chunk, min(d1.shape[0], (c1 + 1) * chunk))
        else:
            c2 = c - n0 - n1
            _rows_q4_1(o2, d2, x, f16, c2 * chunk, min(d2.shape[0], (c2 + 1) * chunk))

# ---- Q5_0: 22 bytes = d | qh[4] | qs[16] -----------------------------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q5_0(out, data, x, f16, chunk):
    rows, nb = data.shape[0], x.shape[0] // QK
    for c in prange((rows + chunk - 1) // chunk):
        acc = np.empty(QK, np.float32)
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            row = data[r]
            acc[:] = 0
            for b in range(nb):
                o, xo = b * 22, b * QK
                d = _fp16(row, o, f16)
                lo, hi = _u16(row, o + 2), _u16(row, o + 4)
                for j in range(16):
                    q = np.int32(row[o + 6 + j])
                    bit = np.int32(1 << j)
                    f0 = np.float32(np.int32(q & 15)) + _hbit(lo, bit, 0, -16)
                    f1 = np.float32(np.int32(q >> 4)) + _hbit(hi, bit, 0, -16)
                    acc[j] += d * f0 * x[xo + j]
                    acc[j + 16] += d * f1 * x[xo + 16 + j]
            out[r] = acc.sum()


@njit(fastmath=True, cache=True)
def dequant_row_q5_0(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 22, b * QK
        d = _fp16(row, o, f16)
        lo, hi = _u16(row, o + 2), _u16(row, o + 4)
        for j in range(16):
            q = np.int32(row[o + 6 + j])
            bit = np.int32(1 << j)
            y[yo + j] = d * (np.float32(np.int32(q & 15)) + _hbit(lo, bit, 0, -16))
            y[yo + 16 + j] = d * (np.float32(np.int32(q >> 4)) + _hbit(hi, bit, 0, -16))


@njit(parallel=True, fastmath=True, cache=True)
def matmul_q5_0(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0 = c * TILE
        nr = min(TILE, rows - r0)
        for i in range(nr):
            dequant_row_q5_0(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(cache=True)
def get_rows_q5_0(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q5_0(out[t], data[ids[t]], f16)


# ---- Q5_1: 24 bytes = d | m | qh[4] | qs[16] -------------------------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q5_1(out, data, x, f16, chunk):
    rows, nb = data.shape[0], x.shape[0] // QK
    for c in prange((rows + chunk - 1) // chunk):
        acc = np.empty(QK, np.float32)
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            row = data[r]
            acc[:] = 0
            for b in range(nb):
                o, xo = b * 24, b * QK
                d = _fp16(row, o, f16)
                m = _fp16(row, o + 2, f16)
                lo, hi = _u16(row, o + 4), _u16(row, o + 6)
                for j in range(16):
                    q = np.int32(row[o + 8 + j])
                    bit = np.int32(1 << j)
                    f0 = np.float32(np.int32(q & 15)) + _hbit(lo, bit, 16, 0)
                    f1 = np.float32(np.int32(q >> 4)) + _hbit(hi, bit, 16, 0)
                    acc[j] += (d * f0 + m) * x[xo + j]
                    acc[j + 16] += (d * f1 + m) * x[xo + 16 + j]
            out[r] = acc.sum()


@njit(fastmath=True, cache=True)
def dequant_row_q5_1(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 24, b * QK
        d = _fp16(row, o, f16)
        m = _fp16(row, o + 2, f16)
        lo, hi = _u16(row, o + 4), _u16(row, o + 6)
        for j in range(16):
            q = np.int32(row[o + 8 + j])
            bit = np.int32(1 << j)
            y[yo + j] = d * (np.float32(np.int32(q & 15)) + _hbit(lo, bit, 16, 0)) + m
            y[yo + 16 + j] = d * (np.float32(np.int32(q >> 4)) + _hbit(hi, bit, 16, 0)) + m


@njit(parallel=True, fastmath=True, cache=True)
def matmul_q5_1(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0 = c * TILE
        nr = min(TILE, rows - r0)
        for i in range(nr):
            dequant_row_q5_1(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(cache=True)
def get_rows_q5_1(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q5_1(out[t], data[ids[t]], f16)


# ---- Q8_0: 34 bytes = d | qs[32] int8 --------------------------------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q8_0(out, data, x, f16, chunk):
    rows, nb = data.shape[0], x.shape[0] // QK
    for c in prange((rows + chunk - 1) // chunk):
        acc = np.empty(QK, np.float32)
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            row = data[r]
            acc[:] = 0
            for b in range(nb):
                o, xo = b * 34, b * QK
                d = _fp16(row, o, f16)
                for j in range(QK):
                    acc[j] += d * np.float32(np.int8(row[o + 2 + j])) * x[xo + j]
            out[r] = acc.sum()


@njit(fastmath=True, cache=True)
def dequant_row_q8_0(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 34, b * QK
        d = _fp16(row, o, f16)
        for j in range(QK):
            y[yo + j] = d * np.float32(np.int8(row[o + 2 + j]))


@njit(parallel=True, fastmath=True, cache=True)
def matmul_q8_0(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0 = c * TILE
        nr = min(TILE, rows - r0)
        for i in range(nr):
            dequant_row_q8_0(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(cache=True)
def get_rows_q8_0(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q8_0(out[t], data[ids[t]], f16)
