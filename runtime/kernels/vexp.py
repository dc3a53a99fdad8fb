"""ggml's vector expf in LLVM IR, and the two loops in which llama.cpp uses it on x86: the softmax of
attention scores and router logits (ggml_vec_soft_max_f32) and SiLU (ggml_v_silu, in
ggml_vec_swiglu_f32 and ggml_vec_silu_f32).

llama.cpp computes exp in those loops with `ggml_v_expf` (ggml-cpu/vec.h: a degree-5 polynomial after
a range reduction by ln 2, within 1.5 ulp of expf) on chunks of 16 floats with AVX-512 (AVX512F +
AVX512DQ) or of 8 with AVX2 + FMA, and with libm's `expf` on the rest of the row. The two x86
variants differ in their last steps (AVX-512 scales by 2^n with `vscalefps` after adding 1 inside the
polynomial; AVX2 builds 2^n from the exponent bits and ends with fma(j, k, k)), so each gives other
bits: `KIND` follows the compile target (jit.has_feature), as the llama.cpp a user runs is built
-march=native. Targets with neither (aarch64, x86 without FMA) run every element through the scalar
expf step, ggml's path for a row's leftovers (llama.cpp's NEON ggml_v_expf is not reproduced).

Besides the bits, it is faster: SwiGLU at 3 ns an element with scalar expf was ~2% of a SmolLM2 decode
step at one row and ~4% at four.

Intrinsics (arrays float32 1-d; the vector chunks run when they are contiguous):
    exp_sum(x, m) -> float64   x[i] = exp(x[i] - m) in place; the sum as ggml_vec_soft_max_f32 adds
                               it: each chunk's lanes summed by halves in float, then in double
    silu_mul(out, g, u)        out[i] = g[i] / (1 + exp(-g[i])) * u[i] (ggml_vec_swiglu_f32)
"""
from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import has_feature
from .vector_ir import F32, I32, call, fma, hsum, splat

F64 = ir.DoubleType()

if has_feature("avx512f") and has_feature("avx512dq"):
    KIND = "avx512"
elif has_feature("avx2") and has_feature("fma"):
    KIND = "avx2"
else:
    KIND = None
LANES = 16 if KIND == "avx512" else 8


def _f(v):
    # a float32 constant from its C hex literal's value
    return ir.Constant(F32, float.fromhex(v) if isinstance(v, str) else v)


def _vec(b, v, ty):
    return splat(b, _f(v), ty)


def _bits(b, v):
    return b.bitcast(v, ir.VectorType(I32, v.type.count))


def _float(b, v):
    return b.bitcast(v, ir.VectorType(F32, v.type.count))


def v_expf(b, x):
    """ggml_v_expf of x <LANES x float>, operation for operation (fnmadd(a, b, c) = fma(-a, b, c))."""
    ty = x.type
    c = lambda v: _vec(b, v, ty)                                      # noqa: E731
    fabs = lambda v: call(b, f"llvm.fabs.v{ty.count}f32", ty, [v])   # noqa: E731
    r = c("0x1.8p23")
    z = fma(b, x, c("0x1.715476p+0"), r)
    n = b.fsub(z, r)
    nn = b.fneg(n)
    bb = fma(b, nn, c("0x1.7f7d1cp-20"), fma(b, nn, c("0x1.62e4p-1"), x))
    u = b.fmul(bb, bb)
    poly = fma(b, fma(b, c("0x1.0e4020p-7"), bb, c("0x1.573e2ep-5")), u,
               fma(b, c("0x1.555e66p-3"), bb, c("0x1.fffdb6p-2")))
    if KIND == "avx512":
        j = fma(b, poly, u, fma(b, c("0x1.ffffecp-1"), bb, c(1.0)))
        res = call(b, "llvm.x86.avx512.mask.scalef.ps.512", ty,
                   [j, n, ir.Constant(ty, ir.Undefined), ir.Constant(ir.IntType(16), 0xFFFF),
                    ir.Constant(I32, 4)])                             # _MM_FROUND_CUR_DIRECTION
        d = b.fcmp_ordered(">", fabs(n), c(192.0))
        alt = b.select(b.fcmp_ordered("<=", n, c(0.0)), c(0.0), c(math.inf))
        return b.select(d, alt, res)
    # AVX2 + FMA
    j = fma(b, poly, u, b.fmul(c("0x1.ffffecp-1"), bb))
    iv = lambda v: ir.Constant(ir.VectorType(I32, ty.count), [v] * ty.count)   # noqa: E731
    e = b.shl(_bits(b, z), iv(23))
    k = _float(b, b.add(e, _bits(b, c(1.0))))
    cc = b.fcmp_ordered(">", fabs(n), c(126.0))
    g = b.and_(b.sext(b.fcmp_ordered("<=", n, c(0.0)), ir.VectorType(I32, ty.count)), iv(0x82000000 - (1 << 32)))
    s1 = _float(b, b.add(g, iv(0x7f000000)))
    s2 = _float(b, b.sub(e, g))
    d = b.fcmp_ordered(">", fabs(n), c(192.0))
    normal = fma(b, k, j, k)
    scaled = b.fmul(fma(b, s2, j, s2), s1)
    return b.select(d, b.fmul(s1, s1), b.select(cc, scaled, normal))


