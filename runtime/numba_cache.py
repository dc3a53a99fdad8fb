"""numba's on-disk cache inside the frozen executable, keyed by the build id.

numba's stock locators fail in a PyInstaller app (shared/research/feasibility.md section 2): code
objects carry relative file names that do not exist on disk, so `NUMBA_CACHE_DIR` is silently ignored
and the user-wide locator keys the cache on the *working directory* (a cold compile from every new cwd)
and stamps it with a sha256 of the whole executable (0.75 s per GB of embedded model, every launch).

`BuildCacheLocator` instead puts every kernel's cache under one fixed directory and uses the build id
as its freshness stamp. The build id hashes the runtime sources and the numba/llvmlite versions
(bundler/stub.py), which matters because numba's own index key hashes a function's bytecode but not its
callees or globals. numba's key still includes the CPU name and features, so a cache directory copied
to another machine just misses.

Each compile target (CPU name and features, runtime/kernels/cpu.py) has its own subdirectory,
`target_dir()`: the stub ships one filled at build time for every CPU level it supports
(runtime/precompile.py), and a CPU outside them compiles into a directory of its own.

`install()` must run before the first kernel module is imported: numba picks a locator when a
`cache=True` function is decorated. The plain (non-frozen) interpreter keeps numba's stock locators.
It also makes loading a cached kernel cheaper (`_load_without_refresh`, `_typeof_without_numpy_ma`).
"""
from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile

from numba.core import event
from numba.core.caching import CacheImpl, _CacheLocator


def target_key() -> str:
    """A directory name for numba's compile target: its CPU name and a hash of (triple, name,
    features), the `magic_tuple` numba's cache index keys every entry on. A target made from the
    same name and features (a CPU level) gets the same directory on every machine."""
    from numba.core.registry import cpu_target
    magic = cpu_target.target_context.codegen().magic_tuple()
    return f"{magic[1]}-{hashlib.sha256(repr(magic).encode()).hexdigest()[:12]}"


def target_dir() -> str | None:
    """This process's cache directory for its compile target (None without install())."""
    if BuildCacheLocator.cache_dir is None:
        return None
    return os.path.join(BuildCacheLocator.cache_dir, target_key())


class BuildCacheLocator(_CacheLocator):
    """Cache files for every kernel under `cache_dir/<target_key>/<module path>`, stamped with
    `build_id`."""
    cache_dir: str | None = None      # set by install(); None leaves numba's stock locators in charge
    build_id: str = ""

    def __init__(self, py_func, py_file):
        self._lineno = py_func.__code__.co_firstlineno
        # py_file is relative in a frozen app ("runtime/kernels/legacy.py"): keep it relative, never
        # abspath() it (that would key on the working directory again).
        parts = [p for p in os.path.splitdrive(py_file)[1].replace("\\", "/").split("/") if p not in ("", ".", "..")]
        self._path = os.path.join(target_dir(), "_".join(parts[:-1]) or "_")

    def ensure_cache_path(self):
        os.makedirs(self._path, mode=0o700, exist_ok=True)

    def get_cache_path(self):
        return self._path

    def get_source_stamp(self):
        return self.build_id

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if cls.cache_dir is None:
            return None
        return cls(py_func, py_file)


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def _private_dir(path: str) -> bool:
    """An existing or new directory that only we can write: numba's index files are pickles, so a
    cache another local user could write to would run their code (SECURITY.md)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def install(cache_dir: str, build_id: str) -> str:
    """Route every `cache=True` kernel to `cache_dir` (which the caller has checked is private), else,
    when it is not writable (a read-only cache left by an earlier run), to the private per-user
    directory under TMPDIR the launcher also falls back to, else a fresh temporary one.
    Returns the directory used. Idempotent.
    """
    if not _writable_dir(cache_dir):
        user_tmp = os.path.join(tempfile.gettempdir(), f"chatfile-{os.getuid()}")
        cache_dir = os.path.join(user_tmp, f"numba-{build_id}")
        if not (_private_dir(user_tmp) and _private_dir(cache_dir) and _writable_dir(cache_dir)):
            cache_dir = tempfile.mkdtemp(prefix="chatfile-numba-")
    BuildCacheLocator.cache_dir = cache_dir
    BuildCacheLocator.build_id = build_id
    if BuildCacheLocator not in CacheImpl._locator_classes:
        CacheImpl._locator_classes.insert(0, BuildCacheLocator)
    _load_without_refresh()
    _typeof_without_numpy_ma()
    return cache_dir


def _load_without_refresh() -> None:
    """Load cached kernels without numba's `target_context.refresh()`. Idempotent.

    numba refreshes its target context before every cache load, which on the first one imports and
    registers every implementation numba has (numpy's linalg, random generators, typed containers,
    ...): about 0.15 s of CPU on every launch, for typing and lowering that a cached kernel never
    does again. Loading one needs only the runtime (NRT) symbols that compiled code links against.
    A real compile (a cache miss) still refreshes: numba's compiler pipeline does that itself.
    """
    from numba.core.caching import Cache
    from numba.core.runtime import rtsys

    if getattr(Cache.load_overload, "_chatfile", False):
        return

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    load_overload._chatfile = True
    Cache.load_overload = load_overload


def _typeof_without_numpy_ma() -> None:
    """numba's type of a plain ndarray, without importing numpy.ma. Idempotent.

    numba types an argument in Python when its C fast path cannot (read-only arrays: every weight
    matrix, the first time), and its ndarray rule first asks `isinstance(val, np.ma.MaskedArray)`,
    which makes numpy import numpy.ma: 0.04 s of CPU on every launch. A value whose type is exactly
    ndarray is no masked array, so it gets the same type straight away; subclasses keep numba's rule.
    """
    import numpy as np
    from numba.core import errors, types
    from numba.core.typing.typeof import typeof_impl
    from numba.np import numpy_support

    numba_rule = typeof_impl.dispatch(np.ndarray)
    if getattr(numba_rule, "_chatfile", False):
        return

    def typeof_ndarray(val, c):
        if type(val) is not np.ndarray:
            return numba_rule(val, c)
        try:
            dtype = numpy_support.from_dtype(val.dtype)
        except errors.NumbaNotImplementedError:
            raise errors.NumbaValueError(f"Unsupported array dtype: {val.dtype}")
        return types.Array(dtype, val.ndim, numpy_support.map_layout(val), readonly=not val.flags.writeable)

    typeof_ndarray._chatfile = True
    typeof_impl.register(np.ndarray)(typeof_ndarray)


class _FirstCompileNotice(event.Listener):
    """Prints one line to stderr when numba starts its first real compile (a cache miss)."""
    def __init__(self, message: str, stream):
        self.message, self.stream, self.said = message, stream, False

    def on_start(self, ev):
        if not self.said:
            self.said = True
            print(self.message, file=self.stream, flush=True)

    def on_end(self, ev):
        pass


def announce_first_compile(message: str, stream=None) -> None:
    """Say `message` on stderr once, when a kernel is about to be compiled rather than loaded from the
    cache: the first run on a machine spends seconds here and should say why."""
    event.register("numba:compile", _FirstCompileNotice(message, stream or sys.stderr))
