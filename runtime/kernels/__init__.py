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
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import cpu  # noqa: F401  (sets numba's CPU target; must precede every @njit)
from ..ggml import GGMLType, SUPPORTED_TYPES, type_name
from . import floats, kquants, legacy


class UnsupportedType(ValueError):
    """A tensor type no kernel handles."""


class _TypeKernels(NamedTuple):
    matvec: Callable        # (out, data, x, table, chunk)
    matmul: Callable        # (out, data, x, table)
    get_rows: Callable      # (out, data, ids, table)
    table: np.ndarray       # fp16 -> float32 (bf16 -> float32 for BF16), 65536 entries
    view: object            # dtype to view the raw rows as (float types), or None for block types


_F16 = floats.F16_TABLE
_KERNELS: dict[GGMLType, _TypeKernels] = {
    GGMLType.F32: _TypeKernels(floats.matvec_f32, floats.matmul_f32, floats.get_rows_f32, _F16,
                               np.float32),
    GGMLType.F16: _TypeKernels(floats.matvec_f16, floats.matmul_f16, floats.get_rows_f16, _F16,
                               np.uint16),
    GGMLType.BF16: _TypeKernels(floats.matvec_f16, floats.matmul_f16, floats.get_rows_f16,
                                floats.BF16_TABLE, np.uint16),
}
for _t, _mod in ((GGMLType.Q4_0, legacy), (GGMLType.Q4_1, legacy), (GGMLType.Q5_0, legacy),
                 (GGMLType.Q5_1, legacy), (GGMLType.Q8_0, legacy),
                 (GGMLType.Q2_K, kquants), (GGMLType.Q3_K, kquants), (GGMLType.Q4_K, kquants),
                 (GGMLType.Q5_K, kquants), (GGMLType.Q6_K, kquants)):
    _s = _t.name.lower()
    _KERNELS[_t] = _TypeKernels(getattr(_mod, f"matvec_{_s}"), getattr(_mod, f"matmul_{_s}"),
                                getattr(_mod, f"get_rows_{_s}"), _F16, None)


def kernels_for(qtype, tensor_name: str | None = None) -> _TypeKernels:
    """The kernel set of a tensor type; UnsupportedType names the type (and tensor) when there is none."""
    k = _KERNELS.get(qtype)
    if k is None:
        supported = ", ".join(GGMLType(t).name for t in sorted(SUPPORTED_TYPES))
        where = f"tensor {tensor_name}: " if tensor_name else ""
        raise UnsupportedType(f"{where}no kernel for tensor type {type_name(qtype)} "
                              f"(supported: {supported})")
    return k


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
    k = _KERNELS.get(w.type) or kernels_for(w.type, w.name)
    if x.shape != (w.shape[0],) or out.shape != (w.n_rows,):
        raise _mismatch(w, x, out)
    data = w.data if k.view is None else w.data.view(k.view)
    k.matvec(out, data, x, k.table, _chunk(w.n_rows))


# Types with a fused kernel for up to three matrix-vector products in one parallel launch (Q/K/V,
# gate/up): (out0, out1, out2, data0, data1, data2, x, table, chunk). Only where the fused loop
# compiles to bit-for-bit the sums of the single one (checked for Q4_1; a Q5_0 version differed in
# the last bit, which later flips llama.cpp-style 8-bit roundings).
_MATVEC3: dict[GGMLType, Callable] = {GGMLType.Q4_1: legacy.matvec3_q4_1}
_NO_OUT = np.empty(0, np.float32)


def matvecs(ws, x, outs):
    """W_i [rows_i, n] @ x [n] -> outs[i] [rows_i] for each i: one kernel launch when all W_i share
    a type with a fused kernel (and there are at most three), else one `matvec` each."""
    k3 = _MATVEC3.get(ws[0].type)
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
    k3(outs[0], outs[1], outs[2], datas[0], datas[1], datas[2], x, _F16,
       _chunk(max(w.n_rows for w in ws)))


def matmul(w, x, out):
    """x [T, n] -> out [T, rows] = x @ W^T (the prefill GEMM)."""
    k = _KERNELS.get(w.type) or kernels_for(w.type, w.name)
    if x.ndim != 2 or x.shape[1] != w.shape[0] or out.shape != (x.shape[0], w.n_rows):
        raise _mismatch(w, x, out)
    data = w.data if k.view is None else w.data.view(k.view)
    k.matmul(out, data, x, k.table)


def get_rows(w, ids, out):
    """ids int [T] -> out [T, n]: the rows of W named by ids, dequantized (embedding lookup)."""
    k = _KERNELS.get(w.type) or kernels_for(w.type, w.name)
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
