"""The kernel and model checks `make test-arm` runs on aarch64 (under qemu, see scripts/run_arm_tests.sh).

A self-checking script rather than a pytest module: it runs inside an emulated aarch64 Python that has
only numpy and numba, and the x86 `pytest` run does not collect it (there the same properties are
tested by tests/test_kernels.py and the golden tests, whose criteria are repeated below). It prints one
line per check and closes with pytest's `N passed, N failed` line; exit status 1 when a check failed.

Checks (sizes kept small: emulation is 20-50x slower than the host, and compiling dominates):
  arch              we really run on aarch64; the CPU name and features numba compiles for
  dequant[T]        every supported type T: the kernel's dequantization (`get_rows`) against
                    `runtime.quants.dequantize` (and whether it is bit-exact)
  matvec[T]         kernels.matvec against float64 W @ x on the reference-dequantized W
  matmul[T]         kernels.matmul (the prefill GEMM) against float64 x @ W^T
  q8matvec[T]       Q8_0, Q4_K, IQ4_NL and IQ4_XS (levels by `tbl`): the integer dot product (`sdot`)
                    against float64 W @ (qs * d), when
                    the compile target has the dot-product extension (run_arm_tests.sh runs these a
                    second time with NUMBA_CPU_FEATURES=+neon,+dotprod; qemu executes sdot), for 7
                    vectors one by one and as a batch (matvec_batch: bit-identical rows)
  logits[smollm2]   SmolLM2-135M's next-token logits for one short prompt against llama.cpp's
                    (data/goldens/logits_smollm2.json)

The checks are spread over `--jobs` forked worker processes (compiling is single-threaded, so two
workers on two cores halve the wall time). Forked, not spawned: under qemu user emulation a child
cannot exec the aarch64 interpreter again (no binfmt registration).

Usage: python tests/arm/check_aarch64.py [--smollm2 PATH | --smollm2-unreachable] [--jobs N]
                                         [--only SUBSTRING] [--any-arch]
(`--any-arch` lets it run on the x86 host too, to debug the script itself.)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from runtime import kernels  # noqa: E402  (sets numba's CPU target first)
from runtime.ggml import QUANT_SIZES, SUPPORTED_TYPES, GGMLType, row_nbytes  # noqa: E402
from runtime.gguf import Tensor  # noqa: E402
from runtime.quants import BLOCK_LAYOUTS, dequantize, field_offsets  # noqa: E402

GOLDENS = REPO / "data" / "goldens"

ROWS = 37          # two 16-row prefill tiles plus an odd remainder; one 32-row matvec chunk plus a tail
N_BLOCK = 512      # row length for block types: 2 K-quant super-blocks, 16 legacy blocks
N_FLOAT = 80       # row length for F32/F16/BF16: two 32-lane steps and a 16-element tail
T_TOKENS = 5       # prefill tokens: one 4-token register tile and a remainder
# tests/test_kernels.py's criteria (pytest is not installed here, so they are repeated):
REL_TOL = 2e-6       # max |kernel - reference| / max |reference| of a product
GET_ROWS_TOL = 1e-6  # dequantization: float32 rounding (the kernels may fuse multiply-adds)
# and the golden tests' for SmolLM2 (issue 2, "How it is judged"):
MARGIN = 0.3           # top-1 must equal llama.cpp's where its top-2 margin is above this
MIN_TOP10 = 8          # of llama.cpp's top-10 ids, at least this many in ours
MAX_TOP20_DIFF = 0.75  # largest |difference| over llama.cpp's top-20 logits
SHORT_PROMPT = "capital"   # the golden prompt used here: 5 tokens
MODEL_THREADS = 2


# ---- test data ---------------------------------------------------------------------------------------

def random_rows(qtype, rows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [rows, row_nbytes] of valid raw rows of qtype: random quants, realistic fp16 scales."""
    if qtype == GGMLType.F32:
        return rng.standard_normal((rows, n), dtype=np.float32).view(np.uint8)
    if qtype == GGMLType.F16:
        return rng.standard_normal((rows, n)).astype(np.float16).view(np.uint8)
    if qtype == GGMLType.BF16:
        f = rng.standard_normal((rows, n), dtype=np.float32).view(np.uint32)
        return (f >> 16).astype(np.uint16).view(np.uint8)      # truncated float32: a valid bf16
    data = rng.integers(0, 256, (rows, row_nbytes(qtype, n)), dtype=np.uint8)
    blocks = data.reshape(-1, QUANT_SIZES[qtype][1])            # [rows * blocks per row, type_size]
    # random bytes in an fp16 field can be inf, NaN or 65504; real scales are small, mins of either sign
    for name, _ in BLOCK_LAYOUTS[qtype]:
        if name in ("d", "dmin", "m"):
            a, b = field_offsets(qtype)[name]
            v = rng.uniform(1e-3, 0.05, blocks.shape[0])
            if name != "d":
                v *= rng.choice([-1.0, 1.0], blocks.shape[0])
            blocks[:, a:b] = v.astype("<f2").view(np.uint8).reshape(-1, 2)
    return data


