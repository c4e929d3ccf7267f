#!/usr/bin/env bash
# N pulsegate gateways behind HAProxy on this machine (docs/deploy.md).
#
#   scripts/cluster.sh up [N]            start Redis (if needed), N gateways (default 3)
#                                        and HAProxy; idempotent: what runs is kept
#   scripts/cluster.sh down              stop the gateways and HAProxy it started
#   scripts/cluster.sh restart-rolling   SIGTERM each gateway in turn, start it
#                                        again, wait until HAProxy sees it ready
#   scripts/cluster.sh status            what runs, and where to connect
#
# Environment:
#   REDIS_URL           default redis://127.0.0.1:6379 (started by ensure-redis.sh)
#   CLUSTER_PUBLIC      HAProxy's public address, default 127.0.0.1:8081
#   CLUSTER_BASE_PORT   gateway i listens on BASE+i, default 8090 (8091, 8092, ...)
#   CLUSTER_BIN         the gateway binary (default: cargo build --release)
#   CLUSTER_DRAIN       shutdown.drain_window of each gateway, e.g. 5s (default: its config)
#   CLUSTER_DIRECT=1    no HAProxy: clients connect to the gateways themselves
# State, logs and the generated haproxy.cfg live in .local/cluster/.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="cluster"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
PUBLIC="${CLUSTER_PUBLIC:-127.0.0.1:8081}"
BASE_PORT="${CLUSTER_BASE_PORT:-8090}"
state="$REPO_ROOT/.local/cluster"
public_host="${PUBLIC%:*}"
public_port="${PUBLIC##*:}"
[[ "$public_port" =~ ^[0-9]+$ && "$BASE_PORT" =~ ^[0-9]+$ ]] ||
  die "CLUSTER_PUBLIC must be HOST:PORT and CLUSTER_BASE_PORT a number"

# The gateways read PULSEGATE_* as config keys and refuse unknown ones.
unset PULSEGATE_REDIS_SERVER PULSEGATE_PG_BIN

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

gateway_bin() {
  if [[ -n "${CLUSTER_BIN:-}" ]]; then
    [[ -x "$CLUSTER_BIN" ]] || die "CLUSTER_BIN=$CLUSTER_BIN is not executable"
    printf '%s\n' "$CLUSTER_BIN"
    return
  fi
  local bin="$REPO_ROOT/target/release/pulsegate"
  if [[ ! -x "$bin" || "${CLUSTER_BUILD:-1}" == 1 ]]; then
    log "cargo build --release --bin pulsegate"
    cargo build --release --bin pulsegate >&2
  fi
  printf '%s\n' "$bin"
}

# start_gateway I BIN: start gateway I unless it runs; wait for /readyz 200.
start_gateway() {
  local i="$1" bin="$2" port=$((BASE_PORT + $1))
  local pidfile="$state/gw$i.pid" logfile="$state/gw$i.log"
  if alive "$pidfile"; then
    log "gateway $i already runs (pid $(cat "$pidfile"), port $port)"
    return
  fi
  port_open 127.0.0.1 "$port" && die "port $port is taken by something else; set CLUSTER_BASE_PORT"
  local env=(PULSEGATE_LIMITS_TRUSTED_PROXIES='["127.0.0.1"]')
  [[ -n "${CLUSTER_DRAIN:-}" ]] && env+=(PULSEGATE_SHUTDOWN_DRAIN_WINDOW="$CLUSTER_DRAIN")
  env "${env[@]}" "$bin" serve --listen "127.0.0.1:$port" --redis-url "$REDIS_URL" \
    >>"$logfile" 2>&1 &
  echo $! >"$pidfile"
  wait_ready "$i" 60
}

# wait_ready I SECONDS: until gateway I answers /readyz with 200.
wait_ready() {
  local port=$((BASE_PORT + $1)) deadline=$((SECONDS + $2)) status=""
  while :; do
    alive "$state/gw$1.pid" || die "gateway $1 exited; see $state/gw$1.log"
    status="$(http_status 127.0.0.1 "$port" /readyz || true)"
    [[ "$status" == 200 ]] && break
    ((SECONDS < deadline)) || die "gateway $1 not ready after $2 s (/readyz: ${status:-no answer})"
    sleep 0.2
  done
  log "gateway $1 ready on 127.0.0.1:$port"
}

# stop_pid PIDFILE WHAT SECONDS: SIGTERM, then SIGKILL after SECONDS.
stop_pid() {
  local pidfile="$1" what="$2" grace="$3" pid
  alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      warn "$what did not stop within ${grace}s of SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
  log "$what stopped"
}

