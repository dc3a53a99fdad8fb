"""Kernels for the non-linear 4-bit types IQ4_NL and IQ4_XS.

Block layouts (ggml-common.h, dequantize_row_iq4_* in ggml-quants.c; `d` is fp16):
    IQ4_NL   18 B: d | qs[16]                     w[j] = d * kv[lo(qs[j])], w[j+16] = d * kv[hi(qs[j])]
    IQ4_XS  136 B: d | scales_h (uint16) | scales_l[4] | qs[128]
                   sub-block g (32 weights) has the 6-bit scale ls_g = low 4 bits from nibble g % 2 of
                   scales_l[g // 2] | bits 2g..2g+1 of scales_h << 4, and weights
                   d * (ls_g - 32) * kv[lo/hi(qs[16g + j])], laid out as an IQ4_NL block
kv is the fixed table of 16 levels (runtime.quants.KVALUES_IQ4NL, ggml's kvalues_iq4nl).

Same four functions per type as legacy.py (matvec_*, dequant_row_*, matmul_*, get_rows_*), in the
same vector form: the decode row dot product is LLVM IR (`_dot_iq4`), one <16 x float> accumulator,
the scale multiplied once per 32 weights. The 4-bit index becomes its level through a 16-byte table
lookup, the instruction llama.cpp's own IQ4 dot products use: `pshufb` on x86 (SSSE3, in every
x86-64-v2 and later target), `tbl` on aarch64 (NEON is part of ARMv8-A); any other target looks the
levels up by a tree of selects on the index bits. The prefill tiles and get_rows dequantize in plain
numba through KVALUES (a module constant, frozen at compile time on purpose: it never changes).
These kernels convert fp16 themselves and ignore `f16` in matvec (one signature for every type).
"""
from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba.core import cgutils

from .blocks import fp16
from .gemm import TILE, tile_gemm
from .jit import has_feature, njit, prange
from .vector_ir import F32, I8, I32, I64, V16F, V16I32, V16I8, fma, hsum, load, load_f16, nibbles, row_dot, splat

QK = 32                                   # weights per IQ4_NL block and per IQ4_XS sub-block
QK_K = 256                                # weights per IQ4_XS super-block
KVALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


# ---- the 16-level lookup in LLVM IR ------------------------------------------------------------------

