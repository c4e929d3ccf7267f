#!/usr/bin/env bash
# permessage-deflate: bytes on the wire and gateway CPU per million
# deliveries, with and without compression, for the demo's message mix and
# for initial_data (docs/benchmarks.md, "Compression"). Loopback only;
# starts and stops its own redis-server and gateway (target/release/pulsegate,
# repo config: ws.compression = "on"); the clients (Python websockets,
# scripts/bench-compression.py) offer the extension or not.
#
# Usage: scripts/bench-compression.sh
#        (env: CLIENTS, EVENTS, RATE, CONNECTS, CONCURRENCY, FILL, ROUNDS, PULSEGATE_BIN)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-compression"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

RPORT=6463
GPORT=8463
bash "$SCRIPT_DIR/ensure-redis.sh" --install-only >/dev/null
python="$(bash "$SCRIPT_DIR/ensure-python.sh")"
BIN="${PULSEGATE_BIN:-target/release/pulsegate}"
[[ -n "${PULSEGATE_BIN:-}" ]] || cargo build --release --bin pulsegate >&2
WORK="$(mktemp -d /tmp/pulsegate-deflate-XXXX)"
REDIS_PID=
GW=
cleanup() {
  [[ -n "$GW" ]] && kill "$GW" 2>/dev/null && wait "$GW" 2>/dev/null
  [[ -n "$REDIS_PID" ]] && kill "$REDIS_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$(redis_server_bin)" --port $RPORT --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
wait_for_port 127.0.0.1 $RPORT 10 redis || die "redis-server did not start"
"$BIN" serve --listen 127.0.0.1:$GPORT --redis-url redis://127.0.0.1:$RPORT \
  --log-level warn >"$WORK/gateway.log" 2>&1 &
GW=$!
wait_for_port 127.0.0.1 $GPORT 20 gateway "$GW" || die "the gateway did not start"
log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
GATEWAY_PID=$GW "$python" "$SCRIPT_DIR/bench-compression.py" "$BIN" "redis://127.0.0.1:$RPORT" $GPORT
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
