"""A kernel compiled in this process and the same kernel loaded from numba's cache give the same bits.

They once did not (runtime/kernels/cpu.py `same_code_cached`): the compiling process ran other copies of
the prange bodies than a process loading the cache, so the first run of chatfile sampled different text
from later runs. Each case runs the products in two fresh processes sharing one empty NUMBA_CACHE_DIR:
the first compiles, the second must load every kernel from the cache and match bit for bit.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# argv: model, output .npz, then the GGML type names to test. For each type, the first tensor of that
# type with at least 256 rows: matvec, and matmul over 5 tokens. Writes the outputs and, per type, the
# numba cache hits and misses of the kernels it ran.
_CHILD = """
import sys
import numpy as np
from runtime import kernels
from runtime.ggml import GGMLType
from runtime.gguf import GGUFFile

model, out_path, types = sys.argv[1], sys.argv[2], sys.argv[3:]
g = GGUFFile(model)
rng = np.random.default_rng(0)
results = {}
for name in types:
    w = next(t for t in g.tensors.values() if t.type == GGMLType[name] and t.n_rows >= 256)
    x = rng.standard_normal(w.shape[0]).astype(np.float32)
    xs = rng.standard_normal((5, w.shape[0])).astype(np.float32)
    results[name + "_matvec"] = np.zeros(w.n_rows, np.float32)
    results[name + "_matmul"] = np.zeros((5, w.n_rows), np.float32)
    kernels.matvec(w, x, results[name + "_matvec"])
    kernels.matmul(w, xs, results[name + "_matmul"])
    k = kernels.kernels_for(w.type)
    stats = [f.stats for f in (k.matvec, k.matmul)]
    results[name + "_cache"] = np.array([sum(s.cache_hits.values()) for s in stats]
                                        + [sum(s.cache_misses.values()) for s in stats])
np.savez(out_path, **results)
"""


def _run(model: Path, out: Path, cache_dir: Path, types: list[str]) -> dict[str, np.ndarray]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(out), *types],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        return dict(f)


@pytest.mark.parametrize("model_fixture, types", [
    ("smollm2_path", ["Q4_1", "Q8_0"]),
    ("gemma3_path", ["Q4_K", "Q6_K"]),
])
def test_compiled_and_cached_kernels_agree(model_fixture, types, request, tmp_path):
    model = request.getfixturevalue(model_fixture)
    cache_dir = tmp_path / "numba-cache"
    compiled = _run(model, tmp_path / "compiled.npz", cache_dir, types)
    cached = _run(model, tmp_path / "cached.npz", cache_dir, types)
    for name in types:
        hits, misses = cached[name + "_cache"][:2], cached[name + "_cache"][2:]
        assert hits.min() >= 1 and misses.max() == 0, f"{name}: second run did not load the cache"
        assert compiled[name + "_cache"][2:].min() >= 1, f"{name}: first run did not compile"
        for op in ("matvec", "matmul"):
            a, b = compiled[f"{name}_{op}"], cached[f"{name}_{op}"]
            diff = np.abs(a - b).max()
            assert np.array_equal(a, b), f"{name} {op}: compiled and cached differ by up to {diff:.3g}"
