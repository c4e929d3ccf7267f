#!/usr/bin/env bash
# Other clients during a connection flood (issue 5). Loopback only; starts and
# stops its own redis-server and gateway (target/release/pulsegate, repo
# config, default limits unless a case says otherwise), one fresh gateway per
# case. Each case runs the same victim load with the load-test harness:
# config/loadtest/flood-victims.toml (300 WebSocket subscribers on one
# persona, 500 msg/s for 20 s, 30 of them reconnecting 8 s in), from
# 127.0.0.2-127.0.0.11: 30 per address, ten clients' worth, each under the
# per-IP burst (from one address, 300 connects at once would themselves be
# refused by the per-IP limit of flood-ip).
#
#   alone    victims only
#   flood    + 10,000 connection attempts in 10 s from 127.0.0.1
#            (http-rate --fresh-connections, GET /healthz), starting 5 s
#            into publishing; default limits (per-IP connection rate off)
#   flood-ip the same flood with limits.connections_per_ip = $PER_IP
#
# Prints the victims' delivery latency, loss and reconnect time, and the
# flood's answers (200 = accepted, 429 = refused), side by side.
#
# Usage: scripts/bench-flood.sh            (env: CASES, PER_IP, FLOOD_RATE,
#        FLOOD_SECS, FLOOD_AT, OUT, LOADTEST_BIN, PULSEGATE_BIN)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-flood"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

CASES="${CASES:-alone flood flood-ip}"
PER_IP="${PER_IP:-{per_second=20,burst=100}}"
FLOOD_RATE="${FLOOD_RATE:-1000}"
FLOOD_SECS="${FLOOD_SECS:-10}"
FLOOD_AT="${FLOOD_AT:-5}" # seconds after publishing began
RPORT=6462
GPORT=8462
VICTIMS="${VICTIMS:-127.0.0.2-127.0.0.11}"
PROBE_SRC=127.0.0.250 # /metrics polls: neither the flood's nor the victims' address

bash "$SCRIPT_DIR/ensure-redis.sh" --install-only >/dev/null
BIN="${PULSEGATE_BIN:-target/release/pulsegate}"
[[ -x "$BIN" ]] || die "$BIN not built (cargo build --release --bin pulsegate)"
LT="${LOADTEST_BIN:-${CARGO_TARGET_DIR:-target}/release/pulsegate-loadtest}"
if [[ ! -x "$LT" ]]; then
  log "building the load-test harness"
  cargo build --release -p pulsegate-loadtest >&2
fi
for p in $RPORT $GPORT; do
  port_open 127.0.0.1 "$p" && die "port $p is in use"
done
command -v jq >/dev/null || die "jq is needed for the table"

