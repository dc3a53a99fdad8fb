#!/bin/sh
# chatfile launcher stub (POSIX sh: Linux, macOS, BSD). File layout: runtime/bundle.py.
# This script is followed by the PyInstaller onedir runtime in two parts: a small tar.gz (the frozen
# Python, enough to decompress zstd) and a tar.zst of the rest (numpy, numba, llvmlite); then the model,
# then a footer. On the first run of a build the runtime is unpacked once into the user's cache
# directory; every later run just checks the directory and execs the cached runtime, which
# memory-maps the model straight from this file.
BUILD_ID=@BUILD_ID@
ARCHIVE_OFFSET=@ARCHIVE_OFFSET@
ARCHIVE_SIZE=@ARCHIVE_SIZE@
PART2_OFFSET=@PART2_OFFSET@
PART2_SIZE=@PART2_SIZE@
UNPACKED_MB=@UNPACKED_MB@
RT=chatfile-rt

[ -n "$PATH" ] || PATH=/usr/bin:/bin     # env -i: tail, head, tar, mkdir, ls, id
die() { echo "chatfile: $*" >&2; exit 2; }

self=$0
case $self in /*) ;; *) self=$PWD/$self ;; esac
[ -r "$self" ] || die "cannot read the executable $self"

# A cache root must be a real directory owned by us with no group/other permissions, so no other
# local user can plant code that we would execute (SECURITY.md). We create it 0700 and re-check it on
# every launch before executing anything from it.
private_dir() {
    [ -L "$1" ] && return 1
    [ -d "$1" ] || mkdir -p "$1" 2>/dev/null || return 1
    [ -L "$1" ] && return 1
    [ -d "$1" ] && [ -O "$1" ] || return 1
    case $(ls -ldn "$1" 2>/dev/null) in
        d???------*) ;;
        *) chmod 700 "$1" 2>/dev/null || return 1
           case $(ls -ldn "$1" 2>/dev/null) in d???------*) ;; *) return 1 ;; esac ;;
    esac
}

# The unpacked runtime is "$root/rt-$BUILD_ID", a symlink created only after a complete extraction:
# a killed extraction leaves just an unlinked temporary directory, redone on the next run, and of two
# copies racing, the first symlink wins and the other removes its own copy.
unpack() {
    root=$1
    tmp=$(mktemp -d "$root/rt-$BUILD_ID.XXXXXX") || return 1
    echo "chatfile: first run of this build: unpacking the runtime (${UNPACKED_MB} MB) into $root ..." >&2
    if ! tail -c +$((ARCHIVE_OFFSET + 1)) "$self" | head -c "$ARCHIVE_SIZE" | tar -xzof - -C "$tmp" ||
       ! "$tmp/$RT" --chatfile-unpack "$self" "$PART2_OFFSET" "$PART2_SIZE"; then
        rm -rf "$tmp"
        return 1
    fi
    if ! ln -sn "${tmp##*/}" "$root/rt-$BUILD_ID" 2>/dev/null; then
        if [ -x "$root/rt-$BUILD_ID/$RT" ]; then
            rm -rf "$tmp"                               # another copy finished first: use its runtime
        else
            rm -f "$root/rt-$BUILD_ID"                  # a dangling link (its directory was cleaned)
            ln -sn "${tmp##*/}" "$root/rt-$BUILD_ID" || { rm -rf "$tmp"; return 1; }
        fi
    fi
    # leftovers of killed extractions of this build, older than an hour
    find "$root" -maxdepth 1 -name "rt-$BUILD_ID.??????" -type d -mmin +60 -exec rm -rf {} + 2>/dev/null
    echo "chatfile: runtime ready" >&2
}

# the user's cache directory, else (HOME missing or read-only) a private directory under TMPDIR
primary=
if [ -n "$XDG_CACHE_HOME" ]; then
    primary=$XDG_CACHE_HOME/chatfile
elif [ -n "$HOME" ]; then
    primary=$HOME/.cache/chatfile
fi
warm() { [ -n "$1" ] && private_dir "$1" && [ -x "$1/rt-$BUILD_ID/$RT" ]; }

if warm "$primary"; then
    root=$primary
else
    fallback=${TMPDIR:-/tmp}/chatfile-$(id -u)
    if warm "$fallback"; then
        root=$fallback
    elif [ -n "$primary" ] && private_dir "$primary" && unpack "$primary"; then
        root=$primary
    elif private_dir "$fallback" && unpack "$fallback"; then
        root=$fallback
    else
        die "could not unpack the runtime into ${primary:+$primary or }$fallback (disk full or read-only?)"
    fi
fi
exec "$root/rt-$BUILD_ID/$RT" "--chatfile-bundle=$self" "$@"
exit 2
