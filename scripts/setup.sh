#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install exactly what uv.lock pins (hashes checked), the
# service and its development tools. Does nothing when uv.lock and pyproject.toml have not
# changed since the last install, so a restart costs no install. Never touches Node.
# Upgrade the lock: `bash scripts/upgrade-lock.sh` (README, "Dependencies").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# Keep in step with the `uv==` pin in pyproject.toml (the lock pins it too).
UV_VERSION=0.13.8
STAMP=.venv/.installed-from-lock
wanted="$(cat uv.lock pyproject.toml | sha256sum | cut -d' ' -f1) uv-$UV_VERSION"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ] && [ -x .venv/bin/python ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --quiet --locked --extra dev \
  --python .venv/bin/python
echo "$wanted" >"$STAMP"