WORK="$(mktemp -d /tmp/pulsegate-flood-XXXX)"
OUT="${OUT:-$WORK}"
mkdir -p "$OUT"
GW="" VICTIM="" FLOOD=""
stop() { # PID: TERM, then KILL after 10 s
  local pid="$1" i
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop "$FLOOD"
  stop "$VICTIM"
  stop "$GW"
  redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
  [[ "$OUT" == "$WORK" ]] || cp "$WORK"/*.log "$OUT"/ 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
wait_for_port 127.0.0.1 $RPORT 10 redis || die "redis-server did not start"

metric() { # NAME: sum of the samples of NAME (all labels)
  curl -s --max-time 2 --interface $PROBE_SRC "http://127.0.0.1:$GPORT/metrics" |
    awk -v m="$1" '$1 ~ "^" m "(_total)?([{]|$)" {s += $2} END {print s + 0}'
}

run_case() { # NAME
  local name="$1" env=() t
  [[ "$name" == flood-ip ]] && env=(PULSEGATE_LIMITS_CONNECTIONS_PER_IP="$PER_IP")
  env "${env[@]}" "$BIN" serve --listen 127.0.0.1:$GPORT --redis-url redis://127.0.0.1:$RPORT \
    --log-level warn >"$WORK/$name-gateway.log" 2>&1 &
  GW=$!
  wait_for_port 127.0.0.1 $GPORT 20 gateway "$GW" || die "the gateway did not start"
  log "$name: victims start (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$LT" run flood-victims --target "ws://127.0.0.1:$GPORT" --redis "redis://127.0.0.1:$RPORT" \
    --sources "$VICTIMS" --threads 1 --gateway-pid "$GW" --label "$name" \
    --json "$OUT/$name-victims.json" >"$WORK/$name-victims.log" 2>&1 &
  VICTIM=$!
  if [[ "$name" == flood* ]]; then
    # Publishing has begun when the gateway sees messages from Redis.
    for ((t = 0; t < 300; t++)); do
      (($(metric pulsegate_redis_messages_received) > 0)) && break
      kill -0 "$VICTIM" 2>/dev/null || break
      sleep 0.1
    done
    sleep "$FLOOD_AT"
    log "$name: flood of $((FLOOD_RATE * FLOOD_SECS)) attempts in ${FLOOD_SECS} s"
    "$LT" http-rate --url "http://127.0.0.1:$GPORT/healthz" --fresh-connections \
      --rate "$FLOOD_RATE" --duration "${FLOOD_SECS}s" --warmup 0s --connections 64 \
      --timeout 1s --json "$OUT/$name-flood.json" >"$WORK/$name-flood.log" 2>&1 &
    FLOOD=$!
    wait "$FLOOD" || warn "$name: the flood exited with $? ($(tail -n 3 "$WORK/$name-flood.log"))"
    FLOOD=""
  fi
  wait "$VICTIM" || warn "$name: the victims' run exited with $?"
  VICTIM=""
  metric pulsegate_rate_limited >"$WORK/$name-limited"
  stop "$GW"
  GW=""
  [[ -s "$OUT/$name-victims.json" ]] || {
    tail -n 20 "$WORK/$name-victims.log" >&2
    die "$name: no victims report"
  }
  log "$name: done (load: $(cut -d' ' -f1-3 /proc/loadavg))"
}

for c in $CASES; do
  case "$c" in alone | flood | flood-ip) run_case "$c" ;; *) die "unknown case $c" ;; esac
done

row() { # LABEL JQ-FILTER FILE-SUFFIX
  local label="$1" filter="$2" suffix="$3" c v
  printf '%-34s' "$label"
  for c in $CASES; do
    if [[ -s "$OUT/$c-$suffix.json" ]]; then
      v="$(jq -r "$filter" "$OUT/$c-$suffix.json")"
    else
      v="–"
    fi
    printf ' %18s' "$v"
  done
  printf '\n'
}
ms='(. / 1000 * 100 | round / 100 | tostring)'
echo
printf '%-34s' "case"
for c in $CASES; do printf ' %18s' "$c"; done
printf '\n'
row "victims: subscribed / total" '"\(.normal.ready + .reconnect.ready) / \(.normal.subscribers + .reconnect.subscribers)"' victims
row "victims: delivery" '(.delivery_ratio * 100 * 1000 | floor / 1000 | tostring) + " %"' victims
row "victims: lost / expected" '"\(.normal.lost) / \(.normal.expected)"' victims
row "victims: latency p50 ms" ".latency_us.p50 | $ms" victims
row "victims: latency p99 ms" ".latency_us.p99 | $ms" victims
row "victims: latency p99.9 ms" ".latency_us.p999 | $ms" victims
row "victims: latency max ms" ".latency_us.max | $ms" victims
row "victims: reconnects ok / dropped" '"\(.reconnect.reconnects) / \(.reconnect.subscribers)"' victims
row "victims: reconnect p50/max ms" "(.reconnect_us.p50 | $ms) + \" / \" + (.reconnect_us.max | $ms)" victims
row "victims: errors / server EOFs" '"\(.normal.errors + .reconnect.errors) / \(.normal.eof + .reconnect.eof)"' victims
row "gateway CPU s (publish+drain)" '.gateway.cpu_s * 100 | round / 100' victims
row "flood: attempts" '.measured.sent' flood
row "flood: 200 accepted" '.measured.statuses["200"] // 0' flood
row "flood: 429 refused" '.measured.statuses["429"] // 0' flood
row "flood: connect errors / other" '"\(.measured.connect_errors) / \(.measured.errors - .measured.connect_errors)"' flood
row "flood: answer p50/p99 ms" '"\(.latency_ms.p50) / \(.latency_ms.p99)"' flood
printf '%-34s' "gateway: rate_limited total"
for c in $CASES; do printf ' %18s' "$(cat "$WORK/$c-limited" 2>/dev/null || echo –)"; done
printf '\n'
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores); reports: $OUT"
