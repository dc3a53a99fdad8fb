"""Entry point of the frozen runtime (the PyInstaller onedir that stubs/launcher.sh unpacks and execs).

argv[1] is `--chatfile-bundle=PATH` (runtime.bundle.LAUNCHER_ARG): the executable the user ran, whose
footer says where the model is. Baked `--args` go before the user's flags, so the user's win.
"""
import gc
import hashlib
import os
import sys

UNPACK_ARG = "--chatfile-unpack"
WARMUP_ARG = "--chatfile-warmup"           # runtime.warmup.WORKER_ARG (not imported here: keep start-up light)
PRECOMPILE_ARG = "--chatfile-precompile"   # bundler/stub.py at stub build: MODEL... (runtime/precompile.py)
DAMAGED = 3        # exit code for stubs/launcher.sh: the file is damaged, another cache directory will not help


def unpack_rest(exe: str, offset: int, size: int) -> int:
    """Second half of the first-run unpacking (stubs/launcher.sh already unpacked the tar.gz part):
    check the launcher and runtime bytes against the bundle's stub_sha256, then stream the tar.zst part
    of the stub from `exe` into this runtime's directory. zstd frames carry no checksum here, so without
    the sha256 a flipped byte could unpack into a broken library that crashes later. Meanwhile another
    thread hashes the embedded model for the first launch (payload_checked), which the run would
    otherwise do after unpacking: hashlib releases the GIL, so on two cores it costs no time."""
    from runtime import bundle

    try:
        info = bundle.read_info(exe)
        if offset + size != info.stub_size:
            raise bundle.BundleError(f"{exe}: damaged file: its launcher puts the runtime at bytes "
                                     f"{offset}-{offset + size} but the footer says {info.stub_size}")
        if not info.stub_intact():
            raise bundle.BundleError(f"{exe}: damaged file: its launcher and runtime do not match their "
                                     "sha256 (download or build it again)")
    except bundle.BundleError as e:
        print(f"chatfile: {e}", file=sys.stderr)
        return DAMAGED
    except OSError as e:
        print(f"chatfile: cannot read {exe}: {e.strerror}", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(sys.executable))
    hashing = None
    if info.has_model:
        # the model's first-launch sha256 (payload_checked) on the other core while this one unpacks:
        # hashlib releases the GIL. A damaged model leaves no stamp; the run then says so.
        import threading
        hashing = threading.Thread(target=_check_quietly, args=(here, info), daemon=True)
        hashing.start()
    try:
        return _unpack_part2(exe, offset, size, here)
    finally:
        if hashing is not None:
            hashing.join()


def _check_quietly(here: str, info) -> None:
    try:
        payload_checked(here, info)
    except OSError:
        pass                # the run hashes again and reports what it finds


def _unpack_part2(exe: str, offset: int, size: int, here: str) -> int:
    import tarfile
    import zstandard
    try:
        with open(exe, "rb") as f:
            f.seek(offset)
            reader = zstandard.ZstdDecompressor().stream_reader(_Limited(f, size))
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                # "data": nothing may land outside the directory, no device files, no setuid bits.
                # Pythons before 3.11.4 (Debian bookworm's 3.11.2, which an aarch64 stub may be built
                # with) have no filters; the archive's bytes were checked against stub_sha256 above.
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(here, **safe)
    except (zstandard.ZstdError, tarfile.TarError) as e:
        print(f"chatfile: cannot unpack the runtime from {exe} (damaged or truncated file): {e}",
              file=sys.stderr)
        return DAMAGED
    except OSError as e:
        print(f"chatfile: cannot unpack the runtime from {exe}: {e}", file=sys.stderr)
        return 2
    return 0


