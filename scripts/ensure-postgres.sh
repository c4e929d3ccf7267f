#!/usr/bin/env bash
# Make sure PostgreSQL is available for pulsegate.
#
#   scripts/ensure-postgres.sh                 install PostgreSQL if missing; if
#                                              $DATABASE_URL is not reachable and
#                                              points to this machine, create and
#                                              start a project-local cluster, with
#                                              the URL's role and database
#   scripts/ensure-postgres.sh --install-only  only install PostgreSQL (tests
#                                              spawn their own throwaway clusters)
#   scripts/ensure-postgres.sh --stop          stop the project-local cluster
#
# DATABASE_URL defaults to postgres://pulsegate@127.0.0.1:5433/pulsegate.
# The cluster lives in .local/pg/ (data in .local/pg/data, unix socket and
# server log in .local/pg/), or in $PG_BASE_DIR when set (the demo keeps its
# own there). When running as root, the server runs as the
# 'postgres' OS user; if that user cannot reach .local/pg (e.g. the repo is
# under a private home directory), /var/tmp/pulsegate-pg-<hash of repo path>
# is used instead. Authentication is 'trust': a development cluster only.
# Idempotent. Prints the URL on stdout when it is reachable, the rest on stderr.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="ensure-postgres"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

mode=start
while [[ $# -gt 0 ]]; do
  case "$1" in
    --install-only) mode=install ;;
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

DATABASE_URL="${DATABASE_URL:-postgres://pulsegate@127.0.0.1:5433/pulsegate}"
parse_url "$DATABASE_URL"
case "$URL_SCHEME" in
  postgres | postgresql) ;;
  *) die "DATABASE_URL must be postgres://..., got: $DATABASE_URL" ;;
esac
host="${URL_HOST:-127.0.0.1}"
port="${URL_PORT:-5432}"
db_user="${URL_USER:-pulsegate}"
db_pass="$URL_PASS"
db_name="${URL_PATH:-$db_user}"

# 1. Install.
if [[ "$mode" == stop ]] && ! pg_bin_dir >/dev/null; then
  log "PostgreSQL is not installed; no cluster to stop"
  exit 0
fi
if bin="$(pg_bin_dir)"; then
  log "PostgreSQL binaries present: $bin"
else
  apt_install postgresql
  bin="$(pg_bin_dir)" || die "no /usr/lib/postgresql/*/bin/postgres after installing the postgresql package"
fi

if [[ "$mode" == install ]]; then
  log "install only: $("$bin/postgres" --version)"
  printf '%s\n' "$bin"
  exit 0
fi

# 2. Where the project-local cluster lives, and which OS user runs it.
if is_root; then
  pg_os_user=postgres
  id -u "$pg_os_user" >/dev/null 2>&1 ||
    die "running as root, but there is no '$pg_os_user' OS user to run the server (install the postgresql package)"
else
  pg_os_user="$(id -un)"
fi

as_pg() { (cd / && run_as_user "$pg_os_user" "$@"); }

primary_base="${PG_BASE_DIR:-$REPO_ROOT/.local/pg}"
fallback_base="/var/tmp/pulsegate-pg-$(short_hash "$primary_base")"

