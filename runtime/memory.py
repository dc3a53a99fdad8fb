"""Memory for the KV cache: sized against what the machine has before anything is allocated, then
allocated so that it takes memory only as it is written.

Sizing. The KV cache is the one allocation the metadata sizes without the file having to hold it: a
small file with many thin layers and a large context can ask for far more than the machine has (the
pages are mapped lazily, so the failure would come later, as the cache fills, from the kernel's OOM
killer). `fit_context` computes the cache's size first (bytes per position x positions x sequences)
and lowers the context to what fits in the memory available, or says that nothing useful fits.

Allocation. `lazy_zeros(shape, dtype)` maps fresh anonymous memory (the kernel hands out zero pages
on first touch) and asks for 4 KiB pages only (`MADV_NOHUGEPAGE`).
Why not `np.zeros`: numpy asks for transparent huge pages on every allocation of 4 MiB or more
(madvise(MADV_HUGEPAGE)), so the first write into a 2 MiB-aligned range faults in all 2 MiB of it.
A KV cache is written a position at a time in every (layer, head) slice: with huge pages SmolLM2's
float32 cache at n_ctx 8192 (30 layers x 3 KV heads x 2 MiB, K and V) took 360 MB of RSS for a
3-token prompt; with 4 KiB pages it takes about 1 MB, and grows with the positions used.
(`np.zeros_like` is worse still: it writes the zeros, so every page is touched at once.)
On systems whose transparent huge pages are "always" rather than "madvise", the advice matters even
without numpy's request. Where mmap or madvise is unavailable this falls back to `np.zeros`.

Weights. `populate_in_background(array)` maps every page of a file mapping (the GGUF's) on another
core while this one goes on loading: the first forward pass reads every weight, and taking those
pages one fault at a time, in both kernel threads at once, made a 0.4 GB model's first products 3x
slower than later ones (12.5k minor faults; 6.6k with the weights mapped ahead, `MADV_POPULATE_READ`
taking 0.03-0.04 s on the other core).
"""
from __future__ import annotations

import ctypes
import math
import mmap
import sys
import threading

import numpy as np

KV_SHARE = 0.8          # of the available memory the KV cache may take (the weights are paged in beside it)
MIN_CTX = 256           # a context shorter than this is not worth running
CTX_STEP = 256          # a lowered context is a multiple of this
MADV_POPULATE_READ = 22  # Linux 5.14+ (<linux/mman.h>); Python 3.11's mmap module does not name it


def available_bytes() -> int | None:
    """Memory this process can still use: MemAvailable, within a cgroup (container) limit if any;
    None where neither can be read (not Linux)."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:                                    # cgroup v2: the limit and what the group already uses
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            current = int(f.read())
        if limit.isdigit():
            found.append(max(int(limit) - current, 0))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def fit_context(n_ctx: int, n_seqs: int, bytes_per_position: int, available: int | None) -> int:
    """The largest context <= n_ctx whose KV cache (n_seqs sequences) fits in KV_SHARE of `available`:
    n_ctx itself when it fits (or when the memory is unknown), else a multiple of CTX_STEP, else 0
    when not even MIN_CTX positions fit."""
    if available is None or n_seqs * n_ctx * bytes_per_position <= KV_SHARE * available:
        return n_ctx
    fits = int(KV_SHARE * available) // (n_seqs * bytes_per_position)
    fits -= fits % CTX_STEP
    return fits if fits >= MIN_CTX else 0


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


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


def populate(array: np.ndarray) -> bool:
    """Map every page of `array` (a view of a read-only file mapping) into this process's page tables
    now: madvise(MADV_POPULATE_READ), which faults the range in from the page cache in the kernel, a
    batch at a time, and through ctypes runs without the GIL. False off Linux or where the kernel
    refuses the advice (older than 5.14: EINVAL); the pages are then faulted in as they are read."""
    if not sys.platform.startswith("linux") or array.size == 0:
        return False
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    address = array.__array_interface__["data"][0]
    start = address // mmap.PAGESIZE * mmap.PAGESIZE
    return madvise(start, address + array.size - start, MADV_POPULATE_READ) == 0


def populate_in_background(array: np.ndarray) -> threading.Thread | None:
    """`populate(array)` on a daemon thread, so that it overlaps the Python work of loading (imports,
    the tokenizer). None, and nothing started, off Linux or when the range is larger than half the
    memory available (it would push out what the run needs). Nothing waits for the thread: a page it
    has not mapped yet is faulted in by whoever reads it first, as without it."""
    if not sys.platform.startswith("linux") or array.size == 0:
        return None
    available = available_bytes()
    if available is not None and array.size > available // 2:
        return None
    thread = threading.Thread(target=populate, args=(array,), name="chatfile-populate", daemon=True)
    thread.start()
    return thread


__all__ = ["available_bytes", "fit_context", "gib", "lazy_zeros", "populate", "populate_in_background"]
