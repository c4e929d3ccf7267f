"""Plays a documented WebSocket exchange against the gateway.

The docs write an exchange one step a line (→ client, ← server):

    → GET /dashboard/ws/persona_alpha HTTP/1.1     open a connection (closes the previous one)
    ← HTTP/1.1 101 Switching Protocols            the handshake's status
    → {"type":"ping"}                             send this text message
    ← {"type":"pong"}                             the next text message has this shape
          (elsewhere: redis-cli PUBLISH ...)      run this shell command, which must succeed

Indented lines without an arrow continue the previous line (request
headers, say) and are not played. A received message is compared with
shape.compare in exact mode, so `{...}` and `...` mark what is not shown.
After the last line, nothing more may arrive within a moment: a message the
docs leave out is a failure too. Any other parenthesised line (`(Redis is
killed)`) cannot be played; such exchanges stay unmarked.
"""

import asyncio
import re
import subprocess

import websockets

import shape

GET = re.compile(r"^GET\s+(\S+)(\s+HTTP/1\.1)?$")
STATUS = re.compile(r"^HTTP/1\.1\s+(\d{3})\b")
ELSEWHERE = re.compile(r"^\(elsewhere:\s*(.*)\)$")
RECEIVE_TIMEOUT = 5.0
QUIET_AFTER = 0.3


class ExchangeError(AssertionError):
    pass


def steps(text):
    """(line number within the block, arrow or "elsewhere", payload)."""
    out = []
    for n, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if line[0] in "→←":
            out.append((n, line[0], line[1:].strip()))
        elif ELSEWHERE.match(line):
            out.append((n, "elsewhere", ELSEWHERE.match(line).group(1)))
        elif line.startswith("("):
            raise ExchangeError(f"line {n}: cannot be played: {line}")
        elif raw[:1].isspace() and out:
            continue  # continuation of the previous line
        else:
            raise ExchangeError(f"line {n}: neither → nor ← nor (elsewhere: ...): {line}")
    return out


async def _play(text, base_ws, shell):
    ws, status = None, None
    try:
        for n, arrow, payload in steps(text):
            where = f"line {n}"
            if arrow == "elsewhere":
                r = await asyncio.to_thread(shell, payload)
                if r.returncode != 0:
                    raise ExchangeError(f"{where}: `{payload}` exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
            elif arrow == "→" and GET.match(payload):
                if ws is not None:
                    await ws.close()
                ws, status = None, None
                try:
                    ws = await websockets.connect(base_ws + GET.match(payload).group(1), open_timeout=RECEIVE_TIMEOUT, max_size=None)
                    status = 101
                except websockets.exceptions.InvalidStatusCode as e:
                    status = e.status_code
            elif arrow == "←" and STATUS.match(payload):
                want = int(STATUS.match(payload).group(1))
                if status != want:
                    raise ExchangeError(f"{where}: documented HTTP {want}, got {status}")
            elif arrow == "→":
                if ws is None:
                    raise ExchangeError(f"{where}: no open connection to send on (status {status})")
                await ws.send(payload)
            else:
                if ws is None:
                    raise ExchangeError(f"{where}: no open connection to receive on (status {status})")
                doc, rest = shape.parse_doc_prefix(payload)
                if rest.strip() and not rest.strip().startswith("("):
                    raise ExchangeError(f"{where}: text after the message: {rest.strip()}")
                try:
                    msg = await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT)
                except asyncio.TimeoutError:
                    raise ExchangeError(f"{where}: nothing received within {RECEIVE_TIMEOUT:.0f}s, documented {payload}") from None
                real = shape.parse_real_values(msg)[0]
                diffs = shape.compare(doc, real, exact=True)
                if diffs:
                    raise ExchangeError(f"{where}: received {msg[:300]}\n  " + "\n  ".join(diffs))
        if ws is not None:
            try:
                extra = await asyncio.wait_for(ws.recv(), QUIET_AFTER)
                raise ExchangeError(f"after the last line: an undocumented message arrived: {extra[:300]}")
            except asyncio.TimeoutError:
                pass
    finally:
        if ws is not None:
            await ws.close()


def play(text, base_ws, shell):
    """Raises ExchangeError (or shape.DocJsonError) on the first difference.
    `shell(command)` runs an `(elsewhere: ...)` command, returning a
    subprocess.CompletedProcess."""
    asyncio.run(_play(text, base_ws, shell))


if __name__ == "__main__":  # a manual check: wsexchange.py ws://127.0.0.1:8081 < exchange.txt
    import sys

    play(sys.stdin.read(), sys.argv[1], lambda c: subprocess.run(["bash", "-c", c], capture_output=True, text=True))
