"""The prefill product with integer dot products: 8-bit activations times a repacked 16-row weight tile.

For targets with AVX-512 VNNI (`available()`); elsewhere the float tile GEMM (gemm.py) runs. Per tile of
16 weight rows, `repack_*` unpacks the raw blocks once into
    U  uint8 [n / 4, 16, 4]   unsigned weight bytes u (w = scale * (u - o) [+ min]): 4 consecutive
                              weights of each of the 16 rows in one 64-byte line (rows across lanes)
    F1, F2 float32 [*, 16]    per-row scales: d (and m) per block, or d (and dmin) per super-block
    I1, I2 int32 [*, 16]      per-row integer scales and mins of the K-quants' groups
and `tile_*` multiplies it with every token: one `vpdpbusd` per 4 weights gives 16 rows' integer sums,
the token's 4 bytes broadcast. The repack is paid once per tile and used by all T tokens, and is kept
off the model's memory (launch stays zero-copy).

Per (row, token) the float arithmetic is exactly the decode kernels' (intdot.py), which is ggml's:
    "lanes"   (Q4_1 Q5_0 Q5_1 Q8_0, Q5_K Q6_K): ggml_vec_dot's 8 lanes (weights 4k .. 4k + 3 of each
              block) kept apart as 8 float accumulators, summed by halves at the end;
    "block"   (Q4_0): one fma per block; "superblock" (Q4_K): one fma per 64 weights and one for their
              mins for the first T // 4 * 4 tokens (ggml_gemm_q4_K_8x8_q8_K, AVX-512), one per super-block
              for the rest (its gemv, as decode): llama.cpp repacks these two types into 8-row groups on
              AVX2 machines.
So a prompt's products have llama.cpp's bits, and for every type but Q4_K a decode step's too.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .intdot import _bits32, _c, _k_groups_q4_k, _k_groups_q6_k, _load32, _nibbles32
from .jit import has_feature, njit, prange
from .vector_ir import I8, I32, I64, V16F, V16I32, call, fma, load, load_f16, splat

ROWS = 16         # weight rows per tile, one per int32 lane of a zmm register
V8I32 = ir.VectorType(I32, 8)


def available() -> bool:
    return has_feature("avx512vnni") and has_feature("avx512bw")


def _arrays(context, builder, sig, args, count):
    return [context.make_array(t)(context, builder, a).data for t, a in zip(sig.args[:count], args[:count])]


def _hsum8(b, f):
    # ggml's hsum_float_8 order over 8 accumulators: ((f0+f4) + (f2+f6)) + ((f1+f5) + (f3+f7))
    h = [b.fadd(f[k], f[k + 4]) for k in range(4)]
    return b.fadd(b.fadd(h[0], h[2]), b.fadd(h[1], h[3]))


def _tile(mode, zero_point=0, with_min=False, tb=1):
    """Intrinsic tile(tout, U, F1, F2, I1, I2, qs, xd, sum4, sum16, sum32, xm, n, Tpad, T4): tout
    float32 [Tpad * 16] = the 16 rows of the tile times every token (mode: see the module docstring;
    T4: Q4_K's tokens below it go through ggml's gemm arithmetic, the others through its gemv's)."""
    def codegen(context, builder, sig, args):
        b = builder
        tout, up, f1, f2, i1, i2, qp, xdp, s4p, s16p, s32p, xmp = _arrays(context, b, sig, args, 12)
        n, Tpad, T4 = args[12], args[13], args[14]
        nb32 = b.udiv(n, _c(I64, 32))

        def vload(p, idx, ty=V16F):              # the 16-row vector at row-group idx
            return load(b, b.gep(p, [b.mul(idx, _c(I64, 16))]), 0, ty, 4)

        def x_at(p, t, stride, idx):
            return b.load(b.gep(p, [b.add(b.mul(t, stride), idx)]))

        def dot4(acc, t, k4):                    # acc + U[k4] . the 4 bytes of token t at 4 * k4
            u = load(b, b.gep(up, [b.mul(k4, _c(I64, 64))]), 0, V16I32, 4)
            xq = splat(b, load(b, b.gep(qp, [b.add(b.mul(t, n), b.mul(k4, _c(I64, 4)))]), 0, I32, 1), V16I32)
            return call(b, "llvm.x86.avx512.vpdpbusd.512", V16I32, [acc, u, xq])

        with cgutils.for_range_slice(b, _c(I64, 0), Tpad, _c(I64, tb)) as (t0, _):
            ts = [b.add(t0, _c(I64, j)) for j in range(tb)]
            nf = 8 if mode in ("lanes", "klanes") else 1
            facc = [[cgutils.alloca_once_value(b, _c(V16F, 0.0)) for _ in range(nf)] for _ in ts]
            macc = [cgutils.alloca_once_value(b, _c(V16F, 0.0)) for _ in ts]
            if mode in ("block", "lanes"):
                with cgutils.for_range(b, nb32) as bl:
                    blk = bl.index
                    a = vload(f1, blk)
                    for j, t in enumerate(ts):
                        dxs = splat(b, x_at(xdp, t, nb32, blk), V16F)
                        if mode == "block":          # Q4_0: the block's exact sum, one fma
                            acc = splat(b, b.mul(x_at(s32p, t, nb32, blk), _c(I32, -zero_point)), V16I32)
                            for k in range(8):
                                acc = dot4(acc, t, b.add(b.mul(blk, _c(I64, 8)), _c(I64, k)))
                            b.store(fma(b, b.sitofp(acc, V16F), b.fmul(a, dxs), b.load(facc[j][0])), facc[j][0])
                            continue
                        scale = b.fmul(a, dxs)
                        for k in range(8):
                            k4 = b.add(b.mul(blk, _c(I64, 8)), _c(I64, k))
                            init = _c(V16I32, 0)
                            if zero_point:
                                init = splat(b, b.mul(x_at(s4p, t, b.mul(nb32, _c(I64, 8)), k4),
                                                      _c(I32, -zero_point)), V16I32)
                            acc = dot4(init, t, k4)
                            b.store(fma(b, scale, b.sitofp(acc, V16F), b.load(facc[j][k])), facc[j][k])
                        if with_min:                 # + m * s (Q8_1's s), one running fma
                            m = vload(f2, blk)
                            b.store(fma(b, m, splat(b, x_at(xmp, t, nb32, blk), V16F), b.load(macc[j])), macc[j])
            else:                                    # K-quants: per super-block
                nsb = b.udiv(n, _c(I64, 256))
                with cgutils.for_range(b, nsb) as sl:
                    sb = sl.index
                    for j, t in enumerate(ts):
                        dx = splat(b, x_at(xdp, t, nsb, sb), V16F)
                        if mode == "superblock":     # Q4_K
                            with b.if_else(b.icmp_signed("<", t0, T4)) as (gemm_rows, gemv_rows):
                                with gemm_rows:          # ggml_gemm_q4_K_8x8: one fma per 64 weights
                                    _q4_k_superblock(b, dot4, vload, x_at, t, sb, nb32, dx, facc[j][0],
                                                     macc[j], i1, i2, f1, f2, s32p, True)
                                with gemv_rows:          # ggml_gemv_q4_K_8x8: one per super-block
                                    _q4_k_superblock(b, dot4, vload, x_at, t, sb, nb32, dx, facc[j][0],
                                                     macc[j], i1, i2, f1, f2, s32p, False)
                            continue
                        isum_p = [cgutils.alloca_once_value(b, _c(V16I32, 0)) for _ in range(8)]
                        msb_p = cgutils.alloca_once_value(b, _c(V16I32, 0))
                        with cgutils.for_range(b, _c(I64, 8)) as gl:   # 32 weights at 32g
                            g = gl.index
                            g32 = b.add(b.mul(sb, _c(I64, 8)), g)
                            for k in range(8):
                                part = dot4(_c(V16I32, 0), t, b.add(b.mul(g32, _c(I64, 8)), _c(I64, k)))
                                if zero_point:           # Q6_K: scales per 16 weights
                                    g16 = b.add(b.mul(g32, _c(I64, 2)), _c(I64, k // 4))
                                    sc = vload(i1, g16, V16I32)
                                else:
                                    sc = vload(i1, g32, V16I32)
                                b.store(b.add(b.load(isum_p[k]), b.mul(part, sc)), isum_p[k])
                            if with_min:
                                S = splat(b, x_at(s32p, t, nb32, g32), V16I32)
                                b.store(b.add(b.load(msb_p), b.mul(vload(i2, g32, V16I32), S)), msb_p)
                        isum = [b.load(v) for v in isum_p]
                        msb = b.load(msb_p)
                        if zero_point:                   # lane k: - 32 (sc_2k S_2k + sc_2k+1 S_2k+1)
                            nb16 = b.udiv(n, _c(I64, 16))
                            for k in range(8):
                                corr = _c(V16I32, 0)
                                for h in range(2):
                                    g16 = b.add(b.mul(sb, _c(I64, 16)), _c(I64, 2 * k + h))
                                    S = splat(b, x_at(s16p, t, nb16, g16), V16I32)
                                    corr = b.add(corr, b.mul(vload(i1, g16, V16I32), S))
                                isum[k] = b.sub(isum[k], b.shl(corr, _c(V16I32, 5)))
                        ddx = b.fmul(dx, vload(f1, sb))
                        for k in range(8):
                            b.store(fma(b, ddx, b.sitofp(isum[k], V16F), b.load(facc[j][k])), facc[j][k])
                        if with_min:                     # Q5_K: + (-(d_x * dmin)) * float(sum m S)
                            nd = b.fneg(b.fmul(dx, vload(f2, sb)))
                            b.store(fma(b, nd, b.sitofp(msb, V16F), b.load(macc[j])), macc[j])
            for j, t in enumerate(ts):
                if mode == "block":
                    res = b.load(facc[j][0])
                elif mode == "superblock":
                    res = b.fsub(b.load(facc[j][0]), b.load(macc[j]))
                else:
                    res = _hsum8(b, [b.load(f) for f in facc[j]])
                    if with_min:
                        res = b.fadd(res, b.load(macc[j]))
                dst = b.gep(tout, [b.mul(t, _c(I64, 16))])
                b.store(res, b.bitcast(dst, V16F.as_pointer()), align=4)
        return context.get_dummy_value()

    @intrinsic
    def tile(typingctx, tout, U, F1, F2, I1, I2, qs, xd, sum4, sum16, sum32, xm, n, Tpad, T4):
        return types.void(tout, U, F1, F2, I1, I2, qs, xd, sum4, sum16, sum32, xm, n, Tpad, T4), codegen
    return tile


def _q4_k_superblock(b, dot4, vload, x_at, t, sb, nb32, dx, facc, macc, i1, i2, f1, f2, s32p, per_pair):
    # one Q4_K super-block of token t into facc / macc: one fma each per 64 weights (per_pair) or
    # per super-block; the 4 pairs of groups of 32 in a loop (a small body keeps compiling quick)
    isb = cgutils.alloca_once_value(b, _c(V16I32, 0))
    msb = cgutils.alloca_once_value(b, _c(V16I32, 0))
    scale, dscale = b.fmul(vload(f1, sb), dx), b.fmul(vload(f2, sb), dx)
    with cgutils.for_range(b, _c(I64, 4)) as pl:
        for h in range(2):
            gi = b.add(b.mul(sb, _c(I64, 8)), b.add(b.mul(pl.index, _c(I64, 2)), _c(I64, h)))
            acc = _c(V16I32, 0)
            for k in range(8):
                acc = dot4(acc, t, b.add(b.mul(gi, _c(I64, 8)), _c(I64, k)))
            b.store(b.add(b.load(isb), b.mul(acc, vload(i1, gi, V16I32))), isb)
            S = splat(b, x_at(s32p, t, nb32, gi), V16I32)
            b.store(b.add(b.load(msb), b.mul(vload(i2, gi, V16I32), S)), msb)
        if per_pair:
            _q4_k_flush(b, isb, msb, scale, dscale, facc, macc)
    if not per_pair:
        _q4_k_flush(b, isb, msb, scale, dscale, facc, macc)


def _q4_k_flush(b, isb, msb, scale, dscale, facc, macc):
    b.store(fma(b, b.sitofp(b.load(isb), V16F), scale, b.load(facc)), facc)
    b.store(fma(b, b.sitofp(b.load(msb), V16F), dscale, b.load(macc)), macc)
    b.store(_c(V16I32, 0), isb)
    b.store(_c(V16I32, 0), msb)


_tile_q4_0 = _tile("block", zero_point=8, tb=8)
_tile_q4_1 = _tile("lanes", with_min=True, tb=2)
_tile_q5_0 = _tile("lanes", zero_point=16, tb=2)
_tile_q5_1 = _tile("lanes", with_min=True, tb=2)
_tile_q8_0 = _tile("lanes", zero_point=128, tb=2)
_tile_q4_k = _tile("superblock", tb=4)
_tile_q5_k = _tile("klanes", with_min=True, tb=1)
_tile_q6_k = _tile("klanes", zero_point=32, tb=1)


# ---- repacking: rows r0 .. r0 + nr of the raw blocks -> U and the per-row scales ---------------------

def _repack(block_bytes, weights_per_block, groups_of):
    """Intrinsic repack(U, F1, F2, I1, I2, data, r0, nr). `groups_of(b, blk)` gives, for a block, a list
    of (x offset, u <32 x i8>) and a dict of per-row values {(array, index within the block): value}."""
    def codegen(context, builder, sig, args):
        b = builder
        up, *outs = _arrays(context, b, sig, args, 5)
        darr = context.make_array(sig.args[5])(context, b, args[5])
        r0, nr = args[6], args[7]
        row_bytes = b.extract_value(darr.strides, 0)
        n_blocks = b.udiv(b.extract_value(darr.shape, 1), _c(I64, block_bytes))
        with cgutils.for_range(b, nr) as rl:
            i = rl.index
            row = b.gep(darr.data, [b.mul(b.add(r0, i), row_bytes)])
            with cgutils.for_range(b, n_blocks) as bl:
                blk = b.gep(row, [b.mul(bl.index, _c(I64, block_bytes))])
                words, values = groups_of(b, blk)
                for xo, u in words:                 # each dword to its row's slot of line k4
                    k4 = b.udiv(b.add(b.mul(bl.index, _c(I64, weights_per_block)), _c(I64, xo)), _c(I64, 4))
                    dw = b.bitcast(u, V8I32)
                    for w8 in range(8):
                        dst = b.gep(up, [b.add(b.mul(b.add(k4, _c(I64, w8)), _c(I64, 64)), b.mul(i, _c(I64, 4)))])
                        b.store(b.extract_element(dw, _c(I32, w8)), b.bitcast(dst, I32.as_pointer()), align=4)
                for (which, per_block, idx), v in values.items():
                    slot = b.add(b.mul(b.add(b.mul(bl.index, _c(I64, per_block)), _c(I64, idx)), _c(I64, 16)), i)
                    b.store(v, b.gep(outs[which], [slot]))
        return context.get_dummy_value()

    @intrinsic
    def repack(typingctx, U, F1, F2, I1, I2, data, r0, nr):
        return types.void(U, F1, F2, I1, I2, data, r0, nr), codegen
    return repack


# values keys: (0: F1, 1: F2, 2: I1, 3: I2; entries per block; index within the block)

def _legacy(nibble_offset, d_min=False, qh_offset=None, signed=False):
    def groups(b, blk):
        if signed:                                   # Q8_0: u = w + 128 (zero point 128)
            u = b.xor(_load32(b, blk, 2), _c(ir.VectorType(I8, 32), -128))
        else:
            u = _nibbles32(b, blk, nibble_offset)
            if qh_offset is not None:
                u = b.or_(u, _bits32(b, blk, qh_offset))
        values = {(0, 1, 0): load_f16(b, blk, 0)}
        if d_min:
            values[(1, 1, 0)] = load_f16(b, blk, 2)
        return [(0, u)], values
    return groups


def _k4(qh_offset=None, qs_offset=16):
    def groups(b, blk):
        words, values = [], {(0, 1, 0): load_f16(b, blk, 0), (1, 1, 0): load_f16(b, blk, 2)}
        for g, (xo, u, scv, m) in enumerate(_k_groups_q4_k(b, blk, qh_offset, qs_offset)):
            words.append((xo, u))
            values[(2, 8, g)] = b.extract_element(scv, _c(I32, 0))
            values[(3, 8, g)] = m
        return words, values
    return groups


def _q6_k(b, blk):
    words, values = [], {(0, 1, 0): load_f16(b, blk, 208)}
    for m, (xo, u, scv, _) in enumerate(_k_groups_q6_k(b, blk)):
        words.append((xo, u))
        for h in range(2):
            values[(2, 16, 2 * m + h)] = b.extract_element(scv, _c(I32, 4 * h))
    return words, values


repack_q4_0 = _repack(18, 32, _legacy(2))
repack_q4_1 = _repack(20, 32, _legacy(4, d_min=True))
repack_q5_0 = _repack(22, 32, _legacy(6, qh_offset=2))
repack_q5_1 = _repack(24, 32, _legacy(8, d_min=True, qh_offset=4))
repack_q8_0 = _repack(34, 32, _legacy(None, signed=True))
repack_q4_k = _repack(144, 256, _k4())
repack_q5_k = _repack(176, 256, _k4(qh_offset=16, qs_offset=48))
repack_q6_k = _repack(210, 256, _q6_k)


# ---- the activations' side and the driver --------------------------------------------------------------

@njit(inline="always")
def _x_side(qs, d, s):
    # qs int8 [T, n] (d [T, n / 32 or 256], s [T, n / 32]) -> flat arrays padded to whole token
    # blocks: qs, d, the sums of q per 4, 16 and 32 values, and Q8_1's s
    T, n = qs.shape
    Tpad = (T + 7) // 8 * 8
    qpad = np.zeros(Tpad * n, np.int8)
    xd = np.zeros(Tpad * d.shape[1], np.float32)
    sum4 = np.zeros(Tpad * (n // 4), np.int32)
    sum16 = np.zeros(Tpad * (n // 16), np.int32)
    sum32 = np.zeros(Tpad * (n // 32), np.int32)
    xm = np.zeros(Tpad * (n // 32), np.float32)
    for t in range(T):
        for k in range(n):
            qpad[t * n + k] = qs[t, k]
        for k in range(d.shape[1]):
            xd[t * d.shape[1] + k] = d[t, k]
        for g in range(n // 4):
            v = np.int32(0)
            for k in range(4):
                v += np.int32(qs[t, 4 * g + k])
            sum4[t * (n // 4) + g] = v
            sum16[t * (n // 16) + g // 4] += v
            sum32[t * (n // 32) + g // 8] += v
        for g in range(n // 32):
            xm[t * (n // 32) + g] = s[t, g]
    return qpad, xd, sum4, sum16, sum32, xm, Tpad


@njit(inline="always")
def _store_tile(out, tout, T, r0, nr):
    for t in range(T):
        for i in range(nr):
            out[t, r0 + i] = tout[t * ROWS + i]


# matmul_*_q8(out, data, qs, d, s): x [T, n] given as its 8-bit form (qs int8 [T, n], d [T, n / 32 or
# n / 256], s [T, n / 32]) -> out [T, rows] = x @ W^T. Spelled out per type so that numba compiles only
# the types a model uses.


@njit(parallel=True, cache=True)
def matmul_q4_0_q8(out, data, qs, d, s):
    T, n = qs.shape
    rows = data.shape[0]
    qpad, xd, sum4, sum16, sum32, xm, Tpad = _x_side(qs, d, s)
    for c in prange((rows + ROWS - 1) // ROWS):
        r0 = c * ROWS
        nr = min(ROWS, rows - r0)
        U = np.empty(n // 4 * 64, np.uint8)
        F1 = np.empty(n // 16 * ROWS, np.float32)
        F2 = np.empty(n // 16 * ROWS, np.float32)
        I1 = np.empty(n // 16 * ROWS, np.int32)
        I2 = np.empty(n // 16 * ROWS, np.int32)
        tout = np.empty(Tpad * ROWS, np.float32)
        repack_q4_0(U, F1, F2, I1, I2, data, r0, nr)
        _tile_q4_0(tout, U, F1, F2, I1, I2, qpad, xd, sum4, sum16, sum32, xm, n, Tpad, T // 4 * 4)
        _store_tile(out, tout, T, r0, nr)


@njit(parallel=True, cache=True)
def matmul_q4_1_q8(out, data, qs, d, s):
    T, n = qs.shape
    rows = data.shape[0]
    qpad, xd, sum4, sum16, sum32, xm, Tpad = _x_side(qs, d, s)
    for c in prange((rows + ROWS - 1) // ROWS):
        r0 = c * ROWS
        nr = min(ROWS, rows - r0)
        U = np.empty(n // 4 * 64, np.uint8)
        F1 = np.empty(n // 16 * ROWS, np.float32)
        F2 = np.empty(n // 16 * ROWS, np.float32)
        I1 = np.empty(n // 16 * ROWS, np.int32)
        I2 = np.empty(n // 16 * ROWS, np.int32)
        tout = np.empty(Tpad * ROWS, np.float32)
        repack_q4_1(U, F1, F2, I1, I2, data, r0, nr)
        _tile_q4_1(tout, U, F1, F2, I1, I2, qpad, xd, sum4, sum16, sum32, xm, n, Tpad, T // 4 * 4)
        _store_tile(out, tout, T, r0, nr)


@njit(parallel=True, cache=True)
def matmul_q5_0_q8(out, data, qs, d, s):
    T, n = qs.shape
    rows = data.shape[0]
    qpad, xd, sum4, sum16, sum32, xm, Tpad = _x_side(qs, d, s)
    for c in prange((rows + ROWS - 1) // ROWS):
        r0 = c * ROWS
        nr = min(ROWS, rows - r0)
        U = np.empty(n // 4 * 64, np.uint8)
        F1 = np.empty(n // 16 * ROWS, np.float32)
        F2 = np.empty(n // 16 * ROWS, np.float32)
        I1 = np.empty(n // 16 * ROWS, np.int32)
        I2 = np.empty(n // 16 * ROWS, np.int32)
        tout = np.empty(Tpad * ROWS, np.float32)
        repack_q5_0(U, F1, F2, I1, I2, data, r0, nr)
        _tile_q5_0(tout, U, F1, F2, I1, I2, qpad, xd, sum4, sum16, sum32, xm, n, Tpad, T // 4 * 4)
        _store_tile(out, tout, T, r0, nr)


@njit(parallel=True, cache=True)
def matmul_q5_1_q8(out, data, qs, d, s):
    T, n = qs.shape
    rows = data.shape[0]
    qpad, xd, sum4, sum16, sum32, xm, Tpad = _x_side(qs, d, s)
    for c in prange((rows + ROWS - 1) // ROWS):
        r0 = c * ROWS
        nr = min(ROWS, rows - r0)
        U = np.empty(n // 4 * 64, np.uint8)
        F1 = np.empty(n // 16 * ROWS, np.float32)
        F2 = np.empty(n // 16 * ROWS, np.float32)
        I1 = np.empty(n // 16 * ROWS, np.int32)
        I2 = np.empty(n // 16 * ROWS, np.int32)
        tout = np.empty(Tpad * ROWS, np.float32)
        repack_q5_1(U, F1, F2, I1, I2, data, r0, nr)
        _tile_q5_1(tout, U, F1, F2, I1, I2, qpad, xd, sum4, sum16, sum32, xm, n, Tpad, T // 4 * 4)
        _store_tile(out, tout, T, r0, nr)


@njit(parallel=True, cache=True)
def matmul_q8_0_q8(out, data, qs, d, s):
    T, n = qs.shape
    rows = data.shape[0]
    qpad, xd, sum4, sum16, sum32, xm, Tpad = _x_side(qs, d, s)
    for c in prange((rows + ROWS - 1) // ROWS):
        r0 = c * ROWS
        nr = min(ROWS, rows - r0)
        U = np.empty(n // 4 * 64, np.uint8)
        F1 = np.empty(n // 16 * ROWS, np.float32)
        F2 = np.empty(n // 16 * ROWS, np.float32)
        I1 = np.empty(n // 16 * ROWS, np.int32)
        I2 = np.empty(n // 16 * ROWS, np.int32)
        tout = np.empty(Tpad * ROWS, np.float32)
        repack_q8_0(U, F1, F2, I1, I2, data, r0, nr)
        _tile_q8_0(tout, U, F1, F2, I1, I2, qpad, xd, sum4, sum16, sum32, xm, n, Tpad, T // 4 * 4)
        _store_tile(out, tout, T, r0, nr)


@njit(parallel=True, cache=True)
def matmul_q4_k_q8(out, data, qs, d, s):
    T, n = qs.shape
    rows = data.shape[0]
    qpad, xd, sum4, sum16, sum32, xm, Tpad = _x_side(qs, d, s)
    for c in prange((rows + ROWS - 1) // ROWS):
        r0 = c * ROWS
        nr = min(ROWS, rows - r0)
        U = np.empty(n // 4 * 64, np.uint8)
        F1 = np.empty(n // 16 * ROWS, np.float32)
        F2 = np.empty(n // 16 * ROWS, np.float32)
        I1 = np.empty(n // 16 * ROWS, np.int32)
        I2 = np.empty(n // 16 * ROWS, np.int32)
        tout = np.empty(Tpad * ROWS, np.float32)
        repack_q4_k(U, F1, F2, I1, I2, data, r0, nr)
        _tile_q4_k(tout, U, F1, F2, I1, I2, qpad, xd, sum4, sum16, sum32, xm, n, Tpad, T // 4 * 4)
        _store_tile(out, tout, T, r0, nr)


@njit(parallel=True, cache=True)
def matmul_q5_k_q8(out, data, qs, d, s):
    T, n = qs.shape
    rows = data.shape[0]
    qpad, xd, sum4, sum16, sum32, xm, Tpad = _x_side(qs, d, s)
    for c in prange((rows + ROWS - 1) // ROWS):
        r0 = c * ROWS
        nr = min(ROWS, rows - r0)
        U = np.empty(n // 4 * 64, np.uint8)
        F1 = np.empty(n // 16 * ROWS, np.float32)
        F2 = np.empty(n // 16 * ROWS, np.float32)
        I1 = np.empty(n // 16 * ROWS, np.int32)
        I2 = np.empty(n // 16 * ROWS, np.int32)
        tout = np.empty(Tpad * ROWS, np.float32)
        repack_q5_k(U, F1, F2, I1, I2, data, r0, nr)
        _tile_q5_k(tout, U, F1, F2, I1, I2, qpad, xd, sum4, sum16, sum32, xm, n, Tpad, T // 4 * 4)
        _store_tile(out, tout, T, r0, nr)


@njit(parallel=True, cache=True)
def matmul_q6_k_q8(out, data, qs, d, s):
    T, n = qs.shape
    rows = data.shape[0]
    qpad, xd, sum4, sum16, sum32, xm, Tpad = _x_side(qs, d, s)
    for c in prange((rows + ROWS - 1) // ROWS):
        r0 = c * ROWS
        nr = min(ROWS, rows - r0)
        U = np.empty(n // 4 * 64, np.uint8)
        F1 = np.empty(n // 16 * ROWS, np.float32)
        F2 = np.empty(n // 16 * ROWS, np.float32)
        I1 = np.empty(n // 16 * ROWS, np.int32)
        I2 = np.empty(n // 16 * ROWS, np.int32)
        tout = np.empty(Tpad * ROWS, np.float32)
        repack_q6_k(U, F1, F2, I1, I2, data, r0, nr)
        _tile_q6_k(tout, U, F1, F2, I1, I2, qpad, xd, sum4, sum16, sum32, xm, n, Tpad, T // 4 * 4)
        _store_tile(out, tout, T, r0, nr)
