"""Integer dot products of quantized weight rows with 8-bit activations, as llama.cpp computes them.

llama.cpp multiplies a quantized weight by activations first quantized to 8 bits (the weight type's
vec_dot_type: Q8_0 for the 32-weight types, Q8_K for the K-quants) and sums integer products. This
module builds the same sums in LLVM IR with the instruction the *compile target* has (jit.has_feature,
never the host): `vpdpbusd` with AVX-512 VNNI or AVX-VNNI, `vpmaddubsw` + `vpmaddwd` on AVX2, `sdot` on
aarch64 with the dot-product extension. `int_dot()` names the one in use; with none of them the float
kernels (legacy.py, kquants.py) run on the rounded activations instead, and they stay the reference.

Activations, per vector of n values (runtime/ops.py quantize_activations):
    qs int8 [n]       the 8-bit values, |q| <= 127
    d  float32 [n / 32] (Q8_0) or [n / 256] (Q8_K)    the block scales: x = d * q
    s  int32 [n / 16] the sum of q over each 16 values (act_sums; llama.cpp's Q8_K bsums)

Weights unpack to unsigned bytes u <= 63 with the type's zero point o (w = scale * (u - o), or
scale * u - min): the integer sum of a group is sum(u * q) - o * sum(q), which is what `vpdpbusd`
(unsigned x signed bytes) computes; sum(q) comes from s. Q8_0's signed weights go through the dot
primitive's own signed form. Integer sums are exact, so the only rounding is in the float steps:
    32-weight types, per block b:   acc += (d_w * d_x) * float(i32 lanes of sum)   (8 float lanes)
    K-quants, per super-block:      int lanes += scale_g * sum_g over its groups, then one float step
which is llama.cpp's order of operations up to how the lanes are summed.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import has_feature, njit, prange
from .vector_ir import (F32, I8, I32, I64, V16I32, call, contiguous, fma, hsum, load, load_f16, row_dot,
                        splat)

V8I32, V4I32 = ir.VectorType(I32, 8), ir.VectorType(I32, 4)
V8F = ir.VectorType(F32, 8)
V32I8, V16I8 = ir.VectorType(I8, 32), ir.VectorType(I8, 16)
V16I16 = ir.VectorType(ir.IntType(16), 16)


def int_dot() -> str | None:
    """The integer dot-product instruction the compile target has, or None (float kernels)."""
    if has_feature("avx512vnni") and has_feature("avx512vl"):
        return "avx512vnni"
    if has_feature("avxvnni"):
        return "avxvnni"
    if has_feature("avx2"):
        return "avx2"
    if has_feature("dotprod"):
        return "sdot"
    return None


def _c(ty, v):
    return ir.Constant(ty, [v] * ty.count) if isinstance(ty, ir.VectorType) else ir.Constant(ty, v)


def idot(b, acc, u, q):
    """acc <8 x i32> + the sums of u * q over each 4 consecutive bytes; u <32 x i8> unsigned (<= 127),
    q <32 x i8> signed."""
    kind = int_dot()
    if kind in ("avx512vnni", "avxvnni"):
        return call(b, "llvm.x86.avx512.vpdpbusd.256", V8I32,
                    [acc, b.bitcast(u, V8I32), b.bitcast(q, V8I32)])
    if kind == "avx2":                       # u * q pairs fit in int16: 2 * 63 * 127 (or 2 * 127 * 127)
        p16 = call(b, "llvm.x86.avx2.pmadd.ub.sw", V16I16, [u, q])
        return b.add(acc, call(b, "llvm.x86.avx2.pmadd.wd", V8I32, [p16, _c(V16I16, 1)]))
    if kind == "sdot":                       # u <= 127 is the same byte signed
        halves = []
        for h in range(2):
            idx = ir.Constant(ir.VectorType(I32, 16), list(range(16 * h, 16 * h + 16)))
            idx4 = ir.Constant(ir.VectorType(I32, 4), list(range(4 * h, 4 * h + 4)))
            a4 = b.shuffle_vector(acc, acc, idx4)
            halves.append(call(b, "llvm.aarch64.neon.sdot.v4i32.v16i8", V4I32,
                               [a4, b.shuffle_vector(u, u, idx), b.shuffle_vector(q, q, idx)]))
        return b.shuffle_vector(halves[0], halves[1], ir.Constant(ir.VectorType(I32, 8), list(range(8))))
    raise AssertionError("no integer dot product on this target")


def idot_signed(b, acc, w, q):
    """idot for signed weight bytes w (Q8_0): (acc', o) with acc' = acc + sum(w * q) + o * sum(q).
    VNNI multiplies unsigned by signed bytes: w + 128 (o = 128; the caller subtracts 128 * sum(q)
    through acc). AVX2's vpmaddubsw would saturate on (w + 128) * q pairs, so it takes |w| and q with
    w's sign instead (o = 0), as llama.cpp does; sdot multiplies signed bytes (o = 0)."""
    kind = int_dot()
    if kind in ("avx512vnni", "avxvnni"):
        return idot(b, acc, b.xor(w, _c(V32I8, -128)), q), 128
    if kind == "avx2":
        absw = call(b, "llvm.abs.v32i8", V32I8, [w, ir.Constant(ir.IntType(1), 0)])
        sq = call(b, "llvm.x86.avx2.psign.b", V32I8, [q, w])
        return idot(b, acc, absw, sq), 0
    return idot(b, acc, w, q), 0


# Decode streams each weight row once from memory (the model does not fit the caches), through the
# mmap's 4 KiB pages, where the hardware prefetchers stop at every page boundary. The dot products
# ask for the weight bytes PREFETCH ahead of the block they unpack (the rows that follow, past a row's
# end): +6-8% decode on a Qwen2.5-0.5B-shaped Q4_K_M (CPU time, old/new alternated in one process;
# 1 KiB gained nothing, 4 KiB less). It changes no value.
PREFETCH = 2048


def prefetch(b, ptr, distance):
    """A software prefetch (prefetcht0; prfm on aarch64) of the byte `distance` after ptr: it changes
    no value and never faults, even past the end of the weights."""
    p = b.bitcast(b.gep(ptr, [ir.Constant(I64, distance)]), ir.IntType(8).as_pointer())
    call(b, "llvm.prefetch.p0i8", ir.VoidType(), [p, _c(I32, 0), _c(I32, 3), _c(I32, 1)])


def _load32(b, base, offset):
    return load(b, base, offset, V32I8, 1)


def _join16(b, lo, hi):
    # two <16 x i8> -> <32 x i8> (lo first)
    return b.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(I32, 32), list(range(32))))


