#!/usr/bin/env bash
# A local Sentinel deployment on loopback: one primary, one replica, three
# sentinels watching them as service `pulse` (quorum 2, down after 1 s).
#
#   scripts/redis-sentinel.sh up
#   scripts/redis-sentinel.sh down
#
# Ports: primary $SENTINEL_BASE_PORT (default 6390), replica +1, sentinels
# 26390..26392. State and logs in .local/redis-sentinel/. `up` is idempotent
# and prints the URL for the gateway (redis.url / REDIS_URL):
#   redis-sentinel://127.0.0.1:26390?sentinelServiceName=pulse&node=127.0.0.1:26391&node=127.0.0.1:26392
# `down` stops every process it started and deletes the state.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="redis-sentinel"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

base="${SENTINEL_BASE_PORT:-6390}"
sbase=$((base + 20000))
state_dir="$REPO_ROOT/.local/redis-sentinel"
service=pulse

url() {
  printf 'redis-sentinel://127.0.0.1:%s?sentinelServiceName=%s&node=127.0.0.1:%s&node=127.0.0.1:%s\n' \
    "$sbase" "$service" $((sbase + 1)) $((sbase + 2))
}

down() {
  local pidfile pid
  shopt -s nullglob
  for pidfile in "$state_dir"/*.pid; do
    pid="$(cat "$pidfile")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      log "stopping pid $pid"
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  sleep 0.5
  rm -rf "$state_dir"
  log "sentinel deployment stopped"
}

up() {
  bash "$SCRIPT_DIR/ensure-redis.sh" --install-only --with-sentinel
  local bin i port
  bin="$(redis_server_bin)"
  if port_open 127.0.0.1 "$sbase" &&
    redis-cli -p "$sbase" SENTINEL GET-MASTER-ADDR-BY-NAME "$service" 2>/dev/null | grep -q .; then
    log "sentinels already answer on 127.0.0.1:$sbase; nothing to do"
    url
    return 0
  fi
  mkdir -p "$state_dir"
  for port in "$base" $((base + 1)); do
    port_open 127.0.0.1 "$port" && die "127.0.0.1:$port is taken; set SENTINEL_BASE_PORT"
  done
  "$bin" --port "$base" --bind 127.0.0.1 --save '' --appendonly no --dir "$state_dir" \
    --daemonize yes --pidfile "$state_dir/primary.pid" --logfile "$state_dir/primary.log"
  wait_for_port 127.0.0.1 "$base" 20 "primary" || die "primary did not start"
  "$bin" --port $((base + 1)) --bind 127.0.0.1 --save '' --appendonly no --dir "$state_dir" \
    --replicaof 127.0.0.1 "$base" \
    --daemonize yes --pidfile "$state_dir/replica.pid" --logfile "$state_dir/replica.log"
  for i in 0 1 2; do
    port=$((sbase + i))
    cat >"$state_dir/sentinel-$port.conf" <<CONF
port $port
bind 127.0.0.1
dir $state_dir
daemonize yes
pidfile $state_dir/sentinel-$port.pid
logfile $state_dir/sentinel-$port.log
sentinel monitor $service 127.0.0.1 $base 2
sentinel down-after-milliseconds $service 1000
sentinel failover-timeout $service 5000
sentinel parallel-syncs $service 1
CONF
    if command -v redis-sentinel >/dev/null; then
      redis-sentinel "$state_dir/sentinel-$port.conf"
    else
      "$bin" "$state_dir/sentinel-$port.conf" --sentinel
    fi
    wait_for_port 127.0.0.1 "$port" 20 "sentinel" || die "sentinel $port did not start"
  done
  log "primary 127.0.0.1:$base, replica 127.0.0.1:$((base + 1)), sentinels $sbase-$((sbase + 2)); stop with: $0 down"
  url
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down" ;;
esac
