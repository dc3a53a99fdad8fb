"""The per-platform launcher stub: built with PyInstaller on first use, cached by build id.

A stub is stubs/launcher.sh (padded to a multiple of 4 KiB) + the PyInstaller onedir runtime as a
tar.gz and a tar.zst + the meta and footer of runtime/bundle.py with no model. `chatfile build`
appends a model to a copy of it (bundler/pack.py).

Why two parts: the launcher can only rely on the POSIX tools every Linux and macOS has (`tail`, `head`,
`tar -z`), and most machines lack a `zstd` binary; but zstd -19 packs the runtime ~20 MB smaller than
gzip -9 (measured on the whole onedir: 69 vs 89 MB) and decompresses faster. So `tar -z` unpacks the
frozen Python (part 1), which then unpacks the big libraries (part 2) with the `zstandard` module it
carries.

A stub build has three steps, each a command of its own (`main`) so they can run on different
machines or under emulation (scripts/build_arm_stub.sh): PyInstaller (`build_onedir`); the kernels
compiled ahead of time for every CPU level of the platform by the frozen runtime itself
(`precompile_onedir`, into the onedir's numba-cache/); packing (`pack_onedir`).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from . import pack

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "stubs"
STUB_KIND = "sh+tar.gz+tar.zst"
HEADER_ALIGN = 4096                # the launcher script is padded to this, the archives follow
ZSTD_LEVEL = 19
# Part 2 (tar.zst) is the big libraries; part 1 (tar.gz, unpacked by `tar -z`) is the rest: the
# bootloader with its embedded modules, libpython, the stdlib's extension modules and `zstandard`,
# enough for the frozen Python to unpack part 2. zstd -19 packs llvmlite's code ~25% smaller than gzip.
PART2_DIRS = ("llvmlite", "numpy", "numpy.libs", "numba")
CACHE_DIR = "numba-cache"           # the onedir's precompiled kernels (stubs/entry.py installs it there)
# The models whose forward passes decide which kernel signatures are precompiled (runtime/precompile.py):
# one tiny GGUF per architecture and weight type.
TRACE_MODELS = ROOT / "data" / "synthetic"
RT_NAME = "chatfile-rt"             # the onedir and its bootloader (stubs/chatfile.spec, launcher.sh)
# ELF e_machine -> Linux's `uname -m` spelling, to read a onedir's platform off its bootloader
ELF_MACHINES = {3: "i686", 40: "armv7l", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
# Distributions frozen into the runtime: a new version of any of them is a new build id.
FROZEN_DISTS = ("numpy", "numba", "llvmlite", "jinja2", "markupsafe", "starlette", "uvicorn", "anyio",
                "h11", "click", "zstandard", "llguidance", "pyinstaller", "pyinstaller-hooks-contrib")


def stub_platform() -> str:
    """e.g. linux-x86_64, darwin-arm64: what the stub's native code runs on."""
    return f"{sys.platform}-{platform.machine().lower()}"


