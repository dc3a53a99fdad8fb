"""The GGUF reader: agrees with gguf-py on the real models, is zero-copy, reads at an offset, is fast,
and rejects each kind of malformed file with a GGUFError naming the field and the offset."""
from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from gguf_helpers import gguf_bytes, kv, small_valid_gguf, string, tensor_info
from runtime.ggml import GGMLType, ValueType
from runtime.gguf import GGUFError, GGUFFile

V = ValueType


def write(tmp_path, data: bytes, name="t.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def open_bytes(tmp_path, data: bytes) -> GGUFFile:
    return GGUFFile(write(tmp_path, data))


def assert_same_file(a: GGUFFile, b: GGUFFile):
    assert (a.version, a.alignment, a.data_offset) == (b.version, b.alignment, b.data_offset)
    assert a.metadata.keys() == b.metadata.keys()
    for key, va in a.metadata.items():
        vb = b.metadata[key]
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and np.array_equal(va, vb), key
        else:
            assert va == vb, key
    assert list(a.tensors) == list(b.tensors)
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        assert (ta.type, ta.shape, ta.n_rows, ta.offset) == (tb.type, tb.shape, tb.n_rows, tb.offset)
        assert np.array_equal(ta.data, tb.data), name


# ---- real models ----

@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def real_model(request):
    return request.getfixturevalue(f"{request.param}_path")


def assert_matches_gguf_py(path):
    import gguf
    ours = GGUFFile(path)
    ref = gguf.GGUFReader(path)
    assert ours.data_offset == ref.data_offset
    assert ours.alignment == ref.alignment
    keys = [k for k in ref.fields if not k.startswith("GGUF.")]
    assert list(ours.metadata) == keys
    for key in keys:
        field, value = ref.fields[key], ours.metadata[key]
        assert ours.value_types[key] == field.types[0], key
        expected = field.contents()
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, np.asarray(expected, dtype=value.dtype)), key
        else:
            assert value == expected, key
    assert list(ours.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        mine = ours.tensors[t.name]
        assert mine.type == t.tensor_type and list(mine.shape) == list(t.shape)
        assert mine.n_rows == int(np.prod(t.shape[1:]))
        assert mine.data.shape[0] == mine.n_rows and mine.data.dtype == np.uint8
        assert np.array_equal(mine.data.reshape(-1), t.data.view(np.uint8).reshape(-1)), t.name


def test_smollm2_matches_gguf_py(smollm2_path):
    assert_matches_gguf_py(smollm2_path)


@pytest.mark.parametrize("name", ["llama-Q4_K.gguf", "qwen2-Q8_0.gguf"])
def test_synthetic_matches_gguf_py(name):
    assert_matches_gguf_py(Path(__file__).resolve().parent.parent / "data" / "synthetic" / name)


def test_real_model_layout_is_llama_cpps(real_model):
    """gguf.cpp's rule: tensor data is packed in file order, each padded to the alignment, and the
    file ends with the last tensor. (gguf-py takes ~40 s on Gemma's 262k tokens, so this rule and
    the facts below stand in for it there.)"""
    f = GGUFFile(real_model)
    expected = f.data_offset
    for t in f.tensors.values():
        assert t.offset == expected, t.name
        expected += -(-t.nbytes // f.alignment) * f.alignment
    assert expected >= f.size > expected - f.alignment


def test_gemma3_facts(gemma3_path):
    f = GGUFFile(gemma3_path)
    m = f.metadata
    assert (f.version, f.alignment, f.data_offset, len(f.tensors)) == (3, 32, 6525120, 236)
    assert m["general.architecture"] == "gemma3" and m["gemma3.block_count"] == 18
    assert f.value_types["gemma3.embedding_length"] == V.UINT32 and m["gemma3.embedding_length"] == 640
    assert m["gemma3.attention.layer_norm_rms_epsilon"] == np.float32(1e-6)
    assert m["tokenizer.ggml.add_bos_token"] is True
    tokens = m["tokenizer.ggml.tokens"]
    assert len(tokens) == 262144 == m["tokenizer.ggml.scores"].size == m["tokenizer.ggml.token_type"].size
    assert tokens[:4] == ["<pad>", "<eos>", "<bos>", "<unk>"]
    assert (tokens[105], tokens[106], tokens[-1]) == ("<start_of_turn>", "<end_of_turn>", "<unused6241>")
    assert m["tokenizer.ggml.scores"].dtype == np.float32 and m["tokenizer.ggml.token_type"].dtype == np.int32
    assert {t.type.name for t in f.tensors.values()} == {"F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"}
    emb = f.tensors["token_embd.weight"]
    assert (emb.type, emb.shape, emb.n_rows, emb.data.shape) == (GGMLType.Q8_0, (640, 262144), 262144, (262144, 680))


def test_real_model_views_are_zero_copy(real_model):
    f = GGUFFile(real_model)
    for t in f.tensors.values():
        assert np.shares_memory(t.data, f.memmap), t.name
        assert not t.data.flags.writeable and t.data.flags.c_contiguous
    arrays = [v for v in f.metadata.values() if isinstance(v, np.ndarray)]
    assert arrays, "expected numeric metadata arrays (token types, scores)"
    for a in arrays:
        assert np.shares_memory(a, f.memmap)
    tokens = f.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and all(isinstance(s, str) for s in tokens[:100])


def test_open_time(smollm2_path, gemma3_path):
    """CPU time, best of 3: the machine is shared, and wall time under load says little."""
    def best_of_3(path):
        cpu, wall = [], []
        for _ in range(3):
            c, w = time.process_time(), time.perf_counter()
            GGUFFile(path)
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        return min(cpu), min(wall)
    (smol, smol_wall), (gemma, gemma_wall) = best_of_3(smollm2_path), best_of_3(gemma3_path)
    print(f"open time (CPU / wall): SmolLM2 {smol * 1000:.0f} / {smol_wall * 1000:.0f} ms, "
          f"Gemma 3 {gemma * 1000:.0f} / {gemma_wall * 1000:.0f} ms")
    assert smol < 0.2
    assert gemma < 0.5


def test_smollm2_at_unaligned_offset_reads_like_standalone(smollm2_path, tmp_path):
    container = tmp_path / "container.bin"
    with open(container, "wb") as out, open(smollm2_path, "rb") as src:
        out.write(np.random.default_rng(1).integers(0, 256, 12345, dtype=np.uint8).tobytes())
        shutil.copyfileobj(src, out)
        out.write(b"trailing bundle data")
    alone, embedded = GGUFFile(smollm2_path), GGUFFile(container, offset=12345)
    assert_same_file(alone, embedded)
    assert embedded.offset == 12345
    t = embedded.tensors["blk.0.attn_q.weight"]
    assert np.shares_memory(t.data, embedded.memmap)


@pytest.mark.parametrize("prefix", [1, 12345, 65536])
def test_embedded_at_offset(tmp_path, prefix):
    data = small_valid_gguf()
    alone = open_bytes(tmp_path, data)
    path = write(tmp_path, b"\xAB" * prefix + data + b"\0" * 7, "container.bin")
    embedded = GGUFFile(path, offset=prefix)
    assert_same_file(alone, embedded)
    with pytest.raises(GGUFError, match="magic at offset 0"):
        GGUFFile(path, offset=prefix - 1)


# ---- a synthetic file with every value type ----

def test_every_value_type(tmp_path):
    f = open_bytes(tmp_path, small_valid_gguf())
    m = f.metadata
    assert f.version == 3 and f.alignment == 64 and f.data_offset % 64 == 0
    assert (m["test.u8"], m["test.i8"], m["test.u16"], m["test.i16"]) == (200, -100, 60000, -30000)
    assert (m["test.u32"], m["test.i32"]) == (4000000000, -2000000000)
    assert (m["test.u64"], m["test.i64"]) == (2**63 + 5, -2**62)
    assert m["test.f32"] == 0.25 and m["test.f64"] == -1.5 and m["test.bool"] is True
    assert m["test.unicode"] == "h\u00e9llo \u2603 \U0001F600"
    assert m["test.strings"] == ["a", "", "\u00e9\u00e8", "\U0001F600x", "", "zz"]
    assert m["test.empty"] == []
    assert m["test.floats"].dtype == np.float32 and m["test.floats"].tolist() == [1.0, -2.5, 3.25]
    assert m["test.ints"].tolist() == [1, -2, 3, 2**31 - 1]
    assert m["test.bools"].tolist() == [True, False]
    assert f.value_types["test.strings"] == V.ARRAY
    b = f.tensors["b.weight"]
    assert (b.type, b.shape, b.n_rows, b.data.shape) == (GGMLType.Q4_K, (256, 2, 2), 4, (4, 144))
    assert all(t.offset % 64 == 0 for t in f.tensors.values())


def test_matches_gguf_py_on_synthetic(tmp_path):
    import gguf
    path = write(tmp_path, small_valid_gguf())
    ours, ref = GGUFFile(path), gguf.GGUFReader(path)
    for key, field in ref.fields.items():
        if not key.startswith("GGUF."):
            expected, value = field.contents(), ours.metadata[key]
            assert (value.tolist() if isinstance(value, np.ndarray) else value) == expected, key
    for t in ref.tensors:
        assert np.array_equal(ours.tensors[t.name].data.reshape(-1), t.data.view(np.uint8).reshape(-1))


@pytest.mark.parametrize("strings", [
    ["nul\0inside", "x", ""],          # a NUL defeats the one-decode fast path
    ["\u00e9" * 3, "\u4e2d\u6587", "\U0001F600"],
    [""] * 5,
    ["a" * 70000, "b"],
    # the length-prefix fast path (GGUFFile._string_ends) must give way on each of these
    ["x", "\0" * 7 + "y", "z"],       # six zero bytes inside a string look like a length prefix
    ["x", "", "y"],                    # an empty string: no text byte after its prefix
    ["x", "\0y", "z"],                # a string starting with NUL
    ["x", "a" * 256, "b" * 512, "c"],  # lengths with a zero low byte
    ["x", "y", ""],                    # an empty last string
])
def test_string_arrays(tmp_path, strings):
    f = open_bytes(tmp_path, gguf_bytes([("s", V.ARRAY, (V.STRING, strings))]))
    assert f.metadata["s"] == strings


def test_string_array_prefixes_found_without_the_walk(tmp_path, monkeypatch):
    strings = [f"tok{i}" + "\u2581" * (i % 3) for i in range(3000)] + ["\0\0\0\0\0\0x", "y" * 300]
    data = gguf_bytes([("s", V.ARRAY, (V.STRING, strings)), ("n", V.UINT32, 7)])
    assert open_bytes(tmp_path, data).metadata == {"s": strings, "n": 7}
    monkeypatch.setattr(GGUFFile, "_walk_string_ends", None)       # the fast path alone, when it fits
    assert open_bytes(tmp_path, gguf_bytes([("s", V.ARRAY, (V.STRING, strings[:3000])),
                                            ("n", V.UINT32, 7)])).metadata == {"s": strings[:3000], "n": 7}


def test_version_2(tmp_path):
    assert open_bytes(tmp_path, gguf_bytes([("a", V.UINT8, 1)], version=2)).version == 2


def test_known_but_unsupported_tensor_type_opens(tmp_path):
    f = open_bytes(tmp_path, gguf_bytes([], [("w", [256, 2], GGMLType.IQ2_XXS, None)]))
    assert f.tensors["w"].type == GGMLType.IQ2_XXS


# ---- every validation, with the message it gives ----

def tiny_tensor(name="w", dims=(32, 2), ttype=GGMLType.F32):
    return (name, list(dims), ttype, None)


BAD_FILES = {
    "empty file": (b"", r"header at offset 0: file too short"),
    "short header": (b"GGUF\3\0\0\0", r"header at offset 0: file too short"),
    "wrong magic": (b"GGML" + gguf_bytes()[4:], r"magic at offset 0: expected b'GGUF', found b'GGML'"),
    "version 1": (gguf_bytes(version=1), r"version at offset 4: GGUF version 1 is not supported"),
    "version 4": (gguf_bytes(version=4), r"GGUF version 4 is not supported"),
    "big endian": (gguf_bytes(version=3 << 24), r"big-endian"),
    "absurd tensor count": (b"GGUF" + struct.pack("<IQQ", 3, 2**63, 0) + bytes(64),
                            r"tensor count at offset 8: 9223372036854775808 tensors cannot fit"),
    "absurd kv count": (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**64 - 1) + bytes(64),
                        r"metadata count at offset 16: 18446744073709551615 key-value pairs cannot fit"),
    "key length past eof": (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**62) + bytes(20),
                            r"metadata key #0 \(4611686018427387904-byte string\) at offset 32: .* past end"),
    "value string past eof": (gguf_bytes([("k", V.STRING, "abc")])[:-1],
                              r"metadata 'k' \(3-byte string\) at offset 45: 3 bytes run past end of file"),
    "invalid utf-8 key": (gguf_bytes([(b"\xff\xfe", V.UINT8, 1)]), r"metadata key #0 at offset 32: not valid UTF-8"),
    "duplicate key": (gguf_bytes([("k", V.UINT8, 1), ("k", V.UINT8, 2)]),
                      r"metadata key #1 at offset 38: duplicate key 'k'"),
    "unknown value type": (gguf_bytes()[:16] + struct.pack("<Q", 1) + string("k") + struct.pack("<IQ", 13, 0),
                           r"metadata 'k': unknown value type 13 at offset 33"),
    "nested array": (gguf_bytes([("k", V.ARRAY, (V.ARRAY, []))]), r"metadata 'k': nested arrays are not supported"),
    "array past eof": (gguf_bytes([("k", V.ARRAY, (V.UINT32, [1, 2]))])[:-1],
                       r"metadata 'k' \(2 x UINT32 array\) at offset 49: 8 bytes run past end"),
    "string array count past eof": (gguf_bytes()[:16] + struct.pack("<Q", 1) + string("k")
                                    + struct.pack("<IIQ", V.ARRAY, V.STRING, 2**61) + bytes(16),
                                    r"metadata 'k': array count 2305843009213693952 at offset 41 runs past end"),
    "string in array past eof": (gguf_bytes([("k", V.ARRAY, (V.STRING, ["ab", "cd"]))])[:-1],
                                 r"metadata 'k': string #1 at offset 59 \(2 bytes\) runs past end of file"),
    "string prefix in array cut": (gguf_bytes([("k", V.ARRAY, (V.STRING, ["ab", "cd", "ef", "gh"]))])[:-5],
                                   r"metadata 'k': length of string #3 at offset 79 runs past end"),
    "invalid utf-8 in string array": (gguf_bytes([("k", V.ARRAY, (V.STRING, [b"ok", b"\xc3"]))]),
                                      r"metadata 'k': string #1 at offset 67: not valid UTF-8"),
    "utf-8 split across strings": (gguf_bytes([("k", V.ARRAY, (V.STRING, [b"\xc3", b"\xa9"]))]),
                                   r"metadata 'k': string #0 at offset 57: not valid UTF-8"),
    "alignment not a power of two": (gguf_bytes([("general.alignment", V.UINT32, 48)]),
                                     r"'general.alignment': 48 is not a power of two"),
    "alignment zero": (gguf_bytes([("general.alignment", V.UINT32, 0)]), r"'general.alignment': 0 is not a power"),
    "alignment wrong type": (gguf_bytes([("general.alignment", V.STRING, "32")]),
                             r"'general.alignment': must be UINT32, found STRING"),
    "n_dims 0": (gguf_bytes([], [tiny_tensor(dims=())]), r"tensor 'w': n_dims 0 at offset 33 is not in 1..4"),
    "n_dims 5": (gguf_bytes([], [tiny_tensor(dims=(32, 1, 1, 1, 1))]), r"tensor 'w': n_dims 5 at offset 33"),
    "zero dim": (gguf_bytes([], [tiny_tensor(dims=(32, 0))]), r"tensor 'w': dim 1 = 0 at offset 45 must be positive"),
    "negative dim": (gguf_bytes([], [tiny_tensor(dims=(32, 2**64 - 3))]), r"tensor 'w': dim 1 = -3 at offset 45"),
    "unknown tensor type": (gguf_bytes([], [tiny_tensor(ttype=4)]), r"tensor 'w': unknown tensor type 4 at offset 53"),
    "row not whole blocks": (gguf_bytes([], [("w", [48, 2], GGMLType.Q4_0, bytes(64))]),
                             r"tensor 'w': row length 48 at offset 37 is not a multiple of the Q4_0 block size 32"),
    "huge tensor": (gguf_bytes([], [("w", [2**62, 2**62], GGMLType.F32, b"")]),
                    r"tensor 'w': data \[offset 96, 85070591730234615865843651857942052864 bytes\] extends past"),
    "data past eof": (gguf_bytes([], [tiny_tensor()])[:-1],
                      r"tensor 'w': data \[offset 96, 256 bytes\] extends past end of file \(351 bytes\)"),
    "misaligned data": (gguf_bytes([], [tiny_tensor()], offsets=[4]),
                        r"tensor 'w': data offset 4 \(at offset 57\) is not a multiple of the alignment 32"),
    "overlapping data": (gguf_bytes([], [tiny_tensor("a"), tiny_tensor("b")], offsets=[0, 128]),
                         r"tensor 'b': data \[offset 256, 256 bytes\] overlaps tensor 'a' \[offset 128, 256 bytes\]"),
    "duplicate tensor": (gguf_bytes([], [tiny_tensor("a"), tiny_tensor("a")]),
                         r"tensor #1 name at offset 65: duplicate tensor name 'a'"),
    "long tensor name": (gguf_bytes([], [tiny_tensor("x" * 64)]), r"tensor #0 name at offset 24: 'x+'... is longer"),
    "architecture as an array": (gguf_bytes([("general.architecture", V.ARRAY, (V.STRING, ["llama"]))]),
                                 r"metadata key #0 at offset 24: 'general.architecture' must hold str, found str\[\]"),
    "block count as a float": (gguf_bytes([("llama.block_count", V.FLOAT32, 5e30)]),
                               r"'llama.block_count' must hold int, found float"),
    "bos id as a string": (gguf_bytes([("tokenizer.ggml.bos_token_id", V.STRING, "1")]),
                           r"'tokenizer.ggml.bos_token_id' must hold int, found str"),
    "add_bos as an int array": (gguf_bytes([("tokenizer.ggml.add_bos_token", V.ARRAY, (V.INT32, [1]))]),
                                r"'tokenizer.ggml.add_bos_token' must hold bool, found int\[\]"),
    "tokens as a number": (gguf_bytes([("tokenizer.ggml.tokens", V.UINT32, 7)]),
                           r"'tokenizer.ggml.tokens' must hold str\[\], found int"),
    "tensor info cut": (gguf_bytes()[:8] + struct.pack("<QQ", 1, 0) + tensor_info("w", [32, 2], 0, 0)[:-3] + bytes(0),
                        r"tensor 'w' data offset at offset 57: 8 bytes run past end of file"),
}


