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

With 8-bit activations (kernels.takes_q8: the compile target has an integer dot product, intdot.py)
the levels are int8 (table lookup of 32 indices at once) and multiply the activations' bytes as
llama.cpp's x86 code does:
    IQ4_NL  against Q8_0, per block: acc = fma(float(integer block sum), d_w * d_x, acc), one float
            per row (ggml_gemv/gemm_iq4_nl_8x8_q8_0: llama.cpp repacks IQ4_NL into 8-row groups on AVX2
            machines, as Q4_0); the prefill tile is intgemm's Q4_0 tile on the levels + 128.
    IQ4_XS  against Q8_K, per super-block: 8 integer lanes collect (ls_g - 32) * (sum over 4 weights)
            for its 8 groups, then acc = fma(d_w * d_x, float(lane), acc); the 8 lanes summed by halves
            at the end (ggml_vec_dot_iq4_xs_q8_K). Prefill: the same product token by token, as
            llama.cpp does (it has no repacked IQ4_XS): 1.3x the float tile's CPU time for 64 tokens,
            2.9 vs 2.2 ms for a 1024 x 1024 matrix on one thread.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils

from . import intgemm
from .blocks import fp16
from .gemm import TILE, tile_gemm
from .intdot import _c, _chunks, _dot_q8_0_blocks, _load32, _nibbles32, act_sums, idot_signed, int_dot
from .jit import has_feature, njit, prange
from .vector_ir import F32, I8, I32, I64, V16F, V16I32, V16I8, call, fma, hsum, load, load_f16, nibbles, row_dot, splat

QK = 32                                   # weights per IQ4_NL block and per IQ4_XS sub-block
QK_K = 256                                # weights per IQ4_XS super-block
KVALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


# ---- the 16-level lookup in LLVM IR ------------------------------------------------------------------

def _lookup_kind() -> str:
    """Which instruction looks the 16 levels up on the compile target: "pshufb", "tbl" or "select"
    (the portable tree)."""
    if has_feature("neon"):
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


# ---- integer dot products against 8-bit activations (intdot.py's framework) --------------------------

V8F, V8I32, V32I8 = ir.VectorType(F32, 8), ir.VectorType(I32, 8), ir.VectorType(I8, 32)


def _levels_i8(b, idx):
    """idx <32 x i8> of 4-bit indices -> <32 x i8> levels kv[idx]: `vpshufb` (AVX2, the table in both
    128-bit lanes) or two NEON `tbl`."""
    if has_feature("neon"):
        table = ir.Constant(V16I8, list(KVALUES))
        halves = []
        for h in range(2):
            part = b.shuffle_vector(idx, idx, ir.Constant(V16I32, list(range(16 * h, 16 * h + 16))))
            halves.append(call(b, "llvm.aarch64.neon.tbl1.v16i8", V16I8, [table, part]))
        return b.shuffle_vector(halves[0], halves[1], ir.Constant(ir.VectorType(I32, 32), list(range(32))))
    return call(b, "llvm.x86.avx2.pshuf.b", V32I8, [ir.Constant(V32I8, list(KVALUES) * 2), idx])


def _unpack_iq4_nl(b, blk):
    # intdot's 32-weight unpack: (signed weights, signed?, zero point, d_w, min)
    return _levels_i8(b, _nibbles32(b, blk, 2)), True, 0, load_f16(b, blk, 0), None


_dot_iq4_nl_q8 = _dot_q8_0_blocks(18, _unpack_iq4_nl, repacked=True)


