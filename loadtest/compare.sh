#!/usr/bin/env bash
# Side-by-side benchmark on loopback: pulsegate vs nginx + nchan (Redis-backed)
# vs a minimal Node `ws` + Redis server (loadtest/peers/node-ws), measured by
# the same harness (same clock, same client cost).
#
# Every run starts a fresh Redis and a fresh server, both pinned to
# SERVER_CPU; the load client is pinned to CLIENT_CPU. Runs are interleaved
# (A B C A B C ...) for ROUNDS rounds, so drift on the machine hits all three.
#
#   loadtest/compare.sh                 # full matrix, 3 rounds
#   ROUNDS=1 DURATION=5 CASES="1k-200 10k-20" SERVERS="pulsegate node" loadtest/compare.sh
#   CARGO_TARGET_DIR=/elsewhere SKIP_BUILD=1 loadtest/compare.sh   # use built binaries
#
# Cases:  1k-200  1,000 subscribers x 200 msg/s      1k-1000  x 1,000 msg/s
#         10k-20  10,000 subscribers x 20 msg/s      10k-100  x 100 msg/s
#         idle-15k  15,000 idle connections (memory per connection)
# Publishing: raw Redis PUBLISH for pulsegate and node; HTTP POST to
# /pub/<persona> for nchan (nchan does not read arbitrary Redis channels).
#
# Output: $OUT/*.json (one per run) and $OUT/table.md (printed at the end).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
# To resume an interrupted comparison into the same OUT: FIRST_ROUND=2.
FIRST_ROUND="${FIRST_ROUND:-1}"
DURATION="${DURATION:-10}"
CASES="${CASES:-1k-200 1k-1000 10k-20 10k-100 idle-15k}"
SERVERS="${SERVERS:-pulsegate nchan node}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
BASE_PORT="${BASE_PORT:-17100}"
OUT="${OUT:-$ROOT/loadtest/results/compare-$(date +%Y%m%d-%H%M%S)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/release"
RUN_DIR="$(mktemp -d /tmp/pulsegate-compare.XXXXXX)"

REDIS_PORT=$((BASE_PORT + 1))
PG_PORT=$((BASE_PORT + 10))
NCHAN_PORT=$((BASE_PORT + 20))
NODE_PORT=$((BASE_PORT + 30))

log() { printf '[compare] %s\n' "$*" >&2; }

STARTED=()
cleanup() {
    for pid in "${STARTED[@]:-}"; do
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
    sleep 0.5
    for pid in "${STARTED[@]:-}"; do
        if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on port $1"
    return 1
}

free_port() {
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        log "port $1 is taken; set BASE_PORT"
        exit 1
    fi
}

