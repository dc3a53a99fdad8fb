"""First launch on a machine: compile the kernels in two processes at once instead of one.

A build's first run on a machine compiles every kernel the model uses (SmolLM2: about 9 s of CPU for
one decode token), one after another: numba's compiler holds a process-wide lock, so threads do not
help. Here a worker process (the same frozen runtime, `stubs/entry.py --chatfile-warmup`) compiles the
weight kernels (`runtime.kernels`: embedding rows, the matrix-vector products) while this process
compiles the layer ops (`runtime.ops`: norms, RoPE, attention, roundings). Both write numba's on-disk
cache (runtime/numba_cache.py), whose files are replaced atomically; once the worker says it is done,
this process loads its kernels from there instead of compiling them.

How each side compiles exactly the signatures the real forward pass uses: it runs the real forward
pass (one decode token, on a scratch two-position session) with the other side's functions replaced
by no-ops. The worker then goes on with the prefill path (`kernels.matmul`, two tokens) in the
background; it is stopped when this process exits.

Only in a bundle (where runtime/numba_cache.py's locator is installed), and only until a marker in
the cache directory says this CPU target's kernels were compiled once.
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time

WORKER_ARG = "--chatfile-warmup"          # stubs/entry.py: WORKER_ARG PATH OFFSET
READY = b"chatfile-warmup: decode kernels ready\n"
WAIT_S = 300.0                             # give up waiting on a worker that hangs; compile here instead

_KERNEL_API = ("matvec", "matvecs", "matmul", "get_rows")


def _nothing(*args, **kwargs):
    return None


class _Replaced:
    """Within the block, `module.name` is `_nothing` for each name given."""

    def __init__(self, module, names):
        self.module, self.names, self.saved = module, list(names), {}

    def __enter__(self):
        for n in self.names:
            self.saved[n] = getattr(self.module, n)
            setattr(self.module, n, _nothing)

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(self.module, n, f)


def _ops_kernels() -> list[str]:
    from numba.core.dispatcher import Dispatcher

    from . import ops
    return [n for n, f in vars(ops).items() if isinstance(f, Dispatcher)]


def _one_token(model, n_tokens: int = 1) -> None:
    from .model import Session
    Session(model, n_tokens).eval([0] * n_tokens)


def marker() -> str | None:
    """The file saying this CPU target's kernels were compiled once (None outside a bundle). It sits
    in the target's own cache directory (runtime/numba_cache.py): a precompiled level ships it."""
    from .numba_cache import target_dir
    d = target_dir()
    return None if d is None else os.path.join(d, "compiled")


def mark_compiled() -> None:
    path = marker()
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "x"):
            pass
    except OSError:
        pass                               # exists already, read-only or raced by a second copy: harmless


def _worker_command(path: str, offset: int, cache_dir: str, build_id: str) -> list[str]:
    if getattr(sys, "frozen", False):      # stubs/entry.py installs the same cache itself
        return [sys.executable, WORKER_ARG, path, str(offset)]
    return [sys.executable, "-m", "runtime.warmup", path, str(offset), cache_dir, build_id]


def first_launch(model, path: str, offset: int) -> None:
    """Compile this model's decode kernels split over two processes, if this machine never did.
    A no-op outside a bundle and on every later launch."""
    from .numba_cache import BuildCacheLocator
    done = marker()
    if done is None or os.path.exists(done):
        return
    try:
        cmd = _worker_command(path, offset, BuildCacheLocator.cache_dir, BuildCacheLocator.build_id)
        worker = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        worker = None                      # compile everything here, as a later launch would
    else:
        atexit.register(_stop, worker)
    with _Replaced(sys.modules["runtime.kernels"], _KERNEL_API):
        _one_token(model)                  # the ops' signatures, compiled here
    if worker is not None:
        _wait_ready(worker)
    mark_compiled()


def _wait_ready(worker) -> None:
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(worker.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + WAIT_S
    line = b""
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(worker.stdout.fileno(), 256)
        if not chunk:                      # the worker ended (or died): whatever it did not cache,
            break                          # the forward pass compiles here
        line += chunk
        if READY in line:
            break
    sel.close()


def _stop(worker) -> None:
    if worker.poll() is None:
        worker.kill()                      # numba writes cache files atomically: nothing half-written
    worker.wait()


def worker_main(path: str, offset: int) -> int:
    """The worker: compile the weight kernels of the model at `path` (embedded at `offset`)."""
    from . import load, ops
    model = load(path, offset=offset, n_threads=1)
    with _Replaced(ops, _ops_kernels()):
        _one_token(model)                  # get_rows, matvec(s): what the first decode token needs
        os.write(1, READY)
        _one_token(model, 2)               # matmul: the prefill path, for the first real prompt
    return 0


if __name__ == "__main__":                # the worker outside a bundle: PATH OFFSET CACHE_DIR BUILD_ID
    from runtime import numba_cache
    numba_cache.install(sys.argv[3], sys.argv[4])
    sys.exit(worker_main(sys.argv[1], int(sys.argv[2])))
