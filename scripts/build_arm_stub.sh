#!/usr/bin/env bash
# Build the linux-aarch64 chatfile stub on an x86_64 Linux machine, under qemu user emulation.
#
#   bash scripts/build_arm_stub.sh [OUT_DIR]      (default OUT_DIR: dist/)
#   -> OUT_DIR/chatfile-stub-linux-aarch64-<build id>, for `chatfile build MODEL -o OUT --stub THAT`
#
# A stub build has three steps (bundler/stub.py), run here on two sides:
#   1. emulated: `python -m bundler.stub build-onedir WORK` in the aarch64 Python of scripts/setup_arm.sh,
#      i.e. PyInstaller on stubs/chatfile.spec (its aarch64 wheel carries the aarch64 bootloader), with
#      the build-only wheels (PyInstaller, zstandard, the server's pure-Python deps) unzipped next to
#      numpy and numba. The build id is computed there (aarch64 platform, the emulated Python's version).
#   2. emulated: `python -m bundler.stub precompile-onedir ONEDIR --run-with "qemu-aarch64-static -L ROOT"`
#      (driven by the host's Python): the frozen aarch64 runtime compiles every kernel for each aarch64
#      CPU level (runtime/kernels/cpu.py LEVELS) into the onedir, so an aarch64 machine compiles nothing.
#   3. host: `python -m bundler.stub pack-onedir WORK/dist/chatfile-rt -o OUT_DIR`: the launcher script,
#      tar.gz and tar.zst (zstd -19) are platform-neutral, so the host's Python packs them at native
#      speed; the platform tag (linux-aarch64) is read from the bootloader's ELF header.
# Five host tools stand in for what PyInstaller expects to exec (no binfmt registration here, so an
# emulated process cannot exec an aarch64 binary):
#   python  sys.executable (set by a sitecustomize) is the qemu launcher script, so PyInstaller can
#           re-run Python (its own process, its isolated subprocesses);
#   ldd     the aarch64 dynamic loader's `--list`, under qemu, for PyInstaller's dependency scan;
#   ldconfig  `-p` lists the sysroot's libraries (the host's would give PyInstaller the x86 libpython);
#   strip, objcopy  binutils' aarch64-linux-gnu-*, for the spec's strip of libllvmlite and libpython
#           and for PyInstaller's EXE step (the x86 ones cannot read aarch64 ELF files).
# Cost (docs/ARM.md): 354 s wall on a loaded 2-core machine, 201 s of it PyInstaller under emulation,
# 153 s the host's zstd -19.
# Trying the result here: scripts/run_arm_bundle.sh. On a real aarch64 machine none of this is
# needed: see docs/ARM.md.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT_DIR="$(mkdir -p "${1:-$REPO/dist}" && cd "${1:-$REPO/dist}" && pwd)"
ROOT="$(bash "$REPO/scripts/setup_arm.sh")"
CACHE="$(dirname "$ROOT")"
BUILD_SITE="$CACHE/build-site"
BIN="$CACHE/build-bin"

# pinned to the x86 venv's versions, so both stubs freeze the same code
BUILD_WHEELS=(pyinstaller==6.22.3 pyinstaller-hooks-contrib==2026.9 zstandard==0.25.0
              jinja2==3.1.6 markupsafe==3.0.4 starlette==1.10.0 uvicorn==0.54.0 anyio==4.16.0
              h11==0.16.0 click==8.5.1 idna==3.20 sniffio==1.3.1 typing_extensions==4.16.0
              altgraph==0.17.5 packaging==26.3 setuptools==65.5.0 llguidance==1.9.1)

log() { echo "build_arm_stub: $*" >&2; }
HOST_PY=python3
[ -x "$REPO/.venv/bin/python" ] && HOST_PY="$REPO/.venv/bin/python"

if ! command -v aarch64-linux-gnu-strip >/dev/null; then
    log "installing binutils-aarch64-linux-gnu (for strip)"
    apt-get install -y -q --no-install-recommends binutils-aarch64-linux-gnu >&2
fi

