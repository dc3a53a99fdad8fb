"""Reference dequantization: hand-built blocks with known values, then bit-exact agreement with
gguf-py's dequantizers on random blocks of every type and on every tensor type of the real models."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from runtime.ggml import QK_K, QUANT_SIZES, SUPPORTED_TYPES, GGMLType
from runtime.gguf import GGUFFile
from runtime.quants import BLOCK_LAYOUTS, DEQUANTIZERS, dequantize, field_offsets

TYPES = sorted(SUPPORTED_TYPES)
SCALE_FIELDS = ("d", "dmin", "m")


def f16(x: float) -> bytes:
    return struct.pack("<e", x)


def reference(data: np.ndarray, qtype: GGMLType) -> np.ndarray:
    import gguf.quants
    with np.errstate(invalid="ignore", over="ignore"):
        return gguf.quants.dequantize(data, gguf.GGMLQuantizationType(int(qtype))).astype(np.float32)


def assert_bit_exact(ours: np.ndarray, ref: np.ndarray, what: str):
    """Equal bit patterns (so NaNs match too); on failure name the worst block."""
    assert ours.dtype == np.float32 and ours.shape == ref.shape, what
    same = ours.view(np.uint32) == ref.reshape(ours.shape).view(np.uint32)
    if not same.all():
        row, col = np.argwhere(~same)[0]
        raise AssertionError(f"{what}: {np.count_nonzero(~same)} weights differ, first at row {row} "
                             f"col {col}: ours {ours[row, col]!r}, gguf-py {ref.reshape(ours.shape)[row, col]!r}")


def random_rows(rng, qtype: GGMLType, rows: int, n: int, sane_scales: bool) -> np.ndarray:
    """Random block bytes; with sane_scales the fp16 scale fields hold small finite values."""
    block_size, type_size = QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, n // block_size * type_size), dtype=np.uint8)
    if sane_scales and qtype in BLOCK_LAYOUTS:
        blocks = data.reshape(-1, type_size)
        for name, (a, b) in field_offsets(qtype).items():
            if name in SCALE_FIELDS:
                scale = rng.standard_normal((blocks.shape[0], 1)) * 0.05
                blocks[:, a:b] = scale.astype("<f2").view(np.uint8)
    return data


def test_layouts_match_block_sizes():
    assert SUPPORTED_TYPES <= DEQUANTIZERS.keys()       # IQ4_NL and IQ4_XS too (test_iq4_*)
    for qtype, layout in BLOCK_LAYOUTS.items():
        assert sum(size for _, size in layout) == QUANT_SIZES[qtype][1], qtype.name


@pytest.mark.parametrize("qtype", [GGMLType.IQ4_NL, GGMLType.IQ4_XS])
def test_iq4_dequantization_is_bit_exact_with_gguf_py(qtype):
    # random blocks (any bytes are a valid IQ4 block; fp16 scales kept finite) against gguf-py
    gguf_quants = pytest.importorskip("gguf.quants")
    block, size = QUANT_SIZES[qtype]
    raw = np.random.default_rng(int(qtype)).integers(0, 256, (64, size), dtype=np.uint8)
    raw[:, 1] &= 0x3B                                    # the fp16 d: |d| < 2 ** 8, no inf/nan
    ours = dequantize(raw, qtype, block)
    ref = gguf_quants.dequantize(raw, qtype).reshape(64, block)
    assert_bit_exact(ours, ref, qtype.name)


# ---- hand-built blocks: the layouts read the way llama.cpp writes them ----

def test_q4_0_block():
    qs = bytes((j + 1) % 16 | (15 - j) << 4 for j in range(16))    # low nibble: weight j, high: j + 16
    y = dequantize(np.frombuffer(f16(0.5) + qs, np.uint8)[None], GGMLType.Q4_0, 32)[0]
    expected = [0.5 * ((j + 1) % 16 - 8) for j in range(16)] + [0.5 * (15 - j - 8) for j in range(16)]
    assert y.tolist() == expected


def test_q4_1_block():
    qs = bytes(range(16))                                       # low nibbles 0..15, high nibbles 0
    y = dequantize(np.frombuffer(f16(2.0) + f16(-1.0) + qs, np.uint8)[None], GGMLType.Q4_1, 32)[0]
    assert y.tolist() == [2.0 * j - 1.0 for j in range(16)] + [-1.0] * 16


def test_q5_0_block():
    # fifth bit of weight j is bit j of qh: set it for weights 1 and 17 only
    qh = struct.pack("<I", 1 << 1 | 1 << 17)
    y = dequantize(np.frombuffer(f16(1.0) + qh + bytes(16), np.uint8)[None], GGMLType.Q5_0, 32)[0]
    expected = [-16.0] * 32
    expected[1] = expected[17] = 0.0
    assert y.tolist() == expected


def test_q8_0_block():
    qs = np.arange(-16, 16, dtype=np.int8).tobytes()
    y = dequantize(np.frombuffer(f16(0.25) + qs, np.uint8)[None], GGMLType.Q8_0, 32)[0]
    assert y.tolist() == [0.25 * q for q in range(-16, 16)]


def test_q4_k_block():
    # sub-block 0: scale 1, min 0; sub-block 5: scale 3 | 1<<4 = 19, min 2 | 2<<4 = 34 (6-bit split)
    scales = bytearray(12)
    scales[0] = 1                               # sc[0] = s[0] & 63
    scales[1] = 1 << 6                          # high bits of sc[5]: (s[1] >> 6) << 4
    scales[5] = 2 << 6                          # high bits of m[5]: (s[5] >> 6) << 4
    scales[9] = 3 | 2 << 4                      # sc[5] low = s[9] & 15, m[5] low = s[9] >> 4
    qs = bytearray(128)
    qs[0] = 0x07                                # weight 0 = low nibble of qs[0]
    qs[32 * 2 + 1] = 0x50                       # weight 64*2 + 32 + 1 = 161 (sub-block 5): high nibble
    block = f16(0.5) + f16(0.25) + bytes(scales) + bytes(qs)
    y = dequantize(np.frombuffer(block, np.uint8)[None], GGMLType.Q4_K, QK_K)[0]
    assert y[0] == 0.5 * 1 * 7
    assert y[161] == 0.5 * 19 * 5 - 0.25 * 34
    assert y[160] == -0.25 * 34                 # same sub-block, q = 0


def test_bf16_and_f16():
    x = np.array([1.0, -2.5, 3.140625, np.inf], dtype=np.float32)
    bf = (x.view(np.uint32) >> 16).astype("<u2").view(np.uint8)[None]
    assert dequantize(bf, GGMLType.BF16, 4)[0].tolist() == x.tolist()
    half = x.astype("<f2").view(np.uint8)[None]
    assert dequantize(half, GGMLType.F16, 4)[0].tolist() == x.tolist()


# ---- bit-exact against gguf-py ----

@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("sane_scales", [True, False], ids=["sane", "raw"])
def test_random_blocks_match_gguf_py(qtype, sane_scales):
    rng = np.random.default_rng([int(qtype), sane_scales])
    for rows, n in [(1, QK_K), (37, 4 * QK_K), (3, 12 * QK_K)]:
        data = random_rows(rng, qtype, rows, n, sane_scales)
        assert_bit_exact(dequantize(data, qtype, n), reference(data, qtype), f"{qtype.name} {rows}x{n}")


def test_chunked_large_input_matches():
    qtype = GGMLType.Q4_K
    data = random_rows(np.random.default_rng(7), qtype, 200, 200 * QK_K, True)   # > one chunk of blocks
    assert_bit_exact(dequantize(data, qtype, 200 * QK_K), reference(data, qtype), "Q4_K chunked")


def test_leading_shape_kept():
    data = random_rows(np.random.default_rng(3), GGMLType.Q8_0, 6, 64, True).reshape(2, 3, -1)
    assert dequantize(data, GGMLType.Q8_0, 64).shape == (2, 3, 64)


# rows taken from the middle of big tensors: the start and the end are covered by the other slices
MAX_ROWS = 2048


def tensor_samples(path):
    """Per tensor type, up to 3 tensors of the model (the largest slices of rows from embeddings)."""
    f = GGUFFile(path)
    by_type: dict[GGMLType, list] = {}
    for t in f.tensors.values():
        by_type.setdefault(t.type, []).append(t)
    for qtype, tensors in sorted(by_type.items()):
        for t in (tensors[0], tensors[len(tensors) // 2], tensors[-1]):
            if t.n_rows <= MAX_ROWS:
                yield t, t.data
            else:
                mid = t.n_rows // 2
                yield t, np.concatenate([t.data[:MAX_ROWS // 2], t.data[mid:mid + 64], t.data[-MAX_ROWS // 2:]])


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_real_tensors_match_gguf_py(model, request):
    path = request.getfixturevalue(f"{model}_path")
    seen = set()
    for t, data in tensor_samples(path):
        seen.add(t.type)
        assert_bit_exact(dequantize(data, t.type, t.shape[0]), reference(data, t.type), t.name)
    expected = ({GGMLType.F32, GGMLType.Q4_1, GGMLType.Q8_0} if model == "smollm2" else
                {GGMLType.F32, GGMLType.Q4_K, GGMLType.Q5_0, GGMLType.Q6_K, GGMLType.Q8_0})
    assert seen == expected


# ---- errors ----

def test_unsupported_type_names_it():
    data = np.zeros((1, QUANT_SIZES[GGMLType.IQ2_XXS][1]), dtype=np.uint8)
    with pytest.raises(ValueError, match="tensor type IQ2_XXS is not supported"):
        dequantize(data, GGMLType.IQ2_XXS, QK_K)
    with pytest.raises(ValueError, match="unknown type 99"):
        dequantize(data, 99, QK_K)


def test_wrong_row_size():
    with pytest.raises(ValueError, match="Q4_0: expected uint8 rows of 36 bytes for 64 weights"):
        dequantize(np.zeros((2, 35), np.uint8), GGMLType.Q4_0, 64)
    with pytest.raises(ValueError, match="not a multiple of the block size 256"):
        dequantize(np.zeros((2, 110), np.uint8), GGMLType.Q4_K, 200)


SYNTHETIC = sorted((Path(__file__).resolve().parent.parent / "data" / "synthetic").glob("*.gguf"))


@pytest.mark.parametrize("path", SYNTHETIC, ids=lambda p: p.name)
def test_synthetic_models_match_gguf_py(path):
    """llama.cpp-quantized weights of every type (scripts/make_synthetic.py), all tensors."""
    f = GGUFFile(path)
    weight_type = GGMLType[path.stem.rsplit("-", 1)[1]]
    for t in f.tensors.values():
        # 1-D norms, biases and RoPE factors stay F32, and so does a MoE router (llama.cpp never
        # quantizes ffn_gate_inp); 2-D weights and 3-D expert stacks take the file's type
        kept = len(t.shape) == 1 or t.name.endswith("ffn_gate_inp.weight")
        assert t.type == (GGMLType.F32 if kept else weight_type), t.name
        assert_bit_exact(dequantize(t.data, t.type, t.shape[0]), reference(t.data, t.type), f"{path.name} {t.name}")


def test_synthetic_set_is_complete():
    names = {p.name for p in SYNTHETIC}
    assert {f"llama-{t.name}.gguf" for t in SUPPORTED_TYPES} <= names
    assert {"llama-untied-Q4_K.gguf", "qwen2-F32.gguf", "qwen2-Q8_0.gguf"} <= names
