"""Compile every kernel ahead of time into numba's cache, for the CPU target this process was set to.

Run at stub build (bundler/stub.py), once per CPU level, inside the frozen runtime itself
(`chatfile-rt --chatfile-precompile MODEL...` with NUMBA_CPU_NAME / NUMBA_CPU_FEATURES naming the
level), so the cache files carry exactly the bytecode, file names and numba the bundle runs. The
stub ships them; a user's first launch on a CPU of that level loads them and compiles nothing.

Which signatures: numba compiles one specialization per tuple of argument types, and those types are
decided by the Python code that calls the kernels (array layouts, read-only weights, int vs float
scalars). So they are found by calling that code, not listed by hand:
- every type in the kernel table through the public API (`kernels.matvec`, `matvecs` with one to
  three matrices, `matmul`, `get_rows`, and where the type takes them the integer kernels on 8-bit
  activations), on read-only weights shaped as a GGUF mmap gives them;
- the forward pass of every model given (at build time every GGUF in data/synthetic, one per
  architecture and weight type), for the layer ops: `Session.eval` (a two-token prefill, a decode
  token), a context shift, `Session.hidden` (embeddings) and one of the server's batches (two slots
  decoding beside a third one's prompt).
While tracing, no kernel runs: numba's "no compiled version for these argument types" hook records the
types and returns a no-op, so the pass computes garbage and nothing is executed. Then each recorded
signature is compiled with `Dispatcher.compile`, which compiles without running: the build machine
need not have the instructions of the level it compiles for.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from .ggml import QUANT_SIZES, GGMLType, row_nbytes

TRACE_ROWS = 64            # rows of each stand-in weight (values never matter: nothing runs)
TRACE_TOKENS = 2           # prefill length of the traced forward pass


def _nothing(*args, **kwargs):
    return None


class _Recorder:
    """While active, a call of any numba function without a compiled version for its argument types
    records (dispatcher, types) and does nothing, instead of compiling and running."""

    def __init__(self):
        self.seen: dict[tuple, object] = {}

    def __enter__(self):
        from numba.core.dispatcher import Dispatcher
        self._saved = Dispatcher._compile_for_args
        seen = self.seen

        def record(disp, *args, **kws):
            sig = tuple(disp.typeof_pyval(a) for a in args)
            seen.setdefault((disp, sig), None)
            return _nothing            # numba's C dispatcher calls what this returns with the args

        Dispatcher._compile_for_args = record
        return self

    def __exit__(self, *exc):
        from numba.core.dispatcher import Dispatcher
        Dispatcher._compile_for_args = self._saved


def _stand_in(qtype: GGMLType, rows: int = TRACE_ROWS):
    """A read-only Tensor of `rows` zero rows of qtype, as runtime.gguf makes them from the mmap."""
    from .gguf import Tensor
    block = QUANT_SIZES[qtype][0]
    n = -(-256 // block) * block                  # a whole number of blocks, K-quants included
    data = np.zeros((rows, row_nbytes(qtype, n)), np.uint8)
    data.flags.writeable = False
    return Tensor(name=f"precompile.{qtype.name}", type=qtype, shape=(n, rows), n_rows=rows, data=data,
                  offset=0)


def table_types() -> list[GGMLType]:
    """Every tensor type the kernel table has kernels for."""
    from . import kernels
    types = []
    for t in GGMLType:
        try:
            kernels.kernels_for(t)
        except kernels.UnsupportedType:
            continue
        types.append(t)
    return types


def _trace_table() -> None:
    from . import kernels
    for t in table_types():
        ws = [_stand_in(t) for _ in range(3)]
        n, rows = ws[0].shape[0], ws[0].n_rows
        x = np.zeros(n, np.float32)
        outs = [np.zeros(rows, np.float32) for _ in ws]
        kernels.matvec(ws[0], x, outs[0])
        for k in (1, 2, 3):
            kernels.matvecs(ws[:k], x, outs[:k])
        xs = np.zeros((TRACE_TOKENS, n), np.float32)
        kernels.matmul(ws[0], xs, np.zeros((TRACE_TOKENS, rows), np.float32))
        ids = np.zeros(TRACE_TOKENS, np.int64)
        kernels.get_rows(ws[0], ids, np.zeros((TRACE_TOKENS, n), np.float32))
        if kernels.takes_q8(t):                    # the integer kernels, on x's 8-bit form
            q8 = _q8_stand_in(t, TRACE_TOKENS, n)
            kernels.matvec(ws[0], x, outs[0], tuple(a[0] for a in q8))
            for k in (1, 2, 3):
                kernels.matvecs(ws[:k], xs, [np.zeros((TRACE_TOKENS, rows), np.float32)] * k, q8)
            kernels.matmul(ws[0], xs, np.zeros((TRACE_TOKENS, rows), np.float32), q8)


def _q8_stand_in(qtype: GGMLType, T: int, n: int):
    """(qs, d, s) of T rows of n activations in 8-bit form, as ops.quantize_activations fills them."""
    from .kernels import KERNELS
    return (np.zeros((T, n), np.int8), np.zeros((T, n // KERNELS[qtype].q8_block), np.float32),
            np.zeros((T, n // 32), np.float32))


def _trace_model(path: str) -> None:
    from . import load
    from .model import Buffers, KVCache
    model = load(path)
    session = model.new_session(TRACE_TOKENS + 1)
    session.eval(list(range(TRACE_TOKENS)))        # prefill: kernels.matmul, ops over T rows
    session.eval([0])                              # decode: kernels.matvec(s)
    session.shift(0, 1)                            # context shift (the server's --context-shift)
    model.new_session(TRACE_TOKENS).hidden(list(range(TRACE_TOKENS)))   # embeddings: no output head
    # the server's batches: two slots decoding and a third slot's prompt, one call (server_engine.py)
    kv, buf = KVCache(model, 3, TRACE_TOKENS), Buffers(model.config, 4, heads=3)
    i64 = lambda *v: np.array(v, np.int64)         # noqa: E731
    model.forward(kv, buf, i64(0, 0, 0, 0), i64(0, 1, 2, 2), i64(0, 0, 0, 1), n_decode=2,
                  logit_rows=i64(0, 1, 3))


def trace(models: list[str]) -> list[tuple]:
    """[(dispatcher, argument types)] of every kernel call the table sweep and the models' forward
    passes make, in first-call order."""
    with _Recorder() as rec:
        _trace_table()
        for path in models:
            _trace_model(path)
    return list(rec.seen)


def _name(disp) -> str:
    return f"{disp.py_func.__module__}.{disp.py_func.__qualname__}"


def precompile(models: list[str], progress=sys.stderr) -> int:
    """Compile (into numba's cache) every signature `trace(models)` finds. Returns how many."""
    t0 = time.monotonic()
    found = trace(models)
    print(f"chatfile: precompiling {len(found)} kernel signatures "
          f"({len({d for d, _ in found})} functions) ...", file=progress, flush=True)
    for disp, sig in found:
        disp.compile(sig)
    from .warmup import mark_compiled
    mark_compiled()                                # a first launch has nothing to warm up
    print(f"chatfile: precompiled in {time.monotonic() - t0:.0f} s", file=progress, flush=True)
    return len(found)


__all__ = ["trace", "precompile", "table_types"]