stamp="$(printf '%s\n' "${BUILD_WHEELS[@]}")"
if [ ! -f "$BUILD_SITE/.stamp" ] || [ "$(cat "$BUILD_SITE/.stamp")" != "$stamp" ]; then
    log "downloading aarch64 build wheels"
    rm -rf "$BUILD_SITE" "$CACHE/build-wheels"
    mkdir -p "$BUILD_SITE" "$CACHE/build-wheels"
    # --no-deps: numpy/numba/llvmlite are already in root/site; the list above is the full closure
    "$HOST_PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
        --platform manylinux_2_31_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
        --platform linux_aarch64 \
        --python-version 3.11 --implementation cp -d "$CACHE/build-wheels" "${BUILD_WHEELS[@]}" >&2
    for whl in "$CACHE/build-wheels"/*.whl; do
        "$HOST_PY" -m zipfile -e "$whl" "$BUILD_SITE"
    done
    rm -rf "$CACHE/build-wheels"
    echo "$stamp" > "$BUILD_SITE/.stamp"
fi

mkdir -p "$BIN" "$CACHE/build-hook"
# Every emulated Python of the build (the driver below, the PyInstaller process bundler/stub.py starts,
# PyInstaller's isolated children) must see the launcher script as sys.executable to re-run itself.
cat > "$CACHE/build-hook/sitecustomize.py" <<EOF
import sys
sys.executable = "$BIN/python"
EOF
# Debian bookworm's python3.11 (3.11.2, also Raspberry Pi OS's) lacks tarfile's extraction filters
# (PEP 706, CPython 3.11.4), which stubs/entry.py uses to unpack the runtime safely: a stub freezing that
# tarfile fails on its first run. The module is pure Python, so the build freezes the host's 3.11
# tarfile instead (put ahead of the stdlib on the emulated Python's path); bundler/stub.py refuses to
# build a stub with a tarfile that has no filters.
rm -f "$CACHE/build-hook/tarfile.py"
if ! grep -q "def data_filter" "$ROOT/usr/lib/python3.11/tarfile.py"; then
    HOST_TARFILE="$("$HOST_PY" -c 'import sys, tarfile; assert sys.version_info[:2] == (3, 11) and hasattr(tarfile, "data_filter"); print(tarfile.__file__)')" ||
        { log "the sysroot's tarfile has no extraction filters and the host has no Python 3.11 with them"; exit 1; }
    cp "$HOST_TARFILE" "$CACHE/build-hook/tarfile.py"
fi
cat > "$BIN/python" <<EOF
#!/bin/sh
PYTHONPATH="$CACHE/build-hook:$REPO:$BUILD_SITE:$ROOT/site" exec qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" "\$@"
EOF
cat > "$BIN/ldd" <<EOF
#!/bin/sh
# ldd FILE for aarch64 files: glibc's loader lists what FILE needs (PyInstaller passes one file)
exec qemu-aarch64-static -L "$ROOT" "$ROOT/lib/ld-linux-aarch64.so.1" --list "\$@"
EOF
# `ldconfig -p` is where PyInstaller looks for libpython; the host's would list the x86 one (the
# spec's strip then fails on it), so this one lists the sysroot's libraries
cat > "$BIN/ldconfig" <<EOF
#!/bin/sh
echo "libraries in the aarch64 sysroot $ROOT"
for f in "$ROOT"/usr/lib/aarch64-linux-gnu/*.so*; do
    echo "	\${f##*/} (libc6,AArch64) => /usr/lib/aarch64-linux-gnu/\${f##*/}"
done
EOF
ln -sf "$(command -v aarch64-linux-gnu-strip)" "$BIN/strip"
ln -sf "$(command -v aarch64-linux-gnu-objcopy)" "$BIN/objcopy"     # EXE() adds the PYZ section
chmod +x "$BIN/python" "$BIN/ldd" "$BIN/ldconfig"

# PyInstaller adds libpython without scanning what it links: the x86 venv's libpython needs only libc
# and libm, but Debian's arm64 one also links libz and libexpat, and no extension module pulls libexpat
# in (pyexpat is built into libpython). Without it the stub dies at start ("Failed to load Python shared
# library ... libexpat.so.1") on a system without libexpat1. So: copy from the sysroot every library
# that an ELF file of the onedir needs and neither the onedir nor glibc provides.
GLIBC_LIBS=" ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libutil.so.1 libresolv.so.2 libanl.so.1 "
add_missing_libs() {
    local onedir="$1" lib src dir
    for lib in $(find "$onedir" -type f \( -name '*.so*' -o -name chatfile-rt \) -exec readelf -d {} + 2>/dev/null |
                 sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | sort -u); do
        case "$GLIBC_LIBS" in *" $lib "*) continue ;; esac
        [ -n "$(find "$onedir" -name "$lib" -print -quit)" ] && continue
        src=""
        for dir in "$ROOT/usr/lib/aarch64-linux-gnu" "$ROOT/lib/aarch64-linux-gnu"; do
            if [ -e "$dir/$lib" ]; then src="$dir/$lib"; break; fi
        done
        [ -n "$src" ] || { log "WARNING: $lib is needed by the onedir but not in the sysroot"; continue; }
        log "adding $lib (needed, not collected by PyInstaller)"
        cp -L "$src" "$onedir/_internal/$lib"
    done
}

WORK="$(mktemp -d -t chatfile-arm-stub.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

cd "$REPO"
t0=$SECONDS
log "1/3 PyInstaller, emulated (a few minutes of CPU)"
ONEDIR="$(PATH="$BIN:$PATH" "$BIN/python" -m bundler.stub build-onedir "$WORK")"
log "onedir built in $((SECONDS - t0)) s: $(du -sm "$ONEDIR" | cut -f1) MB, build id $(cat "$ONEDIR/BUILD_ID")"
add_missing_libs "$ONEDIR"
t1=$SECONDS
log "2/3 compiling the kernels for each aarch64 CPU level, emulated (many minutes of CPU)"
"$HOST_PY" -m bundler.stub precompile-onedir "$ONEDIR" --run-with "qemu-aarch64-static -L $ROOT"
log "compiled in $((SECONDS - t1)) s"
t1=$SECONDS
log "3/3 packing with the host's Python (zstd -19)"
"$HOST_PY" -m bundler.stub pack-onedir "$ONEDIR" -o "$OUT_DIR"
log "packed in $((SECONDS - t1)) s; $((SECONDS - t0)) s in all"
