#!/usr/bin/env bash
# Audit benchmark: drain time of a 100,000-event backlog, then audit lag at a
# sustained ingest rate. Loopback only; starts and stops its own redis-server,
# PostgreSQL cluster and gateway. Usage: scripts/bench-audit.sh [EVENTS] [RATE] [SECONDS]
# Environment: PULSEGATE_BIN (the gateway binary), PG_OPTS (extra postgres
# options, e.g. PG_OPTS="-c shared_buffers=1GB"), MIX (what the backlog holds:
# `posts`, the default and the worst case, every event a new variant; or
# `sim`, the simulator's mix of posts, performance updates and kills).
# The sustained phase always publishes posts.
set -euo pipefail
EVENTS="${1:-100000}"; RATE="${2:-5000}"; SECS="${3:-30}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-audit"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"
PGBIN="$(bash "$SCRIPT_DIR/ensure-postgres.sh" --install-only)"
bash "$SCRIPT_DIR/ensure-redis.sh" --install-only >/dev/null
BIN="${PULSEGATE_BIN:-target/release/pulsegate}"
[[ -x "$BIN" ]] || cargo build --release --bin pulsegate
RPORT=6461; PPORT=5461; GPORT=8461
WORK="$(mktemp -d /tmp/pulsegate-bench-XXXX)"; chmod 755 "$WORK"
asuser() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [[ -n "${PUB:-}" ]] && kill "$PUB" 2>/dev/null || true
  [[ -n "${GW:-}" ]] && kill "$GW" 2>/dev/null && wait "$GW" 2>/dev/null || true
  redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true
  asuser "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
redis-server --port $RPORT --save '' --appendonly no --daemonize yes >/dev/null
[[ $(id -u) == 0 ]] && chown postgres "$WORK"
asuser "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres --no-sync >/dev/null
asuser "$PGBIN/pg_ctl" -D "$WORK/pg" -w -l "$WORK/pg.log" -o "-p $PPORT -k $WORK -c listen_addresses=127.0.0.1 ${PG_OPTS:-}" start >/dev/null
asuser "$PGBIN/createdb" -h 127.0.0.1 -p $PPORT -U postgres pulsegate
DB="postgres://postgres@127.0.0.1:$PPORT/pulsegate"
redis-cli -p $RPORT -x FUNCTION LOAD REPLACE < lua/pulse.lua >/dev/null
metric() { curl -s "127.0.0.1:$GPORT/metrics" | awk -v m="$1" '$1==m {print $2}'; }
# One psql session answers every query: starting psql for each poll would
# cost more CPU than the query, taken from the gateway and Postgres measured.
coproc PSQL { "$PGBIN/psql" -h 127.0.0.1 -p $PPORT -U postgres -d pulsegate -At 2>&1; }
exec {SQL_IN}>&"${PSQL[1]}" {SQL_OUT}<&"${PSQL[0]}"
# The first line of the answer, or nothing on an error (e.g. before the
# gateway's migrations ran); reads up to a marker so no line is left over.
sql() {
  local line ans=""
  printf "%s;\nSELECT '--end--';\n" "$1" >&"$SQL_IN"
  while read -t 30 -r line <&"$SQL_OUT" && [[ "$line" != --end-- ]]; do
    [[ -z "$ans" ]] && ans=$line
  done
  [[ "$ans" == *ERROR* || "$ans" == psql:* ]] && ans=""
  echo "$ans"
}
# count(*) scans the whole table (~36 ms at 200,000 rows): only for the
# totals, never in a polling loop, where it would compete with the writer.
rows() { local n; n=$(sql "SELECT count(*) FROM dashboard_events"); [[ "$n" =~ ^[0-9]+$ ]] && echo "$n" || echo 0; }
# The newest entry of each named stream (a b c d), as SQL VALUES rows.
newest() {
  local vals="" p id
  for p in "$@"; do
    id=$(redis-cli -p $RPORT XREVRANGE "pulse:{bench_$p}:stream" + - COUNT 1 | head -n 1)
    vals+="${vals:+,}('bench_$p',${id%-*},${id#*-})"
  done
  echo "$vals"
}
# True once Postgres holds every entry listed by `newest` (one index lookup
# each). A stream is committed in order of arrival (one worker per stream,
# no crash here), so its newest entry lands last; the final count(*) checks
# that nothing is missing.
holds() {
  local n; n=$(grep -o "('" <<<"$1" | wc -l)
  [[ "$(sql "SELECT count(*) FROM dashboard_events WHERE (persona_id, stream_ms, stream_seq) IN (VALUES $1)")" == "$n" ]]
}

