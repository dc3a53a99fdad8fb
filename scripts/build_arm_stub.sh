#!/usr/bin/env bash
# Build the linux-aarch64 chatfile stub on an x86_64 Linux machine, under qemu user emulation.
#
#   bash scripts/build_arm_stub.sh [OUT_DIR]      (default OUT_DIR: dist/)
#   -> OUT_DIR/chatfile-stub-linux-aarch64-<build id>, for `chatfile build --stub THAT model.gguf`
#
# It is bundler/stub.py's own build (PyInstaller on stubs/chatfile.spec, then the launcher + tar.gz +
# tar.zst packing) run by the emulated aarch64 Python of scripts/setup_arm.sh, with the build-only
# wheels (PyInstaller, whose aarch64 wheel carries the aarch64 bootloader; zstandard; the server's
# pure-Python deps) unzipped next to numpy and numba. Five host tools stand in for what PyInstaller
# expects to exec (no binfmt registration here, so an emulated process cannot exec an aarch64 binary):
#   python  sys.executable (set by a sitecustomize) is the qemu launcher script, so PyInstaller can
#           re-run Python (its own process, its isolated subprocesses);
#   ldd     the aarch64 dynamic loader's `--list`, under qemu, for PyInstaller's dependency scan;
#   ldconfig  `-p` lists the sysroot's libraries (the host's would give PyInstaller the x86 libpython);
#   strip, objcopy  binutils' aarch64-linux-gnu-*, for the spec's strip of libllvmlite and libpython
#           and for PyInstaller's EXE step (the x86 ones cannot read aarch64 ELF files).
# Slow (tens of minutes: PyInstaller's analysis and zstd -19 all run emulated). On a real aarch64
# machine none of this is needed: see docs/ARM.md.
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
              altgraph==0.17.5 packaging==26.3 setuptools==65.5.0)

log() { echo "build_arm_stub: $*" >&2; }

if ! command -v aarch64-linux-gnu-strip >/dev/null; then
    log "installing binutils-aarch64-linux-gnu (for strip)"
    apt-get install -y -q --no-install-recommends binutils-aarch64-linux-gnu >&2
fi

stamp="$(printf '%s\n' "${BUILD_WHEELS[@]}")"
if [ ! -f "$BUILD_SITE/.stamp" ] || [ "$(cat "$BUILD_SITE/.stamp")" != "$stamp" ]; then
    log "downloading aarch64 build wheels"
    rm -rf "$BUILD_SITE" "$CACHE/build-wheels"
    mkdir -p "$BUILD_SITE" "$CACHE/build-wheels"
    PIP_PY=python3
    [ -x "$REPO/.venv/bin/python" ] && PIP_PY="$REPO/.venv/bin/python"
    # --no-deps: numpy/numba/llvmlite are already in root/site; the list above is the full closure
    "$PIP_PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
        --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --platform linux_aarch64 \
        --python-version 3.11 --implementation cp -d "$CACHE/build-wheels" "${BUILD_WHEELS[@]}" >&2
    for whl in "$CACHE/build-wheels"/*.whl; do
        "$PIP_PY" -m zipfile -e "$whl" "$BUILD_SITE"
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

log "building (emulated; tens of minutes)"
cd "$REPO"
PATH="$BIN:$PATH" "$BIN/python" - "$OUT_DIR" <<'EOF'
import sys
from pathlib import Path

from bundler import stub

print("build_arm_stub:", stub.stub_platform(), "build id", stub.build_id(), file=sys.stderr)
print(stub.get_stub(stub_dir=Path(sys.argv[1])))
EOF
