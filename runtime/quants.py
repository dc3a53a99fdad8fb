"""Block layouts and reference (plain numpy) dequantization of every supported tensor type.

This is the slow, obviously-correct twin of the numba kernels: each kernel is tested against it, and
it is tested bit for bit against `gguf.quants.dequantize` (gguf-py). Field names and layouts are
llama.cpp's (ggml/src/ggml-common.h `block_q4_0` ... `block_q6_K`; ggml-quants.c
`dequantize_row_*`), and the floating-point operations are done in the same order and precision
(float32, no fused multiply-add), which is what makes the results bit-exact.

Every dequantizer maps blocks uint8 [n_blocks, type_size] -> float32 [n_blocks, block_size],
vectorized over blocks.
"""
from __future__ import annotations

import numpy as np

from .ggml import QK_K, QUANT_SIZES, SUPPORTED_TYPES, GGMLType, type_name

# Byte layout of one block, field by field in struct order: (name, bytes). d, dmin and m are fp16.
BLOCK_LAYOUTS: dict[GGMLType, tuple[tuple[str, int], ...]] = {
    GGMLType.Q4_0: (("d", 2), ("qs", 16)),                       # 32 x 4-bit, y = d * (q - 8)
    GGMLType.Q4_1: (("d", 2), ("m", 2), ("qs", 16)),             # y = d * q + m
    GGMLType.Q5_0: (("d", 2), ("qh", 4), ("qs", 16)),            # 5th bits in qh, y = d * (q - 16)
    GGMLType.Q5_1: (("d", 2), ("m", 2), ("qh", 4), ("qs", 16)),  # y = d * q + m
    GGMLType.Q8_0: (("d", 2), ("qs", 32)),                       # int8 q, y = d * q
    # K-quants: super-blocks of QK_K = 256 weights in sub-blocks of 16 or 32, each with its own
    # (6- or 4-bit) scale and, for the "minus min" types, min.
    GGMLType.Q2_K: (("scales", QK_K // 16), ("qs", QK_K // 4), ("d", 2), ("dmin", 2)),
    GGMLType.Q3_K: (("hmask", QK_K // 8), ("qs", QK_K // 4), ("scales", 12), ("d", 2)),
    GGMLType.Q4_K: (("d", 2), ("dmin", 2), ("scales", 12), ("qs", QK_K // 2)),
    GGMLType.Q5_K: (("d", 2), ("dmin", 2), ("scales", 12), ("qh", QK_K // 8), ("qs", QK_K // 2)),
    GGMLType.Q6_K: (("ql", QK_K // 2), ("qh", QK_K // 4), ("scales", QK_K // 16), ("d", 2)),
    # IQ4: 4-bit indices into a fixed non-linear table of 16 levels (KVALUES_IQ4NL)
    GGMLType.IQ4_NL: (("d", 2), ("qs", 16)),                     # y = d * kvalues[q]
    GGMLType.IQ4_XS: (("d", 2), ("scales_h", 2), ("scales_l", QK_K // 64), ("qs", QK_K // 2)),
    # IQ4_XS: 8 sub-blocks of 32, 6-bit scale ls (low 4 bits in scales_l, high 2 in scales_h),
    # y = d * (ls - 32) * kvalues[q]
}

# ggml-common.h kvalues_iq4nl: the 16 levels of IQ4_NL and IQ4_XS
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.int8)


def field_offsets(qtype: GGMLType) -> dict[str, tuple[int, int]]:
    """{field: (start, stop)} byte range of each field inside one block of qtype."""
    offsets, at = {}, 0
    for name, size in BLOCK_LAYOUTS[qtype]:
        offsets[name] = (at, at + size)
        at += size
    return offsets


def _fields(blocks: np.ndarray, qtype: GGMLType) -> dict[str, np.ndarray]:
    # blocks uint8 [nb, type_size] -> {field: uint8 [nb, field bytes]} (views)
    return {name: blocks[:, a:b] for name, (a, b) in field_offsets(qtype).items()}


def _f16(x: np.ndarray) -> np.ndarray:
    # uint8 [nb, 2] -> float32 [nb, 1]
    return x.view("<f2").astype(np.float32)


def _shifts(*s: int) -> np.ndarray:
    # shift amounts broadcast over the second-to-last axis: [len(s), 1]
    return np.array(s, dtype=np.uint8).reshape(-1, 1)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    # uint8 [nb, k] -> uint8 [nb, 2k]: all low nibbles, then all high nibbles (ggml's order)
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _bits(qh: np.ndarray, count: int) -> np.ndarray:
    # uint8 [nb, k] -> uint8 [nb, count, k]: bit i of every byte in row i
    return (qh[:, None, :] >> np.arange(count, dtype=np.uint8).reshape(-1, 1)) & 1


# ---- 32-weight blocks ----

def dequantize_q4_0(blocks):
    f = _fields(blocks, GGMLType.Q4_0)
    q = _nibbles(f["qs"]).astype(np.int8) - np.int8(8)
    return _f16(f["d"]) * q.astype(np.float32)


def dequantize_q4_1(blocks):
    f = _fields(blocks, GGMLType.Q4_1)
    q = _nibbles(f["qs"]).astype(np.float32)
    return _f16(f["d"]) * q + _f16(f["m"])


def _q5_quants(f) -> np.ndarray:
    # weight j takes its 5th bit from bit j of the 32-bit qh: [nb, 32] uint8 in 0..31
    qh = f["qh"].view("<u4")                                         # [nb, 1]
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
    return _nibbles(f["qs"]) | (high << 4)


def dequantize_q5_0(blocks):
    f = _fields(blocks, GGMLType.Q5_0)
    q = _q5_quants(f).astype(np.int8) - np.int8(16)
    return _f16(f["d"]) * q.astype(np.float32)


def dequantize_q5_1(blocks):
    f = _fields(blocks, GGMLType.Q5_1)
    q = _q5_quants(f).astype(np.float32)
    return _f16(f["d"]) * q + _f16(f["m"])


def dequantize_q8_0(blocks):
    f = _fields(blocks, GGMLType.Q8_0)
    return _f16(f["d"]) * f["qs"].view(np.int8).astype(np.float32)


# ---- K-quants: 256-weight super-blocks ----

def _two_bit(qs: np.ndarray) -> np.ndarray:
    # Q2_K/Q3_K low bits: weight 128h + 32j + l is bits 2j..2j+1 of qs[32h + l]: [nb, 64] -> [nb, 256]
    nb = qs.shape[0]
    return ((qs.reshape(nb, 2, 1, 32) >> _shifts(0, 2, 4, 6)) & 3).reshape(nb, QK_K)


def dequantize_q2_k(blocks):
    nb = blocks.shape[0]
    f = _fields(blocks, GGMLType.Q2_K)
    # one 4-bit scale (low nibble) and 4-bit min (high nibble) per 16 weights
    dl = _f16(f["d"]) * (f["scales"] & 0x0F).astype(np.float32)          # [nb, 16]
    ml = _f16(f["dmin"]) * (f["scales"] >> 4).astype(np.float32)         # [nb, 16]
    q = _two_bit(f["qs"]).reshape(nb, 16, 16).astype(np.float32)
    return (dl[..., None] * q - ml[..., None]).reshape(nb, QK_K)


def _q3_k_scales(scales: np.ndarray) -> np.ndarray:
    # 16 6-bit scales: low 4 bits of scale i in byte i % 8 (low nibble for i < 8, high nibble after),
    # high 2 bits in byte 8 + i % 4 at bit 2 * (i // 4). uint8 [nb, 12] -> int8 [nb, 16], minus 32.
    nb = scales.shape[0]
    low = _nibbles(scales[:, :8])
    high = ((scales[:, None, 8:12] >> _shifts(0, 2, 4, 6)) & 3).reshape(nb, 16)
    return (low | (high << 4)).astype(np.int8) - np.int8(32)


def dequantize_q3_k(blocks):
    nb = blocks.shape[0]
    f = _fields(blocks, GGMLType.Q3_K)
    dl = _f16(f["d"]) * _q3_k_scales(f["scales"]).astype(np.float32)     # [nb, 16]
    # weight o = 128h + 32j + l has its high bit at bit 4h + j of hmask[l]; a clear bit subtracts 4
    hbit = _bits(f["hmask"], 8).reshape(nb, QK_K)
    q = _two_bit(f["qs"]).astype(np.int8) - ((hbit ^ 1) << 2).astype(np.int8)
    return (dl[..., None] * q.reshape(nb, 16, 16).astype(np.float32)).reshape(nb, QK_K)


def _k4_scale_min(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # get_scale_min_k4: 8 6-bit scales and mins in 12 bytes. uint8 [nb, 12] -> 2 x uint8 [nb, 8]
    #   j < 4: sc = s[j] & 63,                         m = s[j+4] & 63
    #   j >= 4: sc = s[j+4] & 15 | (s[j-4] >> 6) << 4,  m = s[j+4] >> 4 | (s[j] >> 6) << 4
    s_lo, s_mid, s_hi = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([s_lo & 63, (s_hi & 0x0F) | ((s_lo >> 6) << 4)], axis=-1)
    m = np.concatenate([s_mid & 63, (s_hi >> 4) | ((s_mid >> 6) << 4)], axis=-1)
    return sc, m


def _k4_quants(qs: np.ndarray) -> np.ndarray:
    # weight 64c + 32i + l is nibble i of qs[32c + l]: uint8 [nb, 128] -> [nb, 8, 32]
    nb = qs.shape[0]
    return ((qs.reshape(nb, 4, 1, 32) >> _shifts(0, 4)) & 0x0F).reshape(nb, 8, 32)


def dequantize_q4_k(blocks):
    nb = blocks.shape[0]
    f = _fields(blocks, GGMLType.Q4_K)
    sc, m = _k4_scale_min(f["scales"])
    d = _f16(f["d"]) * sc.astype(np.float32)                              # [nb, 8]
    dm = _f16(f["dmin"]) * m.astype(np.float32)                           # [nb, 8]
    q = _k4_quants(f["qs"]).astype(np.float32)
    return (d[..., None] * q - dm[..., None]).reshape(nb, QK_K)


def dequantize_q5_k(blocks):
    nb = blocks.shape[0]
    f = _fields(blocks, GGMLType.Q5_K)
    sc, m = _k4_scale_min(f["scales"])
    d = _f16(f["d"]) * sc.astype(np.float32)
    dm = _f16(f["dmin"]) * m.astype(np.float32)
    # weight 32i + l takes its 5th bit from bit i of qh[l]
    q = (_k4_quants(f["qs"]) | (_bits(f["qh"], 8) << 4)).astype(np.float32)
    return (d[..., None] * q - dm[..., None]).reshape(nb, QK_K)


def dequantize_q6_k(blocks):
    nb = blocks.shape[0]
    f = _fields(blocks, GGMLType.Q6_K)
    # weight 128h + 32k + l: low 4 bits are nibble k >> 1 of ql[64h + 32(k & 1) + l],
    # high 2 bits are bits 2k..2k+1 of qh[32h + l]
    ql = ((f["ql"].reshape(nb, 2, 1, 64) >> _shifts(0, 4)) & 0x0F).reshape(nb, QK_K)
    qh = ((f["qh"].reshape(nb, 2, 1, 32) >> _shifts(0, 2, 4, 6)) & 3).reshape(nb, QK_K)
    q = (ql | (qh << 4)).astype(np.int8) - np.int8(32)
    d = _f16(f["d"]) * f["scales"].view(np.int8).astype(np.float32)       # [nb, 16], per 16 weights
    return (d[..., None] * q.reshape(nb, 16, 16).astype(np.float32)).reshape(nb, QK_K)


# ---- non-linear 4-bit ----

def dequantize_iq4_nl(blocks):
    f = _fields(blocks, GGMLType.IQ4_NL)
    return _f16(f["d"]) * KVALUES_IQ4NL[_nibbles(f["qs"])].astype(np.float32)


def dequantize_iq4_xs(blocks):
    nb = blocks.shape[0]
    f = _fields(blocks, GGMLType.IQ4_XS)
    ib = np.arange(QK_K // 32)
    low = (f["scales_l"][:, ib // 2] >> (4 * (ib % 2)).astype(np.uint8)) & 0x0F        # [nb, 8]
    high = (f["scales_h"].view("<u2") >> (2 * ib).astype(np.uint16)) & 3             # [nb, 8]
    ls = (low.astype(np.int32) | (high.astype(np.int32) << 4)) - 32
    dl = _f16(f["d"]) * ls.astype(np.float32)                                       # [nb, 8]
    q = _nibbles(f["qs"].reshape(nb, 8, 16))                                        # [nb, 8, 32]
    return (dl[..., None] * KVALUES_IQ4NL[q].astype(np.float32)).reshape(nb, QK_K)


# ---- plain floats (one "block" per weight) ----

def dequantize_f32(blocks):
    return blocks.view("<f4").copy()


def dequantize_f16(blocks):
    return blocks.view("<f2").astype(np.float32)


def dequantize_bf16(blocks):
    # bfloat16 is the top half of a float32
    return (blocks.view("<u2").astype(np.uint32) << 16).view(np.float32)


DEQUANTIZERS = {
    GGMLType.F32: dequantize_f32, GGMLType.F16: dequantize_f16, GGMLType.BF16: dequantize_bf16,
    GGMLType.Q4_0: dequantize_q4_0, GGMLType.Q4_1: dequantize_q4_1,
    GGMLType.Q5_0: dequantize_q5_0, GGMLType.Q5_1: dequantize_q5_1, GGMLType.Q8_0: dequantize_q8_0,
    GGMLType.Q2_K: dequantize_q2_k, GGMLType.Q3_K: dequantize_q3_k, GGMLType.Q4_K: dequantize_q4_k,
    GGMLType.Q5_K: dequantize_q5_k, GGMLType.Q6_K: dequantize_q6_k,
    GGMLType.IQ4_NL: dequantize_iq4_nl, GGMLType.IQ4_XS: dequantize_iq4_xs,
}

assert SUPPORTED_TYPES <= DEQUANTIZERS.keys()

_CHUNK_BLOCKS = 1 << 15     # bounds the temporaries of one step (~35 MB for a K-quant)


def dequantize(data: np.ndarray, qtype: GGMLType, n: int) -> np.ndarray:
    """Raw rows of a tensor -> float32 weights. data uint8 [rows, row_nbytes] -> float32 [rows, n].

    Any leading shape works ([..., row_nbytes] -> [..., n]). Raises ValueError naming the type for a
    type without a dequantizer, and for rows whose size does not match n.
    """
    if qtype not in DEQUANTIZERS:
        supported = ", ".join(t.name for t in DEQUANTIZERS)
        raise ValueError(f"tensor type {type_name(qtype)} is not supported (supported: {supported})")
    qtype = GGMLType(qtype)
    block_size, type_size = QUANT_SIZES[qtype]
    data = np.asarray(data)
    if n % block_size:
        raise ValueError(f"{qtype.name}: row length {n} is not a multiple of the block size {block_size}")
    if data.dtype != np.uint8 or data.ndim == 0 or data.shape[-1] != n // block_size * type_size:
        raise ValueError(f"{qtype.name}: expected uint8 rows of {n // block_size * type_size} bytes for "
                         f"{n} weights, got {data.dtype} {data.shape}")
    blocks = np.ascontiguousarray(data).reshape(-1, type_size)
    out = np.empty((blocks.shape[0], block_size), dtype=np.float32)
    fn = DEQUANTIZERS[qtype]
    with np.errstate(invalid="ignore", over="ignore"):      # NaN/Inf scales propagate, as in C
        for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
            out[start:start + _CHUNK_BLOCKS] = fn(blocks[start:start + _CHUNK_BLOCKS])
    return out.reshape(*data.shape[:-1], n)