def _expf(b, x):
    # libm's expf of a float (llvm.exp.f32, which numba's math.exp on a float32 also becomes)
    return call(b, "llvm.exp.f32", F32, [x])


def _rows(typs):
    # the arrays these loops take: float32 1-d of any layout (a row of a column-sliced buffer is typed
    # 'A'); the vector chunks run only when every one is contiguous at run time
    return all(isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.float32 for t in typs)


class _Row:
    """A float32 1-d array's data pointer and byte stride, to address element i."""

    def __init__(self, context, b, ty, value):
        a = context.make_array(ty)(context, b, value)
        self.b, self.n = b, a.nitems
        self.data = b.bitcast(a.data, ir.IntType(8).as_pointer())
        self.stride = cgutils.unpack_tuple(b, a.strides)[0]

    def at(self, i):            # float* to element i
        return self.b.bitcast(self.b.gep(self.data, [self.b.mul(i, self.stride)]), F32.as_pointer())

    def vec(self, i, ty):       # <LANES x float>* at element i (contiguous rows only)
        return self.b.bitcast(self.b.gep(self.data, [self.b.mul(i, ir.Constant(i.type, 4))]), ty.as_pointer())


def _split(b, rows):
    """(whole chunks, first leftover index): no chunks without a vector expf or when a row is strided."""
    n = rows[0].n
    zero = ir.Constant(n.type, 0)
    if KIND is None:
        return zero, zero
    lanes = ir.Constant(n.type, LANES)
    contig = ir.Constant(ir.IntType(1), 1)
    for r in rows:
        contig = b.and_(contig, b.icmp_signed("==", r.stride, ir.Constant(r.stride.type, 4)))
    whole = b.select(contig, b.udiv(n, lanes), zero)
    return whole, b.mul(whole, lanes)


@intrinsic
def exp_sum(typingctx, x, m):
    """x[i] = exp(x[i] - m) in place -> float64 sum, as ggml_vec_soft_max_f32 (see the module doc)."""
    if not (_rows([x]) and m == types.float32):
        return None
    ty = ir.VectorType(F32, LANES)

    def codegen(context, b, sig, args):
        xr = _Row(context, b, sig.args[0], args[0])
        mv = splat(b, args[1], ty)
        whole, rest = _split(b, [xr])
        total = cgutils.alloca_once_value(b, ir.Constant(F64, 0.0))
        with cgutils.for_range(b, whole) as loop:
            p = xr.vec(b.mul(loop.index, ir.Constant(whole.type, LANES)), ty)
            val = v_expf(b, b.fsub(b.load(p, align=4), mv))
            b.store(val, p, align=4)
            b.store(b.fadd(b.load(total), b.fpext(hsum(b, val), F64)), total)
        with cgutils.for_range_slice(b, rest, xr.n, ir.Constant(xr.n.type, 1), inc=True) as (i, _):
            p = xr.at(i)
            e = _expf(b, b.fsub(b.load(p), args[1]))
            b.store(e, p)
            b.store(b.fadd(b.load(total), b.fpext(e, F64)), total)
        return b.load(total)
    return types.float64(x, m), codegen


@intrinsic
def silu_mul(typingctx, out, g, u):
    """out[i] = silu(g[i]) * u[i], as ggml_vec_swiglu_f32 (see the module doc); out may be g."""
    if not _rows([out, g, u]):
        return None
    ty = ir.VectorType(F32, LANES)

    def codegen(context, b, sig, args):
        o, x, y = (_Row(context, b, t, a) for t, a in zip(sig.args, args))
        whole, rest = _split(b, [x, o, y])
        one = splat(b, _f(1.0), ty)
        with cgutils.for_range(b, whole) as loop:
            i = b.mul(loop.index, ir.Constant(whole.type, LANES))
            gv = b.load(x.vec(i, ty), align=4)
            silu = b.fdiv(gv, b.fadd(one, v_expf(b, b.fsub(ir.Constant(ty, [0.0] * LANES), gv))))
            b.store(b.fmul(silu, b.load(y.vec(i, ty), align=4)), o.vec(i, ty), align=4)
        with cgutils.for_range_slice(b, rest, x.n, ir.Constant(x.n.type, 1), inc=True) as (i, _):
            gv = b.load(x.at(i))
            silu = b.fdiv(gv, b.fadd(_f(1.0), _expf(b, b.fneg(gv))))
            b.store(b.fmul(silu, b.load(y.at(i))), o.at(i))
        return context.get_dummy_value()
    return types.none(out, g, u), codegen


__all__ = ["KIND", "LANES", "v_expf", "exp_sum", "silu_mul"]