def random_tensor(qtype, seed: int) -> Tensor:
    rng = np.random.default_rng(seed)
    n = N_FLOAT if QUANT_SIZES[qtype][0] == 1 else N_BLOCK
    data = random_rows(qtype, ROWS, n, rng)
    data.flags.writeable = False                                # like a view into the mmap
    return Tensor(name=f"random.{qtype.name}", type=qtype, shape=(n, ROWS), n_rows=ROWS, data=data,
                  offset=0)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


# ---- checks --------------------------------------------------------------------------------------------

def check_arch(any_arch: bool) -> str:
    import llvmlite.binding as ll
    import numba
    from runtime.kernels import cpu
    machine = platform.machine()
    if machine != "aarch64" and not any_arch:
        raise AssertionError(f"running on {machine}, not aarch64")
    features = cpu.compiled_features()
    if len(features) > 200:                      # x86 lists ~150 features; aarch64 under qemu a few
        features = ",".join(f for f in features.split(",") if f.startswith("+"))[:200] + "..."
    return (f"{machine}, numba {numba.__version__}, host cpu {ll.get_host_cpu_name()!r}, compiling for "
            f"{os.environ.get('NUMBA_CPU_NAME', 'host')!r} features {features or '(default)'}")


def check_dequant(qtype, seed: int) -> str:
    w = random_tensor(qtype, seed)
    want = dequantize(w.data, qtype, w.shape[0])
    got = np.full(want.shape, np.nan, np.float32)
    kernels.get_rows(w, np.arange(ROWS, dtype=np.int64), got)
    err = relative_error(got, want)
    if err > GET_ROWS_TOL:
        r, k = np.argwhere(got != want)[0]
        raise AssertionError(f"relative error {err:.3g} > {GET_ROWS_TOL:g}; first difference at "
                             f"row {r}, col {k}: kernel {got[r, k]!r}, reference {want[r, k]!r}")
    exact = np.array_equal(got.view(np.uint32), want.view(np.uint32))
    return f"{ROWS}x{w.shape[0]}, " + ("bit-exact" if exact else f"relative error {err:.2g}")


def check_matvec(qtype, seed: int) -> str:
    w = random_tensor(qtype, seed)
    x = np.random.default_rng(seed + 1).standard_normal(w.shape[0]).astype(np.float32)
    out = np.full(ROWS, np.nan, np.float32)
    kernels.matvec(w, x, out)
    err = relative_error(out, dequantize(w.data, qtype, w.shape[0]).astype(np.float64) @ x)
    if err > REL_TOL:
        raise AssertionError(f"relative error {err:.3g} > {REL_TOL:g}")
    return f"{ROWS}x{w.shape[0]}, relative error {err:.2g}"


def check_matmul(qtype, seed: int) -> str:
    w = random_tensor(qtype, seed)
    x = np.random.default_rng(seed + 1).standard_normal((T_TOKENS, w.shape[0])).astype(np.float32)
    out = np.full((T_TOKENS, ROWS), np.nan, np.float32)
    kernels.matmul(w, x, out)
    W = dequantize(w.data, qtype, w.shape[0]).astype(np.float64)
    err = relative_error(out, x.astype(np.float64) @ W.T)
    if err > REL_TOL:
        raise AssertionError(f"relative error {err:.3g} > {REL_TOL:g}")
    return f"{T_TOKENS} tokens x {ROWS}x{w.shape[0]}, relative error {err:.2g}"