def _lookup_kind() -> str:
    """Which instruction looks the 16 levels up: "pshufb", "tbl" or "select" (the portable tree)."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "tbl"
    return "pshufb" if has_feature("ssse3") else "select"


def _levels(b, idx, kind):
    # idx <16 x i32> of 4-bit indices -> <16 x float> levels kv[idx]
    table = ir.Constant(V16I8, list(KVALUES))
    if kind == "select":
        # bit 3 picks the half, bit 2 the quarter ...: 15 selects between constant vectors
        consts = [ir.Constant(V16I32, [v] * 16) for v in KVALUES]
        level = consts
        for bit in range(4):
            on = b.icmp_unsigned("!=", b.and_(idx, ir.Constant(V16I32, [1 << bit] * 16)),
                                 ir.Constant(V16I32, [0] * 16))
            level = [b.select(on, level[2 * k + 1], level[2 * k]) for k in range(len(level) // 2)]
        return b.sitofp(level[0], V16F)
    name = "llvm.x86.ssse3.pshuf.b.128" if kind == "pshufb" else "llvm.aarch64.neon.tbl1.v16i8"
    fn = cgutils.get_or_insert_function(b.module, ir.FunctionType(V16I8, [V16I8, V16I8]), name)
    return b.sitofp(b.call(fn, [table, b.trunc(idx, V16I8)]), V16F)


def _dot_iq4(block_bytes, block_weights, qs_offset, sub_scale):
    """The row dot product of IQ4_NL (block_weights 32) or IQ4_XS (256) as an intrinsic
    `dot(row, x) -> float32`, row uint8 [nb * block_bytes] . x float32 [nb * block_weights].
    Per 32-weight group g: acc += (d * s_g) * (kv[lo] . x[0:16] + kv[hi] . x[16:32]), with s_g =
    `sub_scale(b, blk, g)` (None: 1, IQ4_NL)."""
    kind = _lookup_kind()

    def codegen(context, builder, sig, args):
        b = builder
        rp = context.make_array(sig.args[0])(context, b, args[0]).data
        xa = context.make_array(sig.args[1])(context, b, args[1])
        acc = cgutils.alloca_once_value(b, ir.Constant(V16F, None))
        with cgutils.for_range(b, b.udiv(xa.nitems, ir.Constant(I64, block_weights))) as loop:
            blk = b.gep(rp, [b.mul(loop.index, ir.Constant(I64, block_bytes))])
            xb = b.gep(xa.data, [b.mul(loop.index, ir.Constant(I64, block_weights))])
            d = load_f16(b, blk, 0)
            a = b.load(acc)
            for g in range(block_weights // QK):
                lo, hi = nibbles(b, blk, qs_offset + 16 * g)
                t = fma(b, _levels(b, hi, kind), load(b, xb, QK * g + 16, V16F, 4),
                        b.fmul(_levels(b, lo, kind), load(b, xb, QK * g, V16F, 4)))
                dg = d if sub_scale is None else b.fmul(d, sub_scale(b, blk, g))
                a = fma(b, splat(b, dg, V16F), t, a)
            b.store(a, acc)
        return hsum(b, b.load(acc))

    return row_dot(codegen, 2)


def _xs_scale(b, blk, g):
    # IQ4_XS sub-block g's scale ls_g - 32 as float, from scales_l (byte 4 + g // 2) and scales_h (2, 3)
    low = b.and_(b.lshr(b.zext(load(b, blk, 4 + g // 2, I8, 1), I32), ir.Constant(I32, 4 * (g % 2))),
                 ir.Constant(I32, 15))
    half = b.zext(load(b, blk, 2 + g // 4, I8, 1), I32)              # scales_h, little-endian
    high = b.and_(b.lshr(half, ir.Constant(I32, 2 * (g % 4))), ir.Constant(I32, 3))
    return b.sitofp(b.sub(b.or_(low, b.shl(high, ir.Constant(I32, 4))), ir.Constant(I32, 32)), F32)


_dot_iq4_nl = _dot_iq4(18, QK, 2, None)
_dot_iq4_xs = _dot_iq4(136, QK_K, 8, _xs_scale)


@njit(inline="always")
def _kv(q):
    # the level of a 4-bit index, as float32
    return np.float32(KVALUES[q])


# ---- IQ4_NL: 18 bytes = d | qs[16] ---------------------------------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_iq4_nl(out, data, x, f16, chunk):
    rows = data.shape[0]
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_iq4_nl(data[r], x)


@njit(fastmath=True, cache=True)
def dequant_row_iq4_nl(y, row, f16):
    for b in range(y.shape[0] // QK):
        o, yo = b * 18, b * QK
        d = fp16(row, o, f16)
        for j in range(16):
            q = np.int32(row[o + 2 + j])
            y[yo + j] = d * _kv(q & 15)
            y[yo + 16 + j] = d * _kv(q >> 4)


@njit(parallel=True, fastmath=True, cache=True)
def matmul_iq4_nl(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0 = c * TILE
        nr = min(TILE, rows - r0)
        for i in range(nr):
            dequant_row_iq4_nl(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(cache=True)
def get_rows_iq4_nl(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_iq4_nl(out[t], data[ids[t]], f16)


# ---- IQ4_XS: 136 bytes = d | scales_h | scales_l[4] | qs[128] -------------------------------------

@njit(parallel=True, fastmath=True, cache=True)
def matvec_iq4_xs(out, data, x, f16, chunk):
    rows = data.shape[0]
    for c in prange((rows + chunk - 1) // chunk):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            out[r] = _dot_iq4_xs(data[r], x)


@njit(fastmath=True, cache=True)
def dequant_row_iq4_xs(y, row, f16):
    for b in range(y.shape[0] // QK_K):
        o = b * 136
        d = fp16(row, o, f16)
        scales_h = np.int32(row[o + 2]) | (np.int32(row[o + 3]) << 8)
        for g in range(QK_K // QK):
            low = (np.int32(row[o + 4 + g // 2]) >> (4 * (g % 2))) & 15
            ls = low | (((scales_h >> (2 * g)) & 3) << 4)
            dl = d * np.float32(ls - 32)
            yo, qo = b * QK_K + QK * g, o + 8 + 16 * g
            for j in range(16):
                q = np.int32(row[qo + j])
                y[yo + j] = dl * _kv(q & 15)
                y[yo + 16 + j] = dl * _kv(q >> 4)


@njit(parallel=True, fastmath=True, cache=True)
def matmul_iq4_xs(out, data, x, f16):
    rows = data.shape[0]
    for c in prange((rows + TILE - 1) // TILE):
        tile = np.empty((TILE, x.shape[1]), np.float32)
        r0 = c * TILE
        nr = min(TILE, rows - r0)
        for i in range(nr):
            dequant_row_iq4_xs(tile[i], data[r0 + i], f16)
        tile_gemm(out, tile, nr, x, r0)


@njit(cache=True)
def get_rows_iq4_xs(out, data, ids, f16):
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= data.shape[0]:
            raise IndexError("row id out of range")
        dequant_row_iq4_xs(out[t], data[ids[t]], f16)
