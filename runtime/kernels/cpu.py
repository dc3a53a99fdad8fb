"""numba's code-generation target, set from the host CPU at run time.

Must run before the first `@njit` anywhere in the process: numba creates its CPU target (and freezes
the CPU name and features it compiles for) when the first jitted function is *decorated*. Importing
`runtime.kernels` runs `configure()`; other modules with numba code (`runtime/ops.py`) import
`runtime.kernels` before defining theirs.

Why: LLVM's tuning for several Intel server CPUs (Skylake-X .. Emerald Rapids) prefers 256-bit vectors
even when AVX-512 is there; asking for 512-bit ones gave +20-25% on the decode matvecs
(shared/research/kernels.md). The feature string is computed from the CPU we run on, never baked in,
so the same code is right on AVX2-only x86, on AMD Zen 4 (already 512-bit by default) and on aarch64.
numba's cache key includes the CPU name and features, so a different machine compiles its own entry.

Importing this module also makes numba's OpenMP threads spin only briefly between parallel loops
(`short_spin_wait`), for the same reason of timing: environment read once, before the first launch,
and makes a kernel just compiled run the same code as one loaded from the cache (`same_code_cached`).
"""
from __future__ import annotations

import os

_NAME_ENV = "NUMBA_CPU_NAME"          # numba's own settings (numba/core/config.py); a user's value wins
_FEATURES_ENV = "NUMBA_CPU_FEATURES"

user_override = False     # the user chose the target (NUMBA_CPU_NAME=generic: a portable cache)


def host_target() -> tuple[str, str]:
    """(cpu name, feature string) to compile for on this machine."""
    import llvmlite.binding as ll
    from numba.core.codegen import get_host_cpu_features

    name = ll.get_host_cpu_name()
    features = get_host_cpu_features()          # "+avx2,+fma,-amx-tile,..." ('' when LLVM cannot tell)
    if "+avx512f" in features.split(","):
        features += ",-prefer-256-bit"          # use zmm registers where LLVM would stop at ymm
    return name, features


def configure() -> None:
    """Point numba at the host CPU (with 512-bit vectors where AVX-512 exists). Idempotent.

    Set through numba's environment settings rather than its config attributes because numba re-reads
    its environment before every compile and would reset the attributes. Child processes inherit them,
    which is right: they run on the same CPU.
    """
    global user_override
    name, features = host_target()
    if _NAME_ENV in os.environ or _FEATURES_ENV in os.environ:
        user_override = (os.environ.get(_NAME_ENV), os.environ.get(_FEATURES_ENV)) != (name, features)
        return
    if not features:
        return                                   # LLVM cannot describe this CPU: keep numba's defaults
    os.environ[_NAME_ENV] = name
    os.environ[_FEATURES_ENV] = features
    from numba.core import config
    config.reload_config()


def short_spin_wait() -> None:
    """Make numba's OpenMP worker threads spin only briefly, then sleep, between parallel loops.

    GNU OpenMP (numba's `omp` threading layer here) reads OMP_WAIT_POLICY / GOMP_SPINCOUNT once, when
    libgomp is loaded at the first parallel launch, so this must run before that; a user's value wins.
    A decode token is ~120 parallel launches a few microseconds apart: a worker that sleeps between
    them pays a futex wake-up each time, one that spins forever takes the CPU from whoever has real
    work as soon as the machine is shared (and burns every core while a server sits idle).
    GOMP_SPINCOUNT=1000 (~20 us of `pause`) bridges the gaps inside a token and sleeps after it.
    Measured on the 2-core development machine (issue 9, SmolLM2 Q4_1, 2 threads, `chatfile bench
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


def compiled_features() -> str:
    """The feature string numba's CPU target actually uses (for checks and the benchmark report)."""
    from numba.core.registry import cpu_target
    return cpu_target.target_context.codegen()._tm_features


configure()
short_spin_wait()
same_code_cached()
