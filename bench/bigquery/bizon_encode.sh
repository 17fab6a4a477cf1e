#!/usr/bin/env bash
# Times Bizon 0.6.4's streaming_v2 row encoding (see bizon_encode.py) in the
# bench/bizon venv, with Bizon's `bigquery` extra installed on top.
#   bash bench/bigquery/bizon_encode.sh [N]     (default 200000)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/../bizon/setup.sh"
venv="$here/../bizon/.venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
    "google-cloud-bigquery==3.38.0" "google-cloud-bigquery-storage==2.33.1" "protobuf>=5,<7"
"$venv/bin/python" "$here/bizon_encode.py" "${1:-200000}"
