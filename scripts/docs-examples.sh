#!/usr/bin/env bash
# Runs every example marked runnable in README.md and docs/*.md against a
# real gateway, so that a wrong example fails the tests.
#
#   scripts/docs-examples.sh [FILE.md...]     default: README.md docs/*.md
#
# 1. installs when missing: redis-server, curl, python3 with redis-py and
#    websockets (scripts/ensure-python.sh), PostgreSQL (--install-only),
#    Node.js and, with npm ci, the packages the Node examples import
#    (scripts/docs-examples/package.json); without Node >= 18.19 the Node
#    examples are skipped with a warning
# 2. builds the gateway unless PULSEGATE_BIN names a binary
# 3. scripts/docs-examples/run.py: for each file, a fresh redis-server (and a
#    throwaway PostgreSQL, and the gateway) on free loopback ports, then its
#    marked blocks in order, each with a timeout
#
# How blocks are marked, and how they are pointed at this run's servers:
# scripts/docs-examples/README.md. Prints `docs examples: N passed, M failed`
# and each failure with the file:line of its block; exits 1 on a failure.
#
# Environment:
#   PULSEGATE_BIN           gateway binary (default: cargo build, target/debug/pulsegate)
#   PULSEGATE_REDIS_SERVER  redis-server binary (default: redis-server on PATH)
#   PULSEGATE_PG_BIN        PostgreSQL's bin directory (default: the newest installed)
#   DOCS_EXAMPLES_VERBOSE=1 also print what each block printed
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="docs-examples"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

if [[ $# -gt 0 ]]; then
  files=("$@")
else
  files=(README.md docs/*.md)
fi

redis_bin="$(redis_server_bin)" || {
  bash "$SCRIPT_DIR/ensure-redis.sh" --install-only
  redis_bin="$(redis_server_bin)" || die "redis-server not found"
}
command -v curl >/dev/null 2>&1 || apt_install curl
python="$(bash "$SCRIPT_DIR/ensure-python.sh")"
pg_bin="$(bash "$SCRIPT_DIR/ensure-postgres.sh" --install-only)"

node_modules=""
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  (apt_install nodejs npm) || warn "could not install nodejs and npm"
fi
if command -v node >/dev/null 2>&1 &&
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 18 || (a === 18 && b >= 19) ? 0 : 1)'; then
  dir="$SCRIPT_DIR/docs-examples"
  if [[ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]]; then
    node_modules="$dir/node_modules" # installed by an earlier npm ci
  elif log "npm ci (scripts/docs-examples: the packages the Node examples import)" &&
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2); then
    node_modules="$dir/node_modules"
  else
    warn "npm ci failed in scripts/docs-examples: the Node examples will be skipped"
  fi
else
  warn "Node.js >= 18.19 is not available ($(node --version 2>/dev/null || echo none)): the Node examples will be skipped"
fi

if [[ -z "${PULSEGATE_BIN:-}" ]]; then
  log "cargo build --bin pulsegate"
  cargo build --bin pulsegate
  PULSEGATE_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/pulsegate"
fi
[[ -x "$PULSEGATE_BIN" ]] || die "no gateway binary at $PULSEGATE_BIN"

exec "$python" -B "$SCRIPT_DIR/docs-examples/run.py" --repo "$REPO_ROOT" --bin "$PULSEGATE_BIN" \
  --python "$python" --redis-server "$redis_bin" --pg-bin "$pg_bin" \
  --node-modules "$node_modules" ${DOCS_EXAMPLES_VERBOSE:+--verbose} "${files[@]}"
