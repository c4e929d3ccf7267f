#!/usr/bin/env bash
# Smoke test of scripts/demo.sh: the demo a new user starts first comes up
# with Redis, PostgreSQL and the simulator, and shows everything: the
# dashboard page, live REST reads, and the audit trail (GET
# /api/events/{persona} answers 200 with rows, which needs the demo's
# PostgreSQL and the audit consumer).
#
#   scripts/demo-test.sh
#
# Runs the demo on free ports with its state (gateway log, throwaway
# PostgreSQL cluster) in a temporary directory, DEMO_DURATION=15, the debug
# build (PULSEGATE_BIN, built when unset); stops what it started.
# Prints `demo test: N passed, M failed`.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="demo-test"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

export_test_servers
pg_bin="$(bash "$SCRIPT_DIR/ensure-postgres.sh" --install-only)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port="$(free_port)"
pg_port="$(free_port)"
gw_port="$(free_port)"
state="$(mktemp -d /tmp/pulsegate-demo-test.XXXXXX)"
chmod 0755 "$state"
persona=persona_alpha
passed=0
failed=0
demo_pid=""

cleanup() {
  if [[ -n "$demo_pid" ]] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -INT "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  REDIS_URL="redis://127.0.0.1:$redis_port" bash "$SCRIPT_DIR/ensure-redis.sh" --stop >/dev/null 2>&1 || true
  # The demo stops its cluster; this is for a demo killed before it could.
  PG_BASE_DIR="$state/pg" PULSEGATE_PG_BIN="$pg_bin" bash "$SCRIPT_DIR/ensure-postgres.sh" --stop >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

result() {
  if [[ "$1" == ok ]]; then
    passed=$((passed + 1))
    echo "ok   $2"
  else
    failed=$((failed + 1))
    echo "FAIL $2"
  fi
}

# http_body PATH: the body of GET PATH on the demo's gateway ("" when none).
http_get() {
  python3 - "$gw_port" "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", timeout=5) as r:
        print(r.status)
        print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
    print(e.read().decode())
except Exception:
    print(0)
PY
}

log "demo on 127.0.0.1:$gw_port (Redis :$redis_port, PostgreSQL :$pg_port, state $state)"
REDIS_URL="redis://127.0.0.1:$redis_port" \
  DATABASE_URL="postgres://pulsegate@127.0.0.1:$pg_port/pulsegate" \
  PULSEGATE_LISTEN="127.0.0.1:$gw_port" \
  DEMO_STATE_DIR="$state" DEMO_BIN="$PULSEGATE_BIN" DEMO_DURATION=15 DEMO_PERSONAS="$persona,persona_beta" \
  PULSEGATE_PG_BIN="$pg_bin" \
  bash "$SCRIPT_DIR/demo.sh" >"$state/demo.out" 2>&1 &
demo_pid=$!

# Ready, then rows in the audit trail.
deadline=$((SECONDS + 90))
events_status="" events_body=""
while ((SECONDS < deadline)); do
  kill -0 "$demo_pid" 2>/dev/null || break
  if [[ "$(http_status 127.0.0.1 "$gw_port" /readyz || true)" == 200 ]]; then
    out="$(http_get "/api/events/$persona?limit=5")"
    events_status="$(head -n 1 <<<"$out")"
    events_body="$(tail -n +2 <<<"$out")"
    if [[ "$events_status" == 200 ]] && python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["events"] else 1)' "$events_body" 2>/dev/null; then
      break
    fi
  fi
  sleep 0.5
done

grep -q "Audit trail (events):  http://127.0.0.1:$gw_port/api/events/$persona" "$state/demo.out" &&
  result ok "the demo prints the audit trail's URL" ||
  result fail "the demo prints the audit trail's URL"
if [[ "$events_status" == 200 ]] && python3 -c 'import json,sys; e=json.loads(sys.argv[1])["events"]; sys.exit(0 if e and all("event_id" in r and "event_type" in r for r in e) else 1)' "$events_body" 2>/dev/null; then
  result ok "GET /api/events/$persona answers 200 with rows"
else
  result fail "GET /api/events/$persona answers 200 with rows (last: ${events_status:-no answer} ${events_body:0:300})"
fi
out="$(http_get "/api/metrics/$persona")"
[[ "$(head -n 1 <<<"$out")" == 200 ]] &&
  result ok "GET /api/metrics/$persona answers 200" ||
  result fail "GET /api/metrics/$persona answers 200 (got $(head -n 1 <<<"$out"))"
out="$(http_get "/api/kills/$persona")"
[[ "$(head -n 1 <<<"$out")" == 200 ]] &&
  result ok "GET /api/kills/$persona answers 200" ||
  result fail "GET /api/kills/$persona answers 200 (got $(head -n 1 <<<"$out"))"

# The demo ends by itself after DEMO_DURATION, with status 0.
rc=0
wait "$demo_pid" || rc=$?
demo_pid=""
if [[ "$rc" == 0 ]]; then
  result ok "the demo ends by itself with status 0"
else
  result fail "the demo ends by itself with status 0 (status $rc)"
fi
if port_open 127.0.0.1 "$pg_port"; then
  result fail "the demo stops the PostgreSQL it started"
else
  result ok "the demo stops the PostgreSQL it started"
fi
if [[ "$failed" -gt 0 ]]; then
  echo "--- demo output ---"
  tail -n 40 "$state/demo.out"
  echo "--- gateway log ---"
  tail -n 20 "$state/gateway.log" 2>/dev/null || true
fi
echo "demo test: $passed passed, $failed failed"
[[ "$failed" == 0 ]]
