#!/usr/bin/env bash
# `FCALL pulse_ingest` beside a plain `PUBLISH` of a message of the same
# size, in the same run, unpipelined (redis-benchmark -c 50): requests/s and
# redis-server CPU per call (utime+stime from /proc around each run, less
# sensitive to a busy machine than requests/s). Ingest runs twice per round:
# on a stream without consumer group, and with an audit group (as in a
# deployment with the audit on), where every call also checks the group's
# backlog (XINFO GROUPS).
# Loopback only; starts and stops its own redis-server.
# Usage: scripts/bench-ingest.sh [ROUNDS] [INGEST_CALLS]
# PULSE_LUA=<file> loads another version of the library (A/B runs).
set -euo pipefail
ROUNDS="${1:-5}"; CALLS="${2:-80000}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-ingest"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"
bash "$SCRIPT_DIR/ensure-redis.sh" --install-only >/dev/null
command -v redis-benchmark >/dev/null || die "redis-benchmark not found (Debian package redis-tools)"
# The stream stays below the library's default backlog limit
# (stream_maxlen 100000 - backlog_margin 10000), or calls would be refused.
((CALLS <= 90000)) || die "INGEST_CALLS must be at most 90000"
PORT=6452
R="redis-cli -p $PORT"
cleanup() { $R shutdown nosave >/dev/null 2>&1 || true; }
trap cleanup EXIT
redis-server --port $PORT --save '' --appendonly no --daemonize yes >/dev/null
wait_for_port 127.0.0.1 $PORT 10
PID=$($R INFO server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
$R -x FUNCTION LOAD REPLACE <"${PULSE_LUA:-lua/pulse.lua}" >/dev/null
$R FCALL pulse_ingest 1 'pulse:{bench}' \
  '{"type":"variant_posted","variant_id":"var_b","content":"c","predicted_er":0.05,"pattern_used":"p"}' >/dev/null
# ~300 bytes, the size of the message pulse_ingest publishes.
PAYLOAD=$(head -c 300 /dev/zero | tr '\0' x)
# __rand_int__ is zero-padded (000000001234), which JSON and so the library
# refuse as a number; a leading 1 makes it a 13-digit one.
EVENT='{"type":"performance_update","variant_id":"var_b","view_count":1__rand_int__,"interaction_count":1__rand_int__}'

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
# run N redis-benchmark-args... -> "<requests/s> <µs of redis CPU per call>"
run() {
  local n=$1; shift
  local before after rps
  before=$(cpu_ticks)
  rps=$(redis-benchmark -p $PORT -c 50 -n "$n" -q "$@" | tr '\r' '\n' |
    grep -o '[0-9.]* requests per second' | tail -1 | cut -d. -f1)
  after=$(cpu_ticks)
  echo "$rps $(((after - before) * 1000000 / $(getconf CLK_TCK) / n))"
}
fresh_stream() {
  $R DEL 'pulse:{bench}:stream' >/dev/null
  [[ "$1" == group ]] && $R XGROUP CREATE 'pulse:{bench}:stream' audit '$' MKSTREAM >/dev/null
  return 0
}

log "load average: $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds"
printf '%-5s | %-16s | %-16s %-6s | %-16s %-6s\n' round "PUBLISH req/s µs" \
  "ingest req/s µs" ratio "+group req/s µs" ratio
for ((i = 1; i <= ROUNDS; i++)); do
  read -r pub pub_us < <(run 200000 PUBLISH 'pulse:{bench}:events' "$PAYLOAD")
  fresh_stream none
  read -r ing ing_us < <(run "$CALLS" -r 1000000000 FCALL pulse_ingest 1 'pulse:{bench}' "$EVENT")
  fresh_stream group
  read -r grp grp_us < <(run "$CALLS" -r 1000000000 FCALL pulse_ingest 1 'pulse:{bench}' "$EVENT")
  printf '%-5s | %7s %8s | %7s %8s %-6s | %7s %8s %-6s\n' "$i" "$pub" "$pub_us" \
    "$ing" "$ing_us" "$(echo "scale=3; $ing / $pub" | bc)" \
    "$grp" "$grp_us" "$(echo "scale=3; $grp / $pub" | bc)"
done
refused=$($R INFO errorstats | grep -c BACKLOG || true)
((refused == 0)) || die "some calls were refused with BACKLOG: lower INGEST_CALLS"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
