"""Standard WebSocket clients (Python `websockets`) for tests/integration/compression.rs.

    clients.py URL CHANNEL COMPRESSED PLAIN MESSAGES

Opens COMPRESSED clients offering permessage-deflate (the library's default
offer) and PLAIN clients offering nothing, subscribes each to CHANNEL, and
prints `ready` once every one has its `initial_data`. Then each reads
MESSAGES `message` frames and the script prints one JSON line: how many
clients negotiated the extension, per-client counts, how many distinct
message sequences were seen (1: every client got the same text), and the
first client's messages.
"""
import asyncio
import hashlib
import json
import sys

import websockets


async def client(url, channel, compress, messages, ready, go):
    async with websockets.connect(
        url,
        compression="deflate" if compress else None,
        max_size=2**22,
        ping_interval=None,
        open_timeout=60,
        close_timeout=5,
    ) as ws:
        ext = ws.response_headers.get("Sec-WebSocket-Extensions") or ""
        await ws.send(json.dumps({"type": "subscribe", "channel": channel}))
        while json.loads(await ws.recv())["type"] != "initial_data":
            pass
        ready.set()
        await go.wait()
        got = []
        while len(got) < messages:
            text = await ws.recv()
            if json.loads(text)["type"] == "message":
                got.append(text)
        return ("permessage-deflate" in ext, got)


async def main():
    url, channel = sys.argv[1], sys.argv[2]
    compressed, plain, messages = map(int, sys.argv[3:6])
    n = compressed + plain
    go = asyncio.Event()
    # Connect in batches: a thousand handshakes at once only queue up.
    tasks = []
    for start in range(0, n, 100):
        batch = []
        for i in range(start, min(n, start + 100)):
            ready = asyncio.Event()
            batch.append(ready)
            tasks.append(asyncio.create_task(client(url, channel, i < compressed, messages, ready, go)))
        deadline = asyncio.get_running_loop().time() + 120
        while not all(r.is_set() for r in batch):
            for t in tasks:
                if t.done():
                    t.result()  # raises what the client raised
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit("clients did not get their initial_data in time")
            await asyncio.sleep(0.05)
    go.set()
    print("ready", flush=True)
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
    digests = {hashlib.sha256("\n".join(got).encode()).hexdigest() for _, got in results}
    print(json.dumps({
        "negotiated": [neg for neg, _ in results],
        "counts": [len(got) for _, got in results],
        "distinct": len(digests),
        "sample": results[0][1],
    }), flush=True)


asyncio.run(main())
