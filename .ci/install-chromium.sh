#!/usr/bin/env bash
# Debian's chromium, for tests/test_browser.py (Playwright drives it; no browser download).
# Installs only when /usr/bin/chromium is missing, so a machine that has it pays nothing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update -qq -o DPkg::Lock::Timeout=300
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -o DPkg::Lock::Timeout=300 -y -qq chromium
/usr/bin/chromium --version
