#!/usr/bin/env bash
# The cost of the system:runtime channel while it is watched: the gateway's
# CPU time over WINDOW seconds with nobody watching, then with one watcher
# (`pulsegate top`, its output thrown away), alternating for ROUNDS rounds,
# under a steady fan-out from pulsegate-loadtest. Prints each window and the
# medians (docs/benchmarks.md, "The runtime channel").
#
#   scripts/bench-runtime.sh
#
# Environment (defaults in brackets):
#   PULSEGATE_BIN        gateway binary [target/release/pulsegate]
#   LOADTEST_BIN         [target/release/pulsegate-loadtest]
#   ROUNDS [3]  WINDOW seconds [60]  INTERVAL runtime.interval [1s]
#   SUBSCRIBERS [1000]  PERSONAS [10]  RATE publications/s [100]
# CPU time is utime + stime of /proc/<gateway pid>/stat (all threads).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-runtime"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

BIN="${PULSEGATE_BIN:-target/release/pulsegate}"
LT="${LOADTEST_BIN:-target/release/pulsegate-loadtest}"
ROUNDS="${ROUNDS:-3}"
WINDOW="${WINDOW:-60}"
INTERVAL="${INTERVAL:-1s}"
SUBSCRIBERS="${SUBSCRIBERS:-1000}"
PERSONAS="${PERSONAS:-10}"
RATE="${RATE:-100}"
[[ -x "$BIN" && -x "$LT" ]] || die "build first: cargo build --release (need $BIN and $LT)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT="$(free_port)"
GW_PORT="$(free_port)"
TICKS="$(getconf CLK_TCK)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
PULSEGATE_RUNTIME_INTERVAL="$INTERVAL" RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$GW_PORT" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" >/dev/null 2>&1 &
GW_PID=$!
pids+=("$GW_PID")
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$GW_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$GW_PORT/readyz" >/dev/null || die "the gateway did not become ready"

total=$((ROUNDS * (2 * WINDOW + 5) + 40))
log "load: $SUBSCRIBERS subscribers on $PERSONAS personas, $RATE publications/s, for ${total}s"
"$LT" run steady --target "ws://127.0.0.1:$GW_PORT" --redis "redis://127.0.0.1:$REDIS_PORT" \
  --subscribers "$SUBSCRIBERS" --personas "$PERSONAS" --rate "$RATE" --duration "$total" \
  --ramp-rate 2000 --hold 0 >/dev/null 2>&1 &
pids+=($!)
sleep 15

cpu() { awk -v t="$TICKS" '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); printf "%.3f", (f[12] + f[13]) / t }' "/proc/$GW_PID/stat"; }
samples() { curl -fs "http://127.0.0.1:$GW_PORT/metrics" | awk '/^pulsegate_runtime_samples_total /{print $2}'; }

measure() {
  local a b
  a="$(cpu)"
  sleep "$WINDOW"
  b="$(cpu)"
  awk -v a="$a" -v b="$b" -v w="$WINDOW" 'BEGIN { printf "%.2f", (b - a) * 100 / w }'
}

without=()
with=()
for r in $(seq "$ROUNDS"); do
  s0="$(samples)"
  w="$(measure)"
  s1="$(samples)"
  without+=("$w")
  "$BIN" top --url "http://127.0.0.1:$GW_PORT" >/dev/null 2>&1 &
  top_pid=$!
  sleep 3
  v="$(measure)"
  s2="$(samples)"
  kill -INT "$top_pid"
  wait "$top_pid" || true
  sleep 2
  with+=("$v")
  printf 'round %d: nobody watching %s %% CPU (%s samples taken); one watcher %s %% CPU (%s samples)\n' \
    "$r" "$w" "$((s1 - s0))" "$v" "$((s2 - s1))"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median: nobody watching $(median "${without[@]}") % CPU; one watcher $(median "${with[@]}") % CPU (interval $INTERVAL, $SUBSCRIBERS subscribers, $RATE pub/s, ${WINDOW}s windows, load $(cut -d' ' -f1-3 /proc/loadavg))"
