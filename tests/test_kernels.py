"""The numba kernels (runtime/kernels) against their plain-numpy twin (runtime/quants.dequantize).

Reference: the weights dequantized exactly by `runtime.quants.dequantize`, multiplied in float64.
Tolerance (stated once, used by every product test): the largest |kernel - reference| is at most
REL_TOL times the largest |reference| entry of that product. The kernels accumulate in float32 (32
per-lane partial sums per row, then one sum), which lands at 1e-7..1e-6 of that scale; a wrong nibble,
scale or bit in any block shows up as 1e-3 or worse. get_rows is a pure dequantization and must match
the reference to float32 rounding (GET_ROWS_TOL, the kernels may fuse multiply-adds).

Inputs: random valid blocks of every supported type (random bytes, with the fp16 scale fields set to
finite values) and real tensors of SmolLM2 (Q4_1, Q8_0) and Gemma 3 (Q4_K, Q5_0, Q6_K, Q8_0); odd
sizes: row counts that are not a multiple of any chunk or tile, T = 1, 3, 17.
"""
from __future__ import annotations

import re

import numba
import numpy as np
import pytest

from runtime import kernels
from runtime.ggml import QUANT_SIZES, SUPPORTED_TYPES, GGMLType
from runtime.gguf import GGUFFile, Tensor
from runtime.quants import dequantize, field_offsets

REL_TOL = 2e-6
GET_ROWS_TOL = 1e-6

FLOAT_TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.BF16)
BLOCK_TYPES = tuple(sorted(SUPPORTED_TYPES - set(FLOAT_TYPES)))
ALL_TYPES = FLOAT_TYPES + BLOCK_TYPES
ROWS = 77                      # not a multiple of the 32/64-row chunks nor of the 16-row tile


def _row_length(qtype) -> int:
    # a few blocks per row; float rows of odd length exercise the accumulator tail
    block = QUANT_SIZES[qtype][0]
    return 67 if block == 1 else (2 * block if block == 256 else 5 * block)


