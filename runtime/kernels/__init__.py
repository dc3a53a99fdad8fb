"""numba kernels that multiply straight from raw GGUF blocks (no float32 copy of the model).

Public API (outputs written in place; float32, C-contiguous):
    matvec(w, x, out, q8=None)         W [rows, n] @ x [n] -> out [rows]                (decode)
    matvecs(ws, x, outs, q8=None)      the same for several W sharing x
    matvec_batch(w, X, out, q8=None)   X [B, n] -> out [B, rows]; row b bit-identical to matvec(X[b])
    matmul(w, x, out, q8=None)         x [T, n] -> out [T, rows]                         (prefill)
    get_rows(w, ids, out)              ids int [T] -> out [T, n]                  (embedding lookup)
    takes_q8(qtype)                    whether q8 is used for this type on this compile target
    set_threads(n)                     threads used by the parallel kernels (numba.set_num_threads)
`w` is a `runtime.gguf.Tensor`: `type`, `shape` (shape[0] = n, the row length), `n_rows` and `data`
(uint8 [n_rows, row_nbytes], a view into the mmap).

`q8` is the same activations in llama.cpp's 8-bit form, `(qs, d, s)` from ops.quantize_activations (qs
int8 [..., n], d float32 [..., n / q8_block], s float32 [..., n / 32]); x must then hold qs * d. Where
`takes_q8(w.type)` the kernels multiply with integer dot products (intdot.py), else they use x and the
float kernels; both compute W @ x for the same x, summed in a different order.

Each type has its own small set of jitted functions; numba compiles (or loads from its cache) only
those of the types a model actually uses, on first call. The plain-numpy twin they are tested against
is `runtime.quants.dequantize`.

The package, one concern per module:
    table.py      GGML type -> its kernels (the one place dispatch looks)
    jit.py        numba's configured `njit`/`prange` and `has_feature` of the compile target
    cpu.py        which CPU target numba compiles for
    vector_ir.py  LLVM IR building blocks for the hand-written vector dot products
    blocks.py     numba helpers shared by the block types (fp16 fields, block sums)
    gemm.py       the prefill register tile shared by every type
    floats.py     F32, F16, BF16;  legacy.py  Q4_0 Q4_1 Q5_0 Q5_1 Q8_0;  kquants.py  Q2_K..Q6_K
"""
from __future__ import annotations

import numpy as np

from . import intdot, intgemm
from .table import KERNELS, UnsupportedType, kernels_for

_INT_DOT = intdot.int_dot() is not None      # the compile target has an integer dot product
_INT_GEMM = intgemm.available()              # ... and the VNNI instructions of the prefill tile


def _chunk(rows: int) -> int:
    # rows per parallel work item: enough items per thread to balance, few enough to amortise the
    # per-chunk set-up (research: 32 for SmolLM2's 576-1536-row layers, 64 for the 49152-row head)
    return 64 if rows >= 8192 else 32


def _mismatch(w, *arrays) -> ValueError:
    # the kernels do not bounds-check (numba's default): a wrong size must never reach them
    shapes = ", ".join(str(a.shape) for a in arrays)
    return ValueError(f"tensor {w.name} [{w.n_rows} rows x {w.shape[0]}]: operand shapes {shapes} "
                      f"do not fit")


def takes_q8(qtype) -> bool:
    """Whether the kernels of this type multiply 8-bit activations (q8) on this compile target."""
    k = KERNELS.get(qtype)
    return _INT_DOT and k is not None and k.matvec_q8 is not None


