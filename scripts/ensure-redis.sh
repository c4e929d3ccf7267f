#!/usr/bin/env bash
# Make sure a Redis server is available for pulsegate.
#
#   scripts/ensure-redis.sh                 install redis-server if missing; if
#                                           $REDIS_URL is not reachable and points
#                                           to this machine, start a project-local
#                                           redis-server (data/logs in .local/redis/)
#   scripts/ensure-redis.sh --install-only  only install redis-server
#   scripts/ensure-redis.sh --with-sentinel also install the redis-sentinel
#                                           package (with --install-only: only
#                                           install; scripts/redis-sentinel.sh)
#   scripts/ensure-redis.sh --stop          stop the project-local redis-server
#                                           started by this script (if any)
#
# REDIS_URL defaults to redis://127.0.0.1:6379. Idempotent: running it again
# when Redis is already up does nothing. Prints the URL on stdout when Redis is
# reachable, everything else on stderr.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="ensure-redis"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

mode=start
with_sentinel=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --install-only) mode=install ;;
    --with-sentinel) with_sentinel=1 ;;
    --stop) mode=stop ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
  shift
done

REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
parse_url "$REDIS_URL"
host="${URL_HOST:-127.0.0.1}"
port="${URL_PORT:-6379}"
case "$URL_SCHEME" in
  redis | rediss | valkey) ;;
  *) die "REDIS_URL must be redis://..., got: $REDIS_URL" ;;
esac

state_dir="$REPO_ROOT/.local/redis"
pidfile="$state_dir/redis-$port.pid"
logfile="$state_dir/redis-$port.log"

# redis_ping HOST PORT: true when something answering like Redis is there
# (+PONG, or an auth error, which Redis sends when a password is required).
redis_ping() {
  local reply
  reply="$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/${1#[}/$2" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 3 r <&3 || exit 1
    printf '%s' "$r"
  )" || return 1
  reply="${reply%$'\r'}"
  [[ "$reply" == "+PONG" || "$reply" == -NOAUTH* || "$reply" == -AUTH* || "$reply" == -WRONGPASS* ]]
}

stop_local() {
  if [[ ! -f "$pidfile" ]]; then
    log "no project-local redis-server on port $port (no $pidfile)"
    return 0
  fi
  local pid
  pid="$(cat "$pidfile")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    log "stopping project-local redis-server (pid $pid, port $port)"
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      warn "redis-server $pid did not stop after 10s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped"
  else
    log "project-local redis-server not running (stale pidfile $pidfile)"
  fi
  rm -f "$pidfile"
}

if [[ "$mode" == stop ]]; then
  stop_local
  exit 0
fi

# 1. Install.
if redis_server_bin >/dev/null; then
  log "redis-server present: $(redis_server_bin)"
else
  apt_install redis-server
fi
bin="$(redis_server_bin)" || die "redis-server not found after installing the redis-server package"
if [[ "$with_sentinel" -eq 1 ]]; then
  # The package adds the redis-sentinel command and its service files;
  # `redis-server --sentinel` is the same program, used when it is missing.
  apt_install redis-sentinel
fi

if [[ "$mode" == install ]]; then
  log "install only: $("$bin" --version)"
  exit 0
fi

# 2. Reachable already?
if port_open "$host" "$port"; then
  if redis_ping "$host" "$port"; then
    log "Redis already reachable at $host:$port; nothing to do"
    printf '%s\n' "$REDIS_URL"
    exit 0
  fi
  die "$host:$port accepts connections but does not answer PING like Redis; pick another REDIS_URL"
fi

if ! is_local_host "$host"; then
  die "Redis at $REDIS_URL is not reachable and is not on this machine; start it yourself or point REDIS_URL at localhost"
fi
if [[ "$URL_SCHEME" == rediss ]]; then
  die "REDIS_URL uses TLS (rediss://); this script only starts a plain local Redis"
fi

# 3. Start a project-local redis-server.
mkdir -p "$state_dir"
if [[ -f "$pidfile" ]]; then
  oldpid="$(cat "$pidfile")"
  if [[ -n "$oldpid" ]] && kill -0 "$oldpid" 2>/dev/null; then
    # Started by us earlier, still running, but not answering on the port.
    wait_for_port "$host" "$port" 10 "redis-server (pid $oldpid)" "$oldpid" ||
      die "project-local redis-server (pid $oldpid) runs but $host:$port is closed; see $logfile or run: $0 --stop"
    log "project-local redis-server (pid $oldpid) is up on $host:$port"
    printf '%s\n' "$REDIS_URL"
    exit 0
  fi
  rm -f "$pidfile"
fi

bind_host="${host#[}"
bind_host="${bind_host%]}"
if [[ "$bind_host" == localhost || -z "$bind_host" ]]; then
  bind_addrs=(127.0.0.1 -::1) # "-": don't fail when IPv6 is unavailable
else
  bind_addrs=("$bind_host")
fi

args=(
  --port "$port"
  --bind "${bind_addrs[@]}"
  --save ''
  --appendonly no
  --daemonize yes
  --pidfile "$pidfile"
  --logfile "$logfile"
  --dir "$state_dir"
)
if [[ -n "$URL_PASS" ]]; then
  # redis://:password@host or redis://default:password@host
  if [[ -n "$URL_USER" && "$URL_USER" != default ]]; then
    warn "REDIS_URL names user '$URL_USER'; the local server only sets a password for the default user"
  fi
  args+=(--requirepass "$URL_PASS")
fi

log "starting project-local redis-server on $host:$port (pidfile $pidfile, log $logfile)"
: >"$logfile"
"$bin" "${args[@]}" || die "redis-server failed to start; see $logfile"

# The daemonized server writes its pidfile shortly after forking.
pid=""
for _ in $(seq 1 50); do
  [[ -s "$pidfile" ]] && pid="$(cat "$pidfile")" && break
  sleep 0.1
done
if ! wait_for_port "$host" "$port" 20 "redis-server" "$pid"; then
  tail -n 20 "$logfile" >&2 || true
  die "redis-server did not come up on $host:$port; see $logfile"
fi
redis_ping "$host" "$port" || die "redis-server on $host:$port does not answer PING; see $logfile"
stop_hint="scripts/ensure-redis.sh --stop"
[[ "$REDIS_URL" != redis://127.0.0.1:6379 ]] && stop_hint="REDIS_URL='$REDIS_URL' $stop_hint"
log "started redis-server (pid ${pid:-?}) on $host:$port; stop it with: $stop_hint"
printf '%s\n' "$REDIS_URL"
