#!/bin/sh
[ -n "$PATH" ] || PATH=/usr/bin:/bin; [ -r "$0" ] && command -v cksum >/dev/null && [ "$(head -n 139 "$0" | tail -n +9 | cksum)" != "3766056972 6396" ] && { echo "chatfile: $0: damaged file: its launcher script does not match its checksum (download or build it again)" >&2; exit 2; }
BUILD_ID=@BUILD_ID@
ARCHIVE_OFFSET=@ARCHIVE_OFFSET@
ARCHIVE_SIZE=@ARCHIVE_SIZE@
PART2_OFFSET=@PART2_OFFSET@
PART2_SIZE=@PART2_SIZE@
UNPACKED_MB=@UNPACKED_MB@
# chatfile launcher stub (POSIX sh: Linux, macOS, BSD). File layout: runtime/bundle.py.
# This script is followed by the PyInstaller onedir runtime in two parts: a small tar.gz (the frozen
# Python, enough to decompress zstd) and a tar.zst of the rest (numpy, numba, llvmlite); then the model,
# then a footer. On the first run of a build the runtime is unpacked once into the user's cache
# directory; every later run just checks the directory and execs the cached runtime, which
# memory-maps the model straight from this file.
#
# Damage (SECURITY.md): sh runs a script command by command, so line 2 runs before anything below is
# even parsed. It compares `cksum` (POSIX CRC-32) of lines 9 to the last (this text, the same in every
# build) with the value written there: a flipped byte in them stops here with one line, not some shell
# error. tests/test_bundle_damage.py recomputes the value: after editing this file, put in the one it
# prints. The numbers above are checked against each other below; the runtime archives are checked
# before they are unpacked (gzip's CRC for part 1; the bundle's stub_sha256 for everything, by the
# runtime, before part 2); the model is hashed by the runtime on a file's first launch.
RT=chatfile-rt

die() { echo "chatfile: $*" >&2; exit 2; }

