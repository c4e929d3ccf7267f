#!/usr/bin/env python3
# Fixed-rate GET load: RATE requests/s for SECS seconds over CONNS keep-alive
# connections (each connection sends on its own schedule), latency measured
# from the scheduled send time (so queueing delay counts).
import http.client, sys, threading, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
RATE, SECS, CONNS = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
lat, errors, lock = [], [0], threading.Lock()
start = time.perf_counter() + 0.5
def worker(i):
    c = http.client.HTTPConnection(host, port)
    interval = CONNS / RATE
    n = int(SECS * RATE / CONNS)
    local = []
    for k in range(n):
        due = start + (k + i / CONNS) * interval
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        try:
            c.request("GET", path)
            r = c.getresponse(); r.read()
            if r.status != 200: errors[0] += 1
        except Exception:
            errors[0] += 1
            c = http.client.HTTPConnection(host, port)
        local.append(time.perf_counter() - due)
    with lock: lat.extend(local)
ts = [threading.Thread(target=worker, args=(i,)) for i in range(CONNS)]
[t.start() for t in ts]; [t.join() for t in ts]
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(f"requests {len(lat)} errors {errors[0]} rate {RATE}/s: p50 {q(0.5):.2f} ms p90 {q(0.9):.2f} ms p99 {q(0.99):.2f} ms max {lat[-1]*1000:.2f} ms")