def random_tensor(qtype, rows: int, n: int, seed: int = 0) -> Tensor:
    """A tensor of random valid blocks (read-only, like a view into the mmap)."""
    rng = np.random.default_rng(seed)
    if qtype in FLOAT_TYPES:
        values = rng.standard_normal((rows, n)).astype(np.float32)
        if qtype == GGMLType.F32:
            data = values.view(np.uint8)
        elif qtype == GGMLType.F16:
            data = values.astype(np.float16).view(np.uint8)
        else:
            data = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    else:
        block, size = QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, (rows * (n // block), size), dtype=np.uint8)
        for name, (a, b) in field_offsets(qtype).items():
            if name in ("d", "dmin", "m"):          # fp16 scales: finite, of either sign
                scale = (rng.uniform(-1, 1, blocks.shape[0]) * 0.02).astype(np.float16)
                blocks[:, a:b] = scale.view(np.uint8).reshape(-1, 2)
        data = blocks.reshape(rows, -1)
    data = np.ascontiguousarray(data)
    data.flags.writeable = False
    return Tensor(name=f"random.{qtype.name}", type=qtype, shape=(n, rows), n_rows=rows, data=data,
                  offset=0)


def reference(w: Tensor) -> np.ndarray:
    return dequantize(w.data, w.type, w.shape[0]).astype(np.float64)     # [rows, n]


def assert_close(got, want, tol=REL_TOL):
    err = np.abs(got.astype(np.float64) - want).max() / np.abs(want).max()
    assert err <= tol, f"relative error {err:.3g} > {tol:g}"


def check_matvec(w: Tensor, seed=1):
    x = np.random.default_rng(seed).standard_normal(w.shape[0]).astype(np.float32)
    out = np.full(w.n_rows, np.nan, np.float32)
    kernels.matvec(w, x, out)
    assert_close(out, reference(w) @ x)


def check_matmul(w: Tensor, T: int, seed=2):
    x = np.random.default_rng(seed).standard_normal((T, w.shape[0])).astype(np.float32)
    out = np.full((T, w.n_rows), np.nan, np.float32)
    kernels.matmul(w, x, out)
    assert_close(out, x.astype(np.float64) @ reference(w).T)


def check_get_rows(w: Tensor, ids):
    ids = np.asarray(ids, dtype=np.int64)
    out = np.full((len(ids), w.shape[0]), np.nan, np.float32)
    kernels.get_rows(w, ids, out)
    want = reference(w)[ids]
    np.testing.assert_allclose(out, want, rtol=GET_ROWS_TOL, atol=GET_ROWS_TOL * np.abs(want).max())


# ---- every type, random valid blocks -----------------------------------------------------------------

@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_matvec_random_blocks(qtype):
    check_matvec(random_tensor(qtype, ROWS, _row_length(qtype)))


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_matmul_random_blocks(qtype):
    w = random_tensor(qtype, ROWS, _row_length(qtype))
    for T in (1, 3, 17):
        check_matmul(w, T)


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_get_rows_random_blocks(qtype):
    check_get_rows(random_tensor(qtype, ROWS, _row_length(qtype)), [0, ROWS - 1, 5, 5, 40])


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda t: t.name)
def test_every_block_field_matters(qtype):
    # Flipping one byte of any field changes the product: no field is ignored or misread as constant.
    w = random_tensor(qtype, 4, QUANT_SIZES[qtype][0])
    x = np.random.default_rng(3).standard_normal(w.shape[0]).astype(np.float32)
    base = np.empty(4, np.float32)
    kernels.matvec(w, x, base)
    for name, (a, b) in field_offsets(qtype).items():
        data = w.data.copy()
        data[:, a] ^= 0x41 if name not in ("d", "dmin", "m") else 0x04
        data.flags.writeable = False
        changed = Tensor(w.name, w.type, w.shape, w.n_rows, data, 0)
        out = np.empty(4, np.float32)
        kernels.matvec(changed, x, out)
        assert_close(out, reference(changed) @ x)
        assert not np.array_equal(out, base), f"{qtype.name} field {name} had no effect"


# ---- real tensors of both models ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return GGUFFile(smollm2_path)


@pytest.fixture(scope="module")
def gemma3(gemma3_path):
    return GGUFFile(gemma3_path)


def _first_rows(w: Tensor, rows: int) -> Tensor:
    # the first `rows` rows of a real tensor (the full vocabulary heads are large for a float64 twin)
    rows = min(rows, w.n_rows)
    return Tensor(w.name, w.type, (w.shape[0], rows), rows, w.data[:rows], w.offset)


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.7.attn_k.weight",
                                  "blk.29.ffn_down.weight", "token_embd.weight"])
def test_smollm2_tensors(smollm2, name):
    w = _first_rows(smollm2.tensors[name], 5003)
    assert w.type in (GGMLType.Q4_1, GGMLType.Q8_0)
    check_matvec(w)
    check_matmul(w, 17)
    check_get_rows(w, [0, 1, w.n_rows - 1])


def _gemma_tensors():
    return {GGMLType.Q4_K: "blk.0.attn_output.weight", GGMLType.Q5_0: "blk.0.ffn_gate.weight",
            GGMLType.Q6_K: "blk.0.ffn_down.weight", GGMLType.Q8_0: "token_embd.weight"}


@pytest.mark.parametrize("qtype", list(_gemma_tensors()), ids=lambda t: t.name)
def test_gemma3_tensors(gemma3, qtype):
    candidates = [t for t in gemma3.tensors.values() if t.type == qtype]
    assert candidates, f"no {qtype.name} tensor in the Gemma 3 file"
    preferred = gemma3.tensors.get(_gemma_tensors()[qtype])
    w = _first_rows(preferred if preferred is not None and preferred.type == qtype else candidates[0],
                    3001)
    check_matvec(w)
    check_matmul(w, 3)
    check_get_rows(w, [0, w.n_rows - 1, 7])


