"""numba's code-generation target: the best CPU level this machine has, or the host CPU outside them.

Must run before the first `@njit` anywhere in the process: numba creates its CPU target (and freezes
the CPU name and features it compiles for) when the first jitted function is *decorated*.
`runtime/kernels/jit.py` runs `configure()` when imported, and every module with numba code takes its
`njit` from there.

CPU levels: a stub ships every kernel compiled ahead of time for each level of its platform in `LEVELS`
(runtime/precompile.py, at stub build), and numba's cache is keyed by the target CPU name and feature
string, so code compiled for a fixed level (rather than for `host`) loads on every machine of that
level and nothing is compiled on the user's machine. `configure()` therefore compiles for (and loads)
the highest level whose required features the host has, in a bundle and in a plain interpreter alike:
one kind of machine code everywhere, the code the tests and benchmarks measure. A CPU below every level
(x86 without AVX2) compiles for itself on first use, as numba does by default.
- Every level spells out all its features: the kernels choose instructions from the compile target's
  feature string (VNNI, AVX2 byte products, NEON dot products), not from the CPU name.
- x86-64-v4 levels add `-prefer-256-bit`: LLVM's tuning for Skylake-X .. Emerald Rapids (which
  x86-64-v4 takes) stops at 256-bit vectors even with AVX-512; 512-bit ones gave +20-25% on the decode
  matvecs of those CPUs. Zen 4 and later use 512 bits already.
- Why a separate VNNI level: AVX-512 VNNI (vpdpbusd: Cascade Lake, Ice Lake, Sapphire Rapids and later
  Xeons, Zen 4 and later) is what the integer dot products want, and a plain x86-64-v4 machine
  (Skylake-X/SP) lacks it. AVX-VNNI on AVX2-only CPUs (Alder Lake clients) gets the x86-64-v3 code.
- aarch64: NEON is part of every aarch64 Linux machine (the level requires nothing, so it also holds
  under qemu, where LLVM cannot read the CPU's features); dotprod (sdot/udot: Cortex-A76/Neoverse N1
  and later, Apple M1) is a level of its own.
What host tuning was worth over these generic levels is measured in docs/LAUNCH.md.

A user's NUMBA_CPU_NAME / NUMBA_CPU_FEATURES win; if they name a level exactly, it is that level (and
its precompiled kernels load), which is how a test runs a lower level on a higher machine.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

_NAME_ENV = "NUMBA_CPU_NAME"          # numba's own settings (numba/core/config.py); a user's value wins
_FEATURES_ENV = "NUMBA_CPU_FEATURES"


@dataclass(frozen=True)
class Level:
    """A fixed compile target that machine code is built for ahead of time."""
    name: str             # also the level's directory name in the stub
    machine: str          # platform.machine() it runs on
    cpu: str              # LLVM CPU name numba compiles for (scheduling model, implied features)
    features: str         # LLVM feature string, every feature the kernels may test spelled out
    requires: tuple[str, ...]   # host features (LLVM names) a machine needs to run the code

    def runs_on(self, machine: str, host_features: set[str]) -> bool:
        return machine == self.machine and set(self.requires) <= host_features


_V3 = ("64bit", "avx", "avx2", "bmi", "bmi2", "cmov", "crc32", "cx16", "cx8", "f16c", "fma", "fxsr",
       "lzcnt", "mmx", "movbe", "popcnt", "sahf", "sse", "sse2", "sse3", "sse4.1", "sse4.2", "ssse3",
       "xsave")
_V4 = _V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
_V4_VNNI = _V4 + ("avx512vnni",)


def _plus(names) -> str:
    return ",".join("+" + n for n in names)


# lowest first; configure() takes the last one the host can run
LEVELS: tuple[Level, ...] = (
    Level("x86-64-v3", "x86_64", "x86-64-v3", _plus(_V3), _V3),
    Level("x86-64-v4", "x86_64", "x86-64-v4", _plus(_V4) + ",-prefer-256-bit", _V4),
    Level("x86-64-v4-vnni", "x86_64", "x86-64-v4", _plus(_V4_VNNI) + ",-prefer-256-bit", _V4_VNNI),
    Level("aarch64", "aarch64", "generic", "+neon,+fp-armv8", ()),
    Level("aarch64-dotprod", "aarch64", "generic", "+neon,+fp-armv8,+dotprod", ("dotprod",)),
)

user_override = False     # the user chose a target that is not one of LEVELS
level: Level | None = None   # the level numba compiles for (None: the host CPU itself)


def host_features() -> set[str]:
    """The LLVM features this CPU reports ({'avx2', 'fma', ...}; empty when LLVM cannot tell)."""
    import llvmlite.binding as ll
    try:
        return {name for name, on in ll.get_host_cpu_features().items() if on}
    except RuntimeError:
        return set()


_MACHINE_NAMES = {"arm64": "aarch64", "amd64": "x86_64"}     # macOS and BSD spellings


def _machine(machine: str | None) -> str:
    machine = (machine or platform.machine()).lower()
    return _MACHINE_NAMES.get(machine, machine)


def platform_levels(machine: str | None = None) -> list[Level]:
    """The levels of a machine type (default: this one), lowest first."""
    machine = _machine(machine)
    return [lv for lv in LEVELS if lv.machine == machine]


def best_level(machine: str | None = None, features: set[str] | None = None) -> Level | None:
    """The highest level this machine (or the one described) runs; None below all of them."""
    machine = _machine(machine)
    features = host_features() if features is None else features
    fitting = [lv for lv in LEVELS if lv.runs_on(machine, features)]
    return fitting[-1] if fitting else None


def level_of(name: str | None, features: str | None) -> Level | None:
    """The level whose CPU name and feature string these are exactly, if any."""
    return next((lv for lv in platform_levels() if (lv.cpu, lv.features) == (name, features)), None)


def host_target() -> tuple[str, str]:
    """(cpu name, feature string) of this machine itself: the target outside every level."""
    import llvmlite.binding as ll
    from numba.core.codegen import get_host_cpu_features

    name = ll.get_host_cpu_name()
    features = get_host_cpu_features()          # "+avx2,+fma,-amx-tile,..." ('' when LLVM cannot tell)
    if "+avx512f" in features.split(","):
        features += ",-prefer-256-bit"          # use zmm registers where LLVM would stop at ymm
    return name, features


def configure() -> None:
    """Point numba at the best level of this machine, else at the host CPU. Idempotent.

    Set through numba's environment settings rather than its config attributes because numba re-reads
    its environment before every compile and would reset the attributes. Child processes inherit them,
    which is right: they run on the same CPU.
    """
    global user_override, level
    if _NAME_ENV in os.environ or _FEATURES_ENV in os.environ:
        name, features = os.environ.get(_NAME_ENV), os.environ.get(_FEATURES_ENV)
        level = level_of(name, features)
        user_override = level is None and (name, features) != host_target()
        return
    level = best_level()
    if level is not None:
        name, features = level.cpu, level.features
    else:
        name, features = host_target()
        if not features:
            return                               # LLVM cannot describe this CPU: keep numba's defaults
    os.environ[_NAME_ENV] = name
    os.environ[_FEATURES_ENV] = features
    from numba.core import config
    config.reload_config()


def compiled_features() -> str:
    """The feature string numba's CPU target actually uses (for checks and the benchmark report)."""
    from numba.core.registry import cpu_target
    return cpu_target.target_context.codegen()._tm_features

