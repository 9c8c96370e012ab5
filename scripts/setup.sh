#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install the service with its development tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The TypeScript client (clients/typescript): its pinned tools, from the lock file.
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix clients/typescript --no-audit --no-fund --loglevel=error
fi
