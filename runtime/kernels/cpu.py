"""numba's code-generation target, set from the host CPU at run time.

Must run before the first `@njit` anywhere in the process: numba creates its CPU target (and freezes
the CPU name and features it compiles for) when the first jitted function is *decorated*.
`runtime/kernels/jit.py` runs `configure()` when imported, and every module with numba code takes its
`njit` from there.

Why: LLVM's tuning for several Intel server CPUs (Skylake-X .. Emerald Rapids) prefers 256-bit vectors
even when AVX-512 is there; asking for 512-bit ones gave +20-25% on the decode matvecs
(docs/KERNELS.md). The feature string is computed from the CPU we run on, never baked in,
so the same code is right on AVX2-only x86, on AMD Zen 4 (already 512-bit by default) and on aarch64.
numba's cache key includes the CPU name and features, so a different machine compiles its own entry.
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


def compiled_features() -> str:
    """The feature string numba's CPU target actually uses (for checks and the benchmark report)."""
    from numba.core.registry import cpu_target
    return cpu_target.target_context.codegen()._tm_features

