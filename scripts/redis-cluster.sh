#!/usr/bin/env bash
# A local Redis Cluster on loopback, from Debian's redis-server.
#
#   scripts/redis-cluster.sh up [PRIMARIES] [REPLICAS]   default 3 primaries, 1 replica each
#   scripts/redis-cluster.sh down
#
# Nodes listen on 127.0.0.1:$CLUSTER_BASE_PORT and up (default 7000), with
# `--cluster-node-timeout 2000` and `--cluster-replica-validity-factor 0` (a
# replica of an idle primary may take over however long since it last
# heard from it; Redis 7.0 otherwise refuses), no persistence; state and logs in
# .local/redis-cluster/. `up` is idempotent (a running cluster is left as it
# is) and prints the URL to give the gateway (redis.url / REDIS_URL):
#   redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&...
# `down` stops every node it started and deletes the state.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="redis-cluster"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

cmd="${1:-}"
primaries="${2:-3}"
replicas="${3:-1}"
base="${CLUSTER_BASE_PORT:-7000}"
state_dir="$REPO_ROOT/.local/redis-cluster"
[[ "$primaries" =~ ^[1-9][0-9]*$ && "$replicas" =~ ^[0-9]+$ ]] || die "usage: $0 up|down [PRIMARIES] [REPLICAS]"
((primaries >= 3)) || die "a Redis Cluster needs at least 3 primaries"

url() {
  local n="$1" i out="redis-cluster://127.0.0.1:$base?"
  for ((i = 1; i < n; i++)); do
    out+="node=127.0.0.1:$((base + i))&"
  done
  printf '%s\n' "${out%[?&]}"
}

down() {
  local pidfile pid
  shopt -s nullglob
  for pidfile in "$state_dir"/node-*.pid; do
    pid="$(cat "$pidfile")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      log "stopping node pid $pid"
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  sleep 0.5
  rm -rf "$state_dir"
  log "cluster stopped"
}

up() {
  bash "$SCRIPT_DIR/ensure-redis.sh" --install-only
  local bin total=$((primaries * (1 + replicas))) i port nodes=()
  bin="$(redis_server_bin)"
  command -v redis-cli >/dev/null || apt_install redis-tools
  if port_open 127.0.0.1 "$base" &&
    redis-cli -p "$base" CLUSTER INFO 2>/dev/null | grep -q cluster_state:ok; then
    log "a cluster already answers on 127.0.0.1:$base; nothing to do"
    url "$(redis-cli -p "$base" CLUSTER NODES | wc -l)"
    return 0
  fi
  mkdir -p "$state_dir"
  for ((i = 0; i < total; i++)); do
    port=$((base + i))
    port_open 127.0.0.1 "$port" && die "127.0.0.1:$port is taken by something else; set CLUSTER_BASE_PORT"
    "$bin" --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 2000 \
      --cluster-replica-validity-factor 0 \
      --save '' --appendonly no --dir "$state_dir" --daemonize yes \
      --pidfile "$state_dir/node-$port.pid" --logfile "$state_dir/node-$port.log"
    nodes+=("127.0.0.1:$port")
  done
  for ((i = 0; i < total; i++)); do
    wait_for_port 127.0.0.1 $((base + i)) 20 "cluster node" || die "node $((base + i)) did not start"
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas "$replicas" --cluster-yes >&2
  for _ in $(seq 1 100); do
    redis-cli -p "$base" CLUSTER INFO | grep -q cluster_state:ok && break
    sleep 0.2
  done
  redis-cli -p "$base" CLUSTER INFO | grep -q cluster_state:ok || die "cluster not ok; see $state_dir/*.log"
  log "cluster up: $primaries primaries, $replicas replica(s) each; stop it with: $0 down"
  url "$total"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down [PRIMARIES] [REPLICAS]" ;;
esac
