"""The integer dot products (runtime/kernels/intdot.py) and the 8-bit activations they multiply.

- ops.quantize_activations against its numpy twin, bit for bit (its `out` is round_activations');
- every q8 kernel against float64 W @ (qs * d) on the reference-dequantized W, within test_kernels'
  REL_TOL (Q4_1 and Q5_1 take their mins' term from Q8_1's fp16 s, as ggml does, and so does the twin);
- bit for bit against ggml's own x86 vec_dot and quantize_row_q8_* (data/goldens/vec_dot_x86.npz,
  written by scripts/make_kernel_goldens.py), on any compile target with AVX2 or VNNI (Q4_0 and Q4_K
  follow ggml's repacked gemv instead, which the model goldens check);
- matvec_batch row b is bit-identical to matvec of row b, for every type and B = 1..8 (the contract
  continuous batching relies on: a sequence decodes the same text batched or alone);
- the prefill product (intgemm.py, AVX-512 VNNI) against the twin, and bit for bit the per-token decode
  product (except Q4_K's gemm rows, as in llama.cpp), for T = 2..8 and 13.
"""
from __future__ import annotations

import numpy as np
import pytest

from runtime import kernels, ops
from runtime.ggml import QUANT_SIZES, GGMLType
from runtime.gguf import Tensor
from runtime.kernels import intdot, intgemm
from runtime.quants import dequantize, field_offsets

from conftest import GOLDENS
from test_kernels import ALL_TYPES, assert_close, random_tensor

Q8_TYPES = [t for t in ALL_TYPES if kernels.KERNELS[t].matvec_q8 is not None]
X86_EXACT = intdot.int_dot() in ("avx512vnni", "avxvnni", "avx2")


def _kind(qtype):
    return ops.ACT_KIND[qtype]