def _xs_scale_i32(b, blk, g):
    # IQ4_XS sub-block g's ls_g - 32 as i32 (see _xs_scale)
    low = b.and_(b.lshr(b.zext(load(b, blk, 4 + g // 2, I8, 1), I32), _c(I32, 4 * (g % 2))), _c(I32, 15))
    high = b.and_(b.lshr(b.zext(load(b, blk, 2 + g // 4, I8, 1), I32), _c(I32, 2 * (g % 4))), _c(I32, 3))
    return b.sub(b.or_(low, b.shl(high, _c(I32, 4))), _c(I32, 32))


def _dot_iq4_xs_blocks():
    """Intrinsic dot(row, qs, d, aux) -> float32: row uint8 [nsb * 136], qs int8 [nsb * 256], d float32
    [nsb] (Q8_K), aux int32 [nsb * 64] the sums of qs per 4 (the zero point of `vpdpbusd`'s unsigned
    bytes, intdot.idot_signed). ggml_vec_dot_iq4_xs_q8_K's arithmetic (module docstring)."""
    def codegen(context, builder, sig, args):
        b = builder
        rp, qp, dp, ap = (context.make_array(t)(context, b, a).data for t, a in zip(sig.args, args))
        nsb = b.udiv(context.make_array(sig.args[1])(context, b, args[1]).nitems, _c(I64, 256))
        facc = cgutils.alloca_once_value(b, _c(V8F, 0.0))
        vnni = int_dot() in ("avx512vnni", "avxvnni")
        with cgutils.for_range(b, nsb) as loop:
            i = loop.index
            blk = b.gep(rp, [b.mul(i, _c(I64, 136))])
            qb = b.gep(qp, [b.mul(i, _c(I64, 256))])
            isum = _c(V8I32, 0)
            for g in range(8):
                init = _c(V8I32, 0)
                if vnni:                          # - 128 * (sum of q over each lane's 4 values)
                    sums = load(b, b.gep(ap, [b.add(b.mul(i, _c(I64, 64)), _c(I64, 8 * g))]), 0, V8I32, 4)
                    init = b.mul(sums, _c(V8I32, -128))
                w = _levels_i8(b, _nibbles32(b, blk, 8 + 16 * g))
                part = idot_signed(b, init, w, _load32(b, qb, 32 * g))[0]
                isum = b.add(isum, b.mul(part, splat(b, _xs_scale_i32(b, blk, g), V8I32)))
            dx = b.load(b.gep(dp, [i]))
            b.store(fma(b, splat(b, b.fmul(load_f16(b, blk, 0), dx), V8F), b.sitofp(isum, V8F), b.load(facc)),
                    facc)
        return hsum(b, b.load(facc))
    return row_dot(codegen, 4)


_dot_iq4_xs_q8 = _dot_iq4_xs_blocks()


# matvec_*_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk): intdot.py's launch (up to three W sharing the
# B activation vectors); s (Q8_1's sums) is not read by these types.

@njit(parallel=True, cache=True)
def matvec_iq4_nl_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = act_sums(qs, 4)
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            for j in range(qs.shape[0]):
                o[j, r] = _dot_iq4_nl_q8(w[r], qs[j], d[j], aux[j])


@njit(parallel=True, cache=True)
def matvec_iq4_xs_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = act_sums(qs, 4)
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            for j in range(qs.shape[0]):
                o[j, r] = _dot_iq4_xs_q8(w[r], qs[j], d[j], aux[j])


# the prefill tile (AVX-512 VNNI, intgemm.py): IQ4_NL as Q4_0's "block" arithmetic on u = level + 128

def _nl_groups(b, blk):
    u = b.xor(_levels_i8(b, _nibbles32(b, blk, 2)), _c(V32I8, -128))
    return [(0, u)], {(0, 1, 0): load_f16(b, blk, 0)}


_repack_iq4_nl = intgemm._repack(18, 32, _nl_groups)
_tile_iq4_nl = intgemm._tile("block", zero_point=128, tb=8)


@njit(parallel=True, cache=True)
def matmul_iq4_nl_q8(out, data, qs, d, s):
    T, n = qs.shape
    rows = data.shape[0]
    R = intgemm.ROWS
    qpad, xd, sum4, sum16, sum32, xm, Tpad = intgemm._x_side(qs, d, s)
    for c in prange((rows + R - 1) // R):
        r0 = c * R
        nr = min(R, rows - r0)
        U = np.empty(n // 4 * 64, np.uint8)
        F1 = np.empty(n // 16 * R, np.float32)
        F2 = np.empty(n // 16 * R, np.float32)
        I1 = np.empty(n // 16 * R, np.int32)
        I2 = np.empty(n // 16 * R, np.int32)
        tout = np.empty(Tpad * R, np.float32)
        _repack_iq4_nl(U, F1, F2, I1, I2, data, r0, nr)
        _tile_iq4_nl(tout, U, F1, F2, I1, I2, qpad, xd, sum4, sum16, sum32, xm, n, Tpad, T // 4 * 4)
        intgemm._store_tile(out, tout, T, r0, nr)


@njit(parallel=True, cache=True)
def matmul_iq4_xs_q8(out, data, qs, d, s):
    # llama.cpp multiplies IQ4_XS prompts token by token with its vec_dot (no repacked form): the
    # decode product for every token, so a prompt's rows have the decode rows' bits
    aux = act_sums(qs, 4)
    rows = data.shape[0]
    for c in prange((rows + 15) // 16):
        for r in range(16 * c, min(rows, 16 * c + 16)):
            for t in range(qs.shape[0]):
                out[t, r] = _dot_iq4_xs_q8(data[r], qs[t], d[t], aux[t])
