"""permessage-deflate benchmark (scripts/bench-compression.sh runs it).

For each mode (off: clients offer no extension; on: they offer
permessage-deflate, as browsers do), ROUNDS rounds of:

  mix       CLIENTS clients on /dashboard/ws/persona_alpha; `pulsegate
            simulate` publishes EVENTS events of the demo's mix; until every
            client has them all.
  initial   CONNECTS connections (CONCURRENCY at a time) to
            /dashboard/ws/persona_beta, each reading its `initial_data` and
            closing; persona_beta was filled once with FILL events.

Per round it reads the gateway's CPU time (/proc/PID/stat utime+stime) and
its frames_sent, compression and snapshot-read counters (clients joining
at once share a snapshot read, and its compressed initial_data), counts
every byte the clients' sockets received (the frames, and for `initial`
the 101 answers too), and prints
the medians per million deliveries.

    python3 bench-compression.py GATEWAY_BIN REDIS_URL PORT
"""
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

import websockets
from websockets.legacy.protocol import WebSocketCommonProtocol

# Every byte that reaches a client socket (TCP payload), counted before parsing.
RECEIVED = [0]
_data_received = WebSocketCommonProtocol.data_received


def _counting(self, data):
    RECEIVED[0] += len(data)
    return _data_received(self, data)


WebSocketCommonProtocol.data_received = _counting

BIN, REDIS_URL, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
CLIENTS = int(os.environ.get("CLIENTS", 50))
EVENTS = int(os.environ.get("EVENTS", 4000))
RATE = os.environ.get("RATE", "400")
CONNECTS = int(os.environ.get("CONNECTS", 1000))
CONCURRENCY = int(os.environ.get("CONCURRENCY", 20))
FILL = int(os.environ.get("FILL", 3000))
ROUNDS = int(os.environ.get("ROUNDS", 3))
TICKS = os.sysconf("SC_CLK_TCK")
BASE = f"127.0.0.1:{PORT}"


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def metric(name):
    text = urllib.request.urlopen(f"http://{BASE}/metrics", timeout=5).read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.startswith(name) and not l.startswith("#"))


def sample(pid):
    return (cpu_s(pid), RECEIVED[0], metric("pulsegate_frames_sent_total"),
            metric("pulsegate_ws_compressions_total"), metric("pulsegate_snapshot_reads_total"))


def simulate(persona, events, rate):
    subprocess.run([BIN, "simulate", "--redis-url", REDIS_URL, "--personas", persona,
                    "--rate", str(rate), "--events", str(events)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def connect(path, compress):
    return websockets.connect(f"ws://{BASE}{path}", compression="deflate" if compress else None,
                              max_size=2**24, ping_interval=None, open_timeout=60)


async def mix_round(pid, compress):
    counts = [0] * CLIENTS
    socks = []
    for i in range(CLIENTS):
        ws = await connect("/dashboard/ws/persona_alpha", compress)
        await ws.recv()  # initial_data
        socks.append(ws)

    async def read(i, ws):
        try:
            while True:
                await ws.recv()
                counts[i] += 1
        except websockets.ConnectionClosed:
            pass

    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(socks)]
    before = sample(pid)
    await asyncio.get_running_loop().run_in_executor(None, simulate, "persona_alpha", EVENTS, RATE)
    # Until every client has been quiet for a second.
    last = -1
    while sum(counts) != last:
        last = sum(counts)
        await asyncio.sleep(1.0)
    after = sample(pid)
    for ws in socks:
        await ws.close()
    for r in readers:
        r.cancel()
    return before, after, sum(counts)


async def initial_round(pid, compress):
    sizes = []
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one():
        async with sem:
            async with connect("/dashboard/ws/persona_beta", compress) as ws:
                sizes.append(len(await ws.recv()))

    before = sample(pid)
    await asyncio.gather(*(one() for _ in range(CONNECTS)))
    await asyncio.sleep(0.5)
    after = sample(pid)
    return before, after, len(sizes), statistics.median(sizes)


def per_million(before, after, deliveries):
    cpu, wrote, frames, runs, reads = (a - b for a, b in zip(after, before))
    return {"deliveries": deliveries, "frames_sent": frames, "compressions": runs,
            "snapshot_reads": reads,
            "cpu_s_per_million": cpu / deliveries * 1e6,
            "mb_per_million": wrote / deliveries * 1e6 / 1e6,
            "bytes_per_delivery": wrote / deliveries}


async def main():
    simulate("persona_beta", FILL, 5000)
    results = {}
    for mode in ("off", "on"):
        pid = int(os.environ["GATEWAY_PID"])
        compress = mode == "on"
        for kind in ("mix", "initial"):
            rounds = []
            for _ in range(ROUNDS):
                if kind == "mix":
                    before, after, n = await mix_round(pid, compress)
                    r = per_million(before, after, n)
                else:
                    before, after, n, size = await initial_round(pid, compress)
                    r = per_million(before, after, n)
                    r["initial_data_bytes"] = size
                rounds.append(r)
                print(mode, kind, json.dumps(r), flush=True)
            results[f"{kind}/{mode}"] = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print("medians:", flush=True)
    for k, v in results.items():
        print(k, json.dumps(v), flush=True)


asyncio.run(main())