def quantize(x, qtype):
    """x float32 [T, n] -> (rounded x, (qs, d, s)) as the model hands them to the kernels."""
    T, n = x.shape
    block = kernels.KERNELS[qtype].q8_block
    out = np.empty_like(x)
    qs = np.empty((T, n), np.int8)
    d = np.empty((T, n // block), np.float32)
    s = np.empty((T, n // 32), np.float32)
    ops.quantize_activations(out, qs, d, s, x, _kind(qtype))
    return out, (qs, d, s)


def reference_q8(w, qs, d, s):
    """float64 W @ (qs * d) for one vector, with the mins of Q4_1 / Q5_1 times Q8_1's s."""
    qtype = w.type
    block = kernels.KERNELS[qtype].q8_block
    xr = (qs.reshape(-1, block).astype(np.float64) * d[:, None]).reshape(-1)
    ref = dequantize(w.data, qtype, w.shape[0]).astype(np.float64) @ xr
    if "m" in field_offsets(qtype):            # ggml: m * s instead of m * d * sum(q) per block
        a, b = field_offsets(qtype)["m"]
        size = QUANT_SIZES[qtype][1]
        m = w.data.reshape(-1, size)[:, a:b].copy().view("<f2").astype(np.float64).reshape(w.n_rows, -1)
        dS = d.astype(np.float64) * qs.reshape(-1, 32).astype(np.float64).sum(axis=1)
        ref += m @ (s.astype(np.float64) - dS)
    return ref


def _skip_without_int_dot(qtype):
    if not kernels.takes_q8(qtype):
        pytest.skip("the compile target has no integer dot product: the float kernels run")


@pytest.mark.parametrize("kind", [ops.ACT_Q8_0, ops.ACT_Q8_K], ids=["Q8_0", "Q8_K"])
def test_quantize_activations_matches_twin(kind):
    x = (np.random.default_rng(8).standard_normal((3, 512)) * [[0.01], [1], [300]]).astype(np.float32)
    x[1, 256:] = 0                                   # an all-zero block
    out, qs, d, s = (np.empty_like(x), np.empty(x.shape, np.int8), np.empty((3, 512 // 32), np.float32),
                     np.empty((3, 512 // 32), np.float32))
    block = 32 if kind == ops.ACT_Q8_0 else 256
    d = d[:, :512 // block].copy()
    ops.quantize_activations(out, qs, d, s, x, kind)
    r_out, r_qs, r_d, r_s = ops.quantize_activations_ref(x, kind)
    np.testing.assert_array_equal(qs, r_qs)
    np.testing.assert_array_equal(d.view(np.uint32), r_d.astype(np.float32).view(np.uint32))
    np.testing.assert_array_equal(out.view(np.uint32), r_out.view(np.uint32))
    if kind == ops.ACT_Q8_0:
        np.testing.assert_array_equal(s.view(np.uint32), r_s.view(np.uint32))
    rounded = np.empty_like(x)
    ops.round_activations(rounded, x, kind)
    np.testing.assert_array_equal(rounded.view(np.uint32), out.view(np.uint32))


@pytest.mark.parametrize("qtype", Q8_TYPES, ids=lambda t: t.name)
def test_q8_matvec_against_reference(qtype):
    _skip_without_int_dot(qtype)
    w = random_tensor(qtype, 77, 512, seed=11)
    x = np.random.default_rng(12).standard_normal((1, 512)).astype(np.float32)
    xr, (qs, d, s) = quantize(x, qtype)
    out = np.full(w.n_rows, np.nan, np.float32)
    kernels.matvec(w, xr[0], out, (qs[0], d[0], s[0]))
    assert_close(out, reference_q8(w, qs[0], d[0], s[0]))


VEC_DOT_TYPES = [t for t in Q8_TYPES if t not in (GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.IQ4_NL)]   # not repacked


@pytest.mark.skipif(not X86_EXACT, reason="ggml's x86 arithmetic: needs a target with AVX2 or VNNI")
@pytest.mark.parametrize("qtype", VEC_DOT_TYPES, ids=lambda t: t.name)
def test_q8_matvec_is_ggmls_vec_dot_bit_for_bit(qtype):
    g = np.load(GOLDENS / "vec_dot_x86.npz")
    name = qtype.name
    rows, x = g[f"{name}.rows"], g[f"{name}.x"]
    rows.flags.writeable = False
    w = Tensor(f"golden.{name}", qtype, (x.shape[0], rows.shape[0]), rows.shape[0], rows, 0)
    xr, (qs, d, s) = quantize(x[None], qtype)
    # the activations as ggml quantized them (its block structs: d, [s,] qs[32]; or d f32, qs, bsums)
    q8 = g[f"{name}.q8"]
    if kernels.KERNELS[qtype].q8_block == 32:
        blocks = q8.reshape(-1, 34 if _kind(qtype) == ops.ACT_Q8_0 and "m" not in field_offsets(qtype)
                            else 36)
        np.testing.assert_array_equal(blocks[:, -32:].view(np.int8).reshape(-1), qs[0])
        np.testing.assert_array_equal(blocks[:, 0:2].copy().view("<f2").astype(np.float32)[:, 0], d[0])
        if blocks.shape[1] == 36:
            np.testing.assert_array_equal(blocks[:, 2:4].copy().view("<f2").astype(np.float32)[:, 0], s[0])
    else:
        blocks = q8.reshape(-1, 292)
        np.testing.assert_array_equal(blocks[:, 4:260].view(np.int8).reshape(-1), qs[0])
        np.testing.assert_array_equal(blocks[:, 0:4].copy().view(np.float32)[:, 0], d[0])
    out = np.empty(w.n_rows, np.float32)
    kernels.matvec(w, xr[0], out, (qs[0], d[0], s[0]))
    np.testing.assert_array_equal(out.view(np.uint32), g[f"{name}.dot"].view(np.uint32))


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_matvec_batch_rows_equal_matvec(qtype):
    n = 512 if QUANT_SIZES[qtype][0] > 1 else 67
    w = random_tensor(qtype, 77, n, seed=13)
    X = np.random.default_rng(14).standard_normal((8, n)).astype(np.float32)
    q8 = None
    if kernels.takes_q8(qtype):
        X, q8 = quantize(X, qtype)
    single = np.empty((8, w.n_rows), np.float32)
    for b in range(8):
        kernels.matvec(w, X[b], single[b], None if q8 is None else tuple(a[b] for a in q8))
    for B in (1, 2, 3, 4, 5, 6, 7, 8):
        out = np.full((B, w.n_rows), np.nan, np.float32)
        kernels.matvec_batch(w, X[:B], out, None if q8 is None else tuple(a[:B] for a in q8))
        np.testing.assert_array_equal(out.view(np.uint32), single[:B].view(np.uint32))


@pytest.mark.parametrize("qtype", Q8_TYPES, ids=lambda t: t.name)
def test_q8_matmul_is_the_per_token_product(qtype):
    # The prefill product of T tokens: against the twin, and bit for bit the decode product of each
    # token, except Q4_K's first T // 4 * 4 tokens, which llama.cpp sums per 64 weights (its gemm)
    # rather than per 256 (its gemv). T = 2 .. 8 (small prompts) and 13 (padding, a partial tile).
    _skip_without_int_dot(qtype)
    w = random_tensor(qtype, 77, 512, seed=15)
    X = np.random.default_rng(16).standard_normal((13, 512)).astype(np.float32)
    X, q8 = quantize(X, qtype)
    single = np.empty((13, w.n_rows), np.float32)
    kernels.matvec_batch(w, X, single, q8)
    for T in (2, 3, 4, 5, 8, 13):
        out = np.full((T, w.n_rows), np.nan, np.float32)
        kernels.matmul(w, X[:T], out, tuple(a[:T] for a in q8))
        ref = np.stack([reference_q8(w, *(a[t] for a in q8)) for t in range(T)])
        assert_close(out, ref)
        same_from = T // 4 * 4 if qtype == GGMLType.Q4_K and intgemm.available() else 0
        np.testing.assert_array_equal(out[same_from:].view(np.uint32), single[same_from:T].view(np.uint32))


@pytest.mark.parametrize("qtype", [GGMLType.Q5_0, GGMLType.Q4_K], ids=lambda t: t.name)
def test_fused_q8_matvecs_equal_single_matvecs(qtype):
    # Q/K/V in one launch: the same bits as one launch each
    _skip_without_int_dot(qtype)
    ws = [random_tensor(qtype, rows, 512, seed=rows) for rows in (77, 300, 33)]
    x = np.random.default_rng(17).standard_normal((1, 512)).astype(np.float32)
    xr, q8 = quantize(x, qtype)
    q1 = tuple(a[0] for a in q8)
    for count in (2, 3):
        fused = [np.full(w.n_rows, np.nan, np.float32) for w in ws[:count]]
        kernels.matvecs(ws[:count], xr[0], fused, q1)
        for w, got in zip(ws, fused):
            single = np.empty(w.n_rows, np.float32)
            kernels.matvec(w, xr[0], single, q1)
            np.testing.assert_array_equal(got.view(np.uint32), single.view(np.uint32))


def test_q8_operands_are_checked():
    qtype = GGMLType.Q4_K
    w = random_tensor(qtype, 8, 512)
    x = np.zeros((1, 512), np.float32)
    xr, (qs, d, s) = quantize(x, qtype)
    out = np.empty(8, np.float32)
    with pytest.raises(ValueError, match="random.Q4_K"):
        kernels.matvec(w, xr[0], out, (qs[0], np.zeros(4, np.float32), s[0]))
    with pytest.raises(ValueError):
        kernels.matvec_batch(w, xr, np.empty((2, 8), np.float32), (qs, d, s))
