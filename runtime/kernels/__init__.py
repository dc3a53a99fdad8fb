"""numba kernels that multiply straight from raw GGUF blocks (no float32 copy of the model).

Public API (outputs written in place; float32, C-contiguous):
    matvec(w, x, out)       W [rows, n] @ x [n] -> out [rows]          (decode)
    matvecs(ws, x, outs)    the same for several W sharing x, fused into one launch where it can
    matmul(w, x, out)       x [T, n] -> out [T, rows]                  (prefill)
    get_rows(w, ids, out)   ids int [T] -> out [T, n]                  (embedding lookup)
    set_threads(n)          threads used by the parallel kernels (numba.set_num_threads)
`w` is a `runtime.gguf.Tensor`: `type`, `shape` (shape[0] = n, the row length), `n_rows` and `data`
(uint8 [n_rows, row_nbytes], a view into the mmap).

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

from .table import KERNELS, UnsupportedType, kernels_for


def _chunk(rows: int) -> int:
    # rows per parallel work item: enough items per thread to balance, few enough to amortise the
    # per-chunk set-up (research: 32 for SmolLM2's 576-1536-row layers, 64 for the 49152-row head)
    return 64 if rows >= 8192 else 32


def _mismatch(w, *arrays) -> ValueError:
    # the kernels do not bounds-check (numba's default): a wrong size must never reach them
    shapes = ", ".join(str(a.shape) for a in arrays)
    return ValueError(f"tensor {w.name} [{w.n_rows} rows x {w.shape[0]}]: operand shapes {shapes} "
                      f"do not fit")


def matvec(w, x, out):
    """W [rows, n] @ x [n] -> out [rows]."""
    k = KERNELS.get(w.type) or kernels_for(w.type, w.name)
    if x.shape != (w.shape[0],) or out.shape != (w.n_rows,):
        raise _mismatch(w, x, out)
    data = w.data if k.view is None else w.data.view(k.view)
    k.matvec(out, data, x, k.table, _chunk(w.n_rows))


_NO_OUT = np.empty(0, np.float32)


def matvecs(ws, x, outs):
    """W_i [rows_i, n] @ x [n] -> outs[i] [rows_i] for each i: one kernel launch when all W_i share
    a type with a fused kernel (and there are at most three), else one `matvec` each."""
    k = KERNELS.get(ws[0].type)
    k3 = k.matvec3 if k is not None else None
    if k3 is None or len(ws) > 3 or any(w.type != ws[0].type for w in ws):
        for w, out in zip(ws, outs):
            matvec(w, x, out)
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


def matmul(w, x, out):
    """x [T, n] -> out [T, rows] = x @ W^T (the prefill GEMM)."""
    k = KERNELS.get(w.type) or kernels_for(w.type, w.name)
    if x.ndim != 2 or x.shape[1] != w.shape[0] or out.shape != (x.shape[0], w.n_rows):
        raise _mismatch(w, x, out)
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


__all__ = ["matvec", "matvecs", "matmul", "get_rows", "set_threads", "get_threads", "kernels_for",
           "UnsupportedType"]
