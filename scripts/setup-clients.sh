#!/usr/bin/env bash
# What the client and browser tests need besides Python (idempotent, quick when nothing
# changed): Debian's Chromium, the pinned npm packages of clients/typescript and
# clients/plugin-ui (from their lock files), and the client package built, since the
# plugin UI depends on its dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "setup-clients: Node.js 20+ and npm are required for the client tests" >&2
  exit 1
fi

# Chromium for the browser tests (Playwright's own browser download is not used).
if [ -z "${CHROMIUM_PATH:-}" ] && ! [ -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup-clients: installing Debian's chromium"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup-clients: install Chromium (apt-get install chromium) or set CHROMIUM_PATH" >&2
    exit 1
  fi
fi

# `npm ci` only when the lock file changed since the last install.
install() {
  local dir="$1"
  local stamp="$dir/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ] || [ "$dir/package.json" -nt "$stamp" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
}

install clients/typescript
# The package the plugin UI imports: rebuilt when its sources or the contract changed.
if [ ! -f clients/typescript/dist/index.js ] || [ -n "$(find clients/typescript/src openapi/openapi.json clients/typescript/package.json -newer clients/typescript/dist/index.js -print -quit)" ]; then
  npm run --silent build --prefix clients/typescript >/dev/null
fi
install clients/plugin-ui
