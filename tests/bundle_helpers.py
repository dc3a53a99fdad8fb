"""Helpers for the bundler's tests and launch measurements.

`python tests/bundle_helpers.py pad SRC.gguf DST.gguf MB` writes a copy of SRC with one extra unused F32
tensor so the file is about MB megabytes: the same model, a bigger payload (the launch-cost check
"1 GB within 10% of 100 MB").
`python tests/bundle_helpers.py launch EXE [N]` prints the median wall time of N runs of
`EXE -p Hi -n 1` (launch to first token, warm caches).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

PAD_TENSOR = "chatfile_test.padding"


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
