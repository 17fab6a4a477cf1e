#!/usr/bin/env bash
# Installs Debian's chromium and chromedriver for the console tests
# (tests/e2e/console.rs drives headless Chromium over WebDriver: logs in,
# clicks, saves screenshots). Idempotent: a no-op once both are there; both
# must run (`--version`).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-chromium.sh: chromium or chromedriver is missing and this is not root; run: sudo apt-get install chromium chromium-driver" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
fi
# (Debian's wrapper script may print a warning of its own: kept quiet unless it fails.)
for tool in chromium chromedriver; do
    if ! out=$($tool --version 2>&1); then
        echo "install-chromium.sh: $tool is installed but does not run: $out" >&2
        exit 1
    fi
done