install() {
    if [[ " $SERVERS " == *" nchan "* ]] && [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
        log "installing nginx + libnginx-mod-nchan (Debian)"
        apt-get update -qq && apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
    fi
    if [[ " $SERVERS " == *" node "* ]] && [ ! -d "$ROOT/loadtest/peers/node-ws/node_modules" ]; then
        log "installing the node peer's packages (npm ci)"
        (cd "$ROOT/loadtest/peers/node-ws" && npm ci --no-audit --no-fund --silent)
    fi
    if [ -n "${SKIP_BUILD:-}" ]; then
        log "SKIP_BUILD set: using the binaries in $BIN"
    else
        log "building pulsegate and pulsegate-loadtest (release, $CARGO_TARGET_DIR)"
        (cd "$ROOT" && cargo build --release --quiet -p pulsegate -p pulsegate-loadtest)
    fi
    for b in pulsegate pulsegate-loadtest; do
        [ -x "$BIN/$b" ] || { log "missing $BIN/$b"; exit 1; }
    done
}

# Starts Redis pinned to the server core; sets REDIS_PID.
start_redis() {
    free_port "$REDIS_PORT"
    taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize yes --pidfile "$RUN_DIR/redis.pid" \
        --logfile "$RUN_DIR/redis.log"
    wait_port "$REDIS_PORT"
    # Redis listens before it writes its pid file.
    for _ in $(seq 50); do [ -s "$RUN_DIR/redis.pid" ] && break; sleep 0.1; done
    REDIS_PID="$(cat "$RUN_DIR/redis.pid")"
    STARTED+=("$REDIS_PID")
}

stop_redis() {
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$REDIS_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
}

# Starts server $1 pinned to the server core; sets SERVER_PID (to kill) and
# MEASURE_PIDS (comma list whose CPU and RSS count).
start_server() {
    case "$1" in
    pulsegate)
        free_port "$PG_PORT"
        # From the scratch dir: built-in defaults, not the work tree's config file.
        (cd "$RUN_DIR" && exec taskset -c "$SERVER_CPU" "$BIN/pulsegate" serve \
            --listen "127.0.0.1:$PG_PORT" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
            --log-level warn) >"$RUN_DIR/pulsegate.log" 2>&1 &
        SERVER_PID=$!
        STARTED+=("$SERVER_PID")
        wait_port "$PG_PORT" || { tail -5 "$RUN_DIR/pulsegate.log" >&2; exit 1; }
        MEASURE_PIDS="$SERVER_PID"
        ;;
    nchan)
        free_port "$NCHAN_PORT"
        mkdir -p "$RUN_DIR/nchan/tmp"
        sed -e "s#@PREFIX@#$RUN_DIR/nchan#g; s#@PORT@#$NCHAN_PORT#; s#@REDIS_PORT@#$REDIS_PORT#" \
            "$ROOT/loadtest/peers/nchan/nginx.conf.in" >"$RUN_DIR/nchan/nginx.conf"
        taskset -c "$SERVER_CPU" nginx -c "$RUN_DIR/nchan/nginx.conf" -p "$RUN_DIR/nchan" \
            >"$RUN_DIR/nchan/out.log" 2>&1 &
        SERVER_PID=$!
        STARTED+=("$SERVER_PID")
        wait_port "$NCHAN_PORT"
        local workers
        workers="$(pgrep -P "$SERVER_PID" | paste -sd, -)"
        MEASURE_PIDS="$SERVER_PID${workers:+,$workers}"
        ;;
    node)
        free_port "$NODE_PORT"
        (cd "$ROOT/loadtest/peers/node-ws" && PORT="$NODE_PORT" \
            REDIS_URL="redis://127.0.0.1:$REDIS_PORT" exec taskset -c "$SERVER_CPU" node server.js) \
            >"$RUN_DIR/node.log" 2>&1 &
        SERVER_PID=$!
        STARTED+=("$SERVER_PID")
        wait_port "$NODE_PORT"
        MEASURE_PIDS="$SERVER_PID"
        ;;
    esac
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

# The harness flags that point at server $1.
target_flags() {
    case "$1" in
    pulsegate) echo "--mode pulsegate --target ws://127.0.0.1:$PG_PORT --publish raw" ;;
    nchan) echo "--mode generic --target ws://127.0.0.1:$NCHAN_PORT/sub/{persona} --publish http --http-url http://127.0.0.1:$NCHAN_PORT/pub/{persona}" ;;
    node) echo "--mode generic --target ws://127.0.0.1:$NODE_PORT/sub/{persona} --publish raw" ;;
    esac
}

case_flags() {
    case "$1" in
    1k-200) echo "steady --subscribers 1000 --personas 1 --rate 200 --duration $DURATION" ;;
    1k-1000) echo "steady --subscribers 1000 --personas 1 --rate 1000 --duration $DURATION" ;;
    10k-20) echo "steady --subscribers 10000 --personas 1 --rate 20 --duration $DURATION" ;;
    10k-100) echo "steady --subscribers 10000 --personas 1 --rate 100 --duration $DURATION" ;;
    idle-15k) echo "idle-15k" ;;
    *) log "unknown case $1"; exit 64 ;;
    esac
}

main() {
    install
    mkdir -p "$OUT"
    log "results in $OUT"
    for round in $(seq "$FIRST_ROUND" "$ROUNDS"); do
        for c in $CASES; do
            for s in $SERVERS; do
                log "round $round/$ROUNDS: $c on $s"
                start_redis
                start_server "$s"
                # shellcheck disable=SC2046
                if ! taskset -c "$CLIENT_CPU" "$BIN/pulsegate-loadtest" run $(case_flags "$c") \
                    $(target_flags "$s") --redis "redis://127.0.0.1:$REDIS_PORT" \
                    --threads 1 --gateway-pid "$MEASURE_PIDS" --redis-pid "$REDIS_PID" \
                    --label "$s/$c" --json "$OUT/$c-$s-r$round.json" \
                    >"$OUT/$c-$s-r$round.txt" 2>"$OUT/$c-$s-r$round.err"; then
                    log "run failed: $(tail -1 "$OUT/$c-$s-r$round.err")"
                fi
                stop_server
                stop_redis
                sleep 1
            done
        done
    done
    python3 "$ROOT/loadtest/compare_table.py" "$OUT" | tee "$OUT/table.md"
}

main "$@"
