#!/usr/bin/env bash
# Tests of the JavaScript client library (clients/js/), in Node.
#
#   scripts/client-test.sh [EXTRA NODE --test ARGS...]
#
# 1. npm ci in clients/js (the `ws` package, for the tests only; the library
#    itself has no dependency)
# 2. builds the gateway unless PULSEGATE_BIN names a binary
# 3. node --test: unit tests, the client against a scripted WebSocket server,
#    and against a redis-server and the gateway on free ports (the harness of
#    tests/browser/harness.mjs; no browser needed)
#
# Environment:
#   PULSEGATE_BIN           gateway binary (default: cargo build, target/debug/pulsegate)
#   PULSEGATE_REDIS_SERVER  redis-server binary (default: redis-server on PATH)
#   SKIP_CLIENT_TESTS=1     skip everything (exit 0)
# Example: scripts/client-test.sh --test-name-pattern=restart
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="client-test"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

if [[ "${SKIP_CLIENT_TESTS:-0}" == 1 ]]; then
  log "SKIP_CLIENT_TESTS=1: client library tests skipped"
  exit 0
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$node_major" -ge 18 ]] || die "the client library needs node >= 18, found $(node --version)"

export_test_servers

cd "$REPO_ROOT/clients/js"
log "npm ci (ws, for the tests)"
npm ci --no-audit --no-fund --loglevel=error >&2

log "node --test ($(node --version), $PULSEGATE_BIN)"
# Piped (as scripts/test.sh does) node prints TAP, ending in `# pass N`.
exec node --test --test-concurrency=1 "$@"
