#!/usr/bin/env bash
# Installs Debian's chromium for the `serve` operator page test (tests/e2e/serve.rs
# loads /ui in headless Chromium and saves a screenshot). Idempotent: a no-op
# once the binary is there; it must run (`chromium --version`).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-chromium.sh: chromium is missing and this is not root; run: sudo apt-get install chromium" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
# (Debian's wrapper script may print a warning of its own: kept quiet unless it fails.)
if ! out=$(chromium --version 2>&1); then
    echo "install-chromium.sh: chromium is installed but does not run: $out" >&2
    exit 1
fi
