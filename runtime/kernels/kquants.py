"""Kernels for the K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-weight super-blocks).

Block layouts (ggml-common.h, dequantize_row_q*_K in ggml-quants.c; fp16 through the table `f16`):
    Q2_K  84 B: scales[16] (lo 4 bits scale, hi 4 bits min) | qs[64] (2 bits) | d | dmin
    Q3_K 110 B: hmask[32] (3rd bit) | qs[64] (2 bits) | scales[12] (16 x 6 bits, minus 32) | d
    Q4_K 144 B: d | dmin | scales[12] (8 x 6-bit scale and min) | qs[128] (4 bits)
    Q5_K 176 B: d | dmin | scales[12] | qh[32] (5th bit) | qs[128] (4 bits)
    Q6_K 210 B: ql[128] (lo 4 bits) | qh[64] (hi 2 bits) | scales[16] int8 | d
Weight order inside a super-block follows those reference loops; the comments below give, for output
position p, which byte and bits hold it.

Same four functions per type as legacy.py (matvec_*, dequant_row_*, matmul_*, get_rows_*). In the
dequantizing loops, sub-blocks of 16 weights (Q2_K, Q3_K, Q6_K) are two half-loops so the scale stays
a scalar inside each.

Every type's decode row dot product is LLVM vector code, as legacy.py's `_block_dot` and for the
same reasons: the accumulator stays in a zmm register, the scale multiplies once per 32 (Q4_K, Q5_K)
or 16 (Q2_K, Q3_K, Q6_K) weights, the mins leave the loop as dmin * sum_g m_g * (sum of x over group
g). One Zen 4 thread, CPU clock, all of Gemma 3's tensors of the type: Q4_K 4.4 -> 7.2 GB/s,
Q6_K 4.7 -> 7.5 GB/s; a random 4096 x 2048 matrix: Q5_K 3.4 -> 8.5 GB/s.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .blocks import block_sums, fp16
from .gemm import TILE, tile_gemm
from .jit import njit, prange
from .vector_ir import (F32, I8, I32, I64, V16F, V16I32, bytes16, contiguous, fma, hsum, load, load_f16,
                        nibbles, row_dot, splat)

QK_K = 256


@njit(inline="always")
def _scale_min_k4(row, s, j):
    # 6-bit scale and min of sub-block j (0..7) from the 12 bytes at s (get_scale_min_k4)
    if j < 4:
        sc = np.int32(row[s + j]) & 63
        m = np.int32(row[s + j + 4]) & 63
    else:
        sc = (np.int32(row[s + j + 4]) & 15) | ((np.int32(row[s + j - 4]) >> 6) << 4)
        m = (np.int32(row[s + j + 4]) >> 4) | ((np.int32(row[s + j]) >> 6) << 4)
    return np.float32(sc), np.float32(m)


@njit(inline="always")
def _scale_q3_k(row, s, i):
    # signed 6-bit scale of sub-block i (0..15): low 4 bits from byte i % 8 (nibble i // 8),
    # high 2 bits from byte 8 + i % 4 (bits 2 * (i // 4)); the kmask1/kmask2 unpacking of ggml
    lo = (np.int32(row[s + i % 8]) >> (4 * (i // 8))) & 15
    hi = (np.int32(row[s + 8 + i % 4]) >> (2 * (i // 4))) & 3
    return np.float32((lo | (hi << 4)) - 32)


def _dot_k16(block_bytes, qs_offset, d_offset, two_bit_values, dmin_offset=None):
    """The row dot product of Q2_K / Q3_K (a scale per 16 weights) as an intrinsic:
    `dot(row, x)`, row uint8 [nsb * block_bytes] . x float32 [nsb * 256] -> float32, or with
    dmin_offset (Q2_K's mins) `dot(row, x, xs)`, xs the 16-value block sums of x. Group
    gi = 8h + 2j + s covers x[16 gi : 16 gi + 16] and lane i of it is bits 2j of qs[32h + 16s + i].
    `two_bit_values(b, blk, q, h, j, s, gi)` turns those 2-bit values (<16 x i32>) into
    (<16 x float> values, float scale, float min or None); the mins leave the vector loop as
    dmin * sum_gi m_gi * xs_gi."""
    with_min = dmin_offset is not None

    def codegen(context, builder, sig, args):
        b = builder
        rp = context.make_array(sig.args[0])(context, b, args[0]).data
        xa = context.make_array(sig.args[1])(context, b, args[1])
        acc = cgutils.alloca_once_value(b, ir.Constant(V16F, None))
        mins = cgutils.alloca_once_value(b, ir.Constant(F32, 0))
        with cgutils.for_range(b, b.udiv(xa.nitems, ir.Constant(I64, QK_K))) as loop:
            blk = b.gep(rp, [b.mul(loop.index, ir.Constant(I64, block_bytes))])
            xb = b.gep(xa.data, [b.mul(loop.index, ir.Constant(I64, QK_K))])
            d = load_f16(b, blk, d_offset)
            if with_min:                         # this super-block's 16 sums of x
                xsp = context.make_array(sig.args[2])(context, b, args[2]).data
                xsb = b.gep(xsp, [b.mul(loop.index, ir.Constant(I64, QK_K // 16))])
            a, msum = b.load(acc), ir.Constant(F32, 0)
            for h in range(2):
                for s in range(2):
                    qs = b.zext(load(b, blk, qs_offset + 32 * h + 16 * s, ir.VectorType(I8, 16), 1), V16I32)
                    for j in range(4):
                        gi = 8 * h + 2 * j + s
                        q = b.and_(b.lshr(qs, ir.Constant(V16I32, [2 * j] * 16)), ir.Constant(V16I32, [3] * 16))
                        v, sc, m = two_bit_values(b, blk, q, h, j, s, gi)
                        t = b.fmul(v, load(b, xb, 16 * gi, V16F, 4))
                        a = fma(b, splat(b, b.fmul(d, sc), V16F), t, a)
                        if with_min:
                            msum = fma(b, m, load(b, xsb, gi, F32, 4), msum)
            b.store(a, acc)
            if with_min:
                b.store(fma(b, load_f16(b, blk, dmin_offset), msum, b.load(mins)), mins)
        return b.fsub(hsum(b, b.load(acc)), b.load(mins))

    return row_dot(codegen, 3 if with_min else 2)


def _values_q2_k(b, blk, q, h, j, s, gi):
    # weight = d * (scales[gi] & 15) * q - dmin * (scales[gi] >> 4)
    sb = b.zext(load(b, blk, gi, I8, 1), I32)
    sc = b.uitofp(b.and_(sb, ir.Constant(I32, 15)), F32)
    m = b.uitofp(b.lshr(sb, ir.Constant(I32, 4)), F32)
    return b.uitofp(q, V16F), sc, m


def _values_q3_k(b, blk, q, h, j, s, gi):
    # weight = d * scale_gi * (q - 4 + 4 * bit 4h + j of hmask[16s + i]), scale_gi as _scale_q3_k
    hm = b.zext(load(b, blk, 16 * s, ir.VectorType(I8, 16), 1), V16I32)
    hb = b.and_(b.lshr(hm, ir.Constant(V16I32, [4 * h + j] * 16)), ir.Constant(V16I32, [1] * 16))
    v = b.sub(b.add(q, b.shl(hb, ir.Constant(V16I32, [2] * 16))), ir.Constant(V16I32, [4] * 16))
    lo = b.and_(b.lshr(b.zext(load(b, blk, 96 + gi % 8, I8, 1), I32), ir.Constant(I32, 4 * (gi // 8))),
                ir.Constant(I32, 15))
    hi = b.and_(b.lshr(b.zext(load(b, blk, 104 + gi % 4, I8, 1), I32), ir.Constant(I32, 2 * (gi // 4))),
                ir.Constant(I32, 3))
    sc = b.sitofp(b.sub(b.or_(lo, b.shl(hi, ir.Constant(I32, 4))), ir.Constant(I32, 32)), F32)
    return b.sitofp(v, V16F), sc, None


_dot_q2_k = _dot_k16(84, 16, 80, _values_q2_k, dmin_offset=82)
_dot_q3_k = _dot_k16(110, 32, 108, _values_q3_k)


# ---- Q2_K: p = 128h + 32j + l  <-  bits 2j of qs[32h + l], scale byte 8h + 2j + (l >= 16) -----------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q2_k(out, data, x, f16, chunk):
    rows = data.shape[0]
    xs = block_sums(x, 16)
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q2_k(data[r], x, xs)


@njit(fastmath=True, cache=True)
def dequant_row_q2_k(y, row, f16):
    for b in range(y.shape[0] // QK_K):
        o = b * 84
        d = fp16(row, o + 80, f16)
        dmin = fp16(row, o + 82, f16)
        for h in range(2):
            for j in range(4):
                yo = b * QK_K + 128 * h + 32 * j
                for s in range(2):
                    sc = np.int32(row[o + 8 * h + 2 * j + s])
                    dl = d * np.float32(sc & 15)
                    ml = dmin * np.float32(sc >> 4)
                    for i in range(16):
                        l = 16 * s + i
                        q = (np.int32(row[o + 16 + 32 * h + l]) >> (2 * j)) & 3
                        y[yo + l] = dl * np.float32(np.int32(q)) - ml


# ---- Q3_K: p = 128h + 32j + l  <-  bits 2j of qs[32h + l], bit 4h + j of hmask[l] (clear: minus 4) -

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q3_k(out, data, x, f16, chunk):
    rows = data.shape[0]
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q3_k(data[r], x)


@njit(fastmath=True, cache=True)
def dequant_row_q3_k(y, row, f16):
    for b in range(y.shape[0] // QK_K):
        o = b * 110
        d = fp16(row, o + 108, f16)
        for h in range(2):
            for j in range(4):
                yo = b * QK_K + 128 * h + 32 * j
                for s in range(2):
                    dl = d * _scale_q3_k(row, o + 96, 8 * h + 2 * j + s)
                    for i in range(16):
                        l = 16 * s + i
                        q = (np.int32(row[o + 32 + 32 * h + l]) >> (2 * j)) & 3
                        hb = (np.int32(row[o + l]) >> (4 * h + j)) & 1
                        y[yo + l] = dl * np.float32(np.int32(q - 4 + 4 * hb))


# ---- Q4_K: p = 64j + l (l < 32) <- low nibble of qs[32j + l], p = 64j + 32 + l <- its high nibble --

def _scale_min_k4_ir(b, blk, j):
    # _scale_min_k4 in LLVM IR: 6-bit scale and min of sub-block j from the 12 bytes at blk + 4
    def byte(k):
        return b.zext(load(b, blk, 4 + k, I8, 1), I32)

    def c(v):
        return ir.Constant(I32, v)
    if j < 4:
        sc, m = b.and_(byte(j), c(63)), b.and_(byte(j + 4), c(63))
    else:
        sc = b.or_(b.and_(byte(j + 4), c(15)), b.shl(b.lshr(byte(j - 4), c(6)), c(4)))
        m = b.or_(b.lshr(byte(j + 4), c(4)), b.shl(b.lshr(byte(j), c(6)), c(4)))
    return b.uitofp(sc, F32), b.uitofp(m, F32)


def _dot_k4(block_bytes, qs_offset, qh_offset=None):
    """The row dot product of Q4_K (or, with qh_offset, Q5_K) as an intrinsic:
    `dot(row, x, xs)`, row uint8 [nsb * block_bytes] . x float32 [nsb * 256] -> float32, xs the
    32-value block sums of x. As legacy._block_dot: per 32-weight group g, acc += d * sc_g * (q . x)
    in one <16 x float> register, and the mins leave the vector loop as dmin * sum_g m_g * xs_g.
    Q5_K's fifth bit of weight 64j + 32g + l is bit 2j + g of qh[l], worth 16."""
    def codegen(context, builder, sig, args):
        b = builder
        rp = context.make_array(sig.args[0])(context, b, args[0]).data
        xa = context.make_array(sig.args[1])(context, b, args[1])
        xsp = context.make_array(sig.args[2])(context, b, args[2]).data
        acc = cgutils.alloca_once_value(b, ir.Constant(V16F, None))
        mins = cgutils.alloca_once_value(b, ir.Constant(F32, 0))
        with cgutils.for_range(b, b.udiv(xa.nitems, ir.Constant(I64, QK_K))) as loop:
            blk = b.gep(rp, [b.mul(loop.index, ir.Constant(I64, block_bytes))])
            xb = b.gep(xa.data, [b.mul(loop.index, ir.Constant(I64, QK_K))])
            xsb = b.gep(xsp, [b.mul(loop.index, ir.Constant(I64, QK_K // 32))])
            d, dmin = load_f16(b, blk, 0), load_f16(b, blk, 2)
            a, msum = b.load(acc), ir.Constant(F32, 0)
            if qh_offset is not None:            # qh[0..15], qh[16..31] as <16 x i32>
                qh = [b.zext(load(b, blk, qh_offset + 16 * h, ir.VectorType(I8, 16), 1), V16I32)
                      for h in range(2)]
            for j in range(4):
                halves = [list(nibbles(b, blk, qs_offset + 32 * j + 16 * h)) for h in range(2)]
                for g in range(2):                    # g = 0: low nibbles, group 2j; 1: high, 2j + 1
                    if qh_offset is not None:
                        for h in range(2):
                            bit = b.and_(b.lshr(qh[h], ir.Constant(V16I32, [2 * j + g] * 16)),
                                         ir.Constant(V16I32, [1] * 16))
                            halves[h][g] = b.or_(halves[h][g], b.shl(bit, ir.Constant(V16I32, [4] * 16)))
                    sc, m = _scale_min_k4_ir(b, blk, 2 * j + g)
                    xo = 64 * j + 32 * g
                    t = fma(b, b.uitofp(halves[1][g], V16F), load(b, xb, xo + 16, V16F, 4),
                             b.fmul(b.uitofp(halves[0][g], V16F), load(b, xb, xo, V16F, 4)))
                    a = fma(b, splat(b, b.fmul(d, sc), V16F), t, a)
                    msum = fma(b, m, load(b, xsb, 2 * j + g, F32, 4), msum)
            b.store(a, acc)
            b.store(fma(b, dmin, msum, b.load(mins)), mins)
        return b.fsub(hsum(b, b.load(acc)), b.load(mins))

    return row_dot(codegen, 3)


_dot_q4_k = _dot_k4(144, 16)
_dot_q5_k = _dot_k4(176, 48, qh_offset=16)


@njit(parallel=True, fastmath=True, cache=True)
def matvec_q4_k(out, data, x, f16, chunk):
    rows = data.shape[0]
    xs = block_sums(x, 32)
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q4_k(data[r], x, xs)


@njit(fastmath=True, cache=True)
def dequant_row_q4_k(y, row, f16):
    for b in range(y.shape[0] // QK_K):
        o = b * 144
        d = fp16(row, o, f16)
        dmin = fp16(row, o + 2, f16)
        for j in range(4):
            sc1, m1 = _scale_min_k4(row, o + 4, 2 * j)
            sc2, m2 = _scale_min_k4(row, o + 4, 2 * j + 1)
            yo = b * QK_K + 64 * j
            qo = o + 16 + 32 * j
            for l in range(32):
                q = np.int32(row[qo + l])
                y[yo + l] = d * sc1 * np.float32(np.int32(q & 15)) - dmin * m1
                y[yo + 32 + l] = d * sc2 * np.float32(np.int32(q >> 4)) - dmin * m2


# ---- Q5_K: as Q4_K, plus bit 2j (low nibble) or 2j + 1 (high nibble) of qh[l] worth 16 ------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_q5_k(out, data, x, f16, chunk):
    rows = data.shape[0]
    xs = block_sums(x, 32)
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q5_k(data[r], x, xs)


@njit(fastmath=True, cache=True)
def dequant_row_q5_k(y, row, f16):
    for b in range(y.shape[0] // QK_K):
        o = b * 176
        d = fp16(row, o, f16)
        dmin = fp16(row, o + 2, f16)
        for j in range(4):
            sc1, m1 = _scale_min_k4(row, o + 4, 2 * j)
            sc2, m2 = _scale_min_k4(row, o + 4, 2 * j + 1)
            yo = b * QK_K + 64 * j
            qo = o + 48 + 32 * j
            for l in range(32):
                q = np.int32(row[qo + l])
                h = np.int32(row[o + 16 + l])
                lo = (q & 15) | (((h >> (2 * j)) & 1) << 4)
                hi = (q >> 4) | (((h >> (2 * j + 1)) & 1) << 4)
                y[yo + l] = d * sc1 * np.float32(np.int32(lo)) - dmin * m1
                y[yo + 32 + l] = d * sc2 * np.float32(np.int32(hi)) - dmin * m2


# ---- Q6_K: p = 128h + 32k + l <- nibble k // 2 of ql[64h + 32(k % 2) + l], bits 2k of qh[32h + l] --

@intrinsic
def _dot_q6_k(typingctx, row, x):
    """row uint8 [nsb * 210] . x float32 [nsb * 256] -> float32. Per 16-weight sub-block:
    acc += (d * scale) * ((q - 32) . x), the accumulator one <16 x float> register."""
    def codegen(context, builder, sig, args):
        b = builder
        rp = context.make_array(sig.args[0])(context, b, args[0]).data
        xa = context.make_array(sig.args[1])(context, b, args[1])
        acc = cgutils.alloca_once_value(b, ir.Constant(V16F, None))

        def c(v):
            return ir.Constant(V16I32, [v] * 16)
        with cgutils.for_range(b, b.udiv(xa.nitems, ir.Constant(I64, QK_K))) as loop:
            blk = b.gep(rp, [b.mul(loop.index, ir.Constant(I64, 210))])
            xb = b.gep(xa.data, [b.mul(loop.index, ir.Constant(I64, QK_K))])
            d = load_f16(b, blk, 208)
            a = b.load(acc)
            for h in range(2):
                for s16 in range(2):                  # lanes l = 16 * s16 + 0..15 of the 32 above
                    lo, hi = bytes16(b, blk, 64 * h + 16 * s16), bytes16(b, blk, 64 * h + 32 + 16 * s16)
                    g = bytes16(b, blk, 128 + 32 * h + 16 * s16)
                    qs = [b.or_(b.and_(lo, c(15)), b.shl(b.and_(g, c(3)), c(4))),
                          b.or_(b.and_(hi, c(15)), b.shl(b.and_(b.lshr(g, c(2)), c(3)), c(4))),
                          b.or_(b.lshr(lo, c(4)), b.shl(b.and_(b.lshr(g, c(4)), c(3)), c(4))),
                          b.or_(b.lshr(hi, c(4)), b.shl(b.lshr(g, c(6)), c(4)))]
                    for k, q in enumerate(qs):             # position 128h + 32k + l, scale 8h + 2k + s16
                        sc = b.sitofp(load(b, blk, 192 + 8 * h + 2 * k + s16, I8, 1), F32)
                        v = b.sitofp(b.sub(q, c(32)), V16F)
                        xk = load(b, xb, 128 * h + 32 * k + 16 * s16, V16F, 4)
                        a = fma(b, splat(b, b.fmul(d, sc), V16F), b.fmul(v, xk), a)
            b.store(a, acc)
        return hsum(b, b.load(acc))
    return (types.float32(row, x), codegen) if contiguous(row, x) else None


@njit(parallel=True, fastmath=True, cache=True)
def matvec_q6_k(out, data, x, f16, chunk):
    rows = data.shape[0]
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_q6_k(data[r], x)


@njit(fastmath=True, cache=True)
def dequant_row_q6_k(y, row, f16):
    for b in range(y.shape[0] // QK_K):
        o = b * 210
        d = fp16(row, o + 208, f16)
        for h in range(2):
            ql, qh, yo = o + 64 * h, o + 128 + 32 * h, b * QK_K + 128 * h
            for s in range(2):
                sb = o + 192 + 8 * h + s
                d0 = d * np.float32(np.int8(row[sb]))
                d1 = d * np.float32(np.int8(row[sb + 2]))
                d2 = d * np.float32(np.int8(row[sb + 4]))
                d3 = d * np.float32(np.int8(row[sb + 6]))
                for i in range(16):
                    l = 16 * s + i
                    a = np.int32(row[ql + l])
                    e = np.int32(row[ql + 32 + l])
                    g = np.int32(row[qh + l])
                    q0 = ((a & 15) | ((g & 3) << 4)) - 32
                    q1 = ((e & 15) | (((g >> 2) & 3) << 4)) - 32
                    q2 = ((a >> 4) | (((g >> 4) & 3) << 4)) - 32
                    q3 = ((e >> 4) | (((g >> 6) & 3) << 4)) - 32
                    y[yo + l] = d0 * np.float32(np.int32(q0))
                    y[yo + 32 + l] = d1 * np.float32(np.int32(q1))
                    y[yo + 64 + l] = d2 * np.float32(np.int32(q2))
                    y[yo + 96 + l] = d3 * np.float32(np.int32(q3))


# ---- matmul and get_rows: the same driver for every type, spelled out per type so that numba
# compiles only the dequantizer a model uses (a function argument would defeat its cache) -----------

@njit(parallel=True, fastmath=True, cache=True)
def matmul_q2_k(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0, nr = c * TILE, min(TILE, rows - c * TILE)
        for i in range(nr):
            dequant_row_q2_k(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(parallel=True, fastmath=True, cache=True)
def matmul_q3_k(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0, nr = c * TILE, min(TILE, rows - c * TILE)
        for i in range(nr):
            dequant_row_q3_k(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(parallel=True, fastmath=True, cache=True)
def matmul_q4_k(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0, nr = c * TILE, min(TILE, rows - c * TILE)
        for i in range(nr):
            dequant_row_q4_k(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(parallel=True, fastmath=True, cache=True)
def matmul_q5_k(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0, nr = c * TILE, min(TILE, rows - c * TILE)
        for i in range(nr):
            dequant_row_q5_k(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(parallel=True, fastmath=True, cache=True)
def matmul_q6_k(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0, nr = c * TILE, min(TILE, rows - c * TILE)
        for i in range(nr):
            dequant_row_q6_k(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(cache=True)
def get_rows_q2_k(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q2_k(out[t], data[ids[t]], f16)


@njit(cache=True)
def get_rows_q3_k(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q3_k(out[t], data[ids[t]], f16)


@njit(cache=True)
def get_rows_q4_k(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q4_k(out[t], data[ids[t]], f16)


@njit(cache=True)
def get_rows_q5_k(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q5_k(out[t], data[ids[t]], f16)


@njit(cache=True)
def get_rows_q6_k(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_q6_k(out[t], data[ids[t]], f16)
