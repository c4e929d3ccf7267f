#!/usr/bin/env bash
# Make sure a python3 that can import `redis` (redis-py, for the Python
# examples in the docs) and `websockets` (for the docs' WebSocket exchanges)
# is available.
#
#   scripts/ensure-python.sh    install Debian's python3, python3-redis and
#                               python3-websockets when missing
#
# Debian's packages belong to /usr/bin/python3, not to a pyenv or venv python
# earlier on PATH, so that interpreter is the one used. Prints its path on
# stdout, everything else on stderr. Idempotent: nothing is installed (and no
# root is needed) when it imports both already.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="ensure-python"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
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

python=/usr/bin/python3

has_modules() {
  [[ -x "$python" ]] && "$python" -c 'import redis, websockets' >/dev/null 2>&1
}

if ! has_modules; then
  apt_install python3 python3-redis python3-websockets
  has_modules || die "$python cannot import redis and websockets after installing python3-redis and python3-websockets"
fi
log "$("$python" --version) at $python, redis-py $("$python" -c 'import redis; print(redis.__version__)'), websockets $("$python" -c 'import websockets; print(websockets.__version__)')"
printf '%s\n' "$python"
