"""Which kernel computes what, for every GGML type: the one table `runtime.kernels` dispatches through.

    matvec(out, data, x, table, chunk)      W [rows, n] @ x [n] -> out [rows]          (decode)
    matmul(out, data, x, table)             x [T, n] -> out [T, rows]                  (prefill)
    get_rows(out, data, ids, table)         ids int [T] -> out [T, n]                  (embedding rows)
    matvec3(o0, o1, o2, d0, d1, d2, x, table, chunk)   up to three W @ x in one launch, or None
    matvec_q8(out, data, qs, d, chunk)      W @ x_j for B activation vectors quantized to 8 bits
                                            (qs int8 [B, n], d [B, n / q8_block]) -> out [B, rows],
                                            integer dot products (intdot.py), or None
    matmul_q8(out, data, qs, d, s)          x [T, n] in that form -> out [T, rows] (intgemm.py), or None
`data` is the tensor's raw rows (uint8 [rows, row_nbytes], viewed as `view` for the float types),
`table` the 65536-entry fp16 (or bf16) -> float32 lookup the kernel reads scales or weights through.

A type without an entry has no kernels (`kernels_for` names it). A new type's kernel module adds its
row here, spelled out, so that every kernel a type runs can be found by grepping for its name.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ..ggml import SUPPORTED_TYPES, GGMLType, type_name
from . import floats, intdot, intgemm, iq4, kquants, legacy


class UnsupportedType(ValueError):
    """A tensor type no kernel handles."""


class TypeKernels(NamedTuple):
    matvec: Callable
    matmul: Callable
    get_rows: Callable
    table: np.ndarray            # fp16 -> float32 (bf16 -> float32 for BF16), 65536 entries
    view: object = None          # dtype to view the raw rows as (float types); None for block types
    matvec3: Callable | None = None   # fused matvec of up to three W sharing x, where its sums are
                                      # bit-for-bit matvec's (checked for Q4_1; a Q5_0 version differed
                                      # in the last bit, which later flips llama.cpp-style roundings)
    matvec_q8: Callable | None = None
    matmul_q8: Callable | None = None
    q8_block: int = 32                # values per activation scale: 32 (Q8_0) or 256 (Q8_K)


F16 = floats.F16_TABLE

KERNELS: dict[GGMLType, TypeKernels] = {
    GGMLType.F32: TypeKernels(floats.matvec_f32, floats.matmul_f32, floats.get_rows_f32, F16,
                              view=np.float32),
    GGMLType.F16: TypeKernels(floats.matvec_f16, floats.matmul_f16, floats.get_rows_f16, F16,
                              view=np.uint16),
    GGMLType.BF16: TypeKernels(floats.matvec_f16, floats.matmul_f16, floats.get_rows_f16,
                               floats.BF16_TABLE, view=np.uint16),
    GGMLType.Q4_0: TypeKernels(legacy.matvec_q4_0, legacy.matmul_q4_0, legacy.get_rows_q4_0, F16,
                               matvec_q8=intdot.matvec_q4_0_q8,
                               matmul_q8=intgemm.matmul_q4_0_q8),
    GGMLType.Q4_1: TypeKernels(legacy.matvec_q4_1, legacy.matmul_q4_1, legacy.get_rows_q4_1, F16,
                               matvec3=legacy.matvec3_q4_1, matvec_q8=intdot.matvec_q4_1_q8,
                               matmul_q8=intgemm.matmul_q4_1_q8),
    GGMLType.Q5_0: TypeKernels(legacy.matvec_q5_0, legacy.matmul_q5_0, legacy.get_rows_q5_0, F16,
                               matvec_q8=intdot.matvec_q5_0_q8,
                               matmul_q8=intgemm.matmul_q5_0_q8),
    GGMLType.Q5_1: TypeKernels(legacy.matvec_q5_1, legacy.matmul_q5_1, legacy.get_rows_q5_1, F16,
                               matvec_q8=intdot.matvec_q5_1_q8,
                               matmul_q8=intgemm.matmul_q5_1_q8),
    GGMLType.Q8_0: TypeKernels(legacy.matvec_q8_0, legacy.matmul_q8_0, legacy.get_rows_q8_0, F16,
                               matvec_q8=intdot.matvec_q8_0_q8,
                               matmul_q8=intgemm.matmul_q8_0_q8),
    GGMLType.Q2_K: TypeKernels(kquants.matvec_q2_k, kquants.matmul_q2_k, kquants.get_rows_q2_k, F16),
    GGMLType.Q3_K: TypeKernels(kquants.matvec_q3_k, kquants.matmul_q3_k, kquants.get_rows_q3_k, F16),
    GGMLType.Q4_K: TypeKernels(kquants.matvec_q4_k, kquants.matmul_q4_k, kquants.get_rows_q4_k, F16,
                               matvec_q8=intdot.matvec_q4_k_q8,
                               matmul_q8=intgemm.matmul_q4_k_q8, q8_block=256),
    GGMLType.Q5_K: TypeKernels(kquants.matvec_q5_k, kquants.matmul_q5_k, kquants.get_rows_q5_k, F16,
                               matvec_q8=intdot.matvec_q5_k_q8,
                               matmul_q8=intgemm.matmul_q5_k_q8, q8_block=256),
    GGMLType.Q6_K: TypeKernels(kquants.matvec_q6_k, kquants.matmul_q6_k, kquants.get_rows_q6_k, F16,
                               matvec_q8=intdot.matvec_q6_k_q8,
                               matmul_q8=intgemm.matmul_q6_k_q8, q8_block=256),
    GGMLType.IQ4_NL: TypeKernels(iq4.matvec_iq4_nl, iq4.matmul_iq4_nl, iq4.get_rows_iq4_nl, F16,
                                 matvec_q8=iq4.matvec_iq4_nl_q8, matmul_q8=iq4.matmul_iq4_nl_q8),
    GGMLType.IQ4_XS: TypeKernels(iq4.matvec_iq4_xs, iq4.matmul_iq4_xs, iq4.get_rows_iq4_xs, F16,
                                 matvec_q8=iq4.matvec_iq4_xs_q8, matmul_q8=iq4.matmul_iq4_xs_q8,
                                 q8_block=256),
}


def kernels_for(qtype, tensor_name: str | None = None) -> TypeKernels:
    """The kernel set of a tensor type; UnsupportedType names the type (and tensor) when there is none."""
    k = KERNELS.get(qtype)
    if k is None:
        supported = ", ".join(GGMLType(t).name for t in sorted(SUPPORTED_TYPES))
        where = f"tensor {tensor_name}: " if tensor_name else ""
        raise UnsupportedType(f"{where}no kernel for tensor type {type_name(qtype)} "
                              f"(supported: {supported})")
    return k
