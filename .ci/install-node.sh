#!/usr/bin/env bash
# Debian's node and npm, for the rss-parser test in tests/test_formats.py (it installs rss-parser
# itself with `npm ci --prefix tests/js`). Installs only when node or npm is missing.
set -euo pipefail
if command -v node >/dev/null && command -v npm >/dev/null; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update -qq -o DPkg::Lock::Timeout=300
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -o DPkg::Lock::Timeout=300 -y -qq --no-install-recommends nodejs npm
node --version
