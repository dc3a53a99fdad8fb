#!/usr/bin/env bash
# Run llama.cpp's own server test suite (tools/server/tests, the fast tests) against chatfile, through
# scripts/llama_server_shim.py, and print the pass/fail counts per test file.
#
#   scripts/run_llamacpp_server_tests.sh                 # the whole fast suite, one test at a time
#   scripts/run_llamacpp_server_tests.sh unit/test_infill.py
#   CHATFILE_ROOT=/path/to/other/checkout scripts/run_llamacpp_server_tests.sh   # count another tree
#
# LLAMA_CPP_DIR: llama.cpp's source (default: llama-cpp-python 0.3.36's vendored copy). The suite is
# copied into CHATFILE_SHIM_WORK (default /tmp/chatfile-shim) with models/templates beside it, and runs
# in its own venv there with its own requirements. Nothing of llama.cpp is copied into this repository.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
export CHATFILE_ROOT=${CHATFILE_ROOT:-$HERE}
LLAMA=${LLAMA_CPP_DIR:-/work/ref/llama_cpp_python-0.3.36/vendor/llama.cpp}
WORK=${CHATFILE_SHIM_WORK:-/tmp/chatfile-shim}
export CHATFILE_SHIM_WORK=$WORK
PY=$HERE/.venv/bin/python

mkdir -p "$WORK/suite/tools/server" "$WORK/suite/models"
rm -rf "$WORK/suite/tools/server/tests"
cp -r "$LLAMA/tools/server/tests" "$WORK/suite/tools/server/"
chmod -R u+w "$WORK/suite"
[ -d "$WORK/suite/models/templates" ] || cp -r "$LLAMA/models/templates" "$WORK/suite/models/"
if [ ! -x "$WORK/venv/bin/pytest" ]; then
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q pytest requests wget filelock aiohttp prometheus-client numpy \
        "openai~=2.14.0" || "$WORK/venv/bin/pip" install -q pytest requests wget filelock aiohttp \
        prometheus-client numpy openai
fi
cat > "$WORK/llama-server" <<SH
#!/bin/sh
exec "$PY" "$HERE/scripts/llama_server_shim.py" "\$@"
SH
chmod +x "$WORK/llama-server"

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PORT LLAMA_SERVER_BIN_PATH="$WORK/llama-server"
cd "$WORK/suite/tools/server/tests"
[ $# -gt 0 ] || set -- unit
nice -n 5 "$WORK/venv/bin/python" -m pytest -m "not slow" -p no:cacheprovider -q -rA "$@" \
    > "$WORK/report.txt" 2>&1 || true
tail -n 1 "$WORK/report.txt"
"$PY" - "$WORK/report.txt" <<'PYEOF'
import collections, re, sys
counts = collections.defaultdict(collections.Counter)
for line in open(sys.argv[1]):
    m = re.match(r"(PASSED|FAILED|ERROR) (unit/\S+?\.py)", line)
    if m:
        counts[m.group(2)][m.group(1)] += 1
for f, c in sorted(counts.items()):
    print(f"{f:40s} " + " ".join(f"{k.lower()} {v}" for k, v in sorted(c.items())))
PYEOF
