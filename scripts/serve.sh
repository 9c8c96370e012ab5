#!/usr/bin/env bash
# Set up (skipped when uv.lock has not changed), migrate and start the service: SQLite at
# ./rankframe.db unless DATABASE_URL is set. ADMIN_TOKEN enables the admin endpoints
# (creating accounts); README, "Quickstart". Never touches Node.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Migrations, then uvicorn, in one process (one interpreter start, one import).
exec .venv/bin/python -m app serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
