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
#                                  permessage-deflate instead: the cases of
#                                  12.* and 13.* named in
#                                  tests/autobahn/expected-deflate.json (a
#                                  subset: the whole of 12 and 13 took wstest
#                                  over an hour on the shared 2-core machine)
#
# Needs Python 2.7 with autobahntestsuite 0.8.2 (docs/decisions.md F12):
#   PYTHONUSERBASE=/tmp/ab ~/.pyenv/versions/2.7.18/bin/pip install --user autobahntestsuite==0.8.2
set -euo pipefail
cd "$(dirname "$0")/.."
CASES='["1.*","2.*","3.*","4.*","5.*","6.*","7.*","8.*","9.*","10.*"]'
EXPECTED=tests/autobahn/expected.json
if [[ "${1:-}" == --deflate ]]; then
  shift
  EXPECTED=tests/autobahn/expected-deflate.json
  CASES="$(python3 -c 'import json,sys; print(json.dumps(list(json.load(open(sys.argv[1])))))' "$EXPECTED")"
fi
WSTEST=${WSTEST:-/tmp/ab/bin/wstest}
PORT=${AUTOBAHN_PORT:-9001}
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
(cd "$OUT" && PYTHONUSERBASE=/tmp/ab timeout 600 "$WSTEST" -m fuzzingclient -s spec.json > wstest.log 2>&1)

python3 - "$OUT/reports/index.json" "$EXPECTED" "${1:-}" <<'PY'
import json, sys
index, expected_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
got = {case: r["behavior"] for case, r in json.load(open(index))["pulsegate"].items()}
key = lambda c: [int(x) for x in c.split(".")]
got = dict(sorted(got.items(), key=lambda kv: key(kv[0])))
counts = {}
for b in got.values():
    counts[b] = counts.get(b, 0) + 1
print("autobahn:", len(got), "cases:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
if mode == "--update":
    json.dump(got, open(expected_path, "w"), indent=1)
    open(expected_path, "a").write("\n")
    print("wrote", expected_path)
    sys.exit(0)
expected = json.load(open(expected_path))
diff = [(c, expected.get(c), got.get(c)) for c in sorted(set(expected) | set(got), key=key)
        if expected.get(c) != got.get(c)]
for c, e, g in diff:
    print(f"  {c}: expected {e}, got {g}")
print("autobahn: no differences" if not diff else f"autobahn: {len(diff)} differences")
sys.exit(1 if diff else 0)
PY
