#!/usr/bin/env bash
# Ingest and fan-out through one gateway (release build) against one
# standalone Redis and against a Redis Cluster of 3 primaries (no replicas),
# in the same run, on this machine. Per round and topology, a fresh gateway;
# pulsegate-loadtest connects SUBSCRIBERS dashboard clients on PERSONAS
# personas and publishes RATE events/s for DURATION s with
# `POST /api/events/performance-update` (the gateway runs `FCALL
# pulse_ingest`, routed by its fred client to the persona's primary; the
# library publishes with PUBLISH, or SPUBLISH in the Cluster). Reported:
# events/s published, deliveries/s, the delivery ratio, the gateway's CPU
# per million deliveries and Redis CPU per event (utime+stime of every
# redis-server of the topology from /proc, over the whole run, ÷ events).
#
# Not redis-benchmark: its --cluster mode writes keys with hash tags from a
# fixed table (`{06S}`, …), some of which are not valid persona ids, so
# the library refuses part of the calls on one node and the figures would
# not compare.
#
# Loopback only; starts and stops its own servers (standalone on 6453, the
# Cluster on 7460-7462 via scripts/redis-cluster.sh, the gateway on 8473).
# Usage: PULSEGATE_BIN=target/release/pulsegate LOADTEST_BIN=target/release/pulsegate-loadtest \
#          scripts/bench-cluster.sh [ROUNDS=3]
# Env: SUBSCRIBERS (300), PERSONAS (30), RATE (2000), DURATION (10).
set -euo pipefail
ROUNDS="${1:-3}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-cluster"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"
[[ -x "${PULSEGATE_BIN:-}" && -x "${LOADTEST_BIN:-}" ]] ||
  die "set PULSEGATE_BIN and LOADTEST_BIN (cargo build --release -p pulsegate -p pulsegate-loadtest)"
bash "$SCRIPT_DIR/ensure-redis.sh" --install-only >/dev/null
SUBS="${SUBSCRIBERS:-300}"; PERS="${PERSONAS:-30}"; RATE="${RATE:-2000}"; DUR="${DURATION:-10}"
SPORT=6453
export CLUSTER_BASE_PORT=7460
CPORTS=(7460 7461 7462)
CLUSTER_URL="redis-cluster://127.0.0.1:7460?node=127.0.0.1:7461&node=127.0.0.1:7462"
GW_PORT=8473
GW_PID=""
WORK=$(mktemp -d)
cleanup() {
  if [[ -n "$GW_PID" ]]; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
  redis-cli -p $SPORT shutdown nosave >/dev/null 2>&1 || true
  bash "$SCRIPT_DIR/redis-cluster.sh" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port $SPORT --save '' --appendonly no --daemonize yes >/dev/null
wait_for_port 127.0.0.1 $SPORT 10
bash "$SCRIPT_DIR/redis-cluster.sh" up 3 0 >/dev/null 2>&1 || die "cluster did not start"
pid_of() { redis-cli -p "$1" INFO server | awk -F: '/^process_id/ {print $2}' | tr -d '\r'; }
SPIDS=("$(pid_of $SPORT)")
CPIDS=(); for p in "${CPORTS[@]}"; do CPIDS+=("$(pid_of "$p")"); done
ticks() { local t=0 pid; for pid in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo $t; }

# run URL LABEL PIDS... -> $WORK/row: "<events/s> <deliveries/s> <ratio> <gateway CPU-s per 1M deliveries> <Redis µs per event>"
run() {
  local url=$1 label=$2 before after; shift 2
  "$PULSEGATE_BIN" serve --listen "127.0.0.1:$GW_PORT" --redis-url "$url" \
    >"$WORK/gw.log" 2>&1 &
  GW_PID=$!
  sleep 0.3
  kill -0 "$GW_PID" 2>/dev/null || die "gateway exited: $(tail -3 "$WORK/gw.log")"
  for _ in $(seq 1 150); do
    [[ "$(http_status 127.0.0.1 "$GW_PORT" /readyz)" == 200 ]] && break
    sleep 0.2
  done
  [[ "$(http_status 127.0.0.1 "$GW_PORT" /readyz)" == 200 ]] || die "gateway not ready: $(tail -3 "$WORK/gw.log")"
  before=$(ticks "$@")
  "$LOADTEST_BIN" run steady --target "ws://127.0.0.1:$GW_PORT" --publish http \
    --http-url "http://127.0.0.1:$GW_PORT/api/events/performance-update" --http-body performance-update \
    --subscribers "$SUBS" --personas "$PERS" --rate "$RATE" --duration "$DUR" \
    --gateway-pid "$GW_PID" --label "$label" --json "$WORK/out.json" >"$WORK/lt.log" 2>&1 ||
    die "loadtest failed ($label): $(tail -5 "$WORK/lt.log")"
  after=$(ticks "$@")
  kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; GW_PID=""
  python3 - "$WORK/out.json" "$((after - before))" "$(getconf CLK_TCK)" >"$WORK/row" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ticks, hz = int(sys.argv[2]), int(sys.argv[3])
p = r["publish"]
events = sum(p["published"]) - p["errors"]
gw = (r.get("gateway") or {}).get("cpu_s_per_million_deliveries") or 0
print(f'{events / p["elapsed_s"]:.0f} {r["deliveries_per_s"]:.0f} {r["delivery_ratio"]:.4f} '
      f'{gw:.2f} {ticks / hz * 1e6 / max(events, 1):.0f}')
PY
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

log "load average: $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds; $SUBS subscribers on $PERS personas, $RATE events/s for ${DUR}s"
printf '%-11s %-5s | %8s %12s %8s %14s %14s\n' topology round "events/s" "deliveries/s" ratio "gw CPU-s/1M" "Redis µs/event"
declare -A COL
for ((i = 1; i <= ROUNDS; i++)); do
  for topo in standalone cluster; do
    if [[ $topo == standalone ]]; then
      run "redis://127.0.0.1:$SPORT" "$topo" "${SPIDS[@]}"
    else
      run "$CLUSTER_URL" "$topo" "${CPIDS[@]}"
    fi
    read -r ev dl ratio gw rus <"$WORK/row"
    printf '%-11s %-5s | %8s %12s %8s %14s %14s\n' "$topo" "$i" "$ev" "$dl" "$ratio" "$gw" "$rus"
    COL[$topo.ev]+="$ev "; COL[$topo.dl]+="$dl "; COL[$topo.ratio]+="$ratio "
    COL[$topo.gw]+="$gw "; COL[$topo.rus]+="$rus "
  done
done
for topo in standalone cluster; do
  # shellcheck disable=SC2086
  printf '%-11s %-5s | %8s %12s %8s %14s %14s\n' "$topo" median "$(median ${COL[$topo.ev]})" \
    "$(median ${COL[$topo.dl]})" "$(median ${COL[$topo.ratio]})" "$(median ${COL[$topo.gw]})" \
    "$(median ${COL[$topo.rus]})"
done
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
