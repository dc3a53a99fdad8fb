"""The bundle format (declared here, once) and `find_model()`.

A chatfile executable, and a stub (a bundle with no model), is one file:

    offset 0            launcher stub: `stub_size` bytes, platform specific, opaque to this format
                        (stubs/launcher.sh + the compressed runtime it unpacks on first run)
    stub_size           zero padding up to the next multiple of PAYLOAD_ALIGNMENT
    payload_offset      the GGUF model, stored raw (`payload_size` bytes), memory-mapped in place by
                        the runtime: 64 KiB alignment keeps every tensor page- and SIMD-aligned
    ...                 meta: `meta_size` bytes of UTF-8 JSON (META_KEYS), just before the footer
    end - FOOTER.size   footer (FOOTER, little endian, fixed size), always the last bytes of the file

A stub has payload_offset = payload_size = 0 and an all-zero sha256. Nothing in the format depends on
the platform, so a stub built on macOS or Windows is packed by `chatfile build --stub` on Linux.
The writer is `bundler/pack.py`; bump FORMAT_VERSION there and here together when the layout changes.

Damage (a flipped or missing byte anywhere) is found by: the payload's sha256 in the footer; the meta's
own checksum (META_CHECK_KEY, over the meta text and the footer's offsets, checked by every read_info);
the `stub_sha256` meta key (the launcher and runtime bytes, checked before the runtime is unpacked);
zero padding. The launcher script checks its own text with `cksum` (stubs/launcher.sh).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field

MAGIC = b"CHATFILE"
FORMAT_VERSION = 1
PAYLOAD_ALIGNMENT = 1 << 16          # 64 KiB, llamafile's zipalign default: page-aligned everywhere
MAX_META_SIZE = 1 << 20              # a hostile footer must not make us read or parse more than this
HASH_CHUNK = 8 << 20

FOOTER = struct.Struct(
    "<"
    "8s"    # magic            MAGIC
    "H"     # version          FORMAT_VERSION
    "H"     # flags            FLAG_META_CHECK, or 0 (files written before the meta checksum)
    "I"     # meta_size        bytes of JSON meta directly before the footer
    "Q"     # stub_size        bytes of launcher stub at offset 0
    "Q"     # payload_offset   GGUF start, a multiple of PAYLOAD_ALIGNMENT (0 when there is no model)
    "Q"     # payload_size     GGUF bytes (0 when there is no model)
    "32s"   # payload_sha256   raw digest of the payload bytes (zeros when there is no model)
)
# meta JSON keys: model_name str, args [str] (baked default flags, put before the user's),
# stub_platform str (e.g. "linux-x86_64"), stub_kind str ("sh+tar.gz"), build_id str (hex),
# stub_sha256 str (hex sha256 of the stub_size launcher bytes; "" in a stub, whose writer cannot know it)
META_KEYS = ("model_name", "args", "stub_platform", "stub_kind", "build_id", "stub_sha256")
# The meta text ends with `,"meta_sha256":"<hex>"}`: the sha256 of the meta text before that key
# followed by META_CHECKED (the footer fields that say where things are). Flag bit FLAG_META_CHECK says
# it is there, and the two must agree, so a flipped byte can neither turn the check off (the flag and
# the key would disagree) nor pass it. Files with neither come from before the check and are read as is.
META_CHECK_KEY = b',"meta_sha256":"'
META_CHECKED = struct.Struct("<QQQ32s")     # stub_size, payload_offset, payload_size, payload_sha256
FLAG_META_CHECK = 1

# First argument the launcher stub passes to the unpacked runtime: the path of the bundle it came from.
LAUNCHER_ARG = "--chatfile-bundle="


class BundleError(ValueError):
    """Not a bundle, or a damaged one. The message says which field is wrong."""


@dataclass(frozen=True)
class BundleInfo:
    path: str
    file_size: int
    version: int
    stub_size: int
    payload_offset: int
    payload_size: int
    payload_sha256: str              # hex; "" for a stub
    meta_offset: int
    model_name: str = ""
    args: list[str] = field(default_factory=list)
    stub_platform: str = ""
    stub_kind: str = ""
    build_id: str = ""
    stub_sha256: str = ""            # hex; "" when unknown (a stub, or a bundle from before this key)

    @property
    def has_model(self) -> bool:
        return self.payload_size > 0

    def stub_intact(self) -> bool:
        """The launcher and runtime bytes match stub_sha256 (True when the file predates that key)."""
        return not self.stub_sha256 or sha256_of(self.path, 0, self.stub_size) == self.stub_sha256

    def payload_intact(self) -> bool:
        """The embedded model matches payload_sha256 (re-reads all of it)."""
        return sha256_of(self.path, self.payload_offset, self.payload_size) == self.payload_sha256


def read_info(path) -> BundleInfo:
    """Read and check the footer and meta of a bundle or stub. Raises BundleError if `path` is neither."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        file_size = f.seek(0, os.SEEK_END)
        if file_size < FOOTER.size:
            raise BundleError(f"{path}: not a chatfile bundle (file too short for a footer)")
        f.seek(file_size - FOOTER.size)
        (magic, version, flags, meta_size, stub_size, payload_offset, payload_size,
         digest) = FOOTER.unpack(f.read(FOOTER.size))
        if magic != MAGIC:
            raise BundleError(f"{path}: not a chatfile bundle, or a truncated one "
                              f"(no {MAGIC.decode()} footer at the end)")
        if version != FORMAT_VERSION:
            raise BundleError(f"{path}: bundle format version {version} is not supported "
                              f"(this runtime reads version {FORMAT_VERSION}), or a damaged footer")
        if flags & ~FLAG_META_CHECK:
            raise BundleError(f"{path}: damaged bundle footer (flags {flags:#x})")
        meta_offset = file_size - FOOTER.size - meta_size
        if meta_size > MAX_META_SIZE or meta_offset < 0:
            raise BundleError(f"{path}: damaged bundle footer (meta size {meta_size})")
        if payload_size:
            if payload_offset % PAYLOAD_ALIGNMENT or payload_offset < stub_size:
                raise BundleError(f"{path}: damaged bundle footer (payload offset {payload_offset})")
            if payload_offset + payload_size > meta_offset:
                raise BundleError(f"{path}: truncated or damaged bundle (payload of {payload_size} bytes "
                                  f"at {payload_offset} runs past the metadata at {meta_offset})")
        elif stub_size > meta_offset:
            raise BundleError(f"{path}: damaged stub footer (stub size {stub_size})")
        f.seek(meta_offset)
        raw = f.read(meta_size)
    try:
        meta = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: damaged bundle metadata ({e})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{path}: damaged bundle metadata (wrong types)")
    check = meta.pop("meta_sha256", None)
    damaged = BundleError(f"{path}: damaged bundle: its metadata or footer does not match its checksum")
    if bool(flags & FLAG_META_CHECK) != (check is not None):
        raise damaged
    if check is not None and check != meta_checksum(raw[:raw.rfind(META_CHECK_KEY)], stub_size,
                                                     payload_offset, payload_size, digest):
        raise damaged
    if not isinstance(meta.get("args", []), list) \
            or not all(isinstance(a, str) for a in meta.get("args", [])):
        raise BundleError(f"{path}: damaged bundle metadata (wrong types)")
    strings = {k: meta.get(k, "") for k in META_KEYS if k != "args"}
    if not all(isinstance(v, str) for v in strings.values()):
        raise BundleError(f"{path}: damaged bundle metadata (wrong types)")
    return BundleInfo(path=path, file_size=file_size, version=version, stub_size=stub_size,
                      payload_offset=payload_offset, payload_size=payload_size,
                      payload_sha256=digest.hex() if payload_size else "", meta_offset=meta_offset,
                      args=list(meta.get("args", [])), **strings)


