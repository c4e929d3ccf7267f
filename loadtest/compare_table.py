#!/usr/bin/env python3
"""Folds the JSON reports of loadtest/compare.sh into one Markdown table.

Per (case, server): the median over rounds of deliveries/s, p50 and p99
latency and server CPU-seconds per million deliveries; the largest max
latency; p99.9; memory per connection (idle RSS growth / connections for the idle
case, peak RSS growth / connections otherwise). Deliveries/s carries a `!`
when any round delivered less than 100% to its normal readers. "client
busy" is the median share of its CPU the load client used while publishing
and draining; near 100%, the client's own queueing is part of the latency.

usage: compare_table.py DIR
"""
import glob
import json
import os
import statistics
import sys

CASE_ORDER = ["1k-200", "1k-1000", "10k-20", "10k-100", "idle-15k"]
SERVER_ORDER = ["pulsegate", "nchan", "node"]


def ms(us):
    return f"{us / 1000:.2f}" if us is not None else "-"


def kib(b):
    return f"{b / 1024:.1f}" if b is not None else "-"


def main(d):
    runs = {}
    for path in sorted(glob.glob(os.path.join(d, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        server, case = (r.get("label") or "?/?").split("/", 1)
        runs.setdefault((case, server), []).append(r)
    failed = sorted(
        os.path.basename(p)[:-4]
        for p in glob.glob(os.path.join(d, "*.txt"))
        if not os.path.exists(p[:-4] + ".json")
    )

    def key(k):
        c, s = k
        return (CASE_ORDER.index(c) if c in CASE_ORDER else 99,
                SERVER_ORDER.index(s) if s in SERVER_ORDER else 99)

    print("| case | server | rounds | deliveries/s | delivery | p50 ms | p99 ms | p99.9 ms "
          "| max ms | CPU-s / M deliveries | KiB / connection | client busy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (case, server) in sorted(runs, key=key):
        rs = runs[(case, server)]
        med = lambda f: statistics.median(f(r) for r in rs)
        ratio = min(r["delivery_ratio"] for r in rs)
        ok = all(r["delivery_ratio"] >= 1.0 and r["normal"]["failed"] == 0 for r in rs)
        gw = [r.get("gateway") or {} for r in rs]
        cpu = [g.get("cpu_s_per_million_deliveries") for g in gw]
        cpu = [c for c in cpu if c is not None]
        if case.startswith("idle"):
            mem = [g.get("idle_bytes_per_connection") for g in gw]
        else:
            mem = [g.get("peak_bytes_per_connection") for g in gw]
        mem = [m for m in mem if m is not None]
        busy = [r["client_busy"] for r in rs if r.get("client_busy") is not None]
        print("| {} | {} | {} | {:,.0f}{} | {:.4f}% | {} | {} | {} | {} | {} | {} | {} |".format(
            case, server, len(rs),
            med(lambda r: r["deliveries_per_s"]), "" if ok else " !",
            100 * ratio,
            ms(med(lambda r: r["latency_us"]["p50"])),
            ms(med(lambda r: r["latency_us"]["p99"])),
            ms(med(lambda r: r["latency_us"]["p999"])),
            ms(max(r["latency_us"]["max"] for r in rs)),
            f"{statistics.median(cpu):.3f}" if cpu and not case.startswith("idle") else "-",
            kib(statistics.median(mem)) if mem else "-",
            f"{100 * statistics.median(busy):.0f}%" if busy and not case.startswith("idle") else "-",
        ))
    if failed:
        print()
        print("Runs without a report (see their .err files): " + ", ".join(failed))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
