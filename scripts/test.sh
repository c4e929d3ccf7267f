#!/usr/bin/env bash
# The test command: everything CI runs.
#
#   scripts/test.sh [EXTRA CARGO TEST ARGS...]
#
# 1. installs redis-server, PostgreSQL and HAProxy when missing (nothing is started:
#    the tests spawn their own redis-server on free ports and throwaway
#    PostgreSQL clusters, found via PULSEGATE_REDIS_SERVER / PULSEGATE_PG_BIN)
# 2. cargo fmt --all -- --check
# 3. cargo clippy --all-targets --workspace -- -D warnings
# 4. cargo test --workspace "$@"
# 5. without extra arguments: the Lua reference check, the examples in
#    README.md and docs/ (scripts/docs-examples.sh), the client library's
#    tests (scripts/client-test.sh), the browser tests, the Autobahn
#    conformance run (scripts/autobahn.sh: 1-10 and a subset of 12/13), the
#    Kubernetes manifests (scripts/k8s-check.sh) and the demo
#    (scripts/demo-test.sh)
#
# SKIP_LINT=1 skips steps 2 and 3.
# Example: scripts/test.sh -p pulsegate --test integration fanout:: -- --nocapture
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="test"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

SECONDS=0
step() { printf '\n==> [%4ds] %s\n' "$SECONDS" "$*"; }

step "system dependencies (redis-server, postgresql, haproxy, python3-websockets)"
bash "$SCRIPT_DIR/ensure-redis.sh" --install-only
PULSEGATE_PG_BIN="$(bash "$SCRIPT_DIR/ensure-postgres.sh" --install-only)"
PULSEGATE_REDIS_SERVER="$(redis_server_bin)" || die "redis-server not found"
# The Redis Cluster tests (tests/integration/topology/) create their
# clusters with `redis-cli --cluster create`; Sentinel runs as
# `redis-server --sentinel`.
command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
# The scale-out tests put gateways behind a real HAProxy.
PULSEGATE_HAPROXY="$(bash "$SCRIPT_DIR/ensure-haproxy.sh")" || die "HAProxy could not be installed"
export PULSEGATE_HAPROXY
# The compression tests drive standard clients: Python `websockets`.
PULSEGATE_PYTHON="$(bash "$SCRIPT_DIR/ensure-python.sh")" || die "python3 with websockets could not be installed"
export PULSEGATE_PYTHON
[[ -x "$PULSEGATE_PG_BIN/postgres" && -x "$PULSEGATE_PG_BIN/initdb" ]] ||
  die "no postgres/initdb in '$PULSEGATE_PG_BIN'"
export PULSEGATE_REDIS_SERVER PULSEGATE_PG_BIN
PATH="$PULSEGATE_PG_BIN:$(dirname "$PULSEGATE_REDIS_SERVER"):$PATH"
export PATH
echo "PULSEGATE_REDIS_SERVER=$PULSEGATE_REDIS_SERVER ($("$PULSEGATE_REDIS_SERVER" --version | cut -d' ' -f3))"
echo "PULSEGATE_PG_BIN=$PULSEGATE_PG_BIN ($("$PULSEGATE_PG_BIN/postgres" --version))"

command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
echo "$(cargo --version); $(rustc --version)"

export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
if [[ "${CI:-}" == true ]]; then
  # A fresh clone builds from scratch once: incremental artifacts only cost
  # time and disk there.
  export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
  export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
fi

if [[ "${SKIP_LINT:-0}" == 1 ]]; then
  step "lint skipped (SKIP_LINT=1)"
else
  step "cargo fmt --all -- --check"
  cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing (rustup component add rustfmt), or run with SKIP_LINT=1"
  cargo fmt --all -- --check

  step "cargo clippy --all-targets --workspace -- -D warnings"
  cargo clippy --version >/dev/null 2>&1 || die "clippy is missing (rustup component add clippy), or run with SKIP_LINT=1"
  cargo clippy --all-targets --workspace -- -D warnings
fi

