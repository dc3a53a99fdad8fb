"""First launch: the kernels compile in two processes (runtime/warmup.py), and nothing is left to
compile for the first decode token afterwards.

Runs in a fresh interpreter with an empty numba cache routed through the bundle's locator, as the
frozen runtime does, so every kernel really compiles (about 10 s of CPU for SmolLM2).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, sys
from runtime import numba_cache
cache = sys.argv[2]
numba_cache.install(cache, "warmup-test")
from numba.core import event
from runtime import load, warmup

compiled = []
class Compiles(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass

model = load(sys.argv[1])
warmup.first_launch(model, sys.argv[1], 0)
marker = [os.path.relpath(warmup.marker(), cache)] if os.path.exists(warmup.marker()) else []
event.register("numba:compile", Compiles())
logits = model.new_session().eval([1, 2, 3][:1])
warmup.first_launch(model, sys.argv[1], 0)        # the marker makes a second call a no-op
print(json.dumps({"after": compiled, "marker": marker, "logits": logits.tolist()}))
"""


def test_first_launch_compiles_in_two_processes(smollm2_path, tmp_path):
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(smollm2_path), str(cache)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert len(out["marker"]) == 1
    # the worker compiled the weight kernels and this process the ops: the first token loads them all
    assert out["after"] == [], f"compiled after the warm-up: {out['after']}"
    # the worker's kernels are in the cache directory next to the ops'
    assert len(list(cache.rglob("*.nbi"))) >= 8

    from runtime import load
    expect = load(smollm2_path).new_session().eval([1])
    np.testing.assert_array_equal(np.asarray(out["logits"], np.float32), expect)
