#!/usr/bin/env bash
# Checks lua/pulse.lua against a throwaway redis-server (>= 7.0).
#
#   scripts/lua-check/check.sh            # start redis-server on a free port, run, stop it
#   REDIS_PORT=6379 scripts/lua-check/check.sh
#                                         # use an already running server instead
#                                         # (it is FLUSHALL'ed: never a real one)
#
# Needs redis-server (unless REDIS_PORT is set) and python3 (standard library only).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib="${PULSE_LIB:-$here/../../lua/pulse.lua}"

if [[ -n "${REDIS_PORT:-}" ]]; then
  exec python3 "$here/check.py" --port "$REDIS_PORT" --lib "$lib"
fi

command -v redis-server >/dev/null || { echo "redis-server not found" >&2; exit 2; }

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
dir="$(mktemp -d)"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  --daemonize no --logfile "$dir/redis.log" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  if python3 - "$port" <<'EOF' 2>/dev/null; then break; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2)
s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
EOF
  sleep 0.05
done

echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on port $port, library $lib"
python3 "$here/check.py" --port "$port" --lib "$lib"
