#!/usr/bin/env bash
# Set up and run the whole test suite, on SQLite and on PostgreSQL.
# PostgreSQL: TEST_POSTGRES_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432/test);
# each run creates and drops a database of its own there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The TypeScript client's pinned tools (its tests type-check, build and run it), from its
# lock file; skipped when that lock has not changed, so a running test keeps its node_modules.
if command -v npm >/dev/null 2>&1; then
  client_lock="$(sha256sum <clients/typescript/package-lock.json | cut -d' ' -f1)"
  client_stamp=clients/typescript/node_modules/.installed-from-lock
  if [ "$(cat "$client_stamp" 2>/dev/null)" != "$client_lock" ]; then
    npm ci --prefix clients/typescript --no-audit --no-fund --loglevel=error
    echo "$client_lock" >"$client_stamp"
  fi
fi
exec .venv/bin/python -m pytest "$@"
