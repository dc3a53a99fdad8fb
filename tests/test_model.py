"""The forward pass's parts: ops kernels against their numpy twins, ModelConfig from real metadata,
the KV cache (prefill then decode, truncate, sliding window), loading at an offset, and the errors.

Agreement with llama.cpp's logits is tests/test_goldens.py.
"""
from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pytest
from numba import njit

import runtime
from runtime import ops
from runtime.config import ModelConfig, ModelError
from runtime.ggml import GGMLType, ValueType
from runtime.gguf import GGUFFile
from runtime.model import Model

from conftest import ROOT
from gguf_helpers import gguf_bytes

SYNTHETIC = ROOT / "data" / "synthetic"
RNG = np.random.default_rng(20261124)


NO_YARN = (np.float32(0), np.float32(0), np.float32(0), np.float32(1))   # ext_factor, corr dims, mscale


def randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


# ---- ops against their twins -------------------------------------------------------------------------

def test_f16_round_is_bit_exact_with_numpy_float16():
    # normal, subnormal and tie-prone values across fp16's finite range (|x| < 65504)
    a = (RNG.standard_normal(200_000) * np.exp(RNG.uniform(-20, 8, 200_000))).astype(np.float32)
    a[:1000] = (np.arange(1000) + 0.5).astype(np.float32) * np.float32(2.0 ** -24)   # exact ties
    ours = a.copy()
    ops.f16_round(ours)
    assert np.array_equal(ours.view(np.uint32), ops.f16_round_ref(a).view(np.uint32))


@pytest.mark.parametrize("kind", [ops.ACT_F32, ops.ACT_F16, ops.ACT_BF16, ops.ACT_Q8_0, ops.ACT_Q8_K])
def test_round_activations_matches_twin(kind):
    x = randn(3, 768, scale=3.0)
    x[1, :256] = 0                                   # an all-zero block
    out = np.empty_like(x)
    ops.round_activations(out, x, kind)
    assert np.array_equal(out, ops.round_activations_ref(x, kind))
    if kind in (ops.ACT_Q8_0, ops.ACT_Q8_K):         # really 8 bits: at most 255 levels per block
        block = 32 if kind == ops.ACT_Q8_0 else 256
        assert max(len(np.unique(b)) for b in out.reshape(-1, block)) <= 255
        assert 0 < np.abs(out - x).max() <= np.abs(x).max() / 127


def test_q8_0_rounding_agrees_with_gguf_reference_quantizer():
    gguf_quants = pytest.importorskip("gguf.quants")
    x = randn(4, 512, scale=2.0)
    blocks = gguf_quants.quantize(x, GGMLType.Q8_0)
    ref = gguf_quants.dequantize(blocks, GGMLType.Q8_0)
    out = np.empty_like(x)
    ops.round_activations(out, x, ops.ACT_Q8_0)
    # the x86 path rounds ties to even and scales by 127/amax; the reference by 1/d and away from 0
    d = np.abs(x.reshape(-1, 32)).max(axis=1) / 127
    assert (np.abs(out - ref).reshape(-1, 32) <= d[:, None] * 1.01).all()
    assert np.mean(out == ref) > 0.99


