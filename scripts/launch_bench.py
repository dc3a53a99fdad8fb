"""Launch figures of a built executable, as a user meets them: first run and warm runs, whole process.

    python scripts/launch_bench.py EXE [--first 3] [--warm 11] [-- ARGS...]     (default ARGS: -p Hi -n 1)

Every run is `env -i PATH=/usr/bin:/bin HOME=<home> EXE ARGS` from /, output discarded:
- first launch: a fresh empty HOME each time (the runtime unpacks, nothing of chatfile on disk yet);
- warm: one HOME, after one untimed run.
For each run: wall seconds, CPU seconds (user + sys of the whole process tree, from wait4) and peak
RSS (the largest of the process and its children). Prints each run, then the median and range of
each column, and the load average (wall times on a shared machine are noisy; CPU time is steadier).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CLEAN_PATH = "/usr/bin:/bin"


def run_once(exe: str, args: list[str], home: str) -> tuple[float, float, float, int]:
    """(wall s, cpu s, peak RSS MB, exit code) of one run of `exe args` in a clean environment."""
    cmd = ["env", "-i", f"PATH={CLEAN_PATH}", f"HOME={home}", exe, *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(stderr.decode(errors="replace"))
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, proc.returncode


def summary(label: str, runs: list[tuple[float, float, float, int]]) -> str:
    cols = list(zip(*runs))
    parts = []
    for name, values, unit in (("wall", cols[0], "s"), ("cpu", cols[1], "s"), ("peak RSS", cols[2], "MB")):
        fmt = "{:.0f}" if unit == "MB" else "{:.2f}"
        parts.append(f"{name} median {fmt.format(statistics.median(values))} {unit} "
                     f"({fmt.format(min(values))}-{fmt.format(max(values))})")
    return f"{label} x{len(runs)}: " + ", ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exe")
    ap.add_argument("--first", type=int, default=3, help="first launches, each with a fresh HOME (default 3)")
    ap.add_argument("--warm", type=int, default=11, help="warm launches (default 11)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)      # the executable's arguments follow --
    a = ap.parse_args(argv[:cut])
    exe = os.path.abspath(a.exe)
    args = argv[cut + 1:] or ["-p", "Hi", "-n", "1"]
    print(f"{exe} ({os.path.getsize(exe) / 1e6:.1f} MB) {' '.join(args)}")
    homes = []
    try:
        first = []
        for _ in range(a.first):
            homes.append(tempfile.mkdtemp(prefix="chatfile-home-"))
            first.append(run_once(exe, args, homes[-1]))
            print(f"  first  wall {first[-1][0]:.2f} s  cpu {first[-1][1]:.2f} s  peak RSS {first[-1][2]:.0f} MB"
                  f"  exit {first[-1][3]}", flush=True)
        home = homes[-1] if homes else tempfile.mkdtemp(prefix="chatfile-home-")
        homes.append(home)
        run_once(exe, args, home)
        warm = []
        for _ in range(a.warm):
            warm.append(run_once(exe, args, home))
            print(f"  warm   wall {warm[-1][0]:.2f} s  cpu {warm[-1][1]:.2f} s  peak RSS {warm[-1][2]:.0f} MB"
                  f"  exit {warm[-1][3]}", flush=True)
        if first:
            print(summary("first launch", first))
        if warm:
            print(summary("warm", warm))
        print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        for h in homes:
            shutil.rmtree(h, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