def meta_checksum(text: bytes, stub_size: int, payload_offset: int, payload_size: int, digest: bytes) -> str:
    """The `meta_sha256` value: hex sha256 of the meta text before its META_CHECK_KEY + META_CHECKED."""
    return hashlib.sha256(text + META_CHECKED.pack(stub_size, payload_offset, payload_size, digest)).hexdigest()


def sha256_of(path, offset: int, size: int) -> str:
    """Hex sha256 of `size` bytes of `path` from `offset`; "" when the file ends first."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while size:
            chunk = f.read(min(HASH_CHUNK, size))
            if not chunk:
                return ""
            h.update(chunk)
            size -= len(chunk)
    return h.hexdigest()


def is_bundle(path) -> bool:
    """True when `path` ends with a chatfile footer (cheap: reads FOOTER.size bytes)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < FOOTER.size:
                return False
            f.seek(size - FOOTER.size)
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def find_model(model: str | None, embedded: tuple[str, int] | None) -> tuple[str, int]:
    """The model to run, as (path, byte offset of the GGUF in it).

    An explicit `-m PATH` wins; a chatfile bundle given as `-m` runs the model embedded in it.
    Otherwise the payload embedded in the running executable. Raises BundleError when there is none.
    """
    if model:
        if is_bundle(model):
            info = read_info(model)
            if not info.has_model:
                raise BundleError(f"{model}: this chatfile stub holds no model")
            return model, info.payload_offset
        return model, 0
    if embedded is not None:
        return embedded
    raise BundleError("no model: pass -m MODEL.gguf (this executable has no embedded model)")


def split_launcher_argv(argv: list[str]) -> tuple[str | None, list[str]]:
    """(bundle path, remaining argv) from the argv the launcher stub gives the unpacked runtime."""
    if argv and argv[0].startswith(LAUNCHER_ARG):
        return argv[0][len(LAUNCHER_ARG):], argv[1:]
    return None, argv
