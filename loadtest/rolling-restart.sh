#!/usr/bin/env bash
# A rolling restart under load, end to end: Redis (if none answers), N
# gateways behind HAProxy (scripts/cluster.sh up N), the `rolling-restart`
# scenario through the balancer (or straight to the gateways: DIRECT=1), which runs `scripts/cluster.sh
# restart-rolling` 5 s into publishing; then everything this script started
# is stopped again, whatever happened.
#
#   loadtest/rolling-restart.sh [N] [pulsegate-loadtest run flags...]
#   loadtest/rolling-restart.sh 3 --subscribers 8000 --rate 1000 --json rr.json
#
# N: gateway instances (default 3). Flags go to `pulsegate-loadtest run
# rolling-restart` as they are (e.g. --subscribers, --personas, --rate,
# --mode pulsegate-mux, --restart-at, --tail, --workers, --sources, --json).
#
# Environment (non-default ports, so it does not meet other runs):
#   REDIS_URL           default redis://127.0.0.1:6391
#   CLUSTER_PUBLIC      HAProxy's address, default 127.0.0.1:8181
#   CLUSTER_BASE_PORT   gateway i on BASE+i, default 8190
#   CLUSTER_DRAIN       the gateways' shutdown.drain_window (default: theirs)
#   WORKERS             loadtest worker processes (default 2)
#   SOURCES             client source addresses (default 127.0.0.2-127.0.0.3)
#   DIRECT=1            no HAProxy: the clients connect to the gateways
#                       themselves (--target lists them all; client i goes to
#                       gateway i mod N, to the next while that one refuses)
#   SKIP_BUILD=1        use the release binaries as they are
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="rolling-restart"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/../scripts/lib.sh"
cd "$REPO_ROOT"

n=3
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  n="$1"
  shift
fi
((n >= 2)) || die "a rolling restart needs at least 2 instances, got $n"

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6391}"
export CLUSTER_PUBLIC="${CLUSTER_PUBLIC:-127.0.0.1:8181}"
export CLUSTER_BASE_PORT="${CLUSTER_BASE_PORT:-8190}"
workers="${WORKERS:-2}"
sources="${SOURCES:-127.0.0.2-127.0.0.3}"
state="$REPO_ROOT/.local/cluster"

for pidfile in "$state"/gw*.pid "$state"/haproxy.pid; do
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null &&
    die "a cluster already runs in this checkout ($pidfile); scripts/cluster.sh down first"
done

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build --release -p pulsegate-loadtest --bin pulsegate"
  cargo build --release -p pulsegate-loadtest >&2
  cargo build --release --bin pulsegate >&2
fi
loadtest="$REPO_ROOT/target/release/pulsegate-loadtest"
[[ -x "$loadtest" ]] || die "$loadtest missing; run without SKIP_BUILD=1"

# Stop only what this script started.
parse_url "$REDIS_URL"
redis_pidfile="$REPO_ROOT/.local/redis/redis-${URL_PORT:-6379}.pid"
redis_was_ours=0
[[ -f "$redis_pidfile" ]] && redis_was_ours=1
cleanup() {
  local rc=$?
  log "stopping the cluster"
  bash scripts/cluster.sh down || true
  if [[ "$redis_was_ours" == 0 && -f "$redis_pidfile" ]]; then
    bash scripts/ensure-redis.sh --stop || true
  fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

target="ws://$CLUSTER_PUBLIC"
if [[ "${DIRECT:-0}" == 1 ]]; then
  export CLUSTER_DIRECT=1
  target=""
  for ((i = 1; i <= n; i++)); do
    target+="${target:+,}ws://127.0.0.1:$((CLUSTER_BASE_PORT + i))"
  done
fi
CLUSTER_BUILD=0 bash scripts/cluster.sh up "$n"
log "load before the run: $(cat /proc/loadavg)"
set +e
"$loadtest" run rolling-restart \
  --target "$target" --redis "$REDIS_URL" \
  --workers "$workers" --sources "$sources" \
  --restart-cmd "bash scripts/cluster.sh restart-rolling" "$@"
rc=$?
set -e
log "load after the run: $(cat /proc/loadavg)"
exit "$rc"