def test_smollm2_full_head_matches_rows(smollm2):
    # The whole 49152-row Q8_0 head (the 64-row chunk path, many chunks) against per-row get_rows.
    w = smollm2.tensors["token_embd.weight"]
    x = np.random.default_rng(4).standard_normal(w.shape[0]).astype(np.float32)
    out = np.empty(w.n_rows, np.float32)
    kernels.matvec(w, x, out)
    ids = np.arange(w.n_rows - 999, w.n_rows)
    rows = np.empty((len(ids), w.shape[0]), np.float32)
    kernels.get_rows(w, ids, rows)
    assert_close(out[ids], rows.astype(np.float64) @ x)


# ---- behaviour -----------------------------------------------------------------------------------------

def test_thread_count_does_not_change_results():
    w = random_tensor(GGMLType.Q4_1, 300, 256)
    x = np.random.default_rng(5).standard_normal(256).astype(np.float32)
    before = kernels.get_threads()
    try:
        outs = []
        for n in (1, numba.config.NUMBA_NUM_THREADS):
            kernels.set_threads(n)
            assert kernels.get_threads() == n
            out = np.empty(300, np.float32)
            kernels.matvec(w, x, out)
            outs.append(out)
        np.testing.assert_array_equal(outs[0], outs[1])     # rows never split across threads
    finally:
        kernels.set_threads(before)


@pytest.mark.parametrize("n_mats", [2, 3])
def test_fused_matvecs_equal_single_matvecs(n_mats):
    # matvecs (one launch for Q/K/V or gate/up) must give exactly matvec's sums: the model uses one
    # for some products and the other elsewhere, and an 8-bit activation rounding downstream turns
    # a last-bit difference into a different token.
    ws = [random_tensor(GGMLType.Q4_1, rows, 320, seed=rows) for rows in (77, 300, 33)[:n_mats]]
    x = np.random.default_rng(6).standard_normal(320).astype(np.float32)
    fused = [np.full(w.n_rows, np.nan, np.float32) for w in ws]
    kernels.matvecs(ws, x, fused)
    for w, got in zip(ws, fused):
        single = np.empty(w.n_rows, np.float32)
        kernels.matvec(w, x, single)
        np.testing.assert_array_equal(got, single)
        assert_close(got, reference(w) @ x)


def test_unsupported_type_is_named():
    w = random_tensor(GGMLType.Q8_0, 2, 32)
    w = Tensor("blk.0.ffn_up.weight", GGMLType.MXFP4, w.shape, w.n_rows, w.data, 0)
    with pytest.raises(kernels.UnsupportedType, match=r"blk\.0\.ffn_up\.weight.*MXFP4"):
        kernels.matvec(w, np.zeros(32, np.float32), np.empty(2, np.float32))
    with pytest.raises(kernels.UnsupportedType, match="MXFP4"):
        kernels.get_rows(w, np.zeros(1, np.int64), np.empty((1, 32), np.float32))


def test_mismatched_shapes_are_refused():
    w = random_tensor(GGMLType.Q4_1, 8, 64)
    with pytest.raises(ValueError, match="random.Q4_1"):
        kernels.matvec(w, np.zeros(32, np.float32), np.empty(8, np.float32))
    with pytest.raises(ValueError):
        kernels.matvec(w, np.zeros(64, np.float32), np.empty(7, np.float32))
    with pytest.raises(ValueError):
        kernels.matmul(w, np.zeros((3, 64), np.float32), np.empty((2, 8), np.float32))
    with pytest.raises(ValueError):
        kernels.get_rows(w, np.zeros(2, np.int64), np.empty((2, 32), np.float32))


def test_get_rows_rejects_out_of_range_ids():
    w = random_tensor(GGMLType.Q4_1, 8, 32)
    out = np.empty((1, 32), np.float32)
    for bad in (8, -1):
        with pytest.raises(IndexError):
            kernels.get_rows(w, np.array([bad]), out)


