"""ggml's vector expf (runtime/kernels/vexp.py) in the softmax and SwiGLU of runtime/ops.py:
- bit for bit against llama.cpp's own ggml_vec_soft_max_f32 / ggml_vec_swiglu_f32 / ggml_vec_silu_f32
  (data/goldens/vexp_x86_avx512.npz, written by scripts/make_vexp_goldens.py) on an AVX-512 target;
- within 2.5 ulp of exp over its whole float32 range, inf where exp overflows, for the compile target
  in use and (in a child process) for x86-64-v3's AVX2 variant;
- rows of a column-sliced buffer (strided in numba's types) give the contiguous rows' bits.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from runtime import ops
from runtime.kernels import cpu, vexp

from conftest import GOLDENS, ROOT

GOLDEN = GOLDENS / "vexp_x86_avx512.npz"
LENGTHS = sorted({int(k.split(".")[1]) for k in np.load(GOLDEN).files})


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


@pytest.mark.skipif(vexp.KIND != "avx512", reason="the goldens are ggml's AVX-512 loops")
@pytest.mark.parametrize("n", LENGTHS)
def test_softmax_and_swiglu_are_ggmls_bit_for_bit(n):
    g = np.load(GOLDEN)
    x = g[f"softmax.{n}.x"].copy()
    ops.softmax(x)
    np.testing.assert_array_equal(bits(x), bits(g[f"softmax.{n}.y"]))
    gate, up = g[f"swiglu.{n}.g"][None], g[f"swiglu.{n}.u"][None]
    out = np.empty_like(gate)
    ops.swiglu(out, gate, up)
    np.testing.assert_array_equal(bits(out[0]), bits(g[f"swiglu.{n}.y"]))
    ops.swiglu(out, gate, np.ones_like(gate))          # an expert without a gate: SiLU alone
    np.testing.assert_array_equal(bits(out[0]), bits(g[f"silu.{n}.y"]))


EXP_CHECK = """
import sys
import numpy as np
from numba import njit
from runtime.kernels import vexp

@njit
def exps(x):
    return vexp.exp_sum(x, np.float32(0.0))

x = np.linspace(-110, 95, 400_001).astype(np.float32)
y = x.copy()
exps(y)
ref = np.exp(x.astype(np.float64))
normal = (ref > 1.2e-38) & (ref < 3.4e38)
ulp = np.abs(y[normal] - ref[normal]) / np.spacing(ref[normal].astype(np.float32))
assert ulp.max() < 2.5, ulp.max()
assert np.isinf(y[ref > 3.41e38]).all()
assert np.abs(y[ref <= 1.2e-38] - ref[ref <= 1.2e-38]).max() < 3e-45
print(vexp.KIND, ulp.max())
"""


def test_vector_exp_is_exp_within_its_error():
    r = subprocess.run([sys.executable, "-c", EXP_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[0] == str(vexp.KIND)


@pytest.mark.skipif("avx2" not in cpu.host_features() or not any(lv.name == "x86-64-v3" for lv in cpu.LEVELS),
                    reason="needs an x86 host with AVX2")
def test_the_avx2_variant_is_exp_within_its_error(tmp_path):
    # compiled for x86-64-v3 (AVX2 + FMA, no AVX-512) in a child with its own numba cache
    lv = next(lv for lv in cpu.LEVELS if lv.name == "x86-64-v3")
    env = dict(os.environ, NUMBA_CPU_NAME=lv.cpu, NUMBA_CPU_FEATURES=lv.features, NUMBA_CACHE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", EXP_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[0] == "avx2"


def test_strided_rows_give_the_contiguous_bits():
    rng = np.random.default_rng(3)
    wide = (rng.standard_normal((3, 80)) * 20).astype(np.float32)
    up = rng.standard_normal((3, 80)).astype(np.float32)
    cols = 37                                       # rows of [:, :37] are typed 'A' by numba
    sliced, contiguous = wide.copy(), np.ascontiguousarray(wide[:, :cols])
    ops.swiglu(sliced[:, :cols], sliced[:, :cols], up[:, :cols])
    ops.swiglu(contiguous, contiguous, np.ascontiguousarray(up[:, :cols]))
    np.testing.assert_array_equal(bits(sliced[:, :cols]), bits(contiguous))
    np.testing.assert_array_equal(sliced[:, cols:], wide[:, cols:])      # nothing past the slice
    np.testing.assert_allclose(contiguous, ops.swiglu_ref(wide[:, :cols], up[:, :cols]), rtol=1e-6, atol=1e-30)
    every_other = (rng.standard_normal(64) * 5).astype(np.float32)
    strided = every_other.copy()
    ops.softmax(strided[::2])                       # a truly strided row: expf element by element
    np.testing.assert_allclose(strided[::2], ops.softmax_ref(every_other[::2]), rtol=1e-6)
    np.testing.assert_array_equal(strided[1::2], every_other[1::2])
