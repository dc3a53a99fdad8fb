"""The bundle writer. The layout is declared in runtime/bundle.py (the reader); keep the two in step."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from runtime.bundle import (FLAG_META_CHECK, FOOTER, FORMAT_VERSION, MAGIC, META_CHECK_KEY, PAYLOAD_ALIGNMENT,
                            BundleError, BundleInfo, meta_checksum, read_info)

CHUNK = 8 << 20                   # copy buffer: large enough that syscalls are noise
PROGRESS_MIN_BYTES = 256 << 20    # models smaller than this copy in well under a second: no progress line


class UserError(Exception):
    """A mistake the user can fix; the CLI prints the message as one line."""


def _tail(meta: dict, stub_size: int, payload_offset: int, payload_size: int, digest: bytes) -> bytes:
    """Meta JSON ending in its own checksum (runtime/bundle.py: META_CHECK_KEY), then the footer."""
    text = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8")[:-1]   # without "}"
    check = meta_checksum(text, stub_size, payload_offset, payload_size, digest)
    raw = text + META_CHECK_KEY + check.encode("ascii") + b'"}'
    return raw + FOOTER.pack(MAGIC, FORMAT_VERSION, FLAG_META_CHECK, len(raw), stub_size, payload_offset,
                             payload_size, digest)


def stub_tail(stub_size: int, *, platform: str, kind: str, build_id: str) -> bytes:
    """Meta and footer that turn `stub_size` launcher bytes into a stub (a bundle with no model)."""
    meta = {"model_name": "", "args": [], "stub_platform": platform, "stub_kind": kind, "build_id": build_id,
            "stub_sha256": ""}
    return _tail(meta, stub_size, 0, 0, bytes(32))


def _open_partial(out: Path, force: bool):
    """Temporary file next to OUT, so a failed or killed build never leaves a half-written OUT."""
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir():
        raise UserError(f"{out} is a directory")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        return tmp, open(tmp, "xb")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None


def pack(stub: Path, model: Path, out: Path, *, model_name: str, args: list[str], force: bool = False,
         progress=sys.stderr) -> BundleInfo:
    """Write OUT = stub launcher + padding + model (raw) + meta + footer. Returns the written bundle's info.

    Costs one read and one write of the model (hashed on the way); prints progress for large models.
    """
    info = read_info(stub)
    if info.has_model:
        raise UserError(f"{stub} is a bundle with a model, not a stub")
    model_size = model.stat().st_size
    payload_offset = -(-info.stub_size // PAYLOAD_ALIGNMENT) * PAYLOAD_ALIGNMENT
    tmp, dst = _open_partial(out, force)
    try:
        with dst, open(stub, "rb") as src_stub, open(model, "rb") as src:
            stub_digest = _copy(src_stub, dst, info.stub_size, hashlib.sha256())
            dst.write(bytes(payload_offset - info.stub_size))
            digest = _copy(src, dst, model_size, hashlib.sha256(), label=model.name, progress=progress)
            if dst.tell() != payload_offset + model_size:
                raise UserError(f"{model} changed size while it was being copied")
            meta = {"model_name": model_name, "args": args, "stub_platform": info.stub_platform,
                    "stub_kind": info.stub_kind, "build_id": info.build_id,
                    "stub_sha256": stub_digest.hexdigest()}
            dst.write(_tail(meta, info.stub_size, payload_offset, model_size, digest.digest()))
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return read_info(out)


def _copy(src, dst, n: int, hasher=None, *, label: str = "", progress=None):
    """Copy exactly n bytes from src to dst, updating hasher; a progress line for large copies."""
    show = progress is not None and n >= PROGRESS_MIN_BYTES
    tty = show and progress.isatty()
    every = 0.5 if tty else 5.0          # a log file gets a line every few seconds, a terminal one line
    t0 = last = time.monotonic()
    done = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while done < n:
        k = src.readinto(view[:min(CHUNK, n - done)])
        if not k:
            raise BundleError(f"{src.name}: file ended after {done} of {n} bytes")
        dst.write(view[:k])
        if hasher is not None:
            hasher.update(view[:k])
        done += k
        now = time.monotonic()
        if show and (now - last > every or done == n):
            last = now
            rate = done / max(now - t0, 1e-6) / 1e6
            print(f"{chr(13) if tty else ''}chatfile: copying {label}: {done >> 20}/{n >> 20} MiB "
                  f"({rate:.0f} MB/s)", end="\n" if done == n or not tty else "", file=progress, flush=True)
    return hasher


def damaged_parts(info: BundleInfo) -> list[str]:
    """What of a bundle does not match its checksums: every byte but the meta and footer, which
    read_info has checked already. [] when the file is intact."""
    damaged = []
    if not info.stub_intact():
        damaged.append(f"the launcher and runtime (bytes 0-{info.stub_size}) do not match their sha256")
    with open(info.path, "rb") as f:
        f.seek(info.stub_size)
        if any(f.read(info.payload_offset - info.stub_size)):
            damaged.append(f"the padding (bytes {info.stub_size}-{info.payload_offset}) is not all zeros")
    if not info.payload_intact():
        damaged.append(f"the embedded model does not match its sha256 {info.payload_sha256}")
    return damaged