MIX="${MIX:-posts}"
log "filling a backlog of ~$EVENTS events ($MIX) over 4 personas (gateway not running)"
case "$MIX" in
  posts)
    for p in a b c d; do
      redis-benchmark -p $RPORT -c 20 -n $((EVENTS / 4)) -r 1000000000 -q FCALL pulse_ingest 1 "pulse:{bench_$p}" \
        '{"type":"variant_posted","variant_id":"v__rand_int__","content":"benchmark variant","predicted_er":0.05,"pattern_used":"p"}' >/dev/null
    done ;;
  sim)
    "$BIN" simulate --redis-url redis://127.0.0.1:$RPORT --personas bench_a,bench_b,bench_c,bench_d \
      --rate 100000 --events "$EVENTS" >"$WORK/simulate.log" 2>&1 ||
      { tail -n 20 "$WORK/simulate.log" >&2; die "pulsegate simulate failed"; } ;;
  *) die "MIX must be posts or sim, not '$MIX'" ;;
esac
log "backlog event types: $(for p in a b c d; do redis-cli -p $RPORT XRANGE "pulse:{bench_$p}:stream" - + | grep -o '"event_type":"[a-z_]*"'; done | sort | uniq -c | awk '{printf "%s %s  ", $1, $2}')"
TOTAL=0; for p in a b c d; do TOTAL=$((TOTAL + $(redis-cli -p $RPORT XLEN "pulse:{bench_$p}:stream"))); done
log "backlog: $TOTAL stream entries"

"$BIN" serve --listen 127.0.0.1:$GPORT --redis-url redis://127.0.0.1:$RPORT --database-url "$DB" --log-level warn >"$WORK/gw.log" 2>&1 &
GW=$!
START=$(date +%s.%N)
DEADLINE=$((SECONDS + 180))
FIRST=""
BACKLOG_NEWEST=$(newest a b c d)
until holds "$BACKLOG_NEWEST"; do
  if [[ -z "$FIRST" && "$(sql "SELECT EXISTS (SELECT FROM dashboard_events)")" == t ]]; then
    FIRST=$(date +%s.%N); FIRSTN=$(rows)
  fi
  if ((SECONDS > DEADLINE)); then
    tail -n 20 "$WORK/gw.log" >&2
    die "the backlog did not drain within 180 s ($(rows) of $TOTAL rows)"
  fi
  sleep 0.1
done
END=$(date +%s.%N)
[[ "$(rows)" -ge "$TOTAL" ]] || die "the newest entries are in Postgres but only $(rows) of $TOTAL rows"

DRAIN=$(echo "$END - $START" | bc)
echo "drain: $TOTAL rows in ${DRAIN}s (includes start-up, migrations and stream discovery) = $(echo "$TOTAL / $DRAIN" | bc) rows/s"
[[ -n "$FIRST" ]] && echo "drain after the first rows were seen: $((TOTAL - FIRSTN)) rows in $(echo "$END - $FIRST" | bc)s = $(echo "($TOTAL - $FIRSTN) / ($END - $FIRST)" | bc) rows/s"
echo "batches: $(metric pulsegate_audit_batches_total), rows written: $(metric pulsegate_audit_rows_written_total)"