def _nibbles32(b, blk, offset):
    # 16 bytes at offset -> <32 x i8>: their low nibbles (weights 0-15), then high nibbles (16-31)
    q = load(b, blk, offset, V16I8, 1)
    return _join16(b, b.and_(q, _c(V16I8, 15)), b.lshr(q, _c(V16I8, 4)))


def _bits32(b, blk, offset):
    # the little-endian uint32 at offset as <32 x i8>: byte j = 16 if bit j is set, else 0
    mask = b.bitcast(load(b, blk, offset, I32, 1), ir.VectorType(ir.IntType(1), 32))
    return b.select(mask, _c(V32I8, 16), _c(V32I8, 0))


# ---- the 32-weight types against Q8_0 activations ---------------------------------------------------
# unpack(b, blk) -> (u or w <32 x i8>, signed?, zero point o, d_w float, m float or None)

def _unpack_q4_0(b, blk):
    return _nibbles32(b, blk, 2), False, 8, load_f16(b, blk, 0), None


def _unpack_q4_1(b, blk):
    return _nibbles32(b, blk, 4), False, 0, load_f16(b, blk, 0), load_f16(b, blk, 2)


def _unpack_q5_0(b, blk):
    return b.or_(_nibbles32(b, blk, 6), _bits32(b, blk, 2)), False, 16, load_f16(b, blk, 0), None


def _unpack_q5_1(b, blk):
    u = b.or_(_nibbles32(b, blk, 8), _bits32(b, blk, 4))
    return u, False, 0, load_f16(b, blk, 0), load_f16(b, blk, 2)


def _unpack_q8_0(b, blk):
    return _load32(b, blk, 2), True, 0, load_f16(b, blk, 0), None