def payload_checked(here: str, info) -> bool:
    """True when the embedded model matches the footer's sha256. Hashed on the first launch of each
    file (0.3 s per 100 MB) and remembered in the private runtime directory under the file's identity:
    changing the file changes its size, mtime or ctime, so it is hashed again."""
    st = os.stat(info.path)
    key = f"{os.path.realpath(info.path)}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0" \
          f"{st.st_ctime_ns}\0{info.payload_sha256}"
    stamp = os.path.join(here, "checked", hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest())
    if os.path.exists(stamp):
        return True
    if not info.payload_intact():
        return False
    try:
        os.makedirs(os.path.dirname(stamp), mode=0o700, exist_ok=True)
        open(stamp, "a").close()
    except OSError:
        pass            # a read-only cache: hash again next time
    return True


class _Limited:
    """A read-only file view of `size` bytes from the current position."""
    def __init__(self, f, size):
        self.f, self.left = f, size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


class _NoNumbaExtensions:
    """Import hook serving `numba.core.entrypoints` with nothing to load. numba scans every installed
    distribution's entry points for `numba_extensions` before its first compile, and imports
    importlib.metadata for that when numba itself is imported (with email, csv, zipfile: 0.025 s of
    every launch). This runtime freezes only the distributions of bundler/stub.py FROZEN_DISTS, and
    none of them registers a numba extension, so the scan always finds nothing here."""
    NAME = "numba.core.entrypoints"

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != cls.NAME:
            return None
        from importlib.machinery import ModuleSpec
        return ModuleSpec(name, cls)

    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module):
        module._already_initialized = True        # numba's own flag: extensions loaded (there are none)
        module.init_all = lambda: None


def main() -> int:
    if sys.argv[1:2] == [UNPACK_ARG]:      # from stubs/launcher.sh: EXE OFFSET SIZE; numpy is not there yet
        return unpack_rest(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    gc.disable()                            # until the model is loaded: runtime.cli.loaded (0.05 s of a launch)
    sys.meta_path.insert(0, _NoNumbaExtensions)
    from runtime import bundle, numba_cache

    exe, argv = bundle.split_launcher_argv(sys.argv[1:])
    here = os.path.dirname(os.path.abspath(sys.executable))
    with open(os.path.join(here, "BUILD_ID"), encoding="ascii") as f:
        build_id = f.read().strip()
    # the cache sits in the unpacked runtime's directory, which the launcher checked is private
    numba_cache.install(os.path.join(here, "numba-cache"), build_id)
    if argv[:1] in ([WARMUP_ARG], [PRECOMPILE_ARG]):
        gc.enable()                         # these compile: numba's compiler leaves cyclic garbage
    if argv[:1] == [WARMUP_ARG]:            # runtime/warmup.py's worker: PATH OFFSET
        from runtime import warmup
        return warmup.worker_main(argv[1], int(argv[2]))
    if argv[:1] == [PRECOMPILE_ARG]:        # the stub build, once per CPU level (NUMBA_CPU_NAME/FEATURES)
        from runtime import precompile
        precompile.precompile(argv[1:])
        return 0
    numba_cache.announce_first_compile(
        "chatfile: first run on this machine: compiling the kernels (once; a few seconds) ...")

    baked, embedded = [], None
    if exe is not None:
        try:
            info = bundle.read_info(exe)
            if info.has_model and not payload_checked(here, info):
                raise bundle.BundleError(f"{exe}: damaged file: the embedded model does not match its sha256 "
                                         "(download or build it again)")
        except (OSError, bundle.BundleError) as e:
            print(f"chatfile: {e}", file=sys.stderr)
            return 2
        baked = info.args
        if info.has_model:
            embedded = (exe, info.payload_offset)

    from runtime.cli import main as cli_main
    return cli_main(baked + argv, embedded=embedded)


def exit_now(code: int) -> None:
    """End the process: the exit handlers run (atexit: runtime/warmup.py stops its worker), the standard
    streams are flushed, and then the process ends without tearing the interpreter down. Freeing every
    module and object of numpy, numba and LLVM one by one is work nobody waits for, yet it came after the
    last byte of output: 0.02-0.04 s of every `-p` run."""
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):       # a closed pipe: nothing more can reach the reader
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    exit_now(main())