def build_id() -> str:
    """Hash of everything that ends up in the stub: sources, this packer, dependency versions, platform.

    Also the numba cache's freshness stamp (runtime/numba_cache.py), so it must change whenever any
    kernel or anything a kernel calls changes.
    """
    h = hashlib.sha256()
    files = sorted(p for d in (ROOT / "runtime", STUBS, TRACE_MODELS) for p in d.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    files.append(Path(__file__).resolve())         # how the stub is packed
    for p in files:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    for dist in FROZEN_DISTS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        h.update(f"{dist}={version}\n".encode())
    h.update(f"{sys.version}\n{stub_platform()}\n".encode())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chatfile" / "stubs"


def get_stub(progress=sys.stderr, stub_dir: Path | None = None) -> Path:
    """This platform's stub for the current sources: from the cache, else built (about 5 minutes)."""
    bid = build_id()
    stub_dir = stub_dir or cache_dir()
    path = stub_dir / f"chatfile-stub-{stub_platform()}-{bid}"
    if path.is_file():
        return path
    print(f"chatfile: building the runtime stub for {stub_platform()} (first build only, "
          f"about 5 minutes); it is cached in {stub_dir}", file=progress, flush=True)
    stub_dir.mkdir(parents=True, exist_ok=True)
    build_stub(path, bid, progress=progress)
    prune_stubs(stub_dir, keep=path)
    return path


KEEP_STUBS = 3      # this platform's newest stubs kept in the cache (each ~70 MB, rebuilt on demand)


def prune_stubs(stub_dir: Path, keep: Path, n: int = KEEP_STUBS) -> list[Path]:
    """Delete this platform's cached stubs beyond the `n` newest (`keep` always stays): every change
    to the runtime sources or dependency versions makes a new build id, and old stubs are only ever
    rebuilt, never lost. Other platforms' stubs (given with --stub) are not touched. Returns the
    files deleted."""
    mine = sorted((p for p in stub_dir.glob(f"chatfile-stub-{stub_platform()}-*")
                   if p.is_file() and p != keep),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    gone = []
    for p in mine[max(0, n - 1):]:
        try:
            p.unlink()
            gone.append(p)
        except OSError:
            pass
    return gone


def build_stub(out: Path, bid: str, progress=sys.stderr) -> None:
    """Run PyInstaller on stubs/chatfile.spec and pack the onedir behind the launcher script into OUT."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chatfile-stub-") as tmp:
        onedir = build_onedir(Path(tmp), bid)
        print(f"chatfile: PyInstaller done in {time.monotonic() - t0:.0f} s; compiling the kernels for "
              f"each CPU level (a few minutes) ...", file=progress, flush=True)
        precompile_onedir(onedir, platform.machine(), progress=progress)
        print(f"chatfile: compiled ({time.monotonic() - t0:.0f} s so far); compressing (zstd -{ZSTD_LEVEL}, "
              f"about a minute) ...", file=progress, flush=True)
        pack_onedir(onedir, out, bid)
    print(f"chatfile: stub ready in {time.monotonic() - t0:.0f} s: {out} "
          f"({out.stat().st_size / 1e6:.1f} MB)", file=progress, flush=True)


def build_onedir(workdir: Path, bid: str) -> Path:
    """PyInstaller on stubs/chatfile.spec for this interpreter's platform: WORKDIR/dist/chatfile-rt, with
    its BUILD_ID file. Packing it is a separate step (pack_onedir) because it is platform-neutral: an
    aarch64 onedir built under emulation is packed by the host's Python (scripts/build_arm_stub.sh)."""
    try:
        import PyInstaller  # noqa: F401
        import zstandard  # noqa: F401
    except ImportError:
        raise pack.UserError("building a stub needs PyInstaller and zstandard: pip install 'chatfile[build]' "
                             "(or pass --stub with a stub built elsewhere)") from None
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(workdir / "dist"), "--workpath", str(workdir / "work"), str(STUBS / "chatfile.spec")]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-15:])
        raise pack.UserError(f"PyInstaller failed building the stub:\n{tail}")
    onedir = workdir / "dist" / RT_NAME
    (onedir / "BUILD_ID").write_text(bid + "\n", encoding="ascii")
    return onedir


def precompile_onedir(onedir: Path, machine: str, run_with: list[str] | None = None,
                      progress=sys.stderr, jobs: int | None = None) -> list[str]:
    """Compile every kernel into ONEDIR/numba-cache, once per CPU level of `machine` (x86_64, aarch64),
    by running the onedir's own runtime (`--chatfile-precompile`, runtime/precompile.py) with numba's
    target set to the level. `run_with` prefixes the command (an emulator for a foreign onedir). The
    levels compile in parallel, `jobs` at a time (default: the CPU count). Returns the level names."""
    from runtime.kernels.cpu import platform_levels

    levels = platform_levels(machine)
    models = [str(p) for p in sorted(TRACE_MODELS.glob("*.gguf"))]
    if not levels:
        return []
    cmd = [*(run_with or []), str(onedir / RT_NAME), "--chatfile-precompile", *models]
    running: list[tuple[str, subprocess.Popen, object]] = []
    failed = []

    def reap(entry):
        name, proc, log = entry
        proc.wait()
        log.seek(0)
        text = log.read().decode(errors="replace")
        log.close()
        if proc.returncode != 0:
            failed.append(f"{name}: exit {proc.returncode}\n" + "\n".join(text.strip().splitlines()[-15:]))
        else:
            print(f"chatfile:   {name}: {text.strip().splitlines()[-1] if text.strip() else 'done'}",
                  file=progress, flush=True)

    jobs = jobs or os.cpu_count() or 1
    for lv in levels:
        while len(running) >= jobs:
            reap(running.pop(0))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NUMBA_CPU_NAME": lv.cpu,
               "NUMBA_CPU_FEATURES": lv.features}
        log = tempfile.TemporaryFile()
        running.append((lv.name, subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=subprocess.STDOUT, cwd=onedir), log))
    while running:
        reap(running.pop(0))
    if failed:
        raise pack.UserError("compiling the kernels for the stub failed:\n" + "\n".join(failed))
    return [lv.name for lv in levels]