# A unix socket path must fit in sun_path (107 bytes + NUL).
socket_fits() { [[ $((${#1} + ${#port} + 10)) -le 107 ]]; }

# usable_base DIR: create DIR (owned by the server's OS user) and check that
# user can write into it and that the socket path is short enough.
usable_base() {
  local dir="$1"
  socket_fits "$dir" || return 1
  mkdir -p "$dir" 2>/dev/null || return 1
  if is_root; then
    chown "$pg_os_user:" "$dir" || return 1
    chmod 0700 "$dir"
  fi
  as_pg test -d "$dir" -a -w "$dir" -a -x "$dir" 2>/dev/null
}

choose_base() {
  # An existing cluster wins, so re-runs find what an earlier run made.
  local d
  for d in "$primary_base" "$fallback_base"; do
    if [[ -f "$d/data/PG_VERSION" ]]; then
      printf '%s\n' "$d"
      return 0
    fi
  done
  if usable_base "$primary_base"; then
    printf '%s\n' "$primary_base"
  elif usable_base "$fallback_base"; then
    log "OS user '$pg_os_user' cannot use $primary_base (not traversable, or socket path too long); using $fallback_base"
    printf '%s\n' "$fallback_base"
  else
    die "found no directory the '$pg_os_user' OS user can use for the cluster (tried $primary_base, $fallback_base)"
  fi
}

cluster_running() { [[ -f "$1/postmaster.pid" ]] && as_pg "$bin/pg_ctl" -D "$1" status >/dev/null 2>&1; }

if [[ "$mode" == stop ]]; then
  found=0
  for base in "$primary_base" "$fallback_base"; do
    [[ -f "$base/data/PG_VERSION" ]] || continue
    found=1
    if cluster_running "$base/data"; then
      log "stopping cluster $base/data"
      as_pg "$bin/pg_ctl" -D "$base/data" -m fast -w -t 60 stop >&2
    else
      log "cluster $base/data is not running"
    fi
  done
  [[ "$found" -eq 1 ]] || log "no project-local cluster (looked in $primary_base and $fallback_base)"
  exit 0
fi

base="$(choose_base)"
data="$base/data"
logfile="$base/postgres.log"
psql_sock=("$bin/psql" -X -q -h "$base" -p "$port" -U postgres -v ON_ERROR_STOP=1)

# ensure_role_db: create the URL's role and database in our cluster if missing.
ensure_role_db() {
  [[ "$db_user" != postgres ]] || die "use a role other than 'postgres' in DATABASE_URL"
  local have_role have_db
  have_role="$("${psql_sock[@]}" -d postgres -tA -v r="$db_user" <<<"SELECT count(*) FROM pg_roles WHERE rolname = :'r';")"
  have_db="$("${psql_sock[@]}" -d postgres -tA -v d="$db_name" <<<"SELECT count(*) FROM pg_database WHERE datname = :'d';")"
  "${psql_sock[@]}" -d postgres -v r="$db_user" -v d="$db_name" -v p="$db_pass" <<'SQL' >/dev/null
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'r')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'r') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'r', :'p') WHERE :'p' <> '' \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'d', :'r')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'d') \gexec
SQL
  if [[ "$have_role" == 0 ]]; then log "created role $db_user"; else log "role $db_user exists"; fi
  if [[ "$have_db" == 0 ]]; then log "created database $db_name"; else log "database $db_name exists"; fi
}

# check_url: can we log in with DATABASE_URL as given?
check_url() { "$bin/psql" -X -q "$DATABASE_URL" -tAc 'SELECT 1' >/dev/null 2>&1; }

# 3. Reachable already?
if port_open "$host" "$port"; then
  if cluster_running "$data"; then
    log "project-local cluster ($data) is running on $host:$port"
    ensure_role_db
  elif check_url; then
    log "PostgreSQL already reachable at $host:$port (not the project-local cluster); nothing to do"
  else
    die "$host:$port accepts connections but logging in with DATABASE_URL=$DATABASE_URL fails; fix the URL or the server"
  fi
  check_url || die "cannot log in with DATABASE_URL=$DATABASE_URL"
  printf '%s\n' "$DATABASE_URL"
  exit 0
fi

is_local_host "$host" ||
  die "PostgreSQL at $DATABASE_URL is not reachable and is not on this machine; start it yourself or point DATABASE_URL at localhost"
[[ "$base" != *"'"* ]] || die "cluster path contains a single quote: $base"

# 4. Create the cluster if needed.
if [[ ! -f "$data/PG_VERSION" ]]; then
  log "creating cluster in $data (initdb as OS user '$pg_os_user', trust auth, superuser 'postgres')"
  as_pg mkdir -p "$data"
  as_pg chmod 0700 "$data"
  as_pg "$bin/initdb" -D "$data" -A trust -U postgres -E UTF8 --no-locale >"$base/initdb.log.tmp" 2>&1 || {
    tail -n 30 "$base/initdb.log.tmp" >&2 || true
    die "initdb failed; see $base/initdb.log.tmp"
  }
  rm -f "$base/initdb.log.tmp"
else
  cluster_version="$(cat "$data/PG_VERSION")"
  log "cluster exists in $data (PostgreSQL $cluster_version)"
  if [[ "$("$bin/postgres" --version)" != *" $cluster_version."* ]]; then
    if [[ -x "/usr/lib/postgresql/$cluster_version/bin/postgres" ]]; then
      bin="/usr/lib/postgresql/$cluster_version/bin"
      psql_sock[0]="$bin/psql"
    else
      die "cluster $data is PostgreSQL $cluster_version, but the server in $bin is not; remove $base to recreate it"
    fi
  fi
fi

# 5. Start it.
if cluster_running "$data"; then
  die "cluster $data is running but $host:$port is closed (started with another port?); stop it with: $0 --stop"
fi
listen="${host#[}"
listen="${listen%]}"
log "starting cluster on $listen:$port (socket dir $base, log $logfile)"
as_pg "$bin/pg_ctl" -D "$data" -l "$logfile" -w -t 60 \
  -o "-p $port -k '$base' -c listen_addresses='$listen'" start >&2 || {
  tail -n 30 "$logfile" >&2 || true
  die "pg_ctl start failed; see $logfile"
}
wait_for_port "$host" "$port" 30 "postgres" || die "postgres started but $host:$port is closed; see $logfile"

# 6. Role and database.
ensure_role_db
check_url || die "cluster is up, but logging in with DATABASE_URL=$DATABASE_URL fails"
stop_hint="scripts/ensure-postgres.sh --stop"
log "ready: $DATABASE_URL (superuser: psql -h $base -p $port -U postgres); stop it with: $stop_hint"
printf '%s\n' "$DATABASE_URL"
