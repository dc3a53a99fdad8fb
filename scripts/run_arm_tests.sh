#!/usr/bin/env bash
# `make test-arm`: the kernel and model checks (tests/arm/check_aarch64.py) on aarch64, under qemu.
#
# 1. scripts/setup_arm.sh builds (first run) or finds (later runs) the emulated aarch64 Python;
# 2. scripts/fetch_models.py, on the host, finds SmolLM2 in the model cache (fetching it if needed);
# 3. the checks run in the aarch64 Python with the repository on PYTHONPATH, with a numba cache of
#    their own that is thrown away afterwards, so every run compiles the kernels for aarch64 afresh
#    (a cached entry would hide a kernel edit numba's cache does not notice, and it keeps the x86
#    __pycache__ of the work tree out of it).
# Extra arguments go to the check script (e.g. --only Q4_K). CHATFILE_ARM_JOBS sets the worker count
# (default: the number of cores).
# Exit status: the check script's (1 when a check failed).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
t0=$SECONDS

ROOT="$(bash scripts/setup_arm.sh)"
PY_ARM="$(dirname "$ROOT")/python3-aarch64"
echo "run_arm_tests: aarch64 environment ready in $((SECONDS - t0)) s ($ROOT)"

HOST_PY=python3
[ -x .venv/bin/python ] && HOST_PY=.venv/bin/python
MODEL_ARGS=()
if SMOLLM2="$("$HOST_PY" scripts/fetch_models.py smollm2 | cut -f2)"; then
    MODEL_ARGS=(--smollm2 "$SMOLLM2")
else
    # fetch_models exits 3 only when the registry is unreachable; the checks then skip the model
    [ "$?" -eq 3 ] || exit 1
    MODEL_ARGS=(--smollm2-unreachable)
fi

NUMBA_CACHE_DIR="$(mktemp -d -t chatfile-arm-numba.XXXXXX)"
trap 'rm -rf "$NUMBA_CACHE_DIR"' EXIT
export NUMBA_CACHE_DIR

# one worker per core: compiling is single-threaded, and each check compiles its own kernels
JOBS="${CHATFILE_ARM_JOBS:-$(nproc)}"
status=0
PYTHONPATH="$REPO" "$PY_ARM" tests/arm/check_aarch64.py --jobs "$JOBS" "${MODEL_ARGS[@]}" "$@" || status=$?
# the integer dot products with `sdot`: qemu's generic aarch64 target lacks the extension, so compile
# them once more for a target that has it (NUMBA_CPU_FEATURES, numba's own setting)
if [ "$#" -eq 0 ]; then
    NUMBA_CPU_NAME=generic NUMBA_CPU_FEATURES=+neon,+dotprod PYTHONPATH="$REPO" \
        "$PY_ARM" tests/arm/check_aarch64.py --jobs "$JOBS" --only q8matvec || status=$?
fi
echo "run_arm_tests: $((SECONDS - t0)) s in all"
exit "$status"
