#!/usr/bin/env bash
# Analytics and point-in-time query times on 1,000,000 audit rows.
#
#   scripts/bench-analytics.sh [ROWS] [RUNS]
#
# Starts a throwaway PostgreSQL cluster, applies the audit migrations
# (src/audit/migrations/*.sql, as `pulsegate migrate` does), generates ROWS
# rows of `dashboard_events` with generate_series (10 personas, 30 days of
# event time, each persona 1 post then 99 performance updates per variant,
# every other variant killed at its 100th event; the messages shaped as
# lua/pulse.lua writes them), the same number of `channel_events` rows (10
# namespaces x 1,000 channels, messages of 5 types over the same 30 days),
# VACUUM ANALYZE, then times every statement the
# gateway sends for the analytics and the point-in-time rebuild with
# `EXPLAIN (ANALYZE, BUFFERS) EXECUTE`, RUNS times each (default 5), and
# prints the median execution time. The statements are the gateway's own:
# printed by `cargo test --lib print_bench_sql -- --ignored`
# (src/bench_sql.rs). Plans go to $OUT (default /tmp/bench-analytics).
set -euo pipefail
ROWS="${1:-1000000}"; RUNS="${2:-5}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-analytics"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"
PGBIN="$(bash "$SCRIPT_DIR/ensure-postgres.sh" --install-only)"
OUT="${OUT:-/tmp/bench-analytics}"; mkdir -p "$OUT"
PPORT="${PPORT:-5471}"
WORK="$(mktemp -d /tmp/pulsegate-bench-analytics-XXXX)"; chmod 755 "$WORK"
asuser() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  asuser "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

log "the gateway's statements (cargo test --lib print_bench_sql)"
BENCH_SQL_OUT="$OUT/statements.sql" cargo test -q -p pulsegate --lib print_bench_sql -- --ignored >/dev/null

[[ $(id -u) == 0 ]] && chown postgres "$WORK"
asuser "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres --no-sync >/dev/null
asuser "$PGBIN/pg_ctl" -D "$WORK/pg" -w -l "$WORK/pg.log" \
  -o "-p $PPORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off ${PG_OPTS:-}" start >/dev/null
