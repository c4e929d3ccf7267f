#!/usr/bin/env bash
# REST read latency: GET /api/metrics/<persona> at a fixed request rate
# (pulsegate-loadtest http-rate: open loop, latency from each request's
# scheduled send time), first with no events, then while events stream in.
# Loopback only; starts and stops its own redis-server and gateway.
# Usage: scripts/bench-api.sh [RATE] [SECONDS] [EVENTS_PER_S]
set -euo pipefail
RATE="${1:-1000}"; SECS="${2:-10}"; EVENTS="${3:-20}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-api"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"
bash "$SCRIPT_DIR/ensure-redis.sh" --install-only >/dev/null
BIN="${PULSEGATE_BIN:-target/release/pulsegate}"
LT="${LOADTEST_BIN:-target/release/pulsegate-loadtest}"
[[ -x "$BIN" && -x "$LT" ]] || cargo build --release --bin pulsegate --bin pulsegate-loadtest
RPORT=6471; GPORT=8470; PERSONA=bench_p
WORK="$(mktemp -d /tmp/pulsegate-bench-api-XXXX)"
cleanup() {
  [[ -n "${SIM:-}" ]] && kill "$SIM" 2>/dev/null || true
  [[ -n "${GW:-}" ]] && kill "$GW" 2>/dev/null && wait "$GW" 2>/dev/null || true
  redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
redis-server --port $RPORT --save '' --appendonly no --daemonize yes >/dev/null
wait_for_port 127.0.0.1 $RPORT 10
"$BIN" serve --listen 127.0.0.1:$GPORT --redis-url redis://127.0.0.1:$RPORT --log-level warn >"$WORK/gw.log" 2>&1 &
GW=$!
wait_for_port 127.0.0.1 $GPORT 10 gateway "$GW" || { cat "$WORK/gw.log" >&2; exit 1; }
log "filling persona $PERSONA: 2,000 events/s for 5 s"
"$BIN" simulate --redis-url redis://127.0.0.1:$RPORT --rate 2000 --duration 5 --personas $PERSONA >/dev/null
URL="http://127.0.0.1:$GPORT/api/metrics/$PERSONA"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
log "$RATE requests/s for ${SECS}s, no events"
"$LT" http-rate --url "$URL" --rate "$RATE" --duration "${SECS}s" --connections 8
"$BIN" simulate --redis-url redis://127.0.0.1:$RPORT --rate "$EVENTS" --duration $((SECS + 5)) --personas $PERSONA >/dev/null &
SIM=$!
sleep 1
log "$RATE requests/s for ${SECS}s while $EVENTS events/s are ingested"
"$LT" http-rate --url "$URL" --rate "$RATE" --duration "${SECS}s" --connections 8
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