def test_cpu_target_is_the_best_level_of_the_host():
    from llvmlite import binding as ll
    from runtime.kernels import cpu
    if cpu.user_override:
        pytest.skip("NUMBA_CPU_NAME/NUMBA_CPU_FEATURES set by the user")
    features = cpu.compiled_features()
    best = cpu.best_level()
    if best is None:                       # below every level: the host CPU itself
        assert features == cpu.host_target()[1]
    else:
        assert cpu.level == best and features == best.features
        assert set(best.requires) <= cpu.host_features()
        # nothing better fits: every higher level of this machine needs a feature the host lacks
        higher = cpu.platform_levels()[cpu.platform_levels().index(best) + 1:]
        assert all(not set(lv.requires) <= cpu.host_features() for lv in higher)
    host_has_avx512 = bool(ll.get_host_cpu_features().get("avx512f", False))
    assert ("-prefer-256-bit" in features.split(",")) == host_has_avx512


def test_compile_target_features():
    # has_feature answers from the feature string numba compiles for, not from the host CPU
    from runtime.kernels import cpu, jit
    features = cpu.compiled_features().split(",")
    for f in features[:40]:
        if f[:1] in "+-":
            assert jit.has_feature(f[1:]) == (f[0] == "+")
    assert not jit.has_feature("no-such-feature")


def test_every_supported_type_has_its_kernels():
    from runtime.kernels.table import KERNELS
    assert set(KERNELS) == set(SUPPORTED_TYPES)
    for qtype, k in KERNELS.items():
        assert all(callable(f) for f in (k.matvec, k.matmul, k.get_rows)), qtype.name


def test_numba_code_takes_the_configured_njit():
    # a module that decorated with numba's own njit before runtime.kernels.jit ran would compile for
    # numba's default target (256-bit vectors on Intel server CPUs): every module takes jit's
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "runtime"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if p.name != "jit.py"
                 and re.search(r"from numba import [^\n]*\b(njit|jit|prange)\b|numba\.njit",
                               p.read_text())]
    assert offenders == []


def test_cpu_levels_choose_by_features():
    from runtime.kernels import cpu
    v3 = set(cpu.LEVELS[0].requires)
    assert cpu.best_level("x86_64", set()) is None                       # no AVX2: the host's own JIT
    assert cpu.best_level("x86_64", v3).name == "x86-64-v3"
    v4 = v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    assert cpu.best_level("x86_64", v4 | {"avxvnni"}).name == "x86-64-v4"
    assert cpu.best_level("x86_64", v4 | {"avx512vnni"}).name == "x86-64-v4-vnni"
    assert cpu.best_level("aarch64", set()).name == "aarch64"             # NEON: every aarch64 Linux
    assert cpu.best_level("aarch64", {"neon", "dotprod"}).name == "aarch64-dotprod"
    assert cpu.best_level("arm64", {"neon", "dotprod"}).name == "aarch64-dotprod"     # macOS's name
    assert cpu.best_level("riscv64", {"v"}) is None
    # each level spells out every feature it requires (the kernels read the feature string)
    for lv in cpu.LEVELS:
        assert {"+" + f for f in lv.requires} <= set(lv.features.split(","))


@pytest.mark.slow
def test_decode_hot_loop_uses_512_bit_fma():
    # numba will not show assembly of cached code: compile a private, uncached copy of the kernel.
    from llvmlite import binding as ll
    from runtime.kernels import floats, legacy
    if not ll.get_host_cpu_features().get("avx512f", False):
        pytest.skip("host CPU has no AVX-512")
    fn = numba.njit(parallel=True, fastmath=True)(legacy.matvec_q4_1.py_func)
    w = random_tensor(GGMLType.Q4_1, 64, 64)
    fn(np.empty(64, np.float32), w.data, np.zeros(64, np.float32), floats.F16_TABLE, 32)
    asm = fn.inspect_asm(fn.signatures[0])
    assert re.search(r"vfmadd\d+ps\s[^\n]*%zmm", asm), "no 512-bit FMA in the Q4_1 matvec"
    assert "vcvtdq2ps" in asm and "%zmm" in asm
