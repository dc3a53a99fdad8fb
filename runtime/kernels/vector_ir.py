"""LLVM IR building blocks for the decode dot products (legacy.py, kquants.py), with numba's @intrinsic.

The row dot products are written as LLVM vector code rather than plain numba loops: in plain numba
LLVM cannot prove a per-lane accumulator array does not alias x (both float32 arrays), so it stores it
back every block, and it multiplies every weight by its scale. Built here, the accumulator stays in one
register and the scale multiplies once per block (docs/KERNELS.md has the measurements).

Each helper takes an `llvmlite.ir.IRBuilder` `b` first and returns IR values. Vector width: 16 lanes
(<16 x float> = one zmm register with AVX-512, two ymm with AVX2, four q registers on NEON; LLVM
splits it as the target needs).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

F32, I8, I32, I64 = ir.FloatType(), ir.IntType(8), ir.IntType(32), ir.IntType(64)
V16F, V16I32 = ir.VectorType(F32, 16), ir.VectorType(I32, 16)
V16I8 = ir.VectorType(I8, 16)


def splat(b, value, ty):
    # a vector of type ty with every lane = value
    n = ty.count
    one = b.insert_element(ir.Constant(ty, ir.Undefined), value, ir.Constant(I32, 0))
    return b.shuffle_vector(one, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(I32, n), [0] * n))


def call(b, name, ret, args):
    # a call of the LLVM intrinsic (or C function) `name` returning ret, declared on first use
    fnty = ir.FunctionType(ret, [a.type for a in args])
    fn = b.module.globals.get(name) or ir.Function(b.module, fnty, name)
    return b.call(fn, args)


def fma(b, x, y, z):
    # x * y + z in one rounding (llvm.fma; llvmlite's own fma takes scalars only)
    t = x.type
    name = f"llvm.fma.v{t.count}f32" if isinstance(t, ir.VectorType) else "llvm.fma.f32"
    return b.call(cgutils.get_or_insert_function(b.module, ir.FunctionType(t, [t, t, t]), name), [x, y, z])


def load(b, base, offset, ty, align):
    # the ty at element `offset` (an int) of pointer base
    return b.load(b.bitcast(b.gep(base, [ir.Constant(I64, offset)]), ty.as_pointer()), align=align)


def load_f16(b, blk, offset):
    # the fp16 at byte offset of a block, as float (vcvtph2ps with F16C)
    return b.fpext(load(b, blk, offset, ir.HalfType(), 1), F32)


def hsum(b, v):
    # sum of the lanes of a float or int vector, by halves (ggml's hsum_float_8 order for 8 floats)
    add = b.add if isinstance(v.type.element, ir.IntType) else b.fadd
    n = v.type.count
    while n > 1:
        n //= 2
        lo = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n))))
        hi = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n, 2 * n))))
        v = add(lo, hi)
    return b.extract_element(v, ir.Constant(I32, 0))


def bytes16(b, blk, offset):
    # the 16 bytes at offset, zero-extended to <16 x i32>
    return b.zext(load(b, blk, offset, V16I8, 1), V16I32)


def nibbles(b, blk, offset):
    # the 16 bytes at offset as (low nibbles, high nibbles), each <16 x i32>
    q = bytes16(b, blk, offset)
    return b.and_(q, ir.Constant(V16I32, [15] * 16)), b.lshr(q, ir.Constant(V16I32, [4] * 16))


def contiguous(*arrays):
    # the vector code indexes raw data pointers: only C-contiguous 1-d arrays type-check
    return all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in arrays)


def row_dot(codegen, n_arrays):
    """An intrinsic `dot(row, x, ...) -> float32` over n_arrays (2 to 4) C-contiguous 1-d arrays whose
    body is `codegen(context, builder, sig, args)` (numba's intrinsic codegen signature)."""
    if n_arrays == 4:
        @intrinsic
        def dot(typingctx, row, a, b, c):
            return (types.float32(row, a, b, c), codegen) if contiguous(row, a, b, c) else None
    elif n_arrays == 3:
        @intrinsic
        def dot(typingctx, row, x, xs):
            return (types.float32(row, x, xs), codegen) if contiguous(row, x, xs) else None
    else:
        @intrinsic
        def dot(typingctx, row, x):
            return (types.float32(row, x), codegen) if contiguous(row, x) else None
    return dot


# ---- fp16 scalars (the KV cache: runtime.ops.store_kv, attention, shift_kv) ------------------------

@intrinsic
def f16_bits(typingctx, x):
    """float32 -> uint16: the fp16 bits of x, rounded to nearest even, overflow to inf (fptrunc: F16C's
    vcvtps2ph on x86, fcvt on ARM; LLVM vectorizes it in loops)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@intrinsic
def f16_value(typingctx, h):
    """uint16 fp16 bits -> float32, exact (fpext: vcvtph2ps / fcvt)."""
    if h != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), F32)
    return types.float32(types.uint16), codegen


@intrinsic
def fma_f32(typingctx, x, y, z):
    """x * y + z rounded once, for numba code whose rounding must follow a C compiler's contraction
    (fastmath would contract wherever LLVM likes)."""
    if not all(t == types.float32 for t in (x, y, z)):
        return None

    def codegen(context, builder, sig, args):
        return fma(builder, *args)
    return types.float32(x, y, z), codegen


def _pv_rows(n_vec):
    """An intrinsic `pv(acc, p, rows, first, col)`: acc[col:col + 16 * n_vec] = sum over j of p[j] *
    value(rows[first + j, col:col + 16 * n_vec]), j = 0 .. len(p) - 1 in order, one fma per step.
    acc float32 1-d, p float32 1-d, rows uint16 2-d (fp16 bits), all C-contiguous; first, col integers.
    The P.V half of attention (runtime/ops.py _attend): in plain numba the accumulator array is stored
    back every position (it may alias, for all LLVM knows), which made P.V 4-5x slower than q.K; here
    the n_vec accumulators stay in registers."""
    VH = ir.VectorType(ir.HalfType(), 16)

    def codegen(context, b, sig, args):
        acc, p, rows = (context.make_array(t)(context, b, a) for t, a in zip(sig.args[:3], args[:3]))
        first, col = (b.sext(a, I64) if a.type.width < 64 else a for a in args[3:5])
        hd = cgutils.unpack_tuple(b, rows.shape)[1]
        accs = [cgutils.alloca_once_value(b, ir.Constant(V16F, [0.0] * 16)) for _ in range(n_vec)]
        with cgutils.for_range(b, p.nitems) as loop:
            j = loop.index
            pj = splat(b, b.load(b.gep(p.data, [j])), V16F)
            row = b.gep(rows.data, [b.add(b.mul(b.add(first, j), hd), col)])
            for v in range(n_vec):
                x = b.fpext(load(b, row, 16 * v, VH, 2), V16F)
                b.store(fma(b, pj, x, b.load(accs[v])), accs[v])
        out = b.gep(acc.data, [col])
        for v in range(n_vec):
            b.store(b.load(accs[v]), b.bitcast(b.gep(out, [ir.Constant(I64, 16 * v)]), V16F.as_pointer()),
                    align=4)
        return context.get_dummy_value()

    @intrinsic
    def pv(typingctx, acc, p, rows, first, col):
        ok = (contiguous(acc, p) and isinstance(rows, types.Array) and rows.ndim == 2 and rows.layout == "C"
              and rows.dtype == types.uint16 and acc.dtype == p.dtype == types.float32
              and isinstance(first, types.Integer) and isinstance(col, types.Integer))
        return (types.none(acc, p, rows, first, col), codegen) if ok else None
    return pv


pv_rows16, pv_rows64 = _pv_rows(1), _pv_rows(4)