def check_q8_matvec(qtype, seed: int) -> str:
    from runtime import ops
    from runtime.kernels import intdot
    if not kernels.takes_q8(qtype):
        return f"compile target has no integer dot product ({intdot.int_dot()}): float kernels, not checked"
    w = random_tensor(qtype, seed)
    n = w.shape[0]
    B = 7                                     # a decode batch: the kernels' 4-, 2- and 1-vector dots
    x = np.random.default_rng(seed + 1).standard_normal((B, n)).astype(np.float32)
    block = kernels.KERNELS[qtype].q8_block
    xr, qs = np.empty_like(x), np.empty((B, n), np.int8)
    d, s = np.empty((B, n // block), np.float32), np.empty((B, n // 32), np.float32)
    ops.quantize_activations(xr, qs, d, s, x, ops.ACT_KIND[qtype])
    out = np.full((B, ROWS), np.nan, np.float32)
    for b in range(B):
        kernels.matvec(w, xr[b], out[b], (qs[b], d[b], s[b]))
    want = dequantize(w.data, qtype, n).astype(np.float64) @ xr.astype(np.float64).T
    err = relative_error(out, want.T)
    if err > REL_TOL:
        raise AssertionError(f"relative error {err:.3g} > {REL_TOL:g}")
    batch = np.full((B, ROWS), np.nan, np.float32)
    kernels.matvec_batch(w, xr, batch, (qs, d, s))
    if not np.array_equal(batch.view(np.uint32), out.view(np.uint32)):
        raise AssertionError("matvec_batch rows differ from matvec's")
    return f"{intdot.int_dot()}, {ROWS}x{n}, relative error {err:.2g}, batch of {B} bit-identical"


def check_logits(model_path: Path) -> str:
    from runtime.model import Model
    golden = json.loads((GOLDENS / "logits_smollm2.json").read_text())
    prompt = next(p for p in golden["models"][0]["prompts"] if p["name"] == SHORT_PROMPT)
    t0 = time.perf_counter()
    model = Model.load(model_path, n_threads=MODEL_THREADS)
    logits = model.logits(prompt["ids"])
    return judge_logits(logits, prompt) + f"; load + forward {time.perf_counter() - t0:.0f} s"


def judge_logits(logits: np.ndarray, prompt: dict) -> str:
    """The golden criteria for one prompt's last-position logits (llama.cpp's top-20 in `prompt`)."""
    ids = np.array([i for i, _ in prompt["top20"]])
    want = np.array([v for _, v in prompt["top20"]], dtype=np.float64)
    ours_top10 = set(np.argsort(logits)[::-1][:10].tolist())
    top1 = int(np.argmax(logits))
    margin = want[0] - want[1]
    if margin > MARGIN and top1 != ids[0]:
        raise AssertionError(f"top-1 token {top1}, llama.cpp's is {ids[0]} (margin {margin:.2f})")
    overlap = len(ours_top10 & set(ids[:10].tolist()))
    if overlap < MIN_TOP10:
        raise AssertionError(f"only {overlap} of llama.cpp's top-10 ids are in ours (need {MIN_TOP10})")
    diff = float(np.abs(logits[ids].astype(np.float64) - want).max())
    if diff > MAX_TOP20_DIFF:
        raise AssertionError(f"top-20 logits differ by up to {diff:.3f} (allowed {MAX_TOP20_DIFF})")
    return f"top-1 {top1} as llama.cpp, top-10 overlap {overlap}/10, top-20 max |diff| {diff:.3f}"


# ---- runner ---------------------------------------------------------------------------------------------

def all_checks(args) -> list[tuple[str, object]]:
    """(name, zero-argument callable) in submission order, longest first; callable None = skipped."""
    checks = []
    if args.smollm2:
        checks.append(("logits[smollm2]", lambda: check_logits(Path(args.smollm2))))
    elif args.smollm2_unreachable:
        checks.append(("logits[smollm2]", None))
    checks.append(("arch", lambda: check_arch(args.any_arch)))
    for i, t in enumerate(sorted(SUPPORTED_TYPES)):
        checks += [(f"dequant[{t.name}]", lambda t=t, i=i: check_dequant(t, 100 + i)),
                   (f"matvec[{t.name}]", lambda t=t, i=i: check_matvec(t, 200 + i)),
                   (f"matmul[{t.name}]", lambda t=t, i=i: check_matmul(t, 300 + i))]
    for i, t in enumerate((GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.IQ4_NL, GGMLType.IQ4_XS)):
        checks.append((f"q8matvec[{t.name}]", lambda t=t, i=i: check_q8_matvec(t, 400 + i)))
    return [(name, c) for name, c in checks if args.only in name]


_CHECKS: dict = {}       # name -> callable, filled before the workers fork


def run_one(name: str) -> tuple[str, bool, str, float]:
    """(name, passed, detail, seconds); in a worker process."""
    t0 = time.perf_counter()
    try:
        detail = _CHECKS[name]()
        ok = True
    except AssertionError as e:
        detail, ok = str(e), False
    except Exception:  # noqa: BLE001  (any error is this check's failure, reported with its traceback)
        detail, ok = traceback.format_exc(), False
    return name, ok, detail, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = ap.add_mutually_exclusive_group()
    model.add_argument("--smollm2", help="path of SmolLM2-135M-Instruct.Q4_1.gguf (logits check)")
    model.add_argument("--smollm2-unreachable", action="store_true",
                       help="the model could not be fetched (registry unreachable): skip its check")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--only", default="", help="run only the checks whose name contains this")
    ap.add_argument("--any-arch", action="store_true", help="do not insist on aarch64")
    args = ap.parse_args(argv)

    checks = all_checks(args)
    _CHECKS.update((name, c) for name, c in checks if c is not None)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    t_start = time.perf_counter()
    for name, c in checks:
        if c is None:
            counts["skipped"] += 1
            print(f"SKIPPED {name}: package registry unreachable, model not fetched", flush=True)
    # numba has started no threads yet (nothing parallel ran in this process), so forking is safe
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {pool.submit(run_one, name): name for name in _CHECKS}
        for f in as_completed(futures):
            try:
                name, ok, detail, seconds = f.result()
            except BrokenProcessPool as e:             # a worker died (a crash in compiled code)
                name, ok, detail, seconds = futures[f], False, f"worker process died: {e}", 0.0
            counts["passed" if ok else "failed"] += 1
            print(f"{'PASSED' if ok else 'FAILED'} {name} ({seconds:.1f} s): {detail}", flush=True)
    print(f"checks took {time.perf_counter() - t_start:.0f} s with {args.jobs} worker(s)")
    line = f"{counts['passed']} passed, {counts['failed']} failed"
    print(line + (f", {counts['skipped']} skipped" if counts["skipped"] else ""), flush=True)
    return 1 if counts["failed"] or not counts["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
