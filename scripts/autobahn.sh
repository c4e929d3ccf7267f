#!/usr/bin/env bash
# Autobahn|Testsuite fuzzing client, cases 1-10 without 9.* (the performance
# cases: 64 KiB-16 MiB messages, over ws.max_message_bytes by design; with
# the limit wstest keeps sending after our 1009 close and stalls), against the gateway's
# WebSocket reader and frame encoder (examples/autobahn_echo.rs), then a diff
# of each case's behavior against tests/autobahn/expected.json.
#
#   scripts/autobahn.sh            run and diff (exit 1 on any difference)
#   scripts/autobahn.sh --update   run and rewrite the expected results
#   scripts/autobahn.sh --deflate [--update]
#                                  permessage-deflate: a representative
#                                  subset of 12.* and 13.* (DEFLATE_SUBSET
#                                  below, about a minute), diffed against
#                                  those cases of
#                                  tests/autobahn/expected-deflate.json
#   scripts/autobahn.sh --deflate-all [--update]
#                                  all 216 cases of 12.* and 13.* (about
#                                  5 minutes here), diffed against the whole
#                                  of tests/autobahn/expected-deflate.json
#
# Needs Python 2.7 with autobahntestsuite 0.8.2 (docs/decisions.md F12),
# which scripts/ensure-autobahn.sh installs into /tmp/ab; WSTEST names
# another wstest, AUTOBAHN_PORT a fixed port. scripts/test.sh runs the
# default and the --deflate subset (skipped when wstest cannot be had).
set -euo pipefail
cd "$(dirname "$0")/.."
CASES='["1.*","2.*","3.*","4.*","5.*","6.*","7.*","8.*","9.*","10.*"]'
EXPECTED=tests/autobahn/expected.json
# One or two cases per sub-section of 12 (payloads) and 13 (extension
# offers), over the message sizes and fragmentations: at and over the size
# limit, fragmented to 256 bytes, a binary payload (refused), and windows
# that keep larger messages uncompressed (13.3, 13.5, 13.7).
DEFLATE_SUBSET='["12.1.9","12.1.10","12.1.14","12.2.1","12.3.5","12.4.5","12.4.13","12.5.1",
  "13.1.5","13.2.11","13.3.3","13.3.5","13.4.7","13.5.4","13.6.12","13.7.13"]'
WSTEST_TIMEOUT=600
case "${1:-}" in
  --deflate)
    shift
    EXPECTED=tests/autobahn/expected-deflate.json
    CASES="$DEFLATE_SUBSET"
    ;;
  --deflate-all)
    shift
    EXPECTED=tests/autobahn/expected-deflate.json
    CASES='["12.*","13.*"]'
    WSTEST_TIMEOUT=3600
    ;;
esac
WSTEST=${WSTEST:-/tmp/ab/bin/wstest}
# wstest's own modules live under its --user prefix (scripts/ensure-autobahn.sh).
AB_PREFIX="$(dirname "$(dirname "$WSTEST")")"
# A free port unless told: other runs may share the machine.
PORT=${AUTOBAHN_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
OUT=$(mktemp -d)
ECHO_PID=
trap '[ -n "$ECHO_PID" ] && kill "$ECHO_PID" 2>/dev/null; rm -rf "$OUT"' EXIT

cargo build --quiet --example autobahn_echo
./target/debug/examples/autobahn_echo "127.0.0.1:$PORT" &
ECHO_PID=$!
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

cat > "$OUT/spec.json" <<JSON
{"outdir": "$OUT/reports",
 "servers": [{"agent": "pulsegate", "url": "ws://127.0.0.1:$PORT/"}],
 "cases": $CASES,
 "exclude-cases": ["9.*"], "exclude-agent-cases": {}}
JSON
(cd "$OUT" && PYTHONUSERBASE="$AB_PREFIX" timeout "$WSTEST_TIMEOUT" "$WSTEST" -m fuzzingclient -s spec.json > wstest.log 2>&1)

python3 - "$OUT/reports/index.json" "$EXPECTED" "${1:-}" "$CASES" <<'PY'
import fnmatch, json, os, sys
index, expected_path, mode, cases = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
got = {case: r["behavior"] for case, r in json.load(open(index))["pulsegate"].items()}
key = lambda c: [int(x) for x in c.split(".")]
got = dict(sorted(got.items(), key=lambda kv: key(kv[0])))
counts = {}
for b in got.values():
    counts[b] = counts.get(b, 0) + 1
print("autobahn:", len(got), "cases:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
expected = json.load(open(expected_path)) if os.path.exists(expected_path) else {}
# Only the cases this run asked for: a subset run keeps (and is diffed
# against) its own entries of a file that holds the whole section.
ran = lambda c: any(fnmatch.fnmatchcase(c, p) for p in cases)
if mode == "--update":
    merged = {c: b for c, b in expected.items() if not ran(c)}
    merged.update(got)
    merged = dict(sorted(merged.items(), key=lambda kv: key(kv[0])))
    json.dump(merged, open(expected_path, "w"), indent=1)
    open(expected_path, "a").write("\n")
    print("wrote", expected_path)
    sys.exit(0)
expected = {c: b for c, b in expected.items() if ran(c)}
diff = [(c, expected.get(c), got.get(c)) for c in sorted(set(expected) | set(got), key=key)
        if expected.get(c) != got.get(c)]
for c, e, g in diff:
    print(f"  {c}: expected {e}, got {g}")
print("autobahn: no differences" if not diff else f"autobahn: {len(diff)} differences")
sys.exit(1 if diff else 0)
PY
