"""numba as every kernel module uses it: the configured `njit` and `prange`, and the compile target.

Every module with numba code (the kernel files here, runtime/ops.py) takes `njit` and `prange` from
this module, never from numba directly: importing it first points numba at the compile target chosen by
`cpu.py` (CPU name and features, 512-bit vectors where AVX-512 exists), which numba freezes when the
first jitted function is *decorated*. A kernel file that imported numba's own njit first would
silently get numba's defaults (256-bit code on Intel server CPUs).

`has_feature(name)` answers from the compile target's feature string, never from the host CPU: the
code generators (kquants.py, legacy.py) choose instructions with it (VNNI, AVX2 byte products, NEON
dot products, or the float fallback), and a cache or bundle compiled for one CPU level must hold code
for that level whatever machine compiled it. numba's cache key includes the CPU name and features, so
code chosen this way is never loaded on another target.

Importing this module also sets how numba's OpenMP threads wait (`short_spin_wait`) and makes a kernel
just compiled run the same machine code as one loaded from the cache (`same_code_cached`).
"""
from __future__ import annotations

import os

from numba import njit, prange

from . import cpu


def short_spin_wait() -> None:
    """Make numba's OpenMP worker threads spin only briefly, then sleep, between parallel loops.

    GNU OpenMP (numba's `omp` threading layer here) reads OMP_WAIT_POLICY / GOMP_SPINCOUNT once, when
    libgomp is loaded at the first parallel launch, so this must run before that; a user's value wins.
    A decode token is ~120 parallel launches a few microseconds apart: a worker that sleeps between
    them pays a futex wake-up each time, one that spins forever takes the CPU from whoever has real
    work as soon as the machine is shared (and burns every core while a server sits idle).
    GOMP_SPINCOUNT=1000 (~20 us of `pause`) bridges the gaps inside a token and sleeps after it.
    Measured on the 2-core development machine (SmolLM2 Q4_1, 2 threads, `chatfile bench
    -t 2 -r 3 -p 128 -n 64`, decode / prefill tok/s, each column a few minutes apart):
      idle:                 PASSIVE 60-64 / 400-470   spin 100 68   spin 300 79   spin 1000 111-120 / 490-512
                            spin 3000-10000 105-113   ACTIVE 107 / 449
      one core kept busy:   PASSIVE 59 / 285   spin 100 53   spin 1000 43 / 273   spin 10000 25   ACTIVE 35 / 177
    1000 doubles decode on an idle machine and loses a quarter of it on a shared one, where waiting
    longer loses far more. For a benchmark that owns the machine, OMP_WAIT_POLICY=ACTIVE is no faster.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "1000"


def same_code_cached() -> None:
    """Make a kernel run the same machine code whether just compiled or loaded from numba's cache.

    numba links a copy of every library a function calls (the prange body of a `parallel=True` kernel
    and its gufunc wrapper, helper @njit functions, NRT) into the function's module as weak symbols
    (`linkonce_odr`, the wrapper `weak_odr`) and optimizes that module again. In the process that
    compiles, the callees' own libraries are already loaded, so the runtime linker binds the weak
    symbols to those earlier copies; a later process loads only the cached object and runs the
    re-optimized copies. Both are correct, but with fastmath they sum in another order: Q8_0 matvec on
    SmolLM2's head differed by 4e-6 in 34503 of 49152 rows, which the 8-bit activation rounding turned
    into different sampled text on the first run (tests/test_kernel_cache.py). Making the linked-in
    copies internal makes every module run its own, in both cases. The earlier copies were also slower:
    in the compiling process the decode matvecs ran at 3.7 GB/s (Q4_1) and 7.1 (Q8_0) against 6.3 and
    12.3 from the cache; now both get the cached speed (scripts/kernel_bench.py --threads 1). Idempotent.
    """
    import llvmlite.binding as ll
    from numba.core.codegen import CPUCodeLibrary

    optimize = CPUCodeLibrary._optimize_final_module
    if getattr(optimize, "_own_copies", False):
        return

    weak = (ll.Linkage.linkonce_odr, ll.Linkage.weak_odr)

    def optimize_own_copies(self):
        # only the linked-in copies: a library's own weak_odr gufunc wrapper is looked up by name
        linked = {fn.name for lib in self._linking_libraries
                  for fn in lib._get_module_for_linking().functions if not fn.is_declaration}
        for fn in self._final_module.functions:
            if fn.name in linked and not fn.is_declaration and fn.linkage in weak:
                fn.linkage = "internal"
        optimize(self)

    optimize_own_copies._own_copies = True
    CPUCodeLibrary._optimize_final_module = optimize_own_copies


def target_features() -> dict[str, bool]:
    """The compile target's explicit features: {"avx512vnni": True, "amx-tile": False, ...}."""
    out = {}
    for f in cpu.compiled_features().split(","):
        if f[:1] in "+-" and len(f) > 1:
            out[f[1:]] = f[0] == "+"
    return out


def has_feature(name: str) -> bool:
    """Whether the compile target has the LLVM feature `name` ("avx512vnni", "avx2", "dotprod").

    Only features spelled out in the target's feature string count: a target given by CPU name alone
    (no feature string) gets the portable code paths."""
    return target_features().get(name, False)


# before any module that imports njit from here decorates its first function
cpu.configure()
short_spin_wait()
same_code_cached()

__all__ = ["njit", "prange", "has_feature", "target_features"]
