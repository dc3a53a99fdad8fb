"""Large zeroed arrays that take memory only as they are written: the KV cache.

`lazy_zeros(shape, dtype)` maps fresh anonymous memory (the kernel hands out zero pages on first
touch) and asks for 4 KiB pages only (`MADV_NOHUGEPAGE`).

Why not `np.zeros`: numpy asks for transparent huge pages on every allocation of 4 MiB or more
(madvise(MADV_HUGEPAGE)), so the first write into a 2 MiB-aligned range faults in all 2 MiB of it.
A KV cache is written a position at a time in every (layer, head) slice: with huge pages SmolLM2's
float32 cache at n_ctx 8192 (30 layers x 3 KV heads x 2 MiB, K and V) took 360 MB of RSS for a
3-token prompt; with 4 KiB pages it takes about 1 MB, and grows with the positions used.
(`np.zeros_like` is worse still: it writes the zeros, so every page is touched at once.)
On systems whose transparent huge pages are "always" rather than "madvise", the advice matters even
without numpy's request. Where mmap or madvise is unavailable this falls back to `np.zeros`.
"""
from __future__ import annotations

import mmap
import math

import numpy as np


def lazy_zeros(shape, dtype=np.float32) -> np.ndarray:
    """A zeroed, writable, C-contiguous array of `shape` whose memory is committed page by page
    (4 KiB) as it is written, not when it is made."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype)
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                        prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, AttributeError, ValueError):
        return np.zeros(shape, dtype)
    advice = getattr(mmap, "MADV_NOHUGEPAGE", None)
    if advice is not None:
        try:
            buf.madvise(advice)
        except OSError:
            pass                      # kernel without THP: 4 KiB pages anyway
    return np.frombuffer(buf, dtype=dtype, count=math.prod(shape)).reshape(shape)


__all__ = ["lazy_zeros"]
