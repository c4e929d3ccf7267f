#!/usr/bin/env bash
# Memory of idle clients, Server-Sent Events beside WebSocket (issue 17).
# Loopback only; starts and stops its own redis-server and, per transport, a
# fresh gateway (PULSEGATE_BIN, default target/debug/pulsegate; defaults, no
# config file). N clients open /sse/bench or /dashboard/ws/bench, read their
# first bytes (the head and initial_data) and stay idle; prints the
# gateway's RSS growth per client. Repeats RUNS times.
#
# Usage: scripts/bench-idle.sh            (env: N=2000, RUNS=3, PULSEGATE_BIN)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-idle"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

N="${N:-2000}"
RUNS="${RUNS:-3}"
BIN="${PULSEGATE_BIN:-$REPO_ROOT/target/debug/pulsegate}"
[[ -x "$BIN" ]] || cargo build --bin pulsegate >&2
work="$(mktemp -d)"
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
RP="$(free_port)"
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
REDIS=$!
GW=""
cleanup() {
  [[ -n "$GW" ]] && kill "$GW" 2>/dev/null || true
  kill "$REDIS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/idle.py" <<'PY'
import base64, os, socket, sys, time
port, pid, kind, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def rss_kb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def request():
    if kind == "sse":
        return b"GET /sse/bench HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    key = base64.b64encode(os.urandom(16))
    return (b"GET /dashboard/ws/bench HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
time.sleep(1)
before = rss_kb()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request())
    socks.append(s)
    if i % 200 == 199:
        time.sleep(0.2)
for s in socks:
    s.settimeout(30)
    s.recv(65536)
time.sleep(3)
after = rss_kb()
print(f"{kind}: {n} idle clients, RSS {before} kB -> {after} kB, {(after - before) / n:.1f} kB per client")
PY

for run in $(seq "$RUNS"); do
  for kind in sse ws; do
    GP="$(free_port)"
    PULSEGATE_LISTEN="127.0.0.1:$GP" PULSEGATE_REDIS_URL="redis://127.0.0.1:$RP" PULSEGATE_LOG_LEVEL=warn \
      "$BIN" serve --config /dev/null >"$work/gw.log" 2>&1 &
    GW=$!
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$GP/readyz" >/dev/null && break; sleep 0.2; done
    python3 "$work/idle.py" "$GP" "$GW" "$kind" "$N"
    kill -TERM "$GW"
    wait "$GW" || true
    GW=""
  done
done
