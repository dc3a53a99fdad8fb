#!/bin/sh
# Install Debian's chromium for the web UI browser test (tests/test_webui.py).
# Playwright's Python package drives it through executable_path=/usr/bin/chromium, so
# `playwright install` (which downloads its own browser builds) is never needed.
set -eu
if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