LIMITS = {
    "too many tensors": (b"GGUF" + struct.pack("<IQQ", 3, 70000, 0), 70000 * 32,
                         r"tensor count at offset 8: 70000 tensors is more than this reader accepts \(65536\)"),
    "too many keys": (b"GGUF" + struct.pack("<IQQ", 3, 0, 70000), 70000 * 13,
                      r"metadata count at offset 16: 70000 key-value pairs is more than this reader accepts"),
    "too many strings": (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + string("k")
                         + struct.pack("<IIQ", V.ARRAY, V.STRING, 5_000_000), 5_000_000 * 8,
                         r"metadata 'k': array count 5000000 at offset 41 makes more strings than this reader"),
    "too many strings in all": (b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
                                + string("a") + struct.pack("<IIQ", V.ARRAY, V.STRING, 1)
                                + string("x" * 30) + string("b")
                                + struct.pack("<IIQ", V.ARRAY, V.STRING, 2**22), 2**22 * 8,
                                r"metadata 'b': array count 4194304 at offset 104 makes more strings"),
}


@pytest.mark.parametrize("case", LIMITS)
def test_sanity_limits(tmp_path, case):
    head, body_size, message = LIMITS[case]
    path = write(tmp_path, head)
    with open(path, "r+b") as f:
        f.truncate(len(head) + body_size)        # sparse zeros: big enough that only the limit fails
    with pytest.raises(GGUFError, match=message):
        GGUFFile(path)


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file(tmp_path, case):
    data, message = BAD_FILES[case]
    with pytest.raises(GGUFError, match=message):
        open_bytes(tmp_path, data)


