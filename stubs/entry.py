"""Entry point of the frozen runtime (the PyInstaller onedir that stubs/launcher.sh unpacks and execs).

argv[1] is `--chatfile-bundle=PATH` (runtime.bundle.LAUNCHER_ARG): the executable the user ran, whose
footer says where the model is. Baked `--args` go before the user's flags, so the user's win.
"""
import os
import sys

UNPACK_ARG = "--chatfile-unpack"


def unpack_rest(exe: str, offset: int, size: int) -> int:
    """Second half of the first-run unpacking (stubs/launcher.sh already unpacked the tar.gz part):
    stream the tar.zst part of the stub from `exe` into this runtime's directory."""
    import tarfile
    import zstandard

    try:
        with open(exe, "rb") as f:
            f.seek(offset)
            reader = zstandard.ZstdDecompressor().stream_reader(_Limited(f, size))
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                # "data": nothing may land outside the directory, no device files, no setuid bits
                tar.extractall(os.path.dirname(os.path.abspath(sys.executable)), filter="data")
    except (OSError, zstandard.ZstdError, tarfile.TarError) as e:
        print(f"chatfile: cannot unpack the runtime from {exe} (damaged or truncated file?): {e}",
              file=sys.stderr)
        return 2
    return 0


class _Limited:
    """A read-only file view of `size` bytes from the current position."""
    def __init__(self, f, size):
        self.f, self.left = f, size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


def main() -> int:
    if sys.argv[1:2] == [UNPACK_ARG]:      # from stubs/launcher.sh: EXE OFFSET SIZE; numpy is not there yet
        return unpack_rest(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    from runtime import bundle, numba_cache

    exe, argv = bundle.split_launcher_argv(sys.argv[1:])
    here = os.path.dirname(os.path.abspath(sys.executable))
    with open(os.path.join(here, "BUILD_ID"), encoding="ascii") as f:
        build_id = f.read().strip()
    # the cache sits in the unpacked runtime's directory, which the launcher checked is private
    numba_cache.install(os.path.join(here, "numba-cache"), build_id)
    numba_cache.announce_first_compile(
        "chatfile: first run on this machine: compiling the kernels (once; a few seconds) ...")

    baked, embedded = [], None
    if exe is not None:
        try:
            info = bundle.read_info(exe)
        except (OSError, bundle.BundleError) as e:
            print(f"chatfile: {e}", file=sys.stderr)
            return 2
        baked = info.args
        if info.has_model:
            embedded = (exe, info.payload_offset)

    from runtime.cli import main as cli_main
    return cli_main(baked + argv, embedded=embedded)


if __name__ == "__main__":
    sys.exit(main())
