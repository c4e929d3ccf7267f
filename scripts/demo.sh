#!/usr/bin/env bash
# The demo: a live gateway fed by a simulated monitor.
#
#   scripts/demo.sh [--instances N] [--redis standalone|cluster|sentinel]
#
# With --instances N the gateways are N processes behind HAProxy
# (scripts/cluster.sh), reached on the same address as the single gateway.
# With --redis cluster the gateway uses a local Redis Cluster of 3 primaries
# and 3 replicas (scripts/redis-cluster.sh), with --redis sentinel a primary,
# a replica and three sentinels (scripts/redis-sentinel.sh); both are left
# running after the demo (stop them with `down`). REDIS_URL is then theirs.
#
# 1. makes sure Redis runs (scripts/ensure-redis.sh; starts a project-local one)
#    and PostgreSQL (scripts/ensure-postgres.sh; a throwaway cluster in the
#    demo's state dir, run as the postgres OS user when root), so the audit
#    trail, the variant history and the kill analytics work
# 2. cargo build --release --bin pulsegate
# 3. starts `pulsegate serve` in the background and waits for GET /readyz = 200
# 4. runs `pulsegate simulate` in the foreground: events for persona_alpha,
#    persona_beta and persona_gamma, until Ctrl-C
# On exit (Ctrl-C, error, or DEMO_DURATION elapsed) the gateway is stopped,
# and PostgreSQL too when the demo started it.
#
# Environment:
#   REDIS_URL         default redis://127.0.0.1:6379
#   DATABASE_URL      default postgres://pulsegate@127.0.0.1:5434/pulsegate
#   DEMO_NO_DATABASE=1  no PostgreSQL (the audit routes then answer 503)
#   DEMO_STATE_DIR    default .local/demo (gateway log, PostgreSQL cluster)
#   PULSEGATE_LISTEN  default 127.0.0.1:8081
#   DEMO_DURATION     stop by itself after this many seconds (CI smoke tests)
#   DEMO_RATE         passed to `simulate --rate` when set
#   DEMO_PERSONAS     default persona_alpha,persona_beta,persona_gamma
#   PULSEGATE_CONFIG  passed to `serve --config` when set
#   DEMO_READY_TIMEOUT seconds to wait for /readyz (default 60)
#   SKIP_BUILD=1      use the existing target/release/pulsegate
#   DEMO_BIN          use this binary instead of building (implies SKIP_BUILD)
# The gateway's log goes to $DEMO_STATE_DIR/gateway.log.
set -euo pipefail

instances=1
redis_topology=standalone
while [[ $# -gt 0 ]]; do
  case "$1" in
    --redis)
      redis_topology="${2:-}"
      shift
      ;;
    --redis=*) redis_topology="${1#*=}" ;;
    --instances)
      instances="${2:-}"
      shift
      ;;
    --instances=*) instances="${1#*=}" ;;
    -h | --help)
      sed -n '2,39p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo: unknown argument '$1' (see --help)" >&2
      exit 64
      ;;
  esac
  shift
done
[[ "$instances" =~ ^[1-9][0-9]*$ ]] || {
  echo "demo: --instances takes a positive number, got '$instances'" >&2
  exit 64
}

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="demo"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
# Not the development cluster's port (5433): the demo's cluster is its own,
# stopped when the demo ends.
DATABASE_URL="${DATABASE_URL:-postgres://pulsegate@127.0.0.1:5434/pulsegate}"
PULSEGATE_LISTEN="${PULSEGATE_LISTEN:-127.0.0.1:8081}"
DEMO_PERSONAS="${DEMO_PERSONAS:-persona_alpha,persona_beta,persona_gamma}"
DEMO_DURATION="${DEMO_DURATION:-}"
if [[ -n "$DEMO_DURATION" && ! "$DEMO_DURATION" =~ ^[0-9]+$ ]]; then
  die "DEMO_DURATION must be a whole number of seconds, got '$DEMO_DURATION'"
fi

# host:port, [v6]:port
listen_port="${PULSEGATE_LISTEN##*:}"
listen_host="${PULSEGATE_LISTEN%:*}"
[[ "$listen_port" =~ ^[0-9]+$ ]] || die "PULSEGATE_LISTEN must be HOST:PORT, got '$PULSEGATE_LISTEN'"
# Where to connect: a wildcard listen address is reached through loopback.
case "$listen_host" in
  0.0.0.0 | "" | "*") connect_host=127.0.0.1 ;;
  "[::]") connect_host="[::1]" ;;
  *) connect_host="$listen_host" ;;
