#!/usr/bin/env bash
# Set up an emulated aarch64 Python with numpy and numba, for `make test-arm` (scripts/run_arm_tests.sh).
#
# What it builds, in $CHATFILE_ARM_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/chatfile/arm):
#   root/            an aarch64 sysroot: Debian bookworm's arm64 python3.11 and the libraries it links,
#                    unpacked with `dpkg -x` (nothing is installed into the host's dpkg database)
#   root/site/       PyPI's manylinux aarch64 wheels of numpy, numba, llvmlite, unzipped
#   python3-aarch64  `qemu-aarch64-static -L root root/usr/bin/python3.11` with root/site on PYTHONPATH
# and prints the root path on stdout (progress goes to stderr).
#
# Idempotent: a second run finds the stamp and costs nothing. The stamp holds the package list and the
# wheel pins, so changing either below rebuilds the environment.
#
# Needs root (or sudo) on first use on a machine: it installs Debian's qemu-user-static and adds the
# arm64 architecture to apt (`dpkg --add-architecture arm64`, only to download its packages). No binfmt
# registration is needed: the test runner calls qemu-aarch64-static explicitly.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${CHATFILE_ARM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chatfile/arm}"
ROOT="$CACHE/root"

# The wheels the runtime needs, pinned to what the x86 venv runs so both architectures test one thing.
WHEELS=(numpy==2.4.6 numba==0.68.1 llvmlite==0.50.0)
PY_VERSION=3.11          # Debian bookworm's python3; the wheels are chosen for this cp311 ABI
WHEEL_PLATFORM=manylinux_2_28_aarch64   # bookworm's glibc is 2.36

# python3.11 and every library it (and its lib-dynload extensions, numpy's and llvmlite's .so files)
# links against; found with readelf -d on the unpacked tree. libgomp1 is numba's OpenMP threading layer;
# libpython3.11 (the shared library; Debian's python3.11 is linked statically) is what PyInstaller
# bundles when scripts/build_arm_stub.sh builds the aarch64 stub.
DEBS=(
    python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libpython3.11
    libc6 libgcc-s1 libstdc++6 libgomp1 zlib1g libffi8 libssl3 libexpat1 libbz2-1.0 liblzma5
    libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libcrypt1 libnsl2 libtirpc3
    libdb5.3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
)

log() { echo "setup_arm: $*" >&2; }
die() { echo "setup_arm: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "needs root or sudo to apt-get install qemu-user-static"
    SUDO="sudo"
fi

stamp_text() {
    printf '%s\n' "python$PY_VERSION" "$WHEEL_PLATFORM" "${WHEELS[@]}" "${DEBS[@]}"
}

# 1. the emulator (per machine, not cached: it lives in /usr/bin)
if ! command -v qemu-aarch64-static >/dev/null; then
    log "installing qemu-user-static"
    $SUDO apt-get update -q >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        qemu-user-static >&2
fi

if [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$(stamp_text)" ]; then
    echo "$ROOT"
    exit 0
fi

# A half-built tree from an interrupted run is thrown away, never patched.
rm -rf "$ROOT" "$CACHE/stamp" "$CACHE/debs" "$CACHE/wheels"
mkdir -p "$ROOT/site" "$CACHE/debs" "$CACHE/wheels"

# 2. arm64 Debian packages, unpacked into the sysroot
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding the arm64 architecture to apt"
    $SUDO dpkg --add-architecture arm64
fi
if ! apt-cache show python3.11-minimal:arm64 >/dev/null 2>&1; then
    $SUDO apt-get update -q >&2
fi
log "downloading ${#DEBS[@]} arm64 packages"
# as root, without the `_apt` sandbox user: the cache may sit in a home directory _apt cannot enter
download_debs() {
    (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "${DEBS[@]/%/:arm64}" >&2)
}
# stale package lists name versions the mirror has since replaced: refresh them once and retry
download_debs || { $SUDO apt-get update -q >&2 && download_debs; }
for deb in "$CACHE/debs"/*.deb; do
    dpkg -x "$deb" "$ROOT"
done
# Debian's usrmerge: /lib -> usr/lib, so the loader finds /lib/ld-linux-aarch64.so.1 under -L ROOT
for d in lib bin sbin; do
    if [ -d "$ROOT/usr/$d" ] && [ ! -e "$ROOT/$d" ]; then ln -s "usr/$d" "$ROOT/$d"; fi
done

# 3. aarch64 wheels from PyPI, unzipped onto one path
PIP_PYTHON="${CHATFILE_ARM_PIP_PYTHON:-}"
if [ -z "$PIP_PYTHON" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PIP_PYTHON="$REPO/.venv/bin/python"; else PIP_PYTHON=python3; fi
fi
log "downloading wheels: ${WHEELS[*]}"
"$PIP_PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    --platform "$WHEEL_PLATFORM" --python-version "$PY_VERSION" --implementation cp \
    -d "$CACHE/wheels" "${WHEELS[@]}" >&2
for whl in "$CACHE/wheels"/*.whl; do
    "$PIP_PYTHON" -m zipfile -e "$whl" "$ROOT/site"
done
rm -rf "$CACHE/debs" "$CACHE/wheels"

# 4. the launcher
cat > "$CACHE/python3-aarch64" <<EOF
#!/bin/sh
# aarch64 python$PY_VERSION under qemu user emulation (made by scripts/setup_arm.sh)
PYTHONPATH="$ROOT/site\${PYTHONPATH:+:\$PYTHONPATH}" exec qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python$PY_VERSION" "\$@"
EOF
chmod +x "$CACHE/python3-aarch64"

log "checking: import numpy, numba on aarch64"
"$CACHE/python3-aarch64" -c "import platform, numpy, numba; print('setup_arm:', platform.machine(), 'numpy', numpy.__version__, 'numba', numba.__version__)" >&2 \
    || die "the aarch64 python in $ROOT cannot import numpy and numba"

stamp_text > "$CACHE/stamp"
echo "$ROOT"
