"""Helpers for the bundler's tests and launch measurements.

`python tests/bundle_helpers.py pad SRC.gguf DST.gguf MB` writes a copy of SRC with one extra unused F32
tensor so the file is about MB megabytes: the same model, a bigger payload (the launch-cost check
"1 GB within 10% of 100 MB").
`python tests/bundle_helpers.py launch EXE [N]` prints the median wall time of N runs of
`EXE -p Hi -n 1` (launch to first token, warm caches).
`build_bundle` and `run_clean` make and run a real executable (tests/test_bundle_damage.py);
`launcher_fields` reads the numbers bundler/stub.py wrote into its launcher script.
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

PAD_TENSOR = "chatfile_test.padding"
ROOT = Path(__file__).resolve().parent.parent
CLEAN_PATH = "/usr/bin:/bin"


def build_bundle(model: Path, out: Path, *args: str) -> Path:
    """`chatfile build MODEL -o OUT`: a real executable, its stub from the user's stub cache (built
    there first, a few minutes, when the runtime sources changed since the last build)."""
    r = subprocess.run([sys.executable, "-m", "bundler.cli", "build", str(model), "-o", str(out), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    return out


def run_clean(exe, *args, home, timeout: float = 300) -> subprocess.CompletedProcess:
    """`exe ARGS` under `env -i` with only PATH (no virtualenv) and HOME, from /; bytes out."""
    return subprocess.run(["env", "-i", f"PATH={CLEAN_PATH}", f"HOME={home}", str(exe), *map(str, args)],
                          cwd="/", capture_output=True, timeout=timeout)


def launcher_fields(exe: Path) -> dict[str, int]:
    """ARCHIVE_OFFSET, ARCHIVE_SIZE, PART2_OFFSET, PART2_SIZE as written into a stub's launcher script."""
    with open(exe, "rb") as f:
        head = f.read(1 << 16)
    found = re.findall(rb"^(ARCHIVE_OFFSET|ARCHIVE_SIZE|PART2_OFFSET|PART2_SIZE)=(\d+)$", head, re.M)
    return {name.decode(): int(value) for name, value in found}


def padded_gguf(src: Path, dst: Path, total_mb: int) -> Path:
    """Copy of GGUF `src` plus one unused F32 tensor, about `total_mb` MB in all."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue                                    # written by GGUFWriter itself
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    rows = max(1, (total_mb * 10**6 - src.stat().st_size) // (4 * 4096))
    pad = np.zeros((rows, 4096), dtype=np.float32)
    writer.add_tensor_info(PAD_TENSOR, pad.shape, pad.dtype, pad.nbytes, gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.write_tensor_data(pad)
    writer.close()
    return dst


def launch_times(exe: Path, n: int = 5, args=("-p", "Hi", "-n", "1")) -> list[float]:
    """Wall seconds of n runs of `exe ARGS` (output discarded), after one untimed warm-up run."""
    cmd = [str(exe), *args]
    subprocess.run(cmd, capture_output=True, check=True)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return times


if __name__ == "__main__":
    if sys.argv[1:2] == ["pad"]:
        print(padded_gguf(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])))
    elif sys.argv[1:2] == ["launch"]:
        ts = launch_times(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 5)
        print(f"median {statistics.median(ts):.3f} s of {', '.join(f'{t:.3f}' for t in ts)}")
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
