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

matvec is the decode hot path (docs/KERNELS.md): prange over chunks of rows, and per row
a dot product written as LLVM vector code (`_block_dot`, built with numba's @intrinsic). In plain numba
(a per-lane accumulator array `acc`, slot j collecting position j of every block, summed at the end)
LLVM cannot prove `acc` does not alias x (both float32 arrays), so it stored acc back every block; it
also multiplied every weight by its scale and read each fp16 scale through the 256 KiB table. The
vector form keeps the accumulator in one zmm register, multiplies by the scale once per block, takes
Q4_1's and Q5_1's m out of the loop (m * sum of the x block, as llama.cpp's Q4_1 x Q8_1 dot does) and
converts scales with vcvtph2ps. One Zen 4 thread, CPU clock, all tensors of the type (GB/s
of raw blocks): SmolLM2 Q4_1 6.3 -> 8.2-8.8, Gemma 3 Q5_0 4.4-5.1 -> 8.3, Q8_0 heads 12-14 ->
14.8-15.2 (the thread reads ~22 GB/s from memory). matvec and matvec3 call the same row function:
identical sums. The dequantizing loops (prefill tiles, get_rows) stay plain numba; `np.int32(...)`
keeps their nibble arithmetic in 32-bit lanes (numba types it int64).
These matvecs convert fp16 themselves and ignore `f16` (kept: one signature for every type).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils

from .blocks import block_sums, fp16
from .gemm import TILE, tile_gemm
from .jit import njit, prange
from .vector_ir import F32, I8, I32, I64, V16F, V16I32, fma, hsum, load, load_f16, nibbles, row_dot, splat

QK = 32                                  # weights per block


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


# ---- LLVM vector code for the decode row dot products ----------------------------------------------

def _block_dot(block_bytes, values, with_min=False):
    """An intrinsic for the dot product of one row of 32-weight blocks with x, for the types whose
    weights are d * integer (+ m): `dot(row, x) -> float32`, or with_min `dot(row, x, xs)`.
        row uint8 [nb * block_bytes], x float32 [nb * 32], xs float32 [nb] (xs[b] = sum of block b of x)
    `values(builder, blk)` gives (d, [v0, v1]) for the block at pointer blk: its fp16 scale as float
    and its integers as two <16 x float> (positions 0-15, 16-31); with_min, the fp16 at byte 2 is m.
    Per block: acc += d * (v0 * x0 + v1 * x1), one multiply by d per block instead of one per weight
    (16 lanes, lane l collects positions l and l + 16 of every block), and sum += m * xs[b], which
    takes m out of the vector loop (llama.cpp's Q4_1 dot product splits it the same way)."""
    def codegen(context, builder, sig, args):
        rp = context.make_array(sig.args[0])(context, builder, args[0]).data
        xa = context.make_array(sig.args[1])(context, builder, args[1])
        nb = builder.udiv(xa.nitems, ir.Constant(I64, QK))
        acc = cgutils.alloca_once_value(builder, ir.Constant(V16F, None))
        total = cgutils.alloca_once_value(builder, ir.Constant(F32, 0))
        with cgutils.for_range(builder, nb) as loop:
            blk = builder.gep(rp, [builder.mul(loop.index, ir.Constant(I64, block_bytes))])
            xb = builder.gep(xa.data, [builder.mul(loop.index, ir.Constant(I64, QK))])
            d, (v0, v1) = values(builder, blk)
            t = fma(builder, v1, load(builder, xb, 16, V16F, 4),
                     builder.fmul(v0, load(builder, xb, 0, V16F, 4)))
            builder.store(fma(builder, splat(builder, d, V16F), t, builder.load(acc)), acc)
            if with_min:
                xsp = context.make_array(sig.args[2])(context, builder, args[2]).data
                xsb = builder.load(builder.gep(xsp, [loop.index]))
                builder.store(fma(builder, load_f16(builder, blk, 2), xsb, builder.load(total)), total)
        return builder.fadd(hsum(builder, builder.load(acc)), builder.load(total))

    return row_dot(codegen, 3 if with_min else 2)


def _values_q4_1(b, blk):
    # w[j] = d * lo(qs[j]) + m, w[j+16] = d * hi(qs[j]) + m   (m: with_min)
    return load_f16(b, blk, 0), [b.uitofp(q, V16F) for q in nibbles(b, blk, 4)]


def _values_q4_0(b, blk):
    # w[j] = d * (lo(qs[j]) - 8), w[j+16] = d * (hi(qs[j]) - 8)
    eight = ir.Constant(V16I32, [8] * 16)
    return load_f16(b, blk, 0), [b.sitofp(b.sub(q, eight), V16F) for q in nibbles(b, blk, 2)]


def _high_bits(b, qh, h):
    # <16 x i1>: bit j (h = 0) or bit 16 + j (h = 1) of the splatted uint32 qh, for lane j
    bits = ir.Constant(V16I32, [1 << (16 * h + j) for j in range(16)])
    return b.icmp_unsigned("!=", b.and_(qh, bits), ir.Constant(V16I32, [0] * 16))


def _values_q5_0(b, blk):
    # w[j] = d * ((lo(qs[j]) | bit j of qh << 4) - 16), w[j+16] likewise with hi() and bit j + 16
    qh = splat(b, load(b, blk, 2, I32, 1), V16I32)
    out = []
    for h, q in enumerate(nibbles(b, blk, 6)):
        out.append(b.sitofp(b.select(_high_bits(b, qh, h), q, b.sub(q, ir.Constant(V16I32, [16] * 16))), V16F))
    return load_f16(b, blk, 0), out


def _values_q5_1(b, blk):
    # w[j] = d * (lo(qs[j]) | bit j of qh << 4) + m, w[j+16] likewise with hi() and bit j + 16
    qh = splat(b, load(b, blk, 4, I32, 1), V16I32)
    out = []
    for h, q in enumerate(nibbles(b, blk, 8)):
        out.append(b.uitofp(b.select(_high_bits(b, qh, h), b.add(q, ir.Constant(V16I32, [16] * 16)), q), V16F))
    return load_f16(b, blk, 0), out


def _values_q8_0(b, blk):
    # w[j] = d * qs[j], qs int8
    return load_f16(b, blk, 0), [b.sitofp(load(b, blk, 2 + 16 * h, ir.VectorType(I8, 16), 1), V16F)
                                  for h in range(2)]


_dot_q4_0 = _block_dot(18, _values_q4_0)
_dot_q4_1 = _block_dot(20, _values_q4_1, with_min=True)
_dot_q5_0 = _block_dot(22, _values_q5_0)
_dot_q5_1 = _block_dot(24, _values_q5_1, with_min=True)
_dot_q8_0 = _block_dot(34, _values_q8_0)


# ---- Q4_0: 18 bytes = d | qs[16] -------------------------------------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q4_0(out, data, x, f16, chunk):
    rows = data.shape[0]
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q4_0(data[r], x)


@njit(fastmath=True, cache=True)
def dequant_row_q4_0(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 18, b * QK
        d = fp16(row, o, f16)
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
    rows = data.shape[0]
    xs = block_sums(x, QK)
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q4_1(data[r], x, xs)


@njit(fastmath=True, cache=True)
def dequant_row_q4_1(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 20, b * QK
        d = fp16(row, o, f16)
        m = fp16(row, o + 2, f16)
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
def _rows_q4_1(out, data, x, xs, r0, r1):
    # rows r0..r1-1 of matvec_q4_1's loop, for matvec3_q4_1
    for r in range(r0, r1):
        out[r] = _dot_q4_1(data[r], x, xs)


@njit(parallel=True, fastmath=True, cache=True)
def matvec3_q4_1(o0, o1, o2, d0, d1, d2, x, f16, chunk):
    # W0 @ x -> o0, W1 @ x -> o1, W2 @ x -> o2 (Q/K/V, or gate/up with a W2 of 0 rows) in one
    # parallel launch: every launch wakes and joins the worker threads (9 us passive, 3 us spinning,
    # measured), and a decode layer has 7 products; the chunks of all three share one prange.
    n0 = (d0.shape[0] + chunk - 1) // chunk
    n1 = (d1.shape[0] + chunk - 1) // chunk
    n2 = (d2.shape[0] + chunk - 1) // chunk
    xs = block_sums(x, QK)
    for c in prange(n0 + n1 + n2):
        if c < n0:
            _rows_q4_1(o0, d0, x, xs, c * chunk, min(d0.shape[0], (c + 1) * chunk))
        elif c < n0 + n1:
            c1 = c - n0
            _rows_q4_1(o1, d1, x, xs, c1 * chunk, min(d1.shape[0], (c1 + 1) * chunk))
        else:
            c2 = c - n0 - n1
            _rows_q4_1(o2, d2, x, xs, c2 * chunk, min(d2.shape[0], (c2 + 1) * chunk))

# ---- Q5_0: 22 bytes = d | qh[4] | qs[16] -----------------------------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q5_0(out, data, x, f16, chunk):
    rows = data.shape[0]
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q5_0(data[r], x)


@njit(fastmath=True, cache=True)
def dequant_row_q5_0(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 22, b * QK
        d = fp16(row, o, f16)
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
    rows = data.shape[0]
    xs = block_sums(x, QK)
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q5_1(data[r], x, xs)


@njit(fastmath=True, cache=True)
def dequant_row_q5_1(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 24, b * QK
        d = fp16(row, o, f16)
        m = fp16(row, o + 2, f16)
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
    rows = data.shape[0]
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q8_0(data[r], x)


@njit(fastmath=True, cache=True)
def dequant_row_q8_0(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 34, b * QK
        d = fp16(row, o, f16)
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
