#!/usr/bin/env bash
# Run an aarch64 chatfile executable on this x86_64 Linux machine, under qemu user emulation.
#
#   bash scripts/run_arm_bundle.sh BUNDLE [ARGS...]       e.g. smollm2-arm64 -p "Hello" -n 4 --temp 0
#
# The bundle's launcher is POSIX sh and runs as it is; it then execs the aarch64 runtime (to unpack,
# and to run), and the runtime's PyInstaller bootloader re-executes itself once (to apply
# LD_LIBRARY_PATH). An exec() of an aarch64 file only works when the kernel's binfmt_misc hands such
# files to qemu, so this script registers qemu-aarch64-static for aarch64 ELF files for the duration of
# the run (unless a handler is registered already) and removes the registration afterwards. Needs root.
#
# The "target" is deliberately bare: QEMU_LD_PREFIX (qemu's -L) is a sysroot holding only glibc (which
# PyInstaller never bundles) and zlib (the bootloader links libz.so.1 from the system, on x86 too; every
# Debian and Raspberry Pi OS has it), built once from Debian's arm64 packages into
# $CHATFILE_ARM_CACHE/target-root. No Python: everything else comes from the bundle. The environment is
# emptied (`env -i`) apart from PATH, TERM and HOME ($CHATFILE_ARM_HOME if set: a fresh HOME gives a
# first run, which unpacks the runtime and compiles the kernels).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 BUNDLE [ARGS...]" >&2; exit 2; }
BUNDLE="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
shift
CACHE="${CHATFILE_ARM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chatfile/arm}"
TARGET="$CACHE/target-root"
BINFMT=/proc/sys/fs/binfmt_misc
NAME=chatfile-qemu-aarch64
TARGET_DEBS=(libc6 zlib1g)

log() { echo "run_arm_bundle: $*" >&2; }
command -v qemu-aarch64-static >/dev/null || { log "needs qemu-user-static (bash scripts/setup_arm.sh)"; exit 2; }

if [ ! -f "$TARGET/.stamp" ] || [ "$(cat "$TARGET/.stamp")" != "${TARGET_DEBS[*]}" ]; then
    log "making the bare aarch64 target root (${TARGET_DEBS[*]}) in $TARGET"
    rm -rf "$TARGET" && mkdir -p "$TARGET/debs"
    (cd "$TARGET/debs" && apt-get download -q -o APT::Sandbox::User=root "${TARGET_DEBS[@]/%/:arm64}" >&2)
    for deb in "$TARGET"/debs/*.deb; do dpkg -x "$deb" "$TARGET"; done
    rm -rf "$TARGET/debs"
    for d in lib bin sbin; do
        if [ -d "$TARGET/usr/$d" ] && [ ! -e "$TARGET/$d" ]; then ln -s "usr/$d" "$TARGET/$d"; fi
    done
    echo "${TARGET_DEBS[*]}" > "$TARGET/.stamp"
fi

# binfmt_misc: the magic and mask of Debian's qemu-aarch64 entry (/usr/share/binfmts/qemu-aarch64), i.e.
# ELF64, little-endian, e_type EXEC or DYN, e_machine 183 (aarch64). Flag F: the kernel opens qemu now,
# so the handler works whatever the mount namespace later.
registered=""
[ -e "$BINFMT/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT"
if ! grep -qs '^flags' "$BINFMT"/*aarch64* 2>/dev/null; then
    printf '%s' ":$NAME:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:$(command -v qemu-aarch64-static):F" \
        > "$BINFMT/register"
    registered="$BINFMT/$NAME"
    trap 'echo -1 > "$registered"' EXIT
    log "registered $NAME with binfmt_misc for this run"
fi

status=0
env -i PATH=/usr/bin:/bin HOME="${CHATFILE_ARM_HOME:-$HOME}" TERM="${TERM:-dumb}" QEMU_LD_PREFIX="$TARGET" "$BUNDLE" "$@" || status=$?
exit "$status"