def test_rms_norm_and_head_norm():
    x, w = randn(5, 640, scale=4.0), randn(640)
    out = np.empty_like(x)
    ops.rms_norm(out, x, w, 1e-6)
    np.testing.assert_allclose(out, ops.rms_norm_ref(x, w, 1e-6), rtol=2e-6, atol=2e-6)
    q, wh = randn(3, 4 * 256), randn(256)
    ref = ops.head_rms_norm_ref(q, wh, 4, 1e-6)
    ops.head_rms_norm(q, wh, 4, 1e-6)
    np.testing.assert_allclose(q, ref, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("neox", [False, True])
def test_rope_matches_twin_and_rotates_the_right_pairs(neox):
    n_heads, hd, rope_dim = 3, 64, 48                # rope_dim < head_dim: the tail is left alone
    theta_scale = np.float32(10000.0 ** (-2 / rope_dim))
    factors = np.linspace(1, 8, rope_dim // 2).astype(np.float32)     # Llama 3.1 style factors
    x = randn(6, n_heads * hd)
    ours = x.copy()
    pos = np.arange(37, 43, dtype=np.int64)
    pos[4] = 5                                       # rows of a batch need not be consecutive
    ops.rope(ours, pos, n_heads, hd, theta_scale, np.float32(0.5), factors, neox, *NO_YARN)
    np.testing.assert_allclose(ours, ops.rope_ref(x, pos, n_heads, hd, theta_scale, 0.5, factors, neox),
                               rtol=1e-6, atol=1e-6)
    h, h0 = ours.reshape(6, n_heads, hd), x.reshape(6, n_heads, hd)
    assert np.array_equal(h[..., rope_dim:], h0[..., rope_dim:])
    # rotation keeps the norm of each rotated pair
    pair_a = np.arange(rope_dim // 2) if neox else np.arange(0, rope_dim, 2)
    pair_b = pair_a + rope_dim // 2 if neox else pair_a + 1
    np.testing.assert_allclose(h[..., pair_a] ** 2 + h[..., pair_b] ** 2,
                               h0[..., pair_a] ** 2 + h0[..., pair_b] ** 2, rtol=1e-5)
    # position 0 is the identity
    p0 = x.copy()
    ops.rope(p0, np.arange(6, dtype=np.int64), n_heads, hd, theta_scale, np.float32(1), factors, neox,
             *NO_YARN)
    np.testing.assert_array_equal(p0[0], x[0])
    # a rotation by -d after one by p + d is one by p, to float32 rounding (llama.cpp's K shift)
    back = x.copy()
    ops.rope(back, np.full(6, 50, np.int64), n_heads, hd, theta_scale, np.float32(1), factors, neox,
             *NO_YARN)
    ops.rope(back, np.full(6, -20, np.int64), n_heads, hd, theta_scale, np.float32(1), factors, neox,
             *NO_YARN)
    at30 = x.copy()
    ops.rope(at30, np.full(6, 30, np.int64), n_heads, hd, theta_scale, np.float32(1), factors, neox,
             *NO_YARN)
    np.testing.assert_allclose(back, at30, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("neox", [False, True])
def test_rope_yarn_and_attention_factor_match_twin(neox):
    # YaRN (ext_factor 1, correction dims 5..20 of 32 pairs, linear factor 4) with LongRoPE-style
    # factors and an attention factor that scales cos and sin
    n_heads, hd = 2, 64
    theta_scale = np.float32(1e6 ** (-2 / hd))
    factors = np.linspace(1, 3, hd // 2).astype(np.float32)
    x = randn(5, n_heads * hd)
    args = (np.float32(1), np.float32(5), np.float32(20), np.float32(0.9))
    ours = x.copy()
    pos = np.arange(1000, 1005, dtype=np.int64)
    ops.rope(ours, pos, n_heads, hd, theta_scale, np.float32(0.25), factors, neox, *args)
    ref = ops.rope_ref(x, pos, n_heads, hd, theta_scale, 0.25, factors, neox, *args)
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=2e-6)
    # the magnitude: 0.9 * (1 + 0.1 ln 4) on every rotated pair
    gain = 0.9 * (1 + 0.1 * math.log(4))
    h, h0 = ours.reshape(5, n_heads, hd), x.reshape(5, n_heads, hd)
    np.testing.assert_allclose(np.linalg.norm(h, axis=-1), gain * np.linalg.norm(h0, axis=-1), rtol=1e-5)


@pytest.mark.parametrize("hd", [64, 72, 80, 256])      # P.V in 64- and 16-wide pieces, and the rest
@pytest.mark.parametrize("window,softcap", [(0, 0.0), (5, 0.0), (5, 2.0)])
def test_attention_matches_twin_with_gqa_window_and_softcap(window, softcap, hd):
    # rows 0-3: a prompt run of sequence 1 at positions 9-12; rows 4-5: decode rows of sequences 0 and 2
    n_heads, n_kv, n_ctx = 6, 2, 32
    seq = np.array([1, 1, 1, 1, 0, 2], np.int64)
    pos = np.array([9, 10, 11, 12, 20, 3], np.int64)
    q = randn(len(seq), n_heads * hd)
    k = ops.f16_bits_ref(randn(3, n_kv, n_ctx, hd))
    v = ops.f16_bits_ref(randn(3, n_kv, n_ctx, hd))
    out = np.empty_like(q)
    ops.attention(out, q, k, v, seq, pos, window, 0.5, 0.125, softcap)
    ref = ops.attention_ref(q, k, v, seq, pos, window, 0.5, 0.125, softcap)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # positions after each query, and other sequences, are never read: poisoning them changes nothing
    nan, big = ops.f16_bits_ref(np.float32(np.nan)), ops.f16_bits_ref(np.float32(1e4))
    k2, v2 = k.copy(), v.copy()
    for s, last in ((1, 12), (0, 20), (2, 3)):
        k2[s, :, last + 1:] = big
        v2[s, :, last + 1:] = nan
    out2 = np.empty_like(q)
    ops.attention(out2, q, k2, v2, seq, pos, window, 0.5, 0.125, softcap)
    assert np.array_equal(out, out2)
    alone = np.empty_like(q[4:5])                    # a row's result does not depend on the batch
    ops.attention(alone, q[4:5], k, v, seq[4:5], pos[4:5], window, 0.5, 0.125, softcap)
    assert np.array_equal(alone, out[4:5])
    if window:                                       # nor are positions before the window
        k2[1, :, :9 + 1 - window] = nan
        k2[0, :, :20 + 1 - window] = nan
        ops.attention(out2, q, k2, v2, seq, pos, window, 0.5, 0.125, softcap)
        assert np.array_equal(out, out2)


def test_store_kv_stores_fp16_bits_per_row():
    k_cache, v_cache = np.zeros((2, 2, 8, 64), np.uint16), np.zeros((2, 2, 8, 64), np.uint16)
    k, v = randn(3, 128), randn(3, 128)
    seq, pos = np.array([1, 1, 0], np.int64), np.array([4, 5, 2], np.int64)
    ops.store_kv(k_cache, v_cache, k, v, seq, pos)
    assert np.array_equal(k_cache[1, 1, 4:6], ops.f16_bits_ref(k[:2, 64:]))
    assert np.array_equal(v_cache[0, 0, 2], ops.f16_bits_ref(v[2, :64]))
    ref_k, ref_v = np.zeros_like(k_cache), np.zeros_like(v_cache)
    ops.store_kv_ref(ref_k, ref_v, k, v, seq, pos)
    assert np.array_equal(k_cache, ref_k) and np.array_equal(v_cache, ref_v)
    # the stored values are llama.cpp's F16 cache values: float32 rounded to fp16, ties to even
    assert np.array_equal(ops.f16_value_ref(k_cache[1, 0, 4]), ops.f16_round_ref(k[0, :64]))


def test_fp16_conversions_match_numpy():
    x = np.concatenate([randn(4096) * 100, np.float32([0.0, -0.0, 6e-8, 2.9802322e-08, 3e-5, 65504, 65519,
                                                        65520, -1e6])]).astype(np.float32)
    bits = np.zeros(len(x), np.uint16)
    back = np.zeros(len(x), np.float32)
    _to_bits(bits, x)
    _to_values(back, bits)
    with np.errstate(over="ignore"):
        assert np.array_equal(bits, ops.f16_bits_ref(x))
    assert np.array_equal(back, ops.f16_value_ref(bits))


@njit
def _to_bits(out, x):
    for i in range(x.shape[0]):
        out[i] = ops.f16_bits(x[i])


@njit
def _to_values(out, h):
    for i in range(h.shape[0]):
        out[i] = ops.f16_value(h[i])


def test_softmax_and_gates():
    s = randn(300, scale=5.0)
    ours = s.copy()
    ops.softmax(ours)
    np.testing.assert_allclose(ours, ops.softmax_ref(s), rtol=1e-5, atol=1e-8)
    gate, up = randn(2, 1000, scale=5.0), randn(2, 1000)
    gate[0, :4] = [-12.0, 12.0, -10.0, 10.0]          # the clamped ends of ggml's GELU table
    out = np.empty_like(gate)
    ops.swiglu(out, gate, up)
    np.testing.assert_allclose(out, ops.swiglu_ref(gate, up), rtol=1e-5, atol=1e-6)
    ops.geglu(out, gate, up)
    np.testing.assert_allclose(out, ops.geglu_ref(gate, up), rtol=1e-6, atol=1e-7)
    # GELU(tanh) itself, within fp16 precision
    exact = 0.5 * gate * (1 + np.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)))
    np.testing.assert_allclose(out, exact * up, rtol=2e-3, atol=2e-3)


def test_gelu_table_matches_ggml():
    # entries of ggml_table_gelu_f16 read out of llama-cpp-python 0.3.36's libggml-cpu.so
    # (scripts/trace_llamacpp.py gelu-table): fp16 bits of x -> fp16 bits of GELU(x). These are
    # where a float64 GELU rounds to another fp16 value (float32 tanhf, fused multiply-add).
    for x, y in [(0xbfff, 0xa9d3), (0xc007, 0xa9a9), (0xc264, 0x97c8), (0xc4e4, 0x8007)]:
        got = np.float32(ops.GELU_F16_TABLE[x]).astype(np.float16).view(np.uint16)
        assert int(got) == y, f"GELU({x:#06x}) = {int(got):#06x}, ggml has {y:#06x}"


# ---- config ------------------------------------------------------------------------------------------

def test_config_smollm2(smollm2_path):
    c = ModelConfig.from_gguf(GGUFFile(smollm2_path))
    assert (c.arch, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.n_rep) == \
        ("llama", 576, 30, 9, 3, 64, 3)
    assert (c.hidden_dim, c.vocab_size, c.context_length) == (1536, 49152, 8192)
    assert c.rope_global.base == 100000.0 and not c.rope_neox and c.rope_dim == 64
    assert c.rope_global.freq_scale == 1.0 and c.rope_global.ext_factor == 0.0
    assert c.kq_scale == pytest.approx(1 / 8) and c.q_scale == 1.0 and c.embed_scale == 1.0
    assert not any(c.local_layers) and c.sliding_window == 0
    assert not (c.ffn_gelu or c.qk_norm or c.post_norms)


def test_config_gemma3(gemma3_path):
    c = ModelConfig.from_gguf(GGUFFile(gemma3_path))
    assert (c.arch, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim) == \
        ("gemma3", 640, 18, 4, 1, 256)
    assert c.vocab_size == 262144 and c.context_length == 32768
    assert c.rope_neox and c.rope_global.base == 1e6 and c.rope_local.base == 10000.0
    assert c.sliding_window == 512
    assert [il for il, local in enumerate(c.local_layers) if not local] == [5, 11, 17]
    assert c.q_scale == pytest.approx(1 / 16) and c.kq_scale == 1.0
    assert c.embed_scale == pytest.approx(math.sqrt(640))
    assert c.ffn_gelu and c.qk_norm and c.post_norms


def _tiny_gguf(path, arch="llama", embd_type=GGMLType.F32):
    V = ValueType
    kvs = [("general.architecture", V.STRING, arch)] + [
        (f"{arch}.{k}", V.UINT32, n) for k, n in (
            ("embedding_length", 32), ("block_count", 1), ("feed_forward_length", 32),
            ("attention.head_count", 2), ("context_length", 16))] + [
        (f"{arch}.attention.layer_norm_rms_epsilon", V.FLOAT32, 1e-5),
        ("tokenizer.ggml.model", V.STRING, "llama"),
        ("tokenizer.ggml.tokens", V.ARRAY, (V.STRING, ["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e"])),
        ("tokenizer.ggml.scores", V.ARRAY, (V.FLOAT32, [0.0] * 8)),
        ("tokenizer.ggml.token_type", V.ARRAY, (V.INT32, [2, 3, 3, 1, 1, 1, 1, 1]))]
    path.write_bytes(gguf_bytes(kvs, [("token_embd.weight", [32, 8], embd_type, None)]))
    return path


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    with pytest.raises(ModelError, match=r"unsupported model architecture 'gpt2' "
                                         r"\(supported: gemma2, gemma3, granite, granitemoe, llama, mistral3, phi3, qwen2, qwen3, qwen3moe\)"):
        runtime.load(_tiny_gguf(tmp_path / "m.gguf", arch="gpt2"))


def test_unsupported_tensor_type_names_type_and_tensor(tmp_path):
    with pytest.raises(ModelError, match=r"tensor 'token_embd.weight' has type MXFP4"):
        runtime.load(_tiny_gguf(tmp_path / "m.gguf", embd_type=GGMLType.MXFP4))


def test_missing_tensor_is_named(tmp_path):
    with pytest.raises(ModelError, match=r"tensor 'output_norm.weight' is missing"):
        runtime.load(_tiny_gguf(tmp_path / "m.gguf"))


# ---- sessions and the KV cache -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    # plain float32 arithmetic: prefill (matmul) and decode (matvec) then differ only by summation
    # order, so a cache bug cannot hide behind flipped 8-bit activation roundings
    model = runtime.load(SYNTHETIC / "llama-Q8_0.gguf")
    model.llama_rounding = False
    return model


def test_prefill_then_decode_equals_one_shot_prefill(tiny):
    ids = [int(i) for i in RNG.integers(0, tiny.config.vocab_size, 24)]
    one_shot = tiny.logits(ids)
    s = tiny.new_session()
    s.eval(ids[:10])
    for i in ids[10:]:
        step = s.eval([i])
    assert s.tokens == ids
    np.testing.assert_allclose(step, one_shot, atol=1e-3)


def test_truncate_then_eval_equals_fresh(tiny):
    a, b, c = ([int(i) for i in RNG.integers(0, tiny.config.vocab_size, n)] for n in (9, 7, 5))
    s = tiny.new_session()
    s.eval(a + b)
    s.truncate(len(a))
    assert s.tokens == a
    np.testing.assert_allclose(s.eval(c), tiny.logits(a + c), atol=1e-3)
    with pytest.raises(ValueError):
        s.truncate(len(a + c) + 1)


def test_sliding_window_cache_on_gemma3(gemma3_path):
    # Gemma 3's window is 512; shrink it to 6 so a 14-token prompt slides on the local layers
    base = runtime.load(gemma3_path)
    model = Model(base.gguf, dataclasses.replace(base.config, sliding_window=6))
    base.llama_rounding = model.llama_rounding = False        # see the `tiny` fixture
    # its own generator: the prompt must not depend on how much of RNG the tests before it drew
    # (prefill and decode round differently; on some prompts they differ by more than on others)
    ids = [2] + [int(i) for i in np.random.default_rng(0).integers(1000, 20000, 13)]
    one_shot = model.logits(ids)
    s = model.new_session(32)
    s.eval(ids[:4])
    for i in ids[4:]:
        step = s.eval([i])
    np.testing.assert_allclose(step, one_shot, atol=3e-2)
    # and the window matters: the full-attention model gives different logits
    assert np.abs(base.logits(ids) - one_shot).max() > 0.5


def test_session_errors(tiny):
    s = tiny.new_session(8)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        s.eval([tiny.config.vocab_size])
    with pytest.raises(ValueError, match="context full"):
        s.eval(list(range(9)))
    with pytest.raises(ValueError, match="at least one token"):
        s.eval([])
    assert s.tokens == []


def test_llama_rounding_is_on_by_default_and_changes_logits(tiny):
    model = runtime.load(SYNTHETIC / "llama-Q8_0.gguf")
    assert model.llama_rounding
    ids = [3, 14, 15, 92, 65]
    diff = np.abs(model.logits(ids) - tiny.logits(ids)).max()
    assert 1e-4 < diff < 0.2


def test_embedded_at_offset_gives_identical_logits(tmp_path):
    src = SYNTHETIC / "qwen2-Q8_0.gguf"
    container = tmp_path / "app.bin"
    prefix = b"\x7fELF" + bytes(range(256)) * 13 + b"x"          # an odd, unaligned offset
    with open(container, "wb") as f:
        f.write(prefix)
        with open(src, "rb") as g:
            shutil.copyfileobj(g, f)
        f.write(b"trailing payload")
    ids = [5, 77, 123, 9, 250]
    alone = runtime.load(src).logits(ids)
    embedded = runtime.load(container, offset=len(prefix)).logits(ids)
    assert np.array_equal(alone, embedded)