def pack_onedir(onedir: Path, out: Path, bid: str, target_platform: str | None = None) -> None:
    """Stub file OUT = launcher script + part 1 (tar.gz) + part 2 (tar.zst) of `onedir` + stub footer.

    `target_platform` is what the onedir's native code runs on (default: this machine's); only the
    footer records it, so a foreign onedir (built under emulation or on another machine) packs the
    same way, with this machine's compressor."""
    (onedir / "BUILD_ID").write_text(bid + "\n", encoding="ascii")
    files = sorted(p for p in onedir.rglob("*") if not p.is_dir())
    unpacked = sum(p.stat().st_size for p in files if not p.is_symlink())
    part1 = [p for p in files if not _in_part2(p.relative_to(onedir))]
    part2 = [p for p in files if _in_part2(p.relative_to(onedir))]
    with tempfile.TemporaryDirectory(prefix="chatfile-pack-") as tmp:
        gz, zst = Path(tmp) / "part1.tar.gz", Path(tmp) / "part2.tar.zst"
        _write_tar(onedir, part1, gz, "gz")
        _write_tar(onedir, part2, zst, "zst")
        header = _launcher_header(bid, gz.stat().st_size, zst.stat().st_size, unpacked)
        partial = out.with_name(out.name + f".{os.getpid()}.partial")
        with open(partial, "wb") as f:
            f.write(header)
            for part in (gz, zst):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f, 8 << 20)
            f.write(pack.stub_tail(f.tell(), platform=target_platform or stub_platform(), kind=STUB_KIND,
                                    build_id=bid))
    os.chmod(partial, 0o755)
    os.replace(partial, out)


def _in_part2(rel: Path) -> bool:
    return (len(rel.parts) > 2 and rel.parts[0] == "_internal" and rel.parts[1] in PART2_DIRS
            or rel.parts[0] == CACHE_DIR)


def _write_tar(onedir: Path, files: list[Path], archive: Path, compression: str) -> None:
    """Deterministic tar of `files` (owner 0, fixed mtime, no group/other write bits), gzip or zstd."""
    def clean(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mtime = 0
        ti.mode &= 0o755
        return ti

    with open(archive, "wb") as raw:
        if compression == "gz":
            stream = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0)
        else:
            import zstandard
            stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1).stream_writer(raw)
        with stream, tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for p in files:
                tar.add(p, arcname=str(p.relative_to(onedir)), recursive=False, filter=clean)


