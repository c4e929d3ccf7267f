# shellcheck shell=bash
# Shared helpers for pulsegate's scripts. Source it, don't run it:
#
#   SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
#   . "$SCRIPT_DIR/lib.sh"
#
# Works for root and for a non-root user with sudo. Logs go to stderr.

if [[ -n "${_PULSEGATE_LIB_SH:-}" ]]; then
  return 0
fi
_PULSEGATE_LIB_SH=1

# Repository root (the directory holding scripts/).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

# Prefix for log lines; scripts may override before sourcing or after.
LOG_PREFIX="${LOG_PREFIX:-$(basename "${0:-pulsegate}" .sh)}"

log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$LOG_PREFIX" "$*" >&2; }
die() {
  printf '[%s] ERROR: %s\n' "$LOG_PREFIX" "$*" >&2
  exit 1
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# need_root_cmd CMD ARGS...: run CMD as root: directly when we are root,
# through sudo otherwise (sudo -n when there is no terminal, so CI never hangs
# on a password prompt).
need_root_cmd() {
  if is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    if [[ -t 0 ]]; then
      sudo "$@"
    else
      sudo -n "$@"
    fi
  else
    die "need root to run '$*' but not root and sudo is not installed"
  fi
}

# run_as_user USER CMD ARGS...: run CMD as USER (runuser when root, sudo -u
# otherwise). When we already are USER, run it directly.
run_as_user() {
  local user="$1"
  shift
  if [[ "$(id -un)" == "$user" ]]; then
    "$@"
  elif is_root; then
    runuser -u "$user" -- "$@"
  else
    need_root_cmd runuser -u "$user" -- "$@"
  fi
}

# pkg_installed PKG: true when dpkg says PKG is installed.
pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

_APT_UPDATED=0
_apt_update() {
  if [[ "$_APT_UPDATED" -eq 0 ]]; then
    log "apt-get update"
    need_root_cmd env DEBIAN_FRONTEND=noninteractive \
      apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    _APT_UPDATED=1
  fi
}

# apt_install PKG...: install the Debian packages that are not installed yet.
# Idempotent: does nothing (and needs no root) when all are installed. Runs
# 'apt-get update' once when the first attempt fails (e.g. no package lists).
apt_install() {
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "packages missing (${missing[*]}) and apt-get is not available; install them by hand"
  log "installing Debian packages: ${missing[*]}"
  # With no package lists at all, an install can only fail: update first.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    _apt_update
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300
    install -y -q --no-install-recommends "${missing[@]}")
  if ! need_root_cmd "${apt[@]}" >&2; then
    if [[ "$_APT_UPDATED" -eq 0 ]]; then
      warn "apt-get install failed; running apt-get update and retrying"
      _apt_update
      need_root_cmd "${apt[@]}" >&2 || die "apt-get install ${missing[*]} failed"
    else
      die "apt-get install ${missing[*]} failed"
    fi
  fi
  for p in "${missing[@]}"; do
    pkg_installed "$p" || die "package $p still not installed after apt-get install"
  done
  log "installed: ${missing[*]}"
}

# port_open HOST PORT: true when a TCP connection to HOST:PORT succeeds.
port_open() {
  local host="$1" port="$2"
  host="${host#[}"
  host="${host%]}"
  # The subshell owns fd 3, so it's closed when the subshell exits.
  (exec 3<>"/dev/tcp/$host/$port") >/dev/null 2>&1
}

# wait_for_port HOST PORT [TIMEOUT_SECONDS=30] [WHAT] [PID]: wait until
# HOST:PORT accepts connections. When PID is given and that process exits
# first, fail at once.
wait_for_port() {
  local host="$1" port="$2" timeout="${3:-30}" what="${4:-$1:$2}" pid="${5:-}"
  local deadline=$((SECONDS + timeout))
  while ! port_open "$host" "$port"; do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      warn "$what: process $pid exited before $host:$port accepted connections"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      warn "timed out after ${timeout}s waiting for $what ($host:$port) to accept connections"
      return 1
    fi
    sleep 0.2
  done
}

# http_status HOST PORT PATH: print the HTTP status code of GET PATH
# (bash /dev/tcp, no curl needed). Prints nothing and fails when no answer.
http_status() {
  local host="$1" port="$2" path="$3" line=""
  host="${host#[}"
  host="${host%]}"
  line="$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/$host/$port" || exit 1
    printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: pulsegate-scripts\r\nConnection: close\r\n\r\n' \
      "$path" "$host" "$port" >&3
    IFS= read -r -t 5 status_line <&3 || exit 1
    printf '%s' "$status_line"
  )" || return 1
  # "HTTP/1.1 200 OK\r"
  line="${line%$'\r'}"
  [[ "$line" =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] || return 1
  printf '%s\n' "${BASH_REMATCH[1]}"
}