step "cargo test --workspace $*"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
cargo test --workspace "$@" 2>&1 | tee "$results"
passed=$(grep -o '[0-9]* passed' "$results" | awk '{s += $1} END {print s + 0}')
failed=$(grep -o '[0-9]* failed' "$results" | awk '{s += $1} END {print s + 0}')

if [[ $# -eq 0 ]]; then
  if command -v python3 >/dev/null 2>&1; then
    step "Lua reference model check (scripts/lua-check)"
    bash "$SCRIPT_DIR/lua-check/check.sh"
  else
    step "Lua reference model check skipped: python3 is not installed"
  fi

  step "docs examples (scripts/docs-examples.sh)"
  docs_out="$(mktemp)"
  bash "$SCRIPT_DIR/docs-examples.sh" 2>&1 | tee "$docs_out"
  dp=$(sed -n 's/^docs examples: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\1/p' "$docs_out" | tail -n 1)
  df=$(sed -n 's/^docs examples: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\2/p' "$docs_out" | tail -n 1)
  passed=$((passed + ${dp:-0}))
  failed=$((failed + ${df:-0}))
  rm -f "$docs_out"

  step "client library tests (scripts/client-test.sh)"
  client_out="$(mktemp)"
  bash "$SCRIPT_DIR/client-test.sh" 2>&1 | tee "$client_out"
  clp=$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$client_out" | tail -n 1)
  clf=$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$client_out" | tail -n 1)
  passed=$((passed + ${clp:-0}))
  failed=$((failed + ${clf:-0}))
  rm -f "$client_out"

  step "browser tests (scripts/browser-test.sh)"
  browser_out="$(mktemp)"
  bash "$SCRIPT_DIR/browser-test.sh" 2>&1 | tee "$browser_out"
  bp=$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$browser_out" | tail -n 1)
  bf=$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$browser_out" | tail -n 1)
  passed=$((passed + ${bp:-0}))
  failed=$((failed + ${bf:-0}))
  rm -f "$browser_out"

  # Conformance: Autobahn|Testsuite against the gateway's frame reader and
  # writer, cases 1-10 and a 16-case subset of 12/13 (permessage-deflate;
  # all 216: scripts/autobahn.sh --deflate-all). wstest needs Python 2.7,
  # which only pyenv provides here: skipped, and said so, without it.
  step "Autobahn|Testsuite (scripts/autobahn.sh, then --deflate)"
  if wstest="$(bash "$SCRIPT_DIR/ensure-autobahn.sh")"; then
    WSTEST="$wstest" bash "$SCRIPT_DIR/autobahn.sh"
    WSTEST="$wstest" bash "$SCRIPT_DIR/autobahn.sh" --deflate
    passed=$((passed + 2))
  else
    warn "Autobahn|Testsuite skipped: wstest could not be installed (see above)"
  fi

  # The debug build `cargo test` just made, for the checks that run it.
  gateway_bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/pulsegate"

  step "Kubernetes manifests and Helm chart (scripts/k8s-check.sh)"
  k8s_out="$(mktemp)"
  PULSEGATE_BIN="$gateway_bin" bash "$SCRIPT_DIR/k8s-check.sh" 2>&1 | tee "$k8s_out"
  kp=$(sed -n 's/^k8s checks: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\1/p' "$k8s_out" | tail -n 1)
  kf=$(sed -n 's/^k8s checks: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\2/p' "$k8s_out" | tail -n 1)
  passed=$((passed + ${kp:-0}))
  failed=$((failed + ${kf:-0}))
  rm -f "$k8s_out"

  step "demo smoke test (scripts/demo-test.sh)"
  demo_out="$(mktemp)"
  PULSEGATE_BIN="$gateway_bin" bash "$SCRIPT_DIR/demo-test.sh" 2>&1 | tee "$demo_out"
  mp=$(sed -n 's/^demo test: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\1/p' "$demo_out" | tail -n 1)
  mf=$(sed -n 's/^demo test: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\2/p' "$demo_out" | tail -n 1)
  passed=$((passed + ${mp:-0}))
  failed=$((failed + ${mf:-0}))
  rm -f "$demo_out"
fi

step "all steps passed"
echo "tests: $passed passed, $failed failed"