esac
base_http="http://$connect_host:$listen_port"
base_ws="ws://$connect_host:$listen_port"

bin="${DEMO_BIN:-$REPO_ROOT/target/release/pulsegate}"
[[ -n "${DEMO_BIN:-}" ]] && SKIP_BUILD=1
state_dir="${DEMO_STATE_DIR:-$REPO_ROOT/.local/demo}"
mkdir -p "$state_dir"
state_dir="$(cd "$state_dir" && pwd)"
gateway_log="$state_dir/gateway.log"
gateway_pid=""
cluster_started=0
pg_started=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ "$cluster_started" == 1 ]]; then
    bash "$SCRIPT_DIR/cluster.sh" down >&2 || true
  fi
  if [[ -n "$gateway_pid" ]] && kill -0 "$gateway_pid" 2>/dev/null; then
    log "stopping gateway (pid $gateway_pid)"
    kill -TERM "$gateway_pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
      kill -0 "$gateway_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$gateway_pid" 2>/dev/null; then
      warn "gateway did not stop within 10s of SIGTERM; sending SIGKILL"
      kill -KILL "$gateway_pid" 2>/dev/null || true
    fi
    wait "$gateway_pid" 2>/dev/null || true
    log "gateway stopped (log: $gateway_log)"
  fi
  if [[ "$pg_started" == 1 ]]; then
    PG_BASE_DIR="$state_dir/pg" bash "$SCRIPT_DIR/ensure-postgres.sh" --stop >&2 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Redis, and PostgreSQL for the audit trail.
case "$redis_topology" in
  standalone) bash "$SCRIPT_DIR/ensure-redis.sh" >/dev/null ;;
  cluster) REDIS_URL="$(bash "$SCRIPT_DIR/redis-cluster.sh" up)" ;;
  sentinel) REDIS_URL="$(bash "$SCRIPT_DIR/redis-sentinel.sh" up)" ;;
  *) die "--redis takes standalone, cluster or sentinel, got '$redis_topology'" ;;
esac
export REDIS_URL
log "Redis ($redis_topology): $REDIS_URL"
if [[ "${DEMO_NO_DATABASE:-0}" == 1 ]]; then
  unset DATABASE_URL
  log "DEMO_NO_DATABASE=1: no PostgreSQL; the audit routes answer 503"
else
  parse_url "$DATABASE_URL"
  port_open "${URL_HOST:-127.0.0.1}" "${URL_PORT:-5432}" || pg_started=1
  PG_BASE_DIR="$state_dir/pg" bash "$SCRIPT_DIR/ensure-postgres.sh" >/dev/null ||
    die "PostgreSQL could not be started for $DATABASE_URL (or run with DEMO_NO_DATABASE=1)"
  export DATABASE_URL
fi

# The gateway maps every PULSEGATE_* variable onto a config key and rejects
# unknown keys: drop the test-only ones (scripts/test.sh exports them).
unset PULSEGATE_REDIS_SERVER PULSEGATE_PG_BIN

# 2. Build.
if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
  [[ -x "$bin" ]] || die "SKIP_BUILD=1 but $bin does not exist"
  log "SKIP_BUILD=1: using $bin"
else
  log "cargo build --release --bin pulsegate"
  cargo build --release --bin pulsegate
fi

# 3. Gateway(s).
if [[ "$instances" -gt 1 ]]; then
  log "starting $instances gateways behind HAProxy on $PULSEGATE_LISTEN (scripts/cluster.sh)"
  CLUSTER_PUBLIC="$connect_host:$listen_port" CLUSTER_BIN="$bin" \
    bash "$SCRIPT_DIR/cluster.sh" up "$instances" >&2
  cluster_started=1