# The lag gauges are measured once a second: wait for a measurement taken
# after the drain, or the first sample would report the backlog's age.
for _ in $(seq 50); do [[ "$(metric pulsegate_audit_lag_entries)" == 0 ]] && break; sleep 0.1; done

log "sustained: $RATE events/s for ${SECS}s (redis-benchmark, 10 connections, in chunks of one second)"
added() { local n=0 p; for p in a b c d; do n=$((n + $(redis-cli -p $RPORT XINFO STREAM "pulse:{bench_$p}:stream" | awk 'f {print; exit} /^entries-added$/ {f=1}'))); done; echo $n; }
# The publisher runs beside the poller, so that a chunk still being written
# never delays (nor cuts short) the measurement of the one before. Each
# chunk's line: when its last event was acknowledged, its newest entry, and
# how long publishing it took.
CHUNKS="$WORK/chunks"; : >"$CHUNKS"
(
  for ((s = 0; s < SECS; s++)); do
    t0=$(date +%s.%N)
    redis-benchmark -p $RPORT -c 10 -n "$RATE" -r 1000000000 -q FCALL pulse_ingest 1 'pulse:{bench_a}' \
      '{"type":"variant_posted","variant_id":"s__rand_int__","content":"sustained","predicted_er":0.05,"pattern_used":"p"}' >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 $(newest a) $(echo "$t1 - $t0" | bc)" >>"$CHUNKS"
    rest=$(echo "1 - ($(date +%s.%N) - $t0)" | bc); [[ "$rest" == -* ]] || sleep "$rest"
  done
) &
PUB=$!
# End to end: from a chunk's last event until Postgres holds it (and so every
# entry before it; the final count checks), polled every 20 ms.
LAGS=(); SUMP=0; MAXLAG=0; SUMLAG=0; N=0; next=1; sampled=0
while ((next <= SECS)); do
  now=$(date +%s.%N)
  if (($(echo "$now - $sampled >= 1" | bc))); then
    lag=$(metric pulsegate_audit_lag_seconds); lag=${lag:-0}; sampled=$now
    MAXLAG=$(echo "if ($lag > $MAXLAG) $lag else $MAXLAG" | bc); SUMLAG=$(echo "$SUMLAG + $lag" | bc); N=$((N + 1))
  fi
  line=$(sed -n "${next}p" "$CHUNKS")
  if [[ -n "$line" ]]; then
    read -r t1 vals took <<<"$line"
    if holds "$vals"; then
      LAGS+=("$(echo "$(date +%s.%N) - $t1" | bc)"); SUMP=$(echo "$SUMP + $took" | bc); next=$((next + 1))
      continue
    fi
    (($(echo "$now - $t1 < 60" | bc))) || die "chunk $next was not in Postgres 60 s after it was published"
  fi
  sleep 0.02
done
wait "$PUB"
echo "sustained ${RATE}/s for ${SECS}s: audit lag (gauge, sampled each second) mean $(echo "scale=3; $SUMLAG / $N" | bc)s, max ${MAXLAG}s; lag entries at end: $(metric pulsegate_audit_lag_entries)"
printf '%s\n' "${LAGS[@]}" | sort -n | awk -v took="$(echo "scale=3; $SUMP / $SECS" | bc)" -v rate="$RATE" '
  { l[NR] = $1; s += $1; if ($1 > 1) over++ }
  END { printf "end to end, last event of each second'"'"'s chunk → in Postgres: median %.3fs, mean %.3fs, max %.3fs; %d of %d chunks over 1 s\n", l[int((NR + 1) / 2)], s / NR, l[NR], over, NR
        if (took > 1) printf "note: publishing a chunk took %ss on average, so the rate reached was %d events/s, not %d\n", took, rate / took, rate }'
sleep 2
R=$(rows); A=$(added)
echo "rows at the end: $R of $A stream entries"
[[ "$R" == "$A" ]] || die "Postgres holds $R rows for $A stream entries"