write_haproxy_cfg() {
  local n="$1" out="$state/haproxy.cfg" servers="" i
  for ((i = 1; i <= n; i++)); do
    servers+="    server gw$i 127.0.0.1:$((BASE_PORT + i)) check"$'\n'
  done
  awk -v bind="$PUBLIC" -v servers="$servers" '
    /^    bind / { print "    bind " bind; next }
    /# @servers/ { print; printf "%s", servers; skip = 1; next }
    /# @end/ { skip = 0 }
    !skip { print }
  ' "$REPO_ROOT/config/haproxy.cfg" >"$out"
  printf '%s\n' "$out"
}

gateways_running() { ls "$state"/gw*.pid 2>/dev/null | wc -l; }

print_status() {
  local i port
  echo
  echo "  pulsegate cluster"
  if [[ "${CLUSTER_DIRECT:-0}" == 1 ]]; then
    echo "  No balancer (CLUSTER_DIRECT=1): connect to the gateways below"
  else
    echo "  Connect here (HAProxy):  http://$PUBLIC/   ws://$PUBLIC/ws   ws://$PUBLIC/dashboard/ws/<persona>"
  fi
  for pidfile in "$state"/gw*.pid; do
    [[ -e "$pidfile" ]] || continue
    i="${pidfile##*/gw}"
    i="${i%.pid}"
    port=$((BASE_PORT + i))
    if alive "$pidfile"; then
      echo "  gateway $i: 127.0.0.1:$port (pid $(cat "$pidfile"), log $state/gw$i.log)"
    else
      echo "  gateway $i: not running"
    fi
  done
  if alive "$state/haproxy.pid"; then
    echo "  haproxy: pid $(cat "$state/haproxy.pid"), config $state/haproxy.cfg"
  fi
  echo
}

cmd="${1:-}"
case "$cmd" in
  up)
    n="${2:-3}"
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, got '$n'"
    mkdir -p "$state"
    [[ "${CLUSTER_DIRECT:-0}" == 1 ]] || haproxy_bin="$(bash "$SCRIPT_DIR/ensure-haproxy.sh")"
    bash "$SCRIPT_DIR/ensure-redis.sh" >/dev/null
    bin="$(gateway_bin)"
    for ((i = 1; i <= n; i++)); do
      start_gateway "$i" "$bin"
    done
    if [[ "${CLUSTER_DIRECT:-0}" == 1 ]]; then
      print_status
      exit 0
    fi
    cfg="$(write_haproxy_cfg "$n")"
    "$haproxy_bin" -c -q -f "$cfg" || die "the generated $cfg is not valid"
    if alive "$state/haproxy.pid"; then
      # Reload with the new server list; connections in flight stay.
      old="$(cat "$state/haproxy.pid")"
      "$haproxy_bin" -D -f "$cfg" -p "$state/haproxy.pid" -sf "$old"
      log "haproxy reloaded"
    else
      port_open "$public_host" "$public_port" && die "$PUBLIC is taken; set CLUSTER_PUBLIC"
      "$haproxy_bin" -D -f "$cfg" -p "$state/haproxy.pid"
      wait_for_port "$public_host" "$public_port" 10 haproxy || die "haproxy did not start"
      log "haproxy listening on $PUBLIC"
    fi
    print_status
    ;;
  down)
    for pidfile in "$state"/gw*.pid; do
      [[ -e "$pidfile" ]] || continue
      i="${pidfile##*/gw}"
      stop_pid "$pidfile" "gateway ${i%.pid}" 30
    done
    stop_pid "$state/haproxy.pid" haproxy 10
    ;;
  restart-rolling)
    [[ "$(gateways_running)" -gt 0 ]] || die "no cluster runs here; scripts/cluster.sh up first"
    CLUSTER_BUILD="${CLUSTER_BUILD:-0}"
    bin="$(gateway_bin)"
    for pidfile in "$state"/gw*.pid; do
      i="${pidfile##*/gw}"
      i="${i%.pid}"
      log "restarting gateway $i"
      stop_pid "$pidfile" "gateway $i" 60
      start_gateway "$i" "$bin"
      # HAProxy marks it up after `rise` checks of `inter` (2 × 500 ms).
      sleep 1.5
    done
    print_status
    ;;
  status) print_status ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    die "unknown command '${cmd}'"
    ;;
esac