def _dot_q8_0_blocks(block_bytes, unpack, repacked=False, n_vec=1, prescaled=False):
    """Intrinsic dot(row, qs, d, aux) -> float32 for a 32-weight type: row uint8 [nb * block_bytes],
    qs int8 [nb * 32], d float32 [nb]; aux is Q8_1's s float32 [nb] for the types with a min (Q4_1,
    Q5_1), else the sums of qs per 4 values, int32 [nb * 8], which take the zero point out lane by lane.
    The arithmetic of ggml_vec_dot_*_q8_0 / q8_1 on x86 (AVX2 / AVX512-VNNI): lane j of a block is the
    exact integer sum over its weights 4j .. 4j + 3, acc = fma(d_w * d_x, float(lane), acc) per block,
    the 8 lanes summed by halves, then + sum of fma(m, s) for the mins. `repacked` (Q4_0, which
    llama.cpp repacks into 8-row groups on AVX2 machines and multiplies in ggml_gemv/gemm_q4_0_8x8_q8_0):
    acc = fma(float(integer sum of the block), d_w * d_x, acc), one float per row.
    n_vec > 1: dot(row, qs, d, aux, j) -> n_vec float32, the dots of the row with vectors j ..
    j + n_vec - 1 of qs [B, n], d, aux [B, ...]: each block is unpacked once for all of them, and
    each result has the bits of the single dot (batch_dot).
    `prescaled`: aux holds -o times the sums per 4 (the kernel multiplied them once per call, not each
    row per block: +15-20% on Q5_0 / Q8_0 rows), for the types with a zero point o."""
    def codegen(context, builder, sig, args):
        b = builder
        rp, vecs, n = _operands(context, b, sig, args, n_vec)
        nb = b.udiv(n, _c(I64, 32))
        facc = [cgutils.alloca_once_value(b, _c(V8F, 0.0)) for _ in vecs]
        mtot = [cgutils.alloca_once_value(b, _c(F32, 0.0)) for _ in vecs]
        with cgutils.for_range(b, nb) as loop:
            i = loop.index
            blk = b.gep(rp, [b.mul(i, _c(I64, block_bytes))])
            prefetch(b, blk, PREFETCH)
            u, signed, o, dw, m = unpack(b, blk)
            if signed and int_dot() in ("avx512vnni", "avxvnni"):
                o = 128                           # idot_signed's w + 128
            for (qp, dp, ap), fa, mt in zip(vecs, facc, mtot):
                q = _load32(b, b.gep(qp, [b.mul(i, _c(I64, 32))]), 0)
                init = _c(V8I32, 0)
                if o:                             # - o * (sum of q over each lane's 4 values)
                    init = load(b, b.gep(ap, [b.mul(i, _c(I64, 8))]), 0, V8I32, 4)
                    if not prescaled:
                        init = b.mul(init, _c(V8I32, -o))
                acc = idot_signed(b, init, u, q)[0] if signed else idot(b, init, u, q)
                dx = b.load(b.gep(dp, [i]))
                if repacked:
                    b.store(fma(b, b.sitofp(hsum(b, acc), F32), b.fmul(dw, dx), b.load(mt)), mt)
                else:
                    b.store(fma(b, splat(b, b.fmul(dw, dx), V8F), b.sitofp(acc, V8F), b.load(fa)), fa)
                if m is not None:
                    b.store(fma(b, m, b.load(b.gep(ap, [i])), b.load(mt)), mt)
        if repacked:
            res = [b.load(mt) for mt in mtot]
        else:
            res = [b.fadd(hsum(b, b.load(fa)), b.load(mt)) for fa, mt in zip(facc, mtot)]
        return _results(context, b, sig, res)

    def batch(context, builder, sig, args):
        # n_vec vectors at once: d (and aux, for the types with a min) come transposed, [nb, B], so
        # the n_vec scales of block i are one vector load, d_w * d_x is one multiply for all of them,
        # and the mins (and the repacked sums) run as one fma on an <n_vec x float>. Lane v computes
        # exactly the single dot's operations, so each result keeps its bits.
        b = builder
        VNF = ir.VectorType(F32, n_vec)
        row, qs, dT, aux = (context.make_array(t)(context, b, a) for t, a in zip(sig.args[:4], args[:4]))
        j0 = b.sext(args[4], I64) if args[4].type.width < 64 else args[4]
        n, B = cgutils.unpack_tuple(b, qs.shape)[1], cgutils.unpack_tuple(b, dT.shape)[1]
        qps = [b.gep(qs.data, [b.mul(b.add(j0, _c(I64, v)), n)]) for v in range(n_vec)]
        # aux: for the types with a zero point the sums per 4 of each vector, [B, nb * 8], read by row;
        # for those with a min Q8_1's s, transposed [nb, B] like d (the rows below go unused)
        acols = cgutils.unpack_tuple(b, aux.shape)[1]
        aps = [b.gep(aux.data, [b.mul(b.add(j0, _c(I64, v)), acols)]) for v in range(n_vec)]
        nb = b.udiv(n, _c(I64, 32))
        facc = [cgutils.alloca_once_value(b, _c(V8F, 0.0)) for _ in range(n_vec)]
        mtot = cgutils.alloca_once_value(b, _c(VNF, 0.0))
        with cgutils.for_range(b, nb) as loop:
            i = loop.index
            blk = b.gep(row.data, [b.mul(i, _c(I64, block_bytes))])
            prefetch(b, blk, PREFETCH)
            u, signed, o, dw, m = unpack(b, blk)
            if signed and int_dot() in ("avx512vnni", "avxvnni"):
                o = 128                           # idot_signed's w + 128
            at = b.add(b.mul(i, B), j0)           # block i's column j0 of the transposed arrays
            dwdx = b.fmul(splat(b, dw, VNF), load(b, b.gep(dT.data, [at]), 0, VNF, 4))
            accs = []
            for v in range(n_vec):
                q = _load32(b, b.gep(qps[v], [b.mul(i, _c(I64, 32))]), 0)
                init = _c(V8I32, 0)
                if o:
                    init = load(b, b.gep(aps[v], [b.mul(i, _c(I64, 8))]), 0, V8I32, 4)
                    if not prescaled:
                        init = b.mul(init, _c(V8I32, -o))
                acc = idot_signed(b, init, u, q)[0] if signed else idot(b, init, u, q)
                if repacked:
                    accs.append(acc)
                else:
                    lane = b.shuffle_vector(dwdx, dwdx, ir.Constant(V8I32, [v] * 8))
                    b.store(fma(b, lane, b.sitofp(acc, V8F), b.load(facc[v])), facc[v])
            if repacked:
                b.store(fma(b, b.sitofp(_hsums(b, accs), VNF), dwdx, b.load(mtot)), mtot)
            if m is not None:
                s = load(b, b.gep(aux.data, [at]), 0, VNF, 4)
                b.store(fma(b, splat(b, m, VNF), s, b.load(mtot)), mtot)
        mt = b.load(mtot)
        lanes = [b.extract_element(mt, _c(I32, v)) for v in range(n_vec)]
        if repacked:
            res = lanes
        else:
            res = [b.fadd(hsum(b, b.load(fa)), lane) for fa, lane in zip(facc, lanes)]
        return _results(context, b, sig, res)
    return row_dot(codegen, 4) if n_vec == 1 else batch_dot(batch, n_vec)


