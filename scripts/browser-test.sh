#!/usr/bin/env bash
# End-to-end tests of the dashboard page in headless Chromium.
#
#   scripts/browser-test.sh [EXTRA NODE --test ARGS...]
#
# 1. installs Debian's chromium when missing (scripts/ensure-chromium.sh
#    --optional); without it the tests are skipped with a message (exit 0)
# 2. npm ci in tests/browser (playwright-core, pinned by package-lock.json;
#    it drives /usr/bin/chromium, no browser download)
# 3. builds the gateway unless PULSEGATE_BIN names a binary
# 4. node --test: the tests start their own redis-server and gateway on free
#    ports; screenshots and the gateway log go to tests/artifacts/
#
# Environment:
#   PULSEGATE_BIN           gateway binary (default: cargo build, target/debug/pulsegate)
#   PULSEGATE_REDIS_SERVER  redis-server binary (default: redis-server on PATH)
#   SKIP_BROWSER_TESTS=1    skip everything (exit 0)
# Example: scripts/browser-test.sh --test-name-pattern=reconnects
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="browser-test"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

if [[ "${SKIP_BROWSER_TESTS:-0}" == 1 ]]; then
  log "SKIP_BROWSER_TESTS=1: browser tests skipped"
  exit 0
fi

chromium="$(bash "$SCRIPT_DIR/ensure-chromium.sh" --optional || true)"
if [[ -z "$chromium" || ! -x /usr/bin/chromium ]]; then
  warn "Chromium is not available (/usr/bin/chromium): browser tests SKIPPED"
  exit 0
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [[ "$node_major" -lt 20 ]]; then
  warn "browser tests skipped: node >= 20 is needed, found $(node --version)"
  exit 0
fi

export_test_servers
# The analytics tests (analytics.test.mjs) start their own PostgreSQL.
PULSEGATE_PG_BIN="${PULSEGATE_PG_BIN:-$(bash "$SCRIPT_DIR/ensure-postgres.sh" --install-only)}"
export PULSEGATE_PG_BIN

cd "$REPO_ROOT/tests/browser"
log "npm ci (playwright-core)"
npm ci --no-audit --no-fund --loglevel=error >&2

log "node --test ($("$chromium" --version 2>/dev/null | head -n1), $PULSEGATE_BIN)"
exec node --test --test-concurrency=1 "$@"
