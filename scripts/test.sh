#!/usr/bin/env bash
# Set up and run the whole test suite, on SQLite and on PostgreSQL.
# PostgreSQL: TEST_POSTGRES_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432/test);
# each run creates and drops a database of its own there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-clients.sh
exec .venv/bin/python -m pytest "$@"