def _hsums(b, vs):
    """[n of <8 x i32>] -> <n x i32> (n = 2 or 4): lane v is the sum of the lanes of vs[v] (exact, so
    in any order: halves, then pairs of vectors side by side)."""
    idx = lambda *k: ir.Constant(ir.VectorType(I32, len(k)), list(k))    # noqa: E731
    h = [b.add(b.shuffle_vector(v, v, idx(0, 1, 2, 3)), b.shuffle_vector(v, v, idx(4, 5, 6, 7))) for v in vs]
    p = [b.add(b.shuffle_vector(x, y, idx(0, 4, 1, 5)), b.shuffle_vector(x, y, idx(2, 6, 3, 7)))
         for x, y in zip(h[0::2], h[1::2])]       # [x0+x2, y0+y2, x1+x3, y1+y3]
    if len(p) == 1:
        return b.add(b.shuffle_vector(p[0], p[0], idx(0, 1)), b.shuffle_vector(p[0], p[0], idx(2, 3)))
    return b.add(b.shuffle_vector(p[0], p[1], idx(0, 1, 4, 5)), b.shuffle_vector(p[0], p[1], idx(2, 3, 6, 7)))


def _operands(context, b, sig, args, n_vec):
    # (row pointer, [(qs, d, aux) pointers of each vector], n): one vector's 1-d arrays (n_vec = 1),
    # else rows j .. j + n_vec - 1 of 2-d [B, ...] arrays (args row, qs, d, aux, j)
    rp = context.make_array(sig.args[0])(context, b, args[0]).data
    arrays = [context.make_array(t)(context, b, a) for t, a in zip(sig.args[1:4], args[1:4])]
    if n_vec == 1:
        return rp, [tuple(a.data for a in arrays)], arrays[0].nitems
    j0 = b.sext(args[4], I64) if args[4].type.width < 64 else args[4]
    cols = [cgutils.unpack_tuple(b, a.shape)[1] for a in arrays]
    vecs = [tuple(b.gep(a.data, [b.mul(b.add(j0, _c(I64, j)), c)]) for a, c in zip(arrays, cols))
            for j in range(n_vec)]
    return rp, vecs, cols[0]


def _results(context, b, sig, res):
    return res[0] if len(res) == 1 else context.make_tuple(b, sig.return_type, res)


def batch_dot(codegen, n_vec):
    """An intrinsic `dot(row, qs, d, aux, j) -> UniTuple(float32, n_vec)`: row uint8 1-d, qs/d/aux
    C-contiguous 2-d [B, ...], j an integer (the first of the n_vec vectors), body `codegen`."""
    @intrinsic
    def dot(typingctx, row, qs, d, aux, j):
        ok = (contiguous(row) and all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
                                      for a in (qs, d, aux)) and isinstance(j, types.Integer))
        return (types.UniTuple(types.float32, n_vec)(row, qs, d, aux, j), codegen) if ok else None
    return dot