def _check_q8(w, k, q8, lead):
    # q8 = (qs int8 [*lead, n], d float32 [*lead, n / q8_block], s float32 [*lead, n / 32])
    qs, d, s = q8
    n = w.shape[0]
    if (qs.dtype != np.int8 or d.dtype != np.float32 or s.dtype != np.float32 or n % k.q8_block
            or qs.shape != (*lead, n) or d.shape != (*lead, n // k.q8_block)
            or s.shape != (*lead, n // 32)):
        raise _mismatch(w, qs, d, s)


def matvec(w, x, out, q8=None):
    """W [rows, n] @ x [n] -> out [rows]."""
    k = KERNELS.get(w.type) or kernels_for(w.type, w.name)
    if x.shape != (w.shape[0],) or out.shape != (w.n_rows,):
        raise _mismatch(w, x, out)
    if q8 is not None and _INT_DOT and k.matvec_q8 is not None:
        _check_q8(w, k, q8, ())
        _matvecs_q8(k, [w], [out[None]], tuple(a[None] for a in q8))
        return
    data = w.data if k.view is None else w.data.view(k.view)
    k.matvec(out, data, x, k.table, _chunk(w.n_rows))


def _matvecs_q8(k, ws, outs, q8):
    # up to three W_i of one type (checked) -> outs[i] [B, rows_i], one launch of the type's q8 kernel
    datas, outs = [w.data for w in ws], list(outs)
    if len(datas) < 3:                            # unused slots: 0 rows, the same array types
        empty, none = _unused(datas[0].shape[1], datas[0].flags.writeable, outs[0].shape[0])
        while len(datas) < 3:
            datas.append(empty)
            outs.append(none)
    k.matvec_q8(outs[0], outs[1], outs[2], datas[0], datas[1], datas[2], q8[0], q8[1], q8[2],
                _chunk(max(w.n_rows for w in ws)))


_UNUSED: dict = {}


def _unused(row_bytes: int, writeable: bool, B: int):
    # (uint8 [0, row_bytes], float32 [B, 0]) for an unused slot of a q8 kernel, made once per shape
    key = (row_bytes, writeable, B)
    pair = _UNUSED.get(key)
    if pair is None:
        empty = np.empty((0, row_bytes), np.uint8)
        empty.flags.writeable = writeable
        pair = _UNUSED[key] = (empty, np.empty((B, 0), np.float32))
    return pair


def matvec_batch(w, X, out, q8=None):
    """X [B, n] -> out [B, rows], out[b] = W @ X[b]: the weights are read from memory once for all B
    rows, and out[b] has the same bits as matvec(w, X[b], out[b], q8 row b) (continuous batching:
    a sequence decodes the same text batched or alone)."""
    k = KERNELS.get(w.type) or kernels_for(w.type, w.name)
    if X.ndim != 2 or X.shape[1] != w.shape[0] or out.shape != (X.shape[0], w.n_rows):
        raise _mismatch(w, X, out)
    if q8 is not None and _INT_DOT and k.matvec_q8 is not None:
        _check_q8(w, k, q8, (X.shape[0],))
        _matvecs_q8(k, [w], [out], q8)
        return
    data = w.data if k.view is None else w.data.view(k.view)
    for b in range(X.shape[0]):        # float kernels: one pass each (rows stay in the CPU's caches
        k.matvec(out[b], data, X[b], k.table, _chunk(w.n_rows))   # only for small matrices)


_NO_OUT = np.empty(0, np.float32)


def matvecs(ws, x, outs, q8=None):
    """W_i [rows_i, n] @ x [n] -> outs[i] [rows_i] for each i, or for B rows at once: x [B, n] ->
    outs[i] [B, rows_i] (row b as matvec of x[b]). One kernel launch when there are at most three W_i of
    one type whose kernels take q8 (or, one row, have a fused float kernel), else one `matvec` each;
    the same bits either way."""
    k = KERNELS.get(ws[0].type)
    same = len(ws) <= 3 and all(w.type == ws[0].type for w in ws)
    lead = x.shape[:-1]                           # () or (B,)
    if same and q8 is not None and takes_q8(ws[0].type):
        for w, out in zip(ws, outs):
            if x.shape != (*lead, w.shape[0]) or out.shape != (*lead, w.n_rows) or len(lead) > 1:
                raise _mismatch(w, x, out)
        _check_q8(ws[0], k, q8, lead)
        if lead:
            _matvecs_q8(k, ws, outs, q8)
        else:
            _matvecs_q8(k, ws, [out[None] for out in outs], tuple(a[None] for a in q8))
        return
    if lead:
        for b in range(x.shape[0]):
            matvecs(ws, x[b], [out[b] for out in outs], None if q8 is None else tuple(a[b] for a in q8))
        return
    k3 = k.matvec3 if k is not None else None
    if k3 is None or not same:
        for w, out in zip(ws, outs):
            matvec(w, x, out, q8)
        return
    for w, out in zip(ws, outs):
        if x.shape != (w.shape[0],) or out.shape != (w.n_rows,):
            raise _mismatch(w, x, out)
    datas = [w.data for w in ws]
    outs = list(outs)
    while len(datas) < 3:                         # unused slots: 0 rows, same array types
        empty = np.empty((0, datas[0].shape[1]), np.uint8)
        empty.flags.writeable = datas[0].flags.writeable
        datas.append(empty)
        outs.append(_NO_OUT)
    k3(outs[0], outs[1], outs[2], datas[0], datas[1], datas[2], x, k.table,
       _chunk(max(w.n_rows for w in ws)))


def matmul(w, x, out, q8=None):
    """x [T, n] -> out [T, rows] = x @ W^T (the prefill GEMM). With q8 on AVX-512 VNNI targets row t
    has the bits of matvec's for x[t] (except Q4_K's rows below T // 4 * 4, summed per 64 weights as
    llama.cpp's gemm does), elsewhere the float tile GEMM runs; either way the rows of a prompt cut
    into runs of a multiple of 4 rows are those of the whole prompt at once."""
    k = KERNELS.get(w.type) or kernels_for(w.type, w.name)
    if x.ndim != 2 or x.shape[1] != w.shape[0] or out.shape != (x.shape[0], w.n_rows):
        raise _mismatch(w, x, out)
    if q8 is not None and _INT_GEMM and takes_q8(w.type) and k.matmul_q8 is not None:
        _check_q8(w, k, q8, (x.shape[0],))
        k.matmul_q8(out, w.data, q8[0], q8[1], q8[2])
        return
    data = w.data if k.view is None else w.data.view(k.view)
    k.matmul(out, data, x, k.table)


def get_rows(w, ids, out):
    """ids int [T] -> out [T, n]: the rows of W named by ids, dequantized (embedding lookup)."""
    k = KERNELS.get(w.type) or kernels_for(w.type, w.name)
    if ids.ndim != 1 or out.shape != (ids.shape[0], w.shape[0]):
        raise _mismatch(w, ids, out)
    data = w.data if k.view is None else w.data.view(k.view)
    k.get_rows(out, data, ids, k.table)


def set_threads(n: int) -> None:
    """Threads used by the parallel kernels (at most numba's NUMBA_NUM_THREADS, the CPU count)."""
    import numba
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def get_threads() -> int:
    import numba
    return numba.get_num_threads()


__all__ = ["matvec", "matvecs", "matvec_batch", "matmul", "get_rows", "takes_q8", "set_threads",
           "get_threads", "kernels_for", "UnsupportedType"]