asuser "$PGBIN/createdb" -h 127.0.0.1 -p $PPORT -U postgres pulsegate
psql_() { "$PGBIN/psql" -h 127.0.0.1 -p $PPORT -U postgres -d pulsegate -v ON_ERROR_STOP=1 -qAt "$@"; }
for f in src/audit/migrations/*.sql; do psql_ -f "$f" >/dev/null; done

# Event time: 30 days ending at END (a whole hour), 25.92 s apart per persona.
END_MS=$(( ($(date +%s) / 3600) * 3600 * 1000 ))
PER=$(( ROWS / 10 ))
STEP=$(( 30 * 86400000 / PER ))
START_MS=$(( END_MS - PER * STEP ))
log "generating $ROWS rows (10 personas x $PER events, $STEP ms apart)"
t0=$(date +%s.%N)
psql_ <<SQL
INSERT INTO dashboard_events (persona_id, event_id, stream_ms, stream_seq, event_type, variant_id, event_data, created_at)
SELECT persona, ms || '-0', ms, 0, kind, vid,
       jsonb_build_object('type', 'variant_update', 'timestamp', to_char(to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                          'offset', ms || '-0', 'data', data),
       to_timestamp(ms / 1000.0)
FROM (
  SELECT 'p' || (i % 10) AS persona, $START_MS + (i / 10) * $STEP + (i % 10) AS ms,
         'v' || ((i / 10) / 100) AS vid, (i / 10) % 100 AS k, ((i / 10) / 100) AS n,
         $START_MS + ((i / 10) / 100) * 100 * $STEP + (i % 10) AS posted
  FROM generate_series(0::bigint, $ROWS - 1) AS i
) g,
LATERAL (SELECT
  CASE WHEN k = 0 THEN 'variant_posted' WHEN k = 99 AND n % 2 = 0 THEN 'early_kill' ELSE 'performance_update' END AS kind) t,
LATERAL (SELECT CASE t.kind
  WHEN 'variant_posted' THEN jsonb_build_object('event_type', 'variant_posted', 'variant_id', vid,
       'content', 'Variant ' || vid || ' of ' || persona, 'predicted_er', 0.05, 'pattern_used', 'pat' || (n % 20),
       'posted_at', ms, 'status', 'active', 'view_count', 0, 'interaction_count', 0, 'current_er', 0)
  WHEN 'early_kill' THEN jsonb_build_object('event_type', 'early_kill', 'variant_id', vid, 'status', 'killed',
       'kill_reason', 'low_engagement', 'final_er', 0.01, 'sample_size', 4900, 'killed_at', ms, 'posted_at', posted,
       'time_to_kill_minutes', round((ms - posted) / 60000.0, 2), 'current_er', 0.02, 'view_count', 4900, 'interaction_count', 98)
  ELSE jsonb_build_object('event_type', 'performance_update', 'variant_id', vid, 'status', 'active',
       'view_count', k * 50, 'interaction_count', k * (1 + n % 5), 'current_er', round((1 + n % 5) / 50.0, 6),
       'predicted_er', 0.05, 'performance_vs_prediction', 0, 'er_5m', 0.02, 'er_15m', 0.02, 'er_60m', 0.02,
       'view_delta', 50, 'interaction_delta', 1 + n % 5, 'stale', false, 'last_updated', ms)
  END AS data) d;
INSERT INTO channel_events (namespace, channel_id, event_id, stream_ms, stream_seq, event_type, event_data, created_at)
SELECT ns, cid, ms || '-0', ms, 0, kind,
       jsonb_build_object('type', kind, 'offset', ms || '-0',
                          'data', jsonb_build_object('task_id', cid, 'seq', i / 10, 'line', 'output line ' || i)),
       to_timestamp(ms / 1000.0)
FROM (
  SELECT 'ns' || (i % 10) AS ns, ((i / 10) % 1000)::text AS cid, $START_MS + (i / 10) * $STEP + (i % 10) AS ms,
         (ARRAY['task_output', 'task_output', 'task_output', 'task_progress', 'task_status'])[1 + (i / 10) % 5] AS kind, i
  FROM generate_series(0::bigint, $ROWS - 1) AS i
) g;
VACUUM ANALYZE dashboard_events;
VACUUM ANALYZE channel_events;
SQL
log "generated in $(echo "$(date +%s.%N) - $t0" | bc) s; tables $(psql_ -c "SELECT pg_size_pretty(pg_total_relation_size('dashboard_events')) || ' and ' || pg_size_pretty(pg_total_relation_size('channel_events'))")"

iso() { date -u -d "@$(( $1 / 1000 ))" +%Y-%m-%dT%H:%M:%SZ; }
DAY=86400000
# name | EXECUTE arguments (persona p3: 100,000 rows)
CASES=(
  "by_type|'p3', '$(iso $((END_MS - DAY)))', '$(iso $END_MS)'|summary: events by type, 24 h"
  "kill_rate|'p3', '$(iso $((END_MS - DAY)))', '$(iso $END_MS)'|summary: kill rate, 24 h"
  "mean_er|'p3', '$(iso $((END_MS - DAY)))', '$(iso $END_MS)'|summary: mean ER, 24 h"
  "minutes_to_kill|'p3', '$(iso $((END_MS - DAY)))', '$(iso $END_MS)'|summary: minutes to kill, 24 h"
  "by_type|'p3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|summary: events by type, 30 d"
  "kill_rate|'p3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|summary: kill rate, 30 d"
  "mean_er|'p3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|summary: mean ER, 30 d"
  "minutes_to_kill|'p3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|summary: minutes to kill, 30 d"
  "events_per_hour|'p3', '$(iso $((END_MS - DAY)))', '$(iso $END_MS)'|histogram: events per hour, 24 h"
  "events_per_hour|'p3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|histogram: events per hour, 30 d (720 buckets)"
  "posts_per_day|'p3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|histogram: posts per day, 30 d"
  "er_histogram|'p3', '$(iso $((END_MS - DAY)))', '$(iso $END_MS)'|histogram: ER buckets, 24 h"
  "er_histogram|'p3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|histogram: ER buckets, 30 d"
  "channel_types|'ns3', '$(iso $((END_MS - DAY)))', '$(iso $END_MS)'|namespace summary: messages by type, 24 h"
  "channel_count|'ns3', '$(iso $((END_MS - DAY)))', '$(iso $END_MS)'|namespace summary: channels, 24 h"
  "channel_types|'ns3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|namespace summary: messages by type, 30 d"
  "channel_count|'ns3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|namespace summary: channels, 30 d"
  "channel_histogram_hour|'ns3', '$(iso $((END_MS - DAY)))', '$(iso $END_MS)'|namespace histogram: by type per hour, 24 h"
  "channel_histogram_hour|'ns3', '$(iso $((END_MS - 30 * DAY)))', '$(iso $END_MS)'|namespace histogram: by type per hour, 30 d"
  "pit_offset|'p3', $((END_MS - 15 * DAY))|snapshot at: offset"
  "pit_events|'p3', $((END_MS - 15 * DAY))|snapshot at: posts and kills (+ newest update each)"
  "pit_ticks|'p3', $((END_MS - 15 * DAY)), '$(iso $((END_MS - 15 * DAY - 3600000)))', '$(iso $((END_MS - 15 * DAY + 3600000)))'|snapshot at: the last hour's updates"
)
printf '\n%-58s %12s %10s\n' "query (persona or namespace: 100,000 of the $ROWS rows)" "median ms" "rows"
for c in "${CASES[@]}"; do
  IFS='|' read -r name args label <<<"$c"
  times=()
  plan="$OUT/${label//[^A-Za-z0-9]/_}.txt"
  for _ in $(seq "$RUNS"); do
    psql_ -f "$OUT/statements.sql" -c "EXPLAIN (ANALYZE, BUFFERS) EXECUTE $name($args)" >"$plan" 2>&1 || { cat "$plan"; exit 1; }
    times+=("$(awk '/Execution Time/ {print $3}' "$plan")")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  nrows=$(grep -m1 -o 'rows=[0-9]* loops' "$plan" | tail -n1 | sed 's/rows=//; s/ loops//')
  printf '%-58s %12s %10s\n' "$label" "$median" "$nrows"
done
log "plans: $OUT"