self=$0
case $self in /*) ;; *) self=$PWD/$self ;; esac
[ -r "$self" ] || die "cannot read the executable $self"
case $BUILD_ID:$ARCHIVE_OFFSET:$ARCHIVE_SIZE:$PART2_OFFSET:$PART2_SIZE in
    *[!0-9a-f:]*|*::*|:*|*:) die "$self: damaged file: its launcher's numbers are garbled (download or build it again)" ;;
esac
[ $((ARCHIVE_OFFSET + ARCHIVE_SIZE)) = "$PART2_OFFSET" ] ||
    die "$self: damaged file: its launcher's numbers do not add up (download or build it again)"

# A cache root must be a real directory owned by us with no group/other permissions, so no other
# local user can plant code that we would execute (SECURITY.md). We create it (and any missing parent)
# with mode 700 in one step, never open first and private after. One that was ever open to others
# (a loose mode: an older launcher, or a umask of 000) is taken back only if nothing in it belongs to
# anyone else; otherwise it is not used at all.
uid=$(id -u)
private_dir() {
    [ -L "$1" ] && return 1
    [ -d "$1" ] || (umask 077 && mkdir -p "$1") 2>/dev/null || return 1
    [ -L "$1" ] && return 1
    [ -d "$1" ] && [ -O "$1" ] || return 1
    case $(ls -ldn "$1" 2>/dev/null) in
        d???------*) ;;
        *) chmod 700 "$1" 2>/dev/null || return 1
           case $(ls -ldn "$1" 2>/dev/null) in d???------*) ;; *) return 1 ;; esac
           [ -z "$(find "$1" ! -user "$uid" -print 2>/dev/null | head -n 1)" ] || return 1 ;;
    esac
}

# What is executed: our link rt-BUILD_ID, to a directory of ours, holding our executable (and its
# _internal directory), none of them writable by group or others. One `find` looks at all of them
# and prints those that pass, in the order given: anything else (a failed check, no find) refuses.
runtime_ok() {
    rt_dir=$1/rt-$BUILD_ID
    [ -L "$rt_dir" ] && [ -f "$rt_dir/$RT" ] && [ -x "$rt_dir/$RT" ] || return 1
    rt_want="$rt_dir
$rt_dir/
$rt_dir/$RT"
    [ -e "$rt_dir/_internal" ] && rt_want="$rt_want
$rt_dir/_internal/"
    [ "$(find "$rt_dir" "$rt_dir/" "$rt_dir/$RT" "$rt_dir/_internal/" -prune -user "$uid" \( -type l -name "rt-$BUILD_ID" \
          -o ! -type l ! -perm -020 ! -perm -002 \) -print 2>/dev/null)" = "$rt_want" ]
}

part1() { tail -c +$((ARCHIVE_OFFSET + 1)) "$self" | head -c "$ARCHIVE_SIZE"; }

# The unpacked runtime is "$root/rt-$BUILD_ID", a symlink created only after a complete extraction:
# a killed extraction leaves just an unlinked temporary directory, redone on the next run, and of two
# copies racing, the first symlink wins and the other removes its own copy.
unpack() {
    dest=$1
    tmp=$(mktemp -d "$dest/rt-$BUILD_ID.XXXXXX") || return 1
    echo "chatfile: first run of this build: unpacking the runtime (${UNPACKED_MB} MB) into $dest ..." >&2
    if ! part1 | tar -xzof - -C "$tmp" 2>/dev/null; then
        rm -rf "$tmp"
        # a damaged or truncated file, or a full or read-only disk: gzip's CRC tells which
        if command -v gzip >/dev/null && ! part1 | gzip -t 2>/dev/null; then
            echo "chatfile: $self: damaged or truncated file: its runtime archive fails its checksum" \
                 "(download or build it again)" >&2
            return 3
        fi
        return 1
    fi
    "$tmp/$RT" --chatfile-unpack "$self" "$PART2_OFFSET" "$PART2_SIZE"
    rc=$?                               # 3: damaged (stubs/entry.py has said so), else disk trouble
    if [ $rc != 0 ]; then
        rm -rf "$tmp"
        [ $rc = 3 ] && return 3
        return 1
    fi
    if ! ln -sn "${tmp##*/}" "$dest/rt-$BUILD_ID" 2>/dev/null; then
        if runtime_ok "$dest"; then
            rm -rf "$tmp"                               # another copy finished first: use its runtime
        else
            rm -f "$dest/rt-$BUILD_ID"                  # a dangling link (its directory was cleaned)
            ln -sn "${tmp##*/}" "$dest/rt-$BUILD_ID" || { rm -rf "$tmp"; return 1; }
        fi
    fi
    # leftovers of killed extractions of this build, older than an hour
    find "$dest" -maxdepth 1 -name "rt-$BUILD_ID.??????" -type d -mmin +60 -exec rm -rf {} + 2>/dev/null
    echo "chatfile: runtime ready" >&2
}

# the user's cache directory, else (HOME missing or read-only) a private directory under TMPDIR
primary=
if [ -n "$XDG_CACHE_HOME" ]; then
    primary=$XDG_CACHE_HOME/chatfile
elif [ -n "$HOME" ]; then
    primary=$HOME/.cache/chatfile
fi
warm() { [ -n "$1" ] && private_dir "$1" && runtime_ok "$1"; }

if warm "$primary"; then
    root=$primary
else
    fallback=${TMPDIR:-/tmp}/chatfile-$(id -u)
    if warm "$fallback"; then
        root=$fallback
    else
        root=
        for dir in "$primary" "$fallback"; do
            [ -n "$dir" ] && private_dir "$dir" || continue
            unpack "$dir"
            case $? in
                0) root=$dir; break ;;
                3) exit 2 ;;                # a damaged file: another directory will not help
            esac
        done
        [ -n "$root" ] ||
            die "could not unpack the runtime into ${primary:+$primary or }$fallback (disk full or read-only?)"
    fi
fi
exec "$root/rt-$BUILD_ID/$RT" "--chatfile-bundle=$self" "$@"
exit 2