@pytest.mark.parametrize("case", ["data past eof", "misaligned data", "string in array past eof"])
def test_embedded_errors_read_like_standalone(tmp_path, case):
    """Offsets in messages count from the GGUF start, so an embedded file fails with the same words."""
    data = BAD_FILES[case][0]
    with pytest.raises(GGUFError) as alone:
        open_bytes(tmp_path, data)
    with pytest.raises(GGUFError) as embedded:
        GGUFFile(write(tmp_path, b"\x7f" * 777 + data, "container.bin"), offset=777)
    assert str(embedded.value) == str(alone.value)


def test_offset_outside_file(tmp_path):
    path = write(tmp_path, small_valid_gguf())
    with pytest.raises(GGUFError, match="offset 100000 lies outside the file"):
        GGUFFile(path, offset=100000)
    with pytest.raises(GGUFError, match="file too short"):
        GGUFFile(path, offset=path.stat().st_size - 3)


def test_error_is_a_value_error_with_one_line(tmp_path):
    with pytest.raises(ValueError) as info:
        open_bytes(tmp_path, gguf_bytes([], [tiny_tensor()])[:-1])
    assert "\n" not in str(info.value)


def test_key_order_and_kv_helper_roundtrip(tmp_path):
    data = gguf_bytes()[:16] + struct.pack("<Q", 2) + kv("b", V.INT8, -1) + kv("a", V.FLOAT64, 2.0)
    f = open_bytes(tmp_path, data)
    assert list(f.metadata.items()) == [("b", -1), ("a", 2.0)]


def test_type_table_matches_gguf_py():
    """Every tensor type llama.cpp's reader knows is known here (a known but unsupported type
    opens, and the model names it), with the same block geometry."""
    import gguf
    from gguf.constants import GGML_QUANT_SIZES
    from runtime.ggml import QUANT_SIZES
    assert {t.value: t.name for t in GGMLType} == {t.value: t.name for t in gguf.GGMLQuantizationType}
    for t in gguf.GGMLQuantizationType:
        assert QUANT_SIZES[GGMLType(t.value)] == GGML_QUANT_SIZES[t], t.name
