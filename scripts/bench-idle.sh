#!/usr/bin/env bash
# Memory of idle clients (issues 15 and 17), per endpoint. Loopback only;
# starts and stops its own redis-server and, per endpoint and run, GATEWAYS
# fresh gateways (PULSEGATE_BIN, default target/debug/pulsegate; defaults,
# no config file), each with N clients of its own from its own process (one
# process holds about 19k sockets). Endpoints (KINDS):
#   ws   /dashboard/ws/bench: reads the head and initial_data, then idles
#   mux  /ws: subscribes to persona:bench, reads the ack and initial_data
#   sse  /sse/bench: reads the head and initial_data
# Prints, per gateway, the RSS growth per client a few seconds after the
# ramp and again after HOLD seconds idle, and the kernel's TCP buffer memory
# per connection (/proc/net/sockstat, both ends of each loopback connection,
# so it counts twice what a real client's gateway would hold).
#
# Usage: scripts/bench-idle.sh
#   env: N=2000 RUNS=3 KINDS="ws mux sse" GATEWAYS=1 HOLD=3 PULSEGATE_BIN
#   N=15000 RUNS=3 KINDS="ws mux" PULSEGATE_BIN=target/release/pulsegate scripts/bench-idle.sh
#   N=15000 GATEWAYS=4 RUNS=1 KINDS=ws PULSEGATE_BIN=target/release/pulsegate scripts/bench-idle.sh
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="bench-idle"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

N="${N:-2000}"
RUNS="${RUNS:-3}"
KINDS="${KINDS:-ws mux sse}"
GATEWAYS="${GATEWAYS:-1}"
HOLD="${HOLD:-3}"
BIN="${PULSEGATE_BIN:-$REPO_ROOT/target/debug/pulsegate}"
[[ -x "$BIN" ]] || cargo build --bin pulsegate >&2
work="$(mktemp -d)"
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
RP="$(free_port)"
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
REDIS=$!
GWS=()
cleanup() {
  for pid in "${GWS[@]:-}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; done
  kill "$REDIS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/idle.py" <<'PY'
import base64, json, os, socket, struct, sys, time
port, pid, kind, n, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
def rss_kb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def tcp_mem_kb():
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[f.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") // 1024
def masked_text(payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body
def request():
    if kind == "sse":
        return b"GET /sse/bench HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    path = b"/ws" if kind == "mux" else b"/dashboard/ws/bench"
    key = base64.b64encode(os.urandom(16))
    return (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
SUBSCRIBE = masked_text(json.dumps({"type": "subscribe", "channel": "persona:bench"}).encode())
time.sleep(1)
before, kbefore = rss_kb(), tcp_mem_kb()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request() + (SUBSCRIBE if kind == "mux" else b""))
    socks.append(s)
    if i % 200 == 199:
        time.sleep(0.2)
for s in socks:
    s.settimeout(30)
    s.recv(65536)
time.sleep(3)
after, kafter = rss_kb(), tcp_mem_kb()
time.sleep(max(0.0, hold - 3))
late = rss_kb()
print(f"{kind}: {n} idle clients, RSS {before} kB -> {after} kB, {(after - before) / n:.2f} kB per client; "
      f"after {hold:.0f} s idle {(late - before) / n:.2f} kB; kernel TCP memory {(kafter - kbefore) / n:.2f} kB per connection (both ends)",
      flush=True)
PY

for run in $(seq "$RUNS"); do
  for kind in $KINDS; do
    GWS=()
    PORTS=()
    for g in $(seq "$GATEWAYS"); do
      GP="$(free_port)"
      PULSEGATE_LISTEN="127.0.0.1:$GP" PULSEGATE_REDIS_URL="redis://127.0.0.1:$RP" PULSEGATE_LOG_LEVEL=warn \
        "$BIN" serve --config /dev/null >"$work/gw$g.log" 2>&1 &
      GWS+=("$!")
      PORTS+=("$GP")
    done
    for GP in "${PORTS[@]}"; do
      for _ in $(seq 50); do curl -sf "http://127.0.0.1:$GP/readyz" >/dev/null && break; sleep 0.2; done
    done
    CLIENTS=()
    for i in "${!PORTS[@]}"; do
      python3 "$work/idle.py" "${PORTS[$i]}" "${GWS[$i]}" "$kind" "$N" "$HOLD" &
      CLIENTS+=("$!")
    done
    for c in "${CLIENTS[@]}"; do wait "$c"; done
    for pid in "${GWS[@]}"; do kill -TERM "$pid"; done
    for pid in "${GWS[@]}"; do wait "$pid" || true; done
    GWS=()
  done
done
