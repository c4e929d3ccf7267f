#!/usr/bin/env bash
# One pinned pulsegate run, as loadtest/compare.sh runs it (fresh Redis and
# gateway on core 0, the load client on core 1), plus the gateway's write
# counters from /metrics and, optionally, a perf profile: for A/B runs of a
# setting (pass it as PULSEGATE_* in the environment) and for profiles.
#
#   loadtest/one-run.sh LABEL SUBSCRIBERS RATE [pulsegate-loadtest flags...]
#   PULSEGATE_WS_WRITE_DELAY=5ms loadtest/one-run.sh wd5 1000 1000
#   SCENARIO=slow-readers DURATION=15 loadtest/one-run.sh slow 1000 1000
#   PERF=1 PERF_AT=4 PERF_FOR=5 loadtest/one-run.sh prof 1000 1000
#
# Environment: SCENARIO (default steady), DURATION (s, default 10), OUT
# (default loadtest/results/one), CARGO_TARGET_DIR (release binaries, built
# beforehand), BASE_PORT (default 17300). Output: $OUT/LABEL.{txt,json,err,
# metrics} and, with PERF=1, $OUT/LABEL.perf.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
(($# >= 3)) || { sed -n '2,16p' "$0" >&2; exit 64; }
label=$1 subs=$2 rate=$3
shift 3
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
OUT="${OUT:-$ROOT/loadtest/results/one}"
GP="${BASE_PORT:-17300}" RP=$((${BASE_PORT:-17300} + 1))
mkdir -p "$OUT"
dir="$(mktemp -d /tmp/pulsegate-one.XXXXXX)"
gw=""
cleanup() {
    [ -n "$gw" ] && kill -9 "$gw" 2>/dev/null || true
    redis-cli -p "$RP" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

taskset -c 0 redis-server --port "$RP" --save '' --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
for _ in $(seq 50); do [ -s "$dir/redis.pid" ] && break; sleep 0.1; done
rpid="$(cat "$dir/redis.pid")"
(cd "$dir" && exec taskset -c 0 "$BIN/pulsegate" serve --listen "127.0.0.1:$GP" \
    --redis-url "redis://127.0.0.1:$RP" --log-level warn) >"$dir/gw.log" 2>&1 &
gw=$!
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$GP") 2>/dev/null && break; sleep 0.1; done
perf_pid=""
if [ "${PERF:-0}" = 1 ]; then
    (sleep "${PERF_AT:-4}"; perf record -F 999 -g -p "$gw" -o "$OUT/$label.perf" \
        -- sleep "${PERF_FOR:-5}" >/dev/null 2>&1) &
    perf_pid=$!
fi
status=0
taskset -c 1 "$BIN/pulsegate-loadtest" run "${SCENARIO:-steady}" --subscribers "$subs" \
    --personas 1 --rate "$rate" --duration "${DURATION:-10}" --mode pulsegate \
    --target "ws://127.0.0.1:$GP" --publish raw --redis "redis://127.0.0.1:$RP" --threads 1 \
    --gateway-pid "$gw" --redis-pid "$rpid" --label "$label" --json "$OUT/$label.json" "$@" \
    >"$OUT/$label.txt" 2>"$OUT/$label.err" || status=$?
[ -n "$perf_pid" ] && wait "$perf_pid"
curl -s "127.0.0.1:$GP/metrics" | grep -E "^pulsegate_(frames_sent|write_batches)_total" \
    >"$OUT/$label.metrics" || true
kill "$gw"
for _ in $(seq 100); do kill -0 "$gw" 2>/dev/null || break; sleep 0.1; done
cat "$OUT/$label.metrics"
grep -E "delivered  |latency|CPU seconds|RSS|busy" "$OUT/$label.txt" || tail -3 "$OUT/$label.err"
exit "$status"
