#!/usr/bin/env bash
# Installs what the dashboard's browser tests (crates/waggle/tests/browser) drive:
# Debian's headless Chromium and its WebDriver. Safe to run again: does nothing when both
# are already there.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium and chromedriver are installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
chromium --version
chromedriver --version
