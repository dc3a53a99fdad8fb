"""What SIMD the matvec kernels compile to: instruction counts and the hottest loop of each, from numba's
`inspect_asm`. Run it in the emulated aarch64 Python (docs/ARM.md has the results):

    ROOT=$(bash scripts/setup_arm.sh)
    PYTHONPATH=. NUMBA_CPU_NAME=cortex-a76 NUMBA_CPU_FEATURES=+neon,+dotprod \\
        "$(dirname "$ROOT")/python3-aarch64" tests/arm/show_asm.py Q4_0 Q8_0

Without NUMBA_CPU_NAME the kernels compile for the host CPU (runtime/kernels/cpu.py); under qemu that
is LLVM's `generic` aarch64 (qemu shows the x86 host's /proc/cpuinfo), i.e. plain ARMv8.0 NEON.
It also runs on x86 (AVX names then).
"""
from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime import kernels  # noqa: E402  (sets numba's CPU target first)
from runtime.ggml import QUANT_SIZES, GGMLType, row_nbytes  # noqa: E402
from runtime.kernels import cpu  # noqa: E402

# instructions worth counting: vector FMA / multiply, integer dot products, widening moves, scalar FMA
INTERESTING = re.compile(r"^(fmla|fmul|fadd|fmadd|sdot|udot|usdot|smull2?|umull2?|ushll2?|sshll2?|"
                         r"ucvtf|scvtf|faddp|vfmadd\w*|vpdpbusd|vcvtdq2ps|vpmovzxbd)$")


def basic_blocks(asm: str) -> list[tuple[str, list[str]]]:
    """(label, instruction lines) of every basic block: a label line starts a new block."""
    blocks, label, lines = [], "entry", []
    for line in asm.splitlines():
        m = re.match(r"^(\.?\w[\w.$]*):", line)
        if m:
            blocks.append((label, lines))
            label, lines = m.group(1), []
        elif line.startswith("\t") and not line.lstrip().startswith("."):
            lines.append(line.strip())
    blocks.append((label, lines))
    return blocks


def opcode(line: str) -> str:
    return line.split()[0] if line else ""


def is_vector_fma(line: str) -> bool:
    # aarch64 `fmla v0.4s, ...`; x86 `vfmadd231ps %zmm/%ymm`
    return (opcode(line) == "fmla" and " v" in line) or (opcode(line).startswith("vfmadd") and "ps" in opcode(line))


def report(qtype: GGMLType, rows: int = 64, n: int = 512) -> None:
    k = kernels.kernels_for(qtype)
    if QUANT_SIZES[qtype][0] == 1:
        data = np.zeros((rows, n), np.float32 if qtype == GGMLType.F32 else np.uint16)
    else:
        data = np.zeros((rows, row_nbytes(qtype, n)), np.uint8)
    out, x = np.zeros(rows, np.float32), np.zeros(n, np.float32)
    k.matvec(out, data, x, k.table, 32)                          # compile for these argument types
    asm = next(iter(k.matvec.inspect_asm().values()))
    counts = collections.Counter(opcode(l) for _, ls in basic_blocks(asm) for l in ls)
    shown = {op: c for op, c in sorted(counts.items()) if INTERESTING.match(op)}
    arrangements = collections.Counter(re.findall(r"\bv\d+\.(\d+[bhsd])", asm))
    print(f"== matvec {qtype.name}: {sum(counts.values())} instructions; {shown}")
    if arrangements:
        print(f"   NEON register arrangements used: {dict(arrangements.most_common())}")
    label, hot = max(basic_blocks(asm), key=lambda b: sum(map(is_vector_fma, b[1])))
    if sum(map(is_vector_fma, hot)) == 0:
        print("   no vector FMA in any block")
        return
    print(f"   hottest block {label} ({len(hot)} instructions, "
          f"{sum(map(is_vector_fma, hot))} vector FMAs):")
    for line in hot[:40]:
        print("     " + line)
    if len(hot) > 40:
        print(f"     ... {len(hot) - 40} more")


def main(argv: list[str]) -> int:
    import llvmlite.binding as ll
    import os
    print(f"host cpu {ll.get_host_cpu_name()!r}; compiling for {os.environ.get('NUMBA_CPU_NAME', 'host')!r}, "
          f"features {cpu.compiled_features() or '(default)'}")
    for name in argv or ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "F16"]:
        report(GGMLType[name])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