else
  if port_open "$connect_host" "$listen_port"; then
    die "something already listens on $connect_host:$listen_port; stop it or set PULSEGATE_LISTEN"
  fi
  # The database URL reaches the gateway through DATABASE_URL, not argv
  # (where ps shows it, password and all).
  serve_args=(serve --listen "$PULSEGATE_LISTEN" --redis-url "$REDIS_URL")
  if [[ -n "${PULSEGATE_CONFIG:-}" ]]; then
    serve_args+=(--config "$PULSEGATE_CONFIG")
  fi
  log "starting: pulsegate ${serve_args[*]} (log: $gateway_log)"
  "$bin" "${serve_args[@]}" >"$gateway_log" 2>&1 &
  gateway_pid=$!

  deadline=$((SECONDS + ${DEMO_READY_TIMEOUT:-60}))
  status=""
  while :; do
    if ! kill -0 "$gateway_pid" 2>/dev/null; then
      tail -n 30 "$gateway_log" >&2 || true
      gateway_pid=""
      die "gateway exited during startup; see $gateway_log"
    fi
    status="$(http_status "$connect_host" "$listen_port" /readyz || true)"
    [[ "$status" == 200 ]] && break
    if ((SECONDS >= deadline)); then
      tail -n 30 "$gateway_log" >&2 || true
      die "gateway not ready after ${DEMO_READY_TIMEOUT:-60}s (last GET /readyz status: ${status:-no answer}); see $gateway_log"
    fi
    sleep 0.3
  done
fi
log "gateway ready (GET /readyz -> 200)"

first_persona="${DEMO_PERSONAS%%,*}"
if [[ -n "${DATABASE_URL:-}" ]]; then
  audit_lines="  Audit trail (events):  $base_http/api/events/$first_persona
  Early kills:           $base_http/api/kills/$first_persona
  Variant history:       $base_http/api/variants/$first_persona/{variant_id}/history
                         (variant ids: $base_http/api/variants/$first_persona/active)
  PostgreSQL:            $(sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$DATABASE_URL")"
else
  audit_lines="  Audit trail:           off (DEMO_NO_DATABASE=1)"
fi
cat <<EOF

  pulsegate demo is running.

  Dashboard (browser):   $base_http/dashboard/$first_persona
  WebSocket stream:      $base_ws/dashboard/ws/$first_persona
  Live metrics (REST):   $base_http/api/metrics/$first_persona
  Optimization:          $base_http/api/optimization/$first_persona
$audit_lines
  Prometheus metrics:    $base_http/metrics
  Personas:              ${DEMO_PERSONAS//,/ }
  Gateway log:           $([[ "$instances" -gt 1 ]] && echo ".local/cluster/gw*.log ($instances gateways behind HAProxy)" || echo "tail -f $gateway_log")

  Watch the stream from a terminal, e.g. with websocat (cargo install websocat):
    websocat $base_ws/dashboard/ws/$first_persona
  or open the dashboard URL in a browser. Metrics:
    curl -s $base_http/metrics | grep '^pulsegate'

EOF
if [[ -n "$DEMO_DURATION" ]]; then
  echo "  Stopping by itself after ${DEMO_DURATION}s (DEMO_DURATION)."
else
  echo "  Press Ctrl-C to stop."
fi
echo

# 4. Simulated monitor.
sim_args=(simulate --redis-url "$REDIS_URL" --personas "$DEMO_PERSONAS")
if [[ -n "${DEMO_RATE:-}" ]]; then
  sim_args+=(--rate "$DEMO_RATE")
fi
log "running: pulsegate ${sim_args[*]}"
if [[ -n "$DEMO_DURATION" ]]; then
  rc=0
  timeout --foreground --signal=INT --kill-after=10 "$DEMO_DURATION" "$bin" "${sim_args[@]}" || rc=$?
  # 124: stopped by the timeout, as asked.
  if [[ "$rc" -ne 0 && "$rc" -ne 124 ]]; then
    die "simulator exited with status $rc"
  fi
  if [[ -n "$gateway_pid" ]]; then
    kill -0 "$gateway_pid" 2>/dev/null || die "gateway died during the demo; see $gateway_log"
  fi
  status="$(http_status "$connect_host" "$listen_port" /readyz || true)"
  [[ "$status" == 200 ]] || die "gateway no longer ready at the end (GET /readyz: ${status:-no answer})"
  log "DEMO_DURATION=${DEMO_DURATION}s elapsed; gateway still ready; shutting down"
else
  rc=0
  "$bin" "${sim_args[@]}" || rc=$?
  # 130: Ctrl-C.
  [[ "$rc" -eq 0 || "$rc" -eq 130 ]] || die "simulator exited with status $rc"
fi