def _variants(make, *args, **kwargs):
    # (dot of one vector, of 2 vectors, of 4 vectors): a decode batch's vectors in fours, then a two,
    # then a one (B = 1..8: each block unpacked ceil(B / 4) + 1 times at most, instead of B times)
    return tuple(make(*args, n_vec=k, **kwargs) for k in (1, 2, 4))


dot_q4_0, dot2_q4_0, dot4_q4_0 = _variants(_dot_q8_0_blocks, 18, _unpack_q4_0, repacked=True,
                                           prescaled=True)
dot_q4_1, dot2_q4_1, dot4_q4_1 = _variants(_dot_q8_0_blocks, 20, _unpack_q4_1)
dot_q5_0, dot2_q5_0, dot4_q5_0 = _variants(_dot_q8_0_blocks, 22, _unpack_q5_0, prescaled=True)
dot_q5_1, dot2_q5_1, dot4_q5_1 = _variants(_dot_q8_0_blocks, 24, _unpack_q5_1)
dot_q8_0, dot2_q8_0, dot4_q8_0 = _variants(_dot_q8_0_blocks, 34, _unpack_q8_0, prescaled=True)
# the zero point of Q8_0's signed weights in the product: 128 where VNNI multiplies w + 128 (idot_signed)
Q8_0_ZERO_POINT = 128 if int_dot() in ("avx512vnni", "avxvnni") else 0


# ---- the K-quants against Q8_K activations ----------------------------------------------------------

def scale_min_k4(b, blk, j, base=4):
    """The 6-bit scale and min of sub-block j (0..7) from the 12 bytes at blk + base, as i32
    (get_scale_min_k4 of ggml-quants.c)."""
    def byte(k):
        return b.zext(load(b, blk, base + k, I8, 1), I32)
    c = lambda v: _c(I32, v)  # noqa: E731
    if j < 4:
        return b.and_(byte(j), c(63)), b.and_(byte(j + 4), c(63))
    sc = b.or_(b.and_(byte(j + 4), c(15)), b.shl(b.lshr(byte(j - 4), c(6)), c(4)))
    m = b.or_(b.lshr(byte(j + 4), c(4)), b.shl(b.lshr(byte(j), c(6)), c(4)))
    return sc, m