# is_local_host HOST: true for loopback names/addresses.
is_local_host() {
  case "$1" in
    localhost | 127.* | ::1 | "[::1]" | "") return 0 ;;
    *) return 1 ;;
  esac
}

# parse_url URL: split scheme://[user[:pass]@]host[:port][/path][?query] into
# URL_SCHEME URL_USER URL_PASS URL_HOST URL_PORT URL_PATH (without the leading
# slash; query dropped). Port is empty when absent.
# shellcheck disable=SC2034 # the URL_* globals are the result
parse_url() {
  local url="$1" rest hostport
  URL_SCHEME="${url%%://*}"
  [[ "$URL_SCHEME" != "$url" ]] || die "not a URL: $url"
  rest="${url#*://}"
  rest="${rest%%\?*}"
  URL_USER="" URL_PASS=""
  if [[ "$rest" == *@* ]]; then
    local cred="${rest%@*}"
    rest="${rest##*@}"
    URL_USER="${cred%%:*}"
    [[ "$cred" == *:* ]] && URL_PASS="${cred#*:}"
  fi
  hostport="${rest%%/*}"
  if [[ "$rest" == */* ]]; then
    URL_PATH="${rest#*/}"
  else
    URL_PATH=""
  fi
  if [[ "$hostport" == \[*\]* ]]; then # [ipv6]:port
    URL_HOST="${hostport%%]*}]"
    URL_PORT="${hostport#"$URL_HOST"}"
    URL_PORT="${URL_PORT#:}"
  elif [[ "$hostport" == *:* ]]; then
    URL_HOST="${hostport%%:*}"
    URL_PORT="${hostport#*:}"
  else
    URL_HOST="$hostport"
    URL_PORT=""
  fi
  if [[ -n "$URL_PORT" && ! "$URL_PORT" =~ ^[0-9]+$ ]]; then
    die "bad port '$URL_PORT' in $url"
  fi
  return 0
}

# pg_bin_dir: print the newest /usr/lib/postgresql/<ver>/bin (or
# $PULSEGATE_PG_BIN when set). Fails when none is found.
pg_bin_dir() {
  if [[ -n "${PULSEGATE_PG_BIN:-}" ]]; then
    [[ -x "$PULSEGATE_PG_BIN/postgres" ]] || die "PULSEGATE_PG_BIN=$PULSEGATE_PG_BIN has no postgres binary"
    printf '%s\n' "$PULSEGATE_PG_BIN"
    return 0
  fi
  local d best=""
  while IFS= read -r d; do
    [[ -x "$d/postgres" && -x "$d/initdb" ]] && best="$d"
  done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V)
  [[ -n "$best" ]] || return 1
  printf '%s\n' "$best"
}

# redis_server_bin: print the redis-server binary path.
redis_server_bin() {
  if [[ -n "${PULSEGATE_REDIS_SERVER:-}" && -x "${PULSEGATE_REDIS_SERVER}" ]]; then
    printf '%s\n' "$PULSEGATE_REDIS_SERVER"
  elif command -v redis-server >/dev/null 2>&1; then
    command -v redis-server
  elif [[ -x /usr/bin/redis-server ]]; then
    printf '%s\n' /usr/bin/redis-server
  else
    return 1
  fi
}

# short_hash STRING: 12 hex chars identifying STRING (for per-repo dirs).
short_hash() {
  printf '%s' "$1" | sha256sum | cut -c1-12
}

# export_test_servers: what the node test suites spawn, exported for them:
# PULSEGATE_REDIS_SERVER (installed when missing) and PULSEGATE_BIN (a debug
# build of the gateway, unless already set). Needs SCRIPT_DIR.
export_test_servers() {
  local redis_bin
  redis_bin="$(redis_server_bin)" || {
    bash "$SCRIPT_DIR/ensure-redis.sh" --install-only
    redis_bin="$(redis_server_bin)" || die "redis-server not found"
  }
  export PULSEGATE_REDIS_SERVER="$redis_bin"
  if [[ -z "${PULSEGATE_BIN:-}" ]]; then
    log "cargo build --bin pulsegate"
    cargo build --bin pulsegate >&2
    PULSEGATE_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/pulsegate"
  fi
  [[ -x "$PULSEGATE_BIN" ]] || die "no gateway binary at $PULSEGATE_BIN"
  export PULSEGATE_BIN
}
