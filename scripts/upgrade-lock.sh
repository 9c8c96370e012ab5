#!/usr/bin/env bash
# Upgrade every locked dependency to the newest release pyproject.toml allows, then install
# the new lock into .venv. Review `git diff uv.lock`, run the tests, commit uv.lock.
# One package only: `bash scripts/upgrade-lock.sh --upgrade-package anthropic`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  set -- --upgrade
fi
.venv/bin/uv lock "$@"
bash scripts/setup.sh