def _k_groups_q4_k(b, blk, qh_offset=None, qs_offset=16):
    # 8 groups of 32: u = nibble j % 2 of qs[32 (j // 2) + l] (| bit j of qh[l] << 4 for Q5_K);
    # yields (x offset, u, scale i32, min i32)
    for j in range(8):
        q = _load32(b, blk, qs_offset + 32 * (j // 2))
        u = b.and_(b.lshr(q, _c(V32I8, 4 * (j % 2))), _c(V32I8, 15))
        if qh_offset is not None:
            h = b.and_(b.lshr(_load32(b, blk, qh_offset), _c(V32I8, j)), _c(V32I8, 1))
            u = b.or_(u, b.shl(h, _c(V32I8, 4)))
        sc, m = scale_min_k4(b, blk, j)
        yield 32 * j, u, splat(b, sc, V8I32), m


def _k_groups_q6_k(b, blk):
    # 8 pairs of 16-weight groups (positions 32m .. 32m + 31, m = 4h + k): u = nibble k // 2 of
    # ql[64h + 32 (k % 2) + l] | bits 2k of qh[32h + l] << 4; scales int8 sc[2m], sc[2m + 1]
    sc16 = _q6_k_scales(b, blk)
    for m in range(8):
        h, k = divmod(m, 4)
        ql = _load32(b, blk, 64 * h + 32 * (k % 2))
        qh = _load32(b, blk, 128 + 32 * h)
        u = b.or_(b.and_(b.lshr(ql, _c(V32I8, 4 * (k // 2))), _c(V32I8, 15)),
                  b.shl(b.and_(b.lshr(qh, _c(V32I8, 2 * k)), _c(V32I8, 3)), _c(V32I8, 4)))
        scv = b.shuffle_vector(sc16, sc16, ir.Constant(V8I32, [2 * m] * 4 + [2 * m + 1] * 4))
        yield 32 * m, u, scv, None


def _q6_k_scales(b, blk):
    return b.sext(load(b, blk, 192, V16I8, 1), V16I32)


def _sum(b, values):
    total = values[0]
    for v in values[1:]:
        total = b.add(total, v)
    return total


def _pair_sums(b, v16):
    # <16 x i32> -> <8 x i32>: lane k = v[2k] + v[2k + 1]
    even = b.shuffle_vector(v16, v16, ir.Constant(V8I32, list(range(0, 16, 2))))
    odd = b.shuffle_vector(v16, v16, ir.Constant(V8I32, list(range(1, 16, 2))))
    return b.add(even, odd)


def _dot_q8_k(block_bytes, groups, d_offset, dmin_offset=None, zero_point=False, repacked=False,
              n_vec=1):
    """Intrinsic dot(row, qs, d, s) -> float32 for a K-quant: row uint8 [nsb * block_bytes],
    qs int8 [nsb * 256], d float32 [nsb], s int32 [nsb * 16] (sums of qs per 16: Q8_K's bsums).
    The arithmetic of ggml_vec_dot_q*_K_q8_K on x86: 8 integer lanes collect scale_g * (sum over 4
    weights) for every group of a super-block, then acc = fma(d_w * d_x, float(lane), acc) and the 8
    lanes are summed by halves at the end. Mins (dmin_offset, Q5_K): one running fma per super-block.
    Q6_K's zero point 32 (zero_point) leaves lane k as 32 (sc_2k S_2k + sc_2k+1 S_2k+1).
    `repacked` (Q4_K, which llama.cpp repacks into 8-row groups on AVX2 machines and multiplies in
    ggml_gemv/gemm_q4_K_8x8_q8_K): per super-block acc = fma(float(sum_g sc_g I_g), d_w * d_x, acc)
    and macc = fma(float(sum_g m_g S_g), dmin * d_x, macc), one float each per row; the result acc - macc.
    n_vec > 1: n_vec vectors from j on, each group unpacked once for all of them (as _dot_q8_0_blocks)."""

    def codegen(context, builder, sig, args):
        b = builder
        rp, vecs, n = _operands(context, b, sig, args, n_vec)
        nsb = b.udiv(n, _c(I64, 256))
        facc = [cgutils.alloca_once_value(b, _c(V8F, 0.0)) for _ in vecs]
        macc = [cgutils.alloca_once_value(b, _c(F32, 0.0)) for _ in vecs]
        mtot = [cgutils.alloca_once_value(b, _c(F32, 0.0)) for _ in vecs]
        with cgutils.for_range(b, nsb) as loop:
            i = loop.index
            blk = b.gep(rp, [b.mul(i, _c(I64, block_bytes))])
            for line in range(0, block_bytes, 64):    # every cache line of the super-block
                prefetch(b, blk, PREFETCH + line)
            qb = [b.gep(qp, [b.mul(i, _c(I64, 256))]) for qp, _, _ in vecs]
            s16 = [load(b, b.gep(sp, [b.mul(i, _c(I64, 16))]), 0, V16I32, 4) for _, _, sp in vecs]
            isum = [_c(V8I32, 0) for _ in vecs]
            mins = [[] for _ in vecs]
            for xo, u, scv, m in groups(b, blk):
                for v in range(len(vecs)):
                    part = idot(b, _c(V8I32, 0), u, _load32(b, qb[v], xo))
                    isum[v] = b.add(isum[v], b.mul(part, scv))
                    if m is not None:             # min of the 32 values at xo, and their sum of q
                        g = xo // 16
                        S = b.add(b.extract_element(s16[v], _c(I32, g)),
                                  b.extract_element(s16[v], _c(I32, g + 1)))
                        mins[v].append(b.mul(m, S))
            d = load_f16(b, blk, d_offset)
            for v, (_, dp, _) in enumerate(vecs):
                if zero_point:
                    isum[v] = b.sub(isum[v], b.shl(_pair_sums(b, b.mul(s16[v], _q6_k_scales(b, blk))),
                                                   _c(V8I32, 5)))
                dx = b.load(b.gep(dp, [i]))
                if repacked:
                    mt = _sum(b, mins[v])
                    b.store(fma(b, b.sitofp(hsum(b, isum[v]), F32), b.fmul(d, dx), b.load(mtot[v])), mtot[v])
                    b.store(fma(b, b.sitofp(mt, F32), b.fmul(load_f16(b, blk, dmin_offset), dx),
                                b.load(macc[v])), macc[v])
                else:
                    b.store(fma(b, splat(b, b.fmul(dx, d), V8F), b.sitofp(isum[v], V8F), b.load(facc[v])),
                            facc[v])
                    if dmin_offset is not None:      # Q5_K: one running fma of -(d_x * dmin)
                        nd = b.fneg(b.fmul(dx, load_f16(b, blk, dmin_offset)))
                        b.store(fma(b, nd, b.sitofp(_sum(b, mins[v]), F32), b.load(mtot[v])), mtot[v])
        res = []
        for v in range(len(vecs)):
            if repacked:
                res.append(b.fsub(b.load(mtot[v]), b.load(macc[v])))
            else:
                out = hsum(b, b.load(facc[v]))
                res.append(b.fadd(out, b.load(mtot[v])) if dmin_offset is not None else out)
        return _results(context, b, sig, res)
    return row_dot(codegen, 4) if n_vec == 1 else batch_dot(codegen, n_vec)


dot_q4_k, dot2_q4_k, dot4_q4_k = _variants(_dot_q8_k, 144, _k_groups_q4_k, 0, dmin_offset=2,
                                           repacked=True)
dot_q5_k, dot2_q5_k, dot4_q5_k = _variants(
    _dot_q8_k, 176, lambda b, blk: _k_groups_q4_k(b, blk, qh_offset=16, qs_offset=48), 0, dmin_offset=2)
dot_q6_k, dot2_q6_k, dot4_q6_k = _variants(_dot_q8_k, 210, _k_groups_q6_k, 208, zero_point=True)


# ---- the kernels: up to three W [rows_i, n] times B activation vectors, one parallel launch ----------
# matvec_*_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk): W_i = d_i (raw rows, uint8 [rows_i, row_bytes];
# a matrix of 0 rows for an unused slot) -> o_i float32 [B, rows_i]; qs int8 [B, n], d float32 [B, n / 32
# or n / 256], s float32 [B, n / 32] (Q8_1's s, read by Q4_1 and Q5_1).
# Row r of vector j is dot(d_i[r], qs[j], d[j], aux[j]) whatever B is and whichever slot: one matrix or
# three, one vector or a batch give the same bits, and each weight row is read from memory once for all
# B vectors and unpacked once per four of them (dot4, dot2: the same per-vector arithmetic). Q/K/V or gate/up share one launch (each launch wakes and joins the worker threads).
# Spelled out per type so numba compiles (and caches) only the types a model uses.

@njit(inline="always")
def act_sums(qs, size):
    # qs int8 [B, n] -> int32 [B, n / size], the sum of each `size` values
    B, n = qs.shape
    s = np.empty((B, n // size), np.int32)
    for j in range(B):
        for g in range(n // size):
            t = np.int32(0)
            for k in range(size):
                t += np.int32(qs[j, size * g + k])
            s[j, g] = t
    return s


@njit(inline="always")
def scaled_sums(qs, size, factor):
    # factor * act_sums(qs, size), int32 (exact: |sum| <= 127 * size)
    s = act_sums(qs, size)
    for j in range(s.shape[0]):
        for g in range(s.shape[1]):
            s[j, g] *= np.int32(factor)
    return s


@njit(inline="always")
def _chunks(rows, chunk):
    return (rows + chunk - 1) // chunk


# The launches below differ only in their dot intrinsics and activation sums, yet each is written out:
# an @intrinsic cannot be passed to a jitted function as an argument, and numba's on-disk cache (which
# the stub's precompiled kernels are) keys a function by its name and source line, so one factory
# making all eight would give them one cache entry.
@njit(parallel=True, cache=True)
def matvec_q4_0_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = scaled_sums(qs, 4, -8)
    dT = np.ascontiguousarray(d.T)             # [nb, B]: the batched dots' layout
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            j = 0
            while j + 4 <= qs.shape[0]:
                o[j, r], o[j + 1, r], o[j + 2, r], o[j + 3, r] = dot4_q4_0(w[r], qs, dT, aux, j)
                j += 4
            if j + 2 <= qs.shape[0]:
                o[j, r], o[j + 1, r] = dot2_q4_0(w[r], qs, dT, aux, j)
                j += 2
            if j < qs.shape[0]:
                o[j, r] = dot_q4_0(w[r], qs[j], d[j], aux[j])

@njit(parallel=True, cache=True)
def matvec_q4_1_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = s
    dT = np.ascontiguousarray(d.T)             # [nb, B]: the batched dots' layout
    sT = np.ascontiguousarray(s.T)
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            j = 0
            while j + 4 <= qs.shape[0]:
                o[j, r], o[j + 1, r], o[j + 2, r], o[j + 3, r] = dot4_q4_1(w[r], qs, dT, sT, j)
                j += 4
            if j + 2 <= qs.shape[0]:
                o[j, r], o[j + 1, r] = dot2_q4_1(w[r], qs, dT, sT, j)
                j += 2
            if j < qs.shape[0]:
                o[j, r] = dot_q4_1(w[r], qs[j], d[j], aux[j])

@njit(parallel=True, cache=True)
def matvec_q5_0_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = scaled_sums(qs, 4, -16)
    dT = np.ascontiguousarray(d.T)             # [nb, B]: the batched dots' layout
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            j = 0
            while j + 4 <= qs.shape[0]:
                o[j, r], o[j + 1, r], o[j + 2, r], o[j + 3, r] = dot4_q5_0(w[r], qs, dT, aux, j)
                j += 4
            if j + 2 <= qs.shape[0]:
                o[j, r], o[j + 1, r] = dot2_q5_0(w[r], qs, dT, aux, j)
                j += 2
            if j < qs.shape[0]:
                o[j, r] = dot_q5_0(w[r], qs[j], d[j], aux[j])

@njit(parallel=True, cache=True)
def matvec_q5_1_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = s
    dT = np.ascontiguousarray(d.T)             # [nb, B]: the batched dots' layout
    sT = np.ascontiguousarray(s.T)
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            j = 0
            while j + 4 <= qs.shape[0]:
                o[j, r], o[j + 1, r], o[j + 2, r], o[j + 3, r] = dot4_q5_1(w[r], qs, dT, sT, j)
                j += 4
            if j + 2 <= qs.shape[0]:
                o[j, r], o[j + 1, r] = dot2_q5_1(w[r], qs, dT, sT, j)
                j += 2
            if j < qs.shape[0]:
                o[j, r] = dot_q5_1(w[r], qs[j], d[j], aux[j])

@njit(parallel=True, cache=True)
def matvec_q8_0_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = scaled_sums(qs, 4, -Q8_0_ZERO_POINT)
    dT = np.ascontiguousarray(d.T)             # [nb, B]: the batched dots' layout
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            j = 0
            while j + 4 <= qs.shape[0]:
                o[j, r], o[j + 1, r], o[j + 2, r], o[j + 3, r] = dot4_q8_0(w[r], qs, dT, aux, j)
                j += 4
            if j + 2 <= qs.shape[0]:
                o[j, r], o[j + 1, r] = dot2_q8_0(w[r], qs, dT, aux, j)
                j += 2
            if j < qs.shape[0]:
                o[j, r] = dot_q8_0(w[r], qs[j], d[j], aux[j])

@njit(parallel=True, cache=True)
def matvec_q4_k_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = act_sums(qs, 16)
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            j = 0
            while j + 4 <= qs.shape[0]:
                o[j, r], o[j + 1, r], o[j + 2, r], o[j + 3, r] = dot4_q4_k(w[r], qs, d, aux, j)
                j += 4
            if j + 2 <= qs.shape[0]:
                o[j, r], o[j + 1, r] = dot2_q4_k(w[r], qs, d, aux, j)
                j += 2
            if j < qs.shape[0]:
                o[j, r] = dot_q4_k(w[r], qs[j], d[j], aux[j])

@njit(parallel=True, cache=True)
def matvec_q5_k_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = act_sums(qs, 16)
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            j = 0
            while j + 4 <= qs.shape[0]:
                o[j, r], o[j + 1, r], o[j + 2, r], o[j + 3, r] = dot4_q5_k(w[r], qs, d, aux, j)
                j += 4
            if j + 2 <= qs.shape[0]:
                o[j, r], o[j + 1, r] = dot2_q5_k(w[r], qs, d, aux, j)
                j += 2
            if j < qs.shape[0]:
                o[j, r] = dot_q5_k(w[r], qs[j], d[j], aux[j])

@njit(parallel=True, cache=True)
def matvec_q6_k_q8(o0, o1, o2, d0, d1, d2, qs, d, s, chunk):
    aux = act_sums(qs, 16)
    n0, n1 = _chunks(d0.shape[0], chunk), _chunks(d1.shape[0], chunk)
    for c in prange(n0 + n1 + _chunks(d2.shape[0], chunk)):
        if c < n0:
            o, w, c0 = o0, d0, c
        elif c < n0 + n1:
            o, w, c0 = o1, d1, c - n0
        else:
            o, w, c0 = o2, d2, c - n0 - n1
        for r in range(c0 * chunk, min(w.shape[0], (c0 + 1) * chunk)):
            j = 0
            while j + 4 <= qs.shape[0]:
                o[j, r], o[j + 1, r], o[j + 2, r], o[j + 3, r] = dot4_q6_k(w[r], qs, d, aux, j)
                j += 4
            if j + 2 <= qs.shape[0]:
                o[j, r], o[j + 1, r] = dot2_q6_k(w[r], qs, d, aux, j)
                j += 2
            if j < qs.shape[0]:
                o[j, r] = dot_q6_k(w[r], qs[j], d[j], aux[j])