def _launcher_header(bid: str, gz_size: int, zst_size: int, unpacked: int) -> bytes:
    """stubs/launcher.sh with its numbers filled in, padded with newlines to a multiple of 4 KiB.

    The archives start right after the padded script; the script's own length depends on the numbers
    written into it, so the offset is found by a fixed point (two rounds at most).
    """
    template = (STUBS / "launcher.sh").read_text(encoding="ascii")
    offset = HEADER_ALIGN
    while True:
        fields = {"BUILD_ID": bid, "ARCHIVE_OFFSET": offset, "ARCHIVE_SIZE": gz_size,
                  "PART2_OFFSET": offset + gz_size, "PART2_SIZE": zst_size,
                  "UNPACKED_MB": round(unpacked / 1e6)}
        text = template
        for k, v in fields.items():
            text = text.replace(f"@{k}@", str(v))
        raw = text.encode("ascii")
        need = -(-len(raw) // HEADER_ALIGN) * HEADER_ALIGN
        if need == offset:
            return raw + b"\n" * (offset - len(raw))
        offset = need


def onedir_platform(onedir: Path) -> str | None:
    """linux-MACHINE from the ELF header of the onedir's bootloader; None if it is not an ELF file."""
    with open(onedir / RT_NAME, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")   # e_machine, EI_DATA
    return f"linux-{ELF_MACHINES.get(machine, f'elf{machine}')}"


def pack_built_onedir(onedir: Path, out: Path, target_platform: str | None = None) -> Path:
    """Pack a onedir made by build_onedir, possibly on or for another platform, into a stub.

    The build id is the onedir's BUILD_ID (computed where it was built); the platform is read from
    the bootloader's ELF header, and an explicit one must agree with it. OUT may be a directory, for
    the usual name chatfile-stub-PLATFORM-BUILDID. Returns the stub's path."""
    try:
        bid = (onedir / "BUILD_ID").read_text(encoding="ascii").strip()
        found = onedir_platform(onedir)
    except (OSError, UnicodeDecodeError) as e:
        raise pack.UserError(f"{onedir} is not a runtime onedir from `build-onedir` "
                             f"({getattr(e, 'strerror', None) or e})") from None
    if not bid.isalnum():
        raise pack.UserError(f"{onedir / 'BUILD_ID'} does not hold a build id")
    if target_platform and found and target_platform != found:
        raise pack.UserError(f"{onedir / RT_NAME} is built for {found}, not {target_platform}")
    target_platform = target_platform or found
    if not target_platform:
        raise pack.UserError(f"cannot tell what {onedir / RT_NAME} runs on (not an ELF file): pass --platform")
    if out.is_dir():
        out = out / f"chatfile-stub-{target_platform}-{bid}"
    if not out.parent.is_dir():                  # before minutes of compression
        raise pack.UserError(f"{out.parent} is not a directory")
    pack_onedir(onedir, out, bid, target_platform)
    return out


def main(argv: list[str] | None = None) -> int:
    """The steps of a stub build as commands, so they can run on different machines (or under
    emulation): scripts/build_arm_stub.sh builds the aarch64 onedir in an emulated Python, runs its
    precompile step under qemu and packs it with the host's Python."""
    ap = argparse.ArgumentParser(prog="python -m bundler.stub", description=main.__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-onedir", help="PyInstaller only: WORKDIR/dist/chatfile-rt for this Python's platform")
    b.add_argument("workdir", type=Path)
    c = sub.add_parser("precompile-onedir", help="compile the kernels into a runtime onedir for each CPU level")
    c.add_argument("onedir", type=Path)
    c.add_argument("--run-with", default="", help="command prefix that runs the onedir's binary, e.g. "
                                                  "'qemu-aarch64-static -L SYSROOT' for a foreign onedir")
    p = sub.add_parser("pack-onedir", help="pack a runtime onedir (any platform) into a stub file")
    p.add_argument("onedir", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="the stub file, or a directory for chatfile-stub-PLATFORM-BUILDID")
    p.add_argument("--platform", help="what the onedir runs on, e.g. linux-aarch64 "
                                      "(default: read from its bootloader's ELF header)")
    args = ap.parse_args(argv)
    try:
        if args.command == "build-onedir":
            args.workdir.mkdir(parents=True, exist_ok=True)
            print(build_onedir(args.workdir.resolve(), build_id()))
        elif args.command == "precompile-onedir":
            found = onedir_platform(args.onedir)
            if found is None:
                raise pack.UserError(f"cannot tell what {args.onedir / RT_NAME} runs on (not an ELF file)")
            precompile_onedir(args.onedir.resolve(), found.split("-", 1)[1], args.run_with.split())
        else:
            print(pack_built_onedir(args.onedir, args.out, args.platform))
    except (pack.UserError, OSError) as e:
        print(f"chatfile: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
