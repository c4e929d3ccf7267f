#!/usr/bin/env python3
"""Checks for lua/pulse.lua against a live redis-server (>= 7.0).

Usage: check.py --port PORT [--lib lua/pulse.lua] [--host 127.0.0.1]
Normally run through check.sh, which starts a throwaway redis-server.
Python standard library only; speaks RESP2 over a socket.
The server is FLUSHALL'ed: never point this at a server holding real data.
"""
import argparse
import datetime
import json
import math
import os
import random
import re
import socket
import struct
import sys
import time

# --------------------------------------------------------------------------
# minimal RESP2 client
# --------------------------------------------------------------------------


class RespError(Exception):
    def __init__(self, msg):
        super().__init__(msg)
        self.msg = msg


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode("utf-8", "surrogateescape"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("utf-8", "surrogateescape")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("bad RESP line %r" % line)

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, bytes):
                b = a
            else:
                b = str(a).encode("utf-8", "surrogateescape")
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))

    def call(self, *args):
        self.send(*args)
        return self.read()

    def ok(self, *args):
        r = self.call(*args)
        if isinstance(r, RespError):
            raise r
        return r

    def raw_call(self, *args):
        """Like call() but bulk strings stay bytes (for DUMP)."""
        self.send(*args)
        return self.raw_call_pending()

    def raw_call_pending(self):
        line = self._line()
        if line[:1] == b"$":
            n = int(line[1:])
            return None if n < 0 else self._exact(n)
        if line[:1] == b"-":
            return RespError(line[1:].decode())
        raise ValueError("unexpected %r" % line)


class Sub:
    """A pub/sub connection collecting messages of one channel."""

    def __init__(self, host, port, channel):
        self.c = Conn(host, port)
        self.channel = channel
        r = self.c.call("SUBSCRIBE", channel)
        assert r[0] == "subscribe", r

    def drain(self, timeout=0.05):
        msgs = []
        self.c.sock.settimeout(timeout)
        try:
            while True:
                if b"\r\n" not in self.c.buf:
                    self.c._fill()
                r = self.c.read()
                if r[0] == "message" and r[1] == self.channel:
                    msgs.append(r[2])
        except (socket.timeout, BlockingIOError):
            pass
        finally:
            self.c.sock.settimeout(None)
        return msgs

    def close(self):
        self.c.close()


# --------------------------------------------------------------------------
# test plumbing
# --------------------------------------------------------------------------
FAILS = []
CHECKS = [0]


def check(cond, what):
    CHECKS[0] += 1
    if not cond:
        FAILS.append(what)
        print("  FAIL:", what)


def eq(got, want, what):
    check(got == want, "%s: got %r, want %r" % (what, got, want))


def close(got, want, what, tol=1e-9):
    if want is None or got is None:
        check(got is want, "%s: got %r, want %r" % (what, got, want))
    else:
        check(isinstance(got, (int, float)) and abs(got - want) <= tol,
              "%s: got %r, want %r" % (what, got, want))


def r6(x):
    return math.floor(x * 1e6 + 0.5) / 1e6


def r2(x):
    return math.floor(x * 100 + 0.5) / 100


def rfc3339(ms):
    d = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ms % 1000)


def day(ms):
    return datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc).strftime("%Y-%m-%d")


def id_tuple(i):
    a, b = i.split("-")
    return int(a), int(b)


ID_RE = re.compile(r"^\d+-\d+$")
T0 = 1795305600000           # 2026-11-22T00:00:00Z (a minute boundary)
MIN = 60000
HOUR = 3600000
DAYMS = 86400000


class Ctx:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.r = Conn(host, port)

    def ingest(self, base, ev, opts=None):
        body = ev if isinstance(ev, (str, bytes)) else json.dumps(ev)
        args = ["FCALL", "pulse_ingest", 1, base, body]
        if opts is not None:
            args.append(opts if isinstance(opts, (str, bytes)) else json.dumps(opts))
        return self.r.call(*args)

    def must(self, base, ev, opts=None):
        r = self.ingest(base, ev, opts)
        if isinstance(r, RespError):
            raise AssertionError("ingest failed: %s for %s" % (r.msg, ev))
        return r

    def snapshot(self, base, opts=None, ro=True):
        args = ["FCALL_RO" if ro else "FCALL", "pulse_snapshot", 1, base]
        if opts is not None:
            args.append(json.dumps(opts))
        r = self.r.call(*args)
        if isinstance(r, RespError):
            raise AssertionError("snapshot failed: " + r.msg)
        return r

    def variant(self, base, vid, opts=None):
        args = ["FCALL_RO", "pulse_variant", 1, base, vid]
        if opts is not None:
            args.append(json.dumps(opts))
        r = self.r.call(*args)
        if isinstance(r, RespError):
            raise AssertionError("pulse_variant failed: " + r.msg)
        return None if r is None else json.loads(r)

    def entry(self, base, sid):
        """Stream entry by id -> dict of fields."""
        r = self.r.ok("XRANGE", base + ":stream", sid, sid)
        if not r:
            return None
        f = r[0][1]
        return dict(zip(f[0::2], f[1::2]))

    def msg(self, base, sid):
        e = self.entry(base, sid)
        return json.loads(e["m"])

    def state(self, pattern="*"):
        """Every key's type, canonical content and TTL presence (DUMP is not
        used: a hashtable-encoded hash may dump its fields in another order
        after a read did an incremental rehash step)."""
        out = {}
        cursor = "0"
        keys = []
        while True:
            cursor, ks = self.r.ok("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys += ks
            if cursor == "0":
                break
        for k in keys:
            t = self.r.ok("TYPE", k)
            if t == "hash":
                f = self.r.ok("HGETALL", k)
                v = sorted(zip(f[0::2], f[1::2]))
            elif t == "zset":
                v = self.r.ok("ZRANGE", k, 0, -1, "WITHSCORES")
            elif t == "stream":
                v = (self.r.ok("XRANGE", k, "-", "+"), self.r.ok("XINFO", "STREAM", k)[7])
            elif t == "set":
                v = sorted(self.r.ok("SMEMBERS", k))
            else:
                v = self.r.raw_call("DUMP", k)
            out[k] = (t, v, self.r.ok("PTTL", k) > 0)
        return out

    def sub(self, channel):
        return Sub(self.host, self.port, channel)


def post(base, vid, ts, pred=0.05, pattern="question_hook", content=None, **kw):
    ev = {"type": "variant_posted", "variant_id": vid, "content": content or ("content of " + vid),
          "predicted_er": pred, "ts": ts}
    if pattern is not None:
        ev["pattern_used"] = pattern
    ev.update(kw)
    return ev


def perf(vid, views, inters, ts, **kw):
    ev = {"type": "performance_update", "variant_id": vid, "view_count": views,
          "interaction_count": inters, "ts": ts}
    ev.update(kw)
    return ev


def kill(vid, ts, reason="low_engagement", fer=0.01, sample=1200):
    return {"type": "early_kill", "variant_id": vid, "reason": reason,
            "final_engagement_rate": fer, "sample_size": sample, "ts": ts}


# reference model of one variant's counters and per-minute buckets
class VModel:
    def __init__(self, pred, posted_ts):
        self.pred = pred
        self.v = self.i = 0
        self.E = None
        self.b = {}
        self.u = 0

    def update(self, ts, views, inters):
        m = ts // MIN
        nv, ni = max(self.v, views), max(self.i, inters)
        dv, di = nv - self.v, ni - self.i
        stale = dv == 0 and di == 0
        newE = m if self.E is None else max(self.E, m)
        if not stale:
            if m > newE - 60:
                bv, bi = self.b.get(m, (0, 0))
                self.b[m] = (bv + dv, bi + di)
            self.E = newE
            self.v, self.i = nv, ni
        cer = self.i / self.v if self.v > 0 else 0
        self.u = math.floor(cer * 1e6 + 0.5)
        return {
            "view_count": self.v, "interaction_count": self.i, "current_er": self.u / 1e6,
            "performance_vs_prediction": r6((cer - self.pred) / self.pred) if self.pred > 0 else None,
            "er_5m": self.window(newE, 5), "er_15m": self.window(newE, 15),
            "er_60m": self.window(newE, 60), "view_delta": dv, "interaction_delta": di,
            "stale": stale,
        }

    def window(self, end, n):
        sv = si = 0
        for k, (bv, bi) in self.b.items():
            if end - n < k <= end:
                sv += bv
                si += bi
        return r6(si / sv) if sv > 0 else None

    def series(self, nm):
        out = []
        for k in range(nm - 59, nm + 1):
            bv, bi = self.b.get(k, (0, 0))
            out.append(r6(bi / bv) if bv > 0 else None)
        return out


def compare_data(data, want, what):
    for k, v in want.items():
        if isinstance(v, float) or (v is None and k.startswith(("er_", "perf", "current"))):
            close(data.get(k), v, "%s.%s" % (what, k))
        else:
            eq(data.get(k), v, "%s.%s" % (what, k))


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------
def t_version(c):
    eq(c.r.call("FCALL", "pulse_version", 0), "1", "pulse_version")
    eq(c.r.call("FCALL_RO", "pulse_version", 0), "1", "pulse_version via FCALL_RO")
    lst = c.r.ok("FUNCTION", "LIST", "LIBRARYNAME", "pulse")
    names = {}
    for f in dict(zip(lst[0][0::2], lst[0][1::2]))["functions"]:
        fd = dict(zip(f[0::2], f[1::2]))
        names[fd["name"]] = fd["flags"]
    eq(sorted(names), ["pulse_ingest", "pulse_publish", "pulse_snapshot", "pulse_variant", "pulse_version"],
       "registered functions")
    eq(names.get("pulse_publish"), [], "pulse_publish flags")
    eq(names.get("pulse_snapshot"), ["no-writes"], "pulse_snapshot flags")
    eq(names.get("pulse_variant"), ["no-writes"], "pulse_variant flags")
    eq(names.get("pulse_ingest"), [], "pulse_ingest flags")


def t_event_types(c):
    base = "pulse:{p_types}"
    s = c.sub(base + ":events")
    ts = T0 + 123
    pid = c.must(base, post(base, "var_1", ts, pred=0.06, content='Hi "there"\n/é'))
    check(isinstance(pid, str) and ID_RE.match(pid), "post returns a stream id string: %r" % pid)
    e = c.entry(base, pid)
    eq((e["t"], e["v"]), ("variant_posted", "var_1"), "stream fields t/v")
    m = json.loads(e["m"])
    eq(m["type"], "variant_update", "message type")
    eq(m["offset"], pid, "message offset = stream id")
    eq(m["timestamp"], rfc3339(ts), "RFC 3339 timestamp")
    d = m["data"]
    compare_data(d, {"event_type": "variant_posted", "variant_id": "var_1", "content": 'Hi "there"\n/é',
                     "predicted_er": 0.06, "pattern_used": "question_hook", "posted_at": ts,
                     "status": "active", "view_count": 0, "interaction_count": 0}, "post data")
    pubs = s.drain()
    eq(pubs, [e["m"]], "published message == stream entry m")

    ts2 = T0 + MIN + 5
    uid = c.must(base, perf("var_1", 2500, 150, ts2, engagement_rate=0.06))
    check(id_tuple(uid) > id_tuple(pid), "ids increase")
    m = c.msg(base, uid)
    eq(m["offset"], uid, "update offset")
    eq(m["timestamp"], rfc3339(ts2), "update timestamp")
    compare_data(m["data"], {"event_type": "performance_update", "variant_id": "var_1",
                             "current_er": 0.06, "view_count": 2500, "interaction_count": 150,
                             "performance_vs_prediction": 0.0, "er_5m": 0.06, "er_15m": 0.06,
                             "er_60m": 0.06, "stale": False, "status": "active",
                             "view_delta": 2500, "interaction_delta": 150}, "update data")
    uid2 = c.must(base, perf("var_1", 3000, 195, ts2 + 1000))
    d = c.msg(base, uid2)["data"]
    close(d["current_er"], 0.065, "current_er 195/3000")
    close(d["performance_vs_prediction"], r6((0.065 - 0.06) / 0.06), "performance_vs_prediction")
    pubs = s.drain()
    eq(pubs, [c.entry(base, uid)["m"], c.entry(base, uid2)["m"]], "update messages published in order")

    kts = T0 + 30 * MIN + 123
    kid = c.must(base, kill("var_1", kts, fer=0.0123456789, sample=1200))
    e = c.entry(base, kid)
    eq((e["t"], e["v"]), ("early_kill", "var_1"), "kill stream fields")
    d = json.loads(e["m"])["data"]
    compare_data(d, {"event_type": "early_kill", "variant_id": "var_1", "kill_reason": "low_engagement",
                     "final_er": 0.012346, "sample_size": 1200, "status": "killed",
                     "time_to_kill_minutes": r2((kts - ts) / MIN), "killed_at": kts,
                     "posted_at": ts}, "kill data")
    eq(s.drain(), [e["m"]], "kill published")
    ttl = c.r.ok("TTL", base + ":v:var_1")
    check(0 < ttl <= 604800, "killed variant gets the default 7-day TTL (ttl=%r)" % ttl)
    s.close()


def t_aggregates(c):
    base = "pulse:{p_agg}"
    t = T0
    c.must(base, post(base, "a", t, pred=0.05))
    c.must(base, post(base, "b", t + 1000, pred=0.10))
    c.must(base, post(base, "c", t + 2000, pred=0.0, pattern=None))
    c.must(base, perf("a", 3000, 200, t + MIN))     # 0.066667
    c.must(base, perf("b", 700, 49, t + MIN))       # 0.07
    c.must(base, perf("c", 9, 1, t + MIN))          # 0.111111
    c.must(base, perf("a", 3001, 200, t + 2 * MIN))  # 0.066644
    snap = json.loads(c.snapshot(base, {"now_ms": t + 2 * MIN}))
    s = snap["summary"]
    eq(s["total_variants"], 3, "total_variants")
    eq(s["active_variants"], 3, "active_variants")
    ers = [r6(200 / 3001), r6(49 / 700), r6(1 / 9)]
    close(s["avg_engagement_rate"], r6(sum(math.floor(x * 1e6 + 0.5) for x in ers) / 3 / 1e6),
          "avg_engagement_rate = mean of active current_er")
    eq(int(c.r.ok("HGET", base + ":persona", "er_sum_u")),
       sum(math.floor(x * 1e6 + 0.5) for x in ers), "er_sum_u exact")
    byid = {v["variant_id"]: v for v in snap["active_variants"]}
    close(byid["a"]["current_er"], ers[0], "snapshot a.current_er")
    eq(byid["c"]["performance_vs_prediction"], None, "pvp null when predicted_er = 0")
    eq([v["variant_id"] for v in snap["active_variants"]], ["c", "b", "a"], "active sorted newest post first")
    c.must("pulse:{p_agg_z}", post("pulse:{p_agg_z}", "z", t + 3000, pred=0.1))
    eq(c.variant("pulse:{p_agg_z}", "z")["last_updated"], t + 3000, "last_updated of a new variant = post ts")
    # kill b after 90 minutes, a after 30 minutes on the same UTC day
    c.must(base, kill("b", t + 1000 + 90 * MIN))
    c.must(base, kill("a", t + 30 * MIN))
    snap = json.loads(c.snapshot(base, {"now_ms": t + 2 * HOUR}))
    s = snap["summary"]
    eq(s["active_variants"], 1, "active after kills")
    eq(s["total_variants"], 3, "total unchanged by kills")
    close(s["avg_engagement_rate"], r6(1 / 9), "avg over remaining active")
    eq(int(c.r.ok("HGET", base + ":persona", "er_sum_u")), math.floor(r6(1 / 9) * 1e6 + 0.5), "er_sum_u after kills")
    eq(s["kills_today"], 2, "kills_today")
    close(s["avg_time_to_kill_minutes"], 60.0, "avg_time_to_kill_minutes (90+30)/2")
    eq((s["posted_in_window"], s["killed_in_window"]), (3, 2), "kill-rate window counts")
    close(s["kill_rate"], r6(2 / 3), "kill_rate")
    eq([k["variant_id"] for k in snap["recent_kills"]], ["b", "a"], "recent_kills newest first")
    eq(snap["recent_kills"][0]["kill_reason"], "low_engagement", "recent kill reason")
    close(snap["recent_kills"][0]["time_to_kill_minutes"], 90.0, "recent kill minutes")
    # the kill-rate window rolls: 25 h later nothing was posted in the window
    snap = json.loads(c.snapshot(base, {"now_ms": t + 25 * HOUR}))
    eq((snap["summary"]["posted_in_window"], snap["summary"]["killed_in_window"], snap["summary"]["kill_rate"]),
       (0, 0, None), "kill-rate window rolled over")
    eq(snap["summary"]["kills_today"], 0, "kills_today on the next day")
    eq(snap["summary"]["avg_time_to_kill_minutes"], None, "avg ttk null without kills")


def t_windows(c):
    base = "pulse:{p_win}"
    t = T0
    c.must(base, post(base, "w", t, pred=0.1))
    steps = [  # (minute offset, views, interactions, er_5m, er_15m, er_60m)
        (0, 100, 10, 10 / 100, 10 / 100, 10 / 100),
        (3, 200, 30, 30 / 200, 30 / 200, 30 / 200),
        (10, 300, 31, 1 / 100, 31 / 300, 31 / 300),
        (30, 400, 50, 19 / 100, 19 / 100, 50 / 400),
        (62, 500, 60, 10 / 100, 10 / 100, 50 / 400),   # minute 0 left the 60-min window
        (200, 600, 90, 30 / 100, 30 / 100, 30 / 100),  # jump over the whole ring
    ]
    for off, v, i, e5, e15, e60 in steps:
        d = c.msg(base, c.must(base, perf("w", v, i, t + off * MIN + 17)))["data"]
        close(d["er_5m"], r6(e5), "er_5m at +%dm" % off)
        close(d["er_15m"], r6(e15), "er_15m at +%dm" % off)
        close(d["er_60m"], r6(e60), "er_60m at +%dm" % off)
    snap = json.loads(c.snapshot(base, {"now_ms": t + 203 * MIN}))
    v = snap["active_variants"][0]
    close(v["er_5m"], 0.3, "snapshot er_5m 3 min later")
    eq(v["er_series_start"], (t + 203 * MIN) // MIN * MIN - 59 * MIN, "er_series_start")
    eq(len(v["er_series"]), 60, "er_series has 60 points")
    eq(v["er_series"][-4], 0.3, "er_series point of the last update")
    eq(sum(1 for x in v["er_series"] if x is not None), 1, "er_series only one non-null point")
    snap = json.loads(c.snapshot(base, {"now_ms": t + 206 * MIN}))
    eq(snap["active_variants"][0]["er_5m"], None, "er_5m null once no views in the last 5 minutes")
    close(snap["active_variants"][0]["er_15m"], 0.3, "er_15m still covers it")
    # memory bound: ring never exceeds 60 bucket fields
    for k in range(300):
        c.must(base, perf("w", 1000 + k, 100 + k, t + (300 + k) * MIN))
    fields = c.r.ok("HKEYS", base + ":v:w")
    nb = sum(1 for f in fields if re.match(r"^r\d+$", f))
    eq(nb, 60, "bucket ring bounded at 60 fields")
    check(len(fields) <= 60 + 20, "variant hash bounded (%d fields)" % len(fields))


def t_random_model(c):
    """Random in-order, out-of-order, duplicate and jumping updates vs the model."""
    rnd = random.Random(7)
    base = "pulse:{p_rand}"
    t = T0
    models = {}
    for n in range(3):
        vid = "r%d" % n
        pred = [0.05, 0.0, 0.2][n]
        c.must(base, post(base, vid, t, pred=pred))
        models[vid] = VModel(pred, t)
    clock = t
    for step in range(1500):
        vid = "r%d" % rnd.randrange(3)
        mdl = models[vid]
        r = rnd.random()
        if r < 0.70:
            clock += rnd.choice([0, 1000, 7000, 30000, 61000])
            ts = clock
        elif r < 0.80:
            ts = clock - rnd.randrange(0, 90 * MIN)     # late event
        elif r < 0.83:
            clock += rnd.randrange(2, 130) * MIN         # jump
            ts = clock
        else:
            ts = clock
        if rnd.random() < 0.2:
            views, inters = mdl.v - rnd.randrange(0, 5), mdl.i - rnd.randrange(0, 3)   # stale/duplicate
        else:
            views = mdl.v + rnd.randrange(0, 400) - 30
            inters = mdl.i + rnd.randrange(0, 40) - 5
        views, inters = max(views, 0), max(inters, 0)
        want = mdl.update(ts, views, inters)
        d = c.msg(base, c.must(base, perf(vid, views, inters, ts)))["data"]
        before = len(FAILS)
        compare_data(d, want, "random step %d %s" % (step, vid))
        if len(FAILS) > before:
            print("   event:", step, vid, ts, views, inters)
            break
    snap = json.loads(c.snapshot(base, {"now_ms": clock}))
    nm = clock // MIN
    for v in snap["active_variants"]:
        mdl = models[v["variant_id"]]
        eq((v["view_count"], v["interaction_count"]), (mdl.v, mdl.i), "snapshot totals " + v["variant_id"])
        close(v["er_5m"], mdl.window(nm, 5), "snapshot er_5m " + v["variant_id"])
        close(v["er_60m"], mdl.window(nm, 60), "snapshot er_60m " + v["variant_id"])
        want = mdl.series(nm)
        check(all((a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9)
                  for a, b in zip(v["er_series"], want)), "snapshot er_series " + v["variant_id"])
    for vid, mdl in models.items():
        v = c.variant(base, vid, {"now_ms": clock})
        eq((v["view_count"], v["interaction_count"]), (mdl.v, mdl.i), "pulse_variant totals " + vid)
        want = sorted((k, bv, bi) for k, (bv, bi) in mdl.b.items() if k > mdl.E - 60 and (bv or bi))
        got = [(b["minute"], b["view_delta"], b["interaction_delta"]) for b in v["buckets"] if b["minute"] > mdl.E - 60]
        eq(got, want, "pulse_variant buckets " + vid)
        check(len(v["buckets"]) <= 60, "at most 60 buckets " + vid)
    total = sum(m.u for m in models.values())
    eq(int(c.r.ok("HGET", base + ":persona", "er_sum_u")), total, "er_sum_u after random run")


def t_out_of_order(c):
    base = "pulse:{p_ooo}"
    t = T0
    c.must(base, post(base, "o", t))
    c.must(base, perf("o", 100, 10, t + 2 * MIN))
    c.must(base, perf("o", 300, 20, t + 4 * MIN))
    before = c.state(base + ":v:*")
    xlen = c.r.ok("XLEN", base + ":stream")
    sid = c.must(base, perf("o", 250, 15, t + 3 * MIN))          # fully stale (late)
    d = c.msg(base, sid)["data"]
    eq((d["stale"], d["view_count"], d["interaction_count"], d["view_delta"], d["interaction_delta"]),
       (True, 300, 20, 0, 0), "stale update: flagged, totals unchanged")
    eq(c.state(base + ":v:*"), before, "stale update leaves the variant untouched")
    eq(c.r.ok("XLEN", base + ":stream"), xlen + 1, "stale update is still appended")
    sid = c.must(base, perf("o", 300, 20, t + 4 * MIN))          # exact duplicate
    eq(c.msg(base, sid)["data"]["stale"], True, "duplicate update is stale")
    sid = c.must(base, perf("o", 200, 35, t + 3 * MIN))          # late, interactions grew
    d = c.msg(base, sid)["data"]
    eq((d["stale"], d["view_count"], d["interaction_count"], d["view_delta"], d["interaction_delta"]),
       (False, 300, 35, 0, 15), "partial update max-merged per field")
    close(d["current_er"], r6(35 / 300), "current_er after max-merge")
    # the late delta lands in the event's minute (3), windows end at the newest minute (4)
    c.r.send("HGET", base + ":v:o", "r%d" % ((t // MIN + 3) % 60))
    slot = struct.unpack(">ddd", c.r.raw_call_pending())
    eq(slot, (t // MIN + 3, 0, 15), "late delta stored in its own minute")
    close(d["er_5m"], r6(35 / 300), "windows include the late delta")


def t_validation(c):
    base = "pulse:{p_val}"
    t = T0
    c.must(base, post(base, "v1", t, pred=0.05))
    c.must(base, perf("v1", 100, 5, t + MIN))
    c.must(base, post(base, "vk", t))
    c.must(base, kill("vk", t + MIN, reason="low_engagement"))
    s = c.sub(base + ":events")
    s.drain()
    cases = [
        ("not json", "INVALID", "event", "{nope"),
        ("json array", "INVALID", "event", "[1,2]"),
        ("empty array", "INVALID", "event", "[]"),
        ("json string", "INVALID", "event", '"x"'),
        ("missing type", "INVALID", "type", {"variant_id": "v1"}),
        ("type not string", "INVALID", "type", {"type": 5, "variant_id": "v1"}),
        ("unknown type", "INVALID", "type", {"type": "variant_deleted", "variant_id": "v1"}),
        ("missing variant_id", "INVALID", "variant_id", {"type": "performance_update", "view_count": 1, "interaction_count": 1}),
        ("null variant_id", "INVALID", "variant_id", perf(None, 1, 1, t)),
        ("variant_id number", "INVALID", "variant_id", perf(12, 1, 1, t)),
        ("variant_id charset", "INVALID", "variant_id", perf("bad id!", 1, 1, t)),
        ("variant_id empty", "INVALID", "variant_id", perf("", 1, 1, t)),
        ("variant_id too long", "INVALID", "variant_id", perf("x" * 129, 1, 1, t)),
        ("ts string", "INVALID", "ts", perf("v1", 1000, 50, "2026-01-01")),
        ("ts float", "INVALID", "ts", perf("v1", 1000, 50, 1.5)),
        ("ts negative", "INVALID", "ts", perf("v1", 1000, 50, -1)),
        ("ts too large", "INVALID", "ts", perf("v1", 1000, 50, 10 ** 14)),
        ("negative views", "INVALID", "view_count", perf("v1", -1, 0, t)),
        ("float views", "INVALID", "view_count", perf("v1", 1.5, 0, t)),
        ("string views", "INVALID", "view_count", perf("v1", "100", 0, t)),
        ("missing views", "INVALID", "view_count", {"type": "performance_update", "variant_id": "v1", "interaction_count": 1}),
        ("negative interactions", "INVALID", "interaction_count", perf("v1", 10, -3, t)),
        ("bool interactions", "INVALID", "interaction_count", perf("v1", 10, True, t)),
        ("er mismatch", "INVALID", "engagement_rate", perf("v1", 2500, 150, t, engagement_rate=0.07)),
        ("er string", "INVALID", "engagement_rate", perf("v1", 2500, 150, t, engagement_rate="0.06")),
        ("er with zero views", "INVALID", "engagement_rate", perf("v1", 0, 0, t, engagement_rate=0.5)),
        ("unknown variant update", "UNKNOWN_VARIANT", "variant_id", perf("nope", 10, 1, t)),
        ("unknown variant kill", "UNKNOWN_VARIANT", "variant_id", kill("nope", t)),
        ("content missing", "INVALID", "content", {"type": "variant_posted", "variant_id": "n1", "predicted_er": 0.1}),
        ("content not string", "INVALID", "content", post(base, "n1", t, content=None) | {"content": 5}),
        ("predicted_er > 1", "INVALID", "predicted_er", post(base, "n1", t, pred=1.5)),
        ("predicted_er negative", "INVALID", "predicted_er", post(base, "n1", t, pred=-0.1)),
        ("predicted_er string", "INVALID", "predicted_er", post(base, "n1", t, pred="0.1")),
        ("predicted_er missing", "INVALID", "predicted_er", {"type": "variant_posted", "variant_id": "n1", "content": "x"}),
        ("pattern charset", "INVALID", "pattern_used", post(base, "n1", t, pattern="two words")),
        ("pattern number", "INVALID", "pattern_used", post(base, "n1", t, pattern=3)),
        ("posted_at negative", "INVALID", "posted_at", post(base, "n1", t, posted_at=-5)),
        ("duplicate post, other content", "DUPLICATE", "variant_id", post(base, "v1", t, pred=0.05, content="other")),
        ("duplicate post, other prediction", "DUPLICATE", "variant_id", post(base, "v1", t, pred=0.07, content="content of v1")),
        ("reason missing", "INVALID", "reason", {"type": "early_kill", "variant_id": "v1", "final_engagement_rate": 0.1, "sample_size": 1}),
        ("reason empty", "INVALID", "reason", kill("v1", t, reason="")),
        ("final er negative", "INVALID", "final_engagement_rate", kill("v1", t, fer=-0.1)),
        ("final er string", "INVALID", "final_engagement_rate", kill("v1", t, fer="x")),
        ("sample size float", "INVALID", "sample_size", kill("v1", t, sample=1.25)),
        ("sample size missing", "INVALID", "sample_size", {"type": "early_kill", "variant_id": "v1", "reason": "r", "final_engagement_rate": 0.1}),
        ("kill again, other reason", "ALREADY_KILLED", "variant_id", kill("vk", t + 2 * MIN, reason="manual")),
    ]
    opt_cases = [
        ("options not json", "INVALID", "options", perf("v1", 200, 10, t), "{x"),
        ("options array", "INVALID", "options", perf("v1", 200, 10, t), "[]"),
        ("unknown option", "INVALID", "options.stream_max", perf("v1", 200, 10, t), '{"stream_max":5}'),
        ("option negative", "INVALID", "options.stream_maxlen", perf("v1", 200, 10, t), '{"stream_maxlen":-1}'),
        ("option float", "INVALID", "options.pattern_window_ms", perf("v1", 200, 10, t), '{"pattern_window_ms":1.5}'),
        ("option string", "INVALID", "options.killed_ttl_s", perf("v1", 200, 10, t), '{"killed_ttl_s":"7d"}'),
    ]
    before = c.state()
    for name, code, field, ev, *opt in [x[:4] for x in cases] + [(x[0], x[1], x[2], x[3], x[4]) for x in opt_cases]:
        r = c.ingest(base, ev, opt[0] if opt else None)
        ok = isinstance(r, RespError) and r.msg.startswith("%s field=%s: " % (code, field))
        check(ok, "%s: want error '%s field=%s: ...', got %r" % (name, code, field, getattr(r, "msg", r)))
    # errors from the key / argument shape
    raw = [
        ("no key", "INVALID", "keys", ["FCALL", "pulse_ingest", 0, json.dumps(perf("v1", 1, 1, t))]),
        ("two keys", "INVALID", "keys", ["FCALL", "pulse_ingest", 2, base, "pulse:{p_agg_z}", json.dumps(perf("v1", 1, 1, t))]),
        ("key without tag", "INVALID", "key", ["FCALL", "pulse_ingest", 1, "pulse:p_val", json.dumps(perf("v1", 1, 1, t))]),
        ("persona charset", "INVALID", "persona_id", ["FCALL", "pulse_ingest", 1, "pulse:{a b}", json.dumps(perf("v1", 1, 1, t))]),
        ("missing event", "INVALID", "event", ["FCALL", "pulse_ingest", 1, base]),
        ("too many args", "INVALID", "args", ["FCALL", "pulse_ingest", 1, base, "{}", "{}", "{}"]),
        ("snapshot bad option", "INVALID", "options.max_variants", ["FCALL_RO", "pulse_snapshot", 1, base, '{"max_variants":-1}']),
        ("snapshot bad key", "INVALID", "key", ["FCALL_RO", "pulse_snapshot", 1, "nokey"]),
    ]
    for name, code, field, args in raw:
        r = c.r.call(*args)
        ok = isinstance(r, RespError) and r.msg.startswith("%s field=%s: " % (code, field))
        check(ok, "%s: want error '%s field=%s: ...', got %r" % (name, code, field, getattr(r, "msg", r)))
    after = c.state()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    eq(changed, [], "rejected events change no key")
    eq(s.drain(0.1), [], "rejected events publish nothing")
    # error message readability
    r = c.ingest(base, perf("v1", -1, 0, t))
    eq(r.msg, "INVALID field=view_count: must be a non-negative integer <= 99999999999999, got \"-1\"",
       "error text")
    s.close()


# --------------------------------------------------------------------------
# JSON text: only valid UTF-8 and RFC 8259 numbers enter Redis
# --------------------------------------------------------------------------
MAX_COUNT = 10 ** 14 - 1


def json_text_ok(raw):
    """Reference model: is raw (bytes) JSON text the library must accept?
    RFC 8259 in strict UTF-8, no raw C0 control character other than tab,
    LF and CR (the library tolerates those inside strings too, which JSON
    does not: cjson escapes them again on output). Returns the value or
    raises ValueError."""
    text = raw.decode("utf-8")          # strict: raises on invalid UTF-8
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text):
        raise ValueError("control character")

    def no_constant(name):
        raise ValueError("not JSON: " + name)
    return json.loads(text, strict=False, parse_constant=no_constant)


def utf8_piece(rnd):
    """A random piece of a string's bytes: ASCII, well-formed UTF-8, or one
    of the ill-formed kinds (stray continuation, cut sequence, overlong,
    surrogate, above U+10FFFF, bytes never in UTF-8)."""
    kind = rnd.randrange(12)
    if kind < 4:
        return bytes(rnd.choice(b"abc xyz.,!?0123456789") for _ in range(rnd.randrange(1, 6)))
    if kind < 8:
        return rnd.choice(["é", "ß", "€", "“", "日本", "😀", "\u07ff", "\uffff", "\U0010ffff", "\u0800"]).encode()
    return rnd.choice([b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\xaf", b"\xc1\xbf",
                       b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x80\x80\xaf",
                       b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xfe", b"\xff", b"\xe2\xc3\xa9\x82\xac",
                       b"\x01", b"\x1f", b"\x7f", b"\t"])


def t_json_text(c):
    base = "pulse:{p_text}"
    t = T0
    c.must(base, post(base, "v1", t, pred=0.05))
    s = c.sub(base + ":events")
    s.drain()
    pv = b'{"type":"variant_posted","variant_id":"n1","predicted_er":0.05,"content":"%s"}'
    pu = b'{"type":"performance_update","variant_id":"v1","view_count":%s,"interaction_count":1}'
    cases = [
        ("content \\xff\\xfe", "content", pv % b"\xff\xfe"),
        ("content cut sequence", "content", pv % b"caf\xc3"),
        ("content overlong", "content", pv % b"\xc0\xaf"),
        ("content surrogate", "content", pv % b"\xed\xa0\x80"),
        ("content above U+10FFFF", "content", pv % b"\xf4\x90\x80\x80"),
        ("content two valid halves", "content", pv % b"\xe2\xc3\xa9\x82\xac"),
        ("content raw control", "content", pv % b"a\x01b"),
        ("reason \\xff", "reason", b'{"type":"early_kill","variant_id":"v1","reason":"\xff","final_engagement_rate":0.1,"sample_size":1}'),
        ("type \\xff", "type", b'{"type":"\xff","variant_id":"v1"}'),
        ("unknown member \\xff", "note", pv.replace(b'"content"', b'"note":"\xff","content"') % b"x"),
        ("nested member \\xff", "inner", pv.replace(b'"content"', b'"meta":{"inner":["\xff"]},"content"') % b"x"),
        ("member name \\xff", "event", pv.replace(b'"content"', b'"\xff":1,"content"') % b"x"),
        ("NUL then garbage", "event", (pv % b"x") + b"\x00garbage"),
        ("hex", "view_count", pu % b"0x10"),
        ("hex upper", "view_count", pu % b"0X10"),
        ("hex float", "view_count", pu % b"0x1p3"),
        ("leading plus", "view_count", pu % b"+1"),
        ("leading zero", "view_count", pu % b"01"),
        ("negative leading zero", "view_count", pu % b"-01"),
        ("double zero", "view_count", pu % b"00"),
        ("inf", "view_count", pu % b"inf"),
        ("-inf", "view_count", pu % b"-inf"),
        ("Infinity", "view_count", pu % b"Infinity"),
        ("nan", "view_count", pu % b"nan"),
        ("NaN", "view_count", pu % b"NaN"),
        ("trailing dot", "view_count", pu % b"5."),
        ("dot then exponent", "view_count", pu % b"1.e3"),
        ("leading dot", "event", pu % b".5"),
        ("minus dot", "view_count", pu % b"-.5"),
        ("minus dot zero", "view_count", pu % b"-.0"),
        ("zero dot", "view_count", pu % b"0."),
        ("nested number", "deep", pu.replace(b'"view_count"', b'"x":{"deep":[1,0x10]},"view_count"') % b"1"),
        ("number in a string's neighbour", "predicted_er",
         b'{"type":"variant_posted","variant_id":"n1","content":"1.e5 .5 0x10 \\" 5.","predicted_er":0.}'),
    ]
    opt_cases = [
        ("option hex", "options.stream_maxlen", b'{"stream_maxlen":0x10}'),
        ("option trailing dot", "options.stream_maxlen", b'{"stream_maxlen":10.}'),
        ("option \\xff", "options", b'{"\xff":1}'),
    ]
    key_cases = [
        ("key \\xff", "key", [b"FCALL", b"pulse_ingest", b"1", b"pulse\xff:{p_text}", pu % b"1"]),
        ("snapshot key \\xff", "key", [b"FCALL_RO", b"pulse_snapshot", b"1", b"pulse\xff:{p_text}"]),
        ("snapshot option hex", "options.max_variants", [b"FCALL_RO", b"pulse_snapshot", b"1", base.encode(), b'{"max_variants":0x1}']),
        ("variant option 01", "options.now_ms", [b"FCALL_RO", b"pulse_variant", b"1", base.encode(), b"v1", b'{"now_ms":01}']),
    ]
    before = c.state(base + "*")
    for name, field, raw in cases:
        check(not accepted_by_model(raw), "%s: the model refuses it too" % name)
        r = c.ingest(base, raw)
        # the reason, not only the field: a form like -.5 is also out of range
        why = ("not a JSON number" if field in ("view_count", "deep", "predicted_er")
               else "malformed JSON" if name == "leading dot"
               else "control character" if "control" in name or "NUL" in name else "not valid UTF-8")
        ok = isinstance(r, RespError) and r.msg.startswith("INVALID field=%s: " % field) and why in r.msg
        check(ok, "%s: want 'INVALID field=%s: ...', got %r" % (name, field, getattr(r, "msg", r)))
        check(not isinstance(r, RespError) or all(32 <= ord(ch) < 127 for ch in r.msg),
              "%s: the error is printable ASCII: %r" % (name, getattr(r, "msg", r)))
    for name, field, opts in opt_cases:
        r = c.ingest(base, pu % b"1", opts)
        ok = isinstance(r, RespError) and r.msg.startswith("INVALID field=%s: " % field)
        check(ok, "%s: want 'INVALID field=%s: ...', got %r" % (name, field, getattr(r, "msg", r)))
    for name, field, args in key_cases:
        r = c.r.call(*args)
        ok = isinstance(r, RespError) and r.msg.startswith("INVALID field=%s: " % field)
        check(ok, "%s: want 'INVALID field=%s: ...', got %r" % (name, field, getattr(r, "msg", r)))
    eq(c.state(base + "*"), before, "refused text changes no key")
    eq(s.drain(0.1), [], "refused text publishes nothing")

    # what JSON allows is still accepted, stored and published as valid UTF-8
    ok_cases = [
        (pv % "tab\there, é ß € “q” 日本 😀 \U0010ffff \x7f".encode(), None),
        (pv.replace(b'"content":"%s"', b'"content":"x\\u00e9\\ud83d\\ude00\\u0000\\"1.e5\\\\"') , None),
        (b'{\n  "type": "variant_posted",\r\n\t"variant_id": "n3", "content": "x", "predicted_er": 5e-2\n}', None),
        (pu % b"-0", None), (pu % b"1E+3", None), (pu % b"1e05", None), (pu % b"2500.0", None), (pu % b"2.5e3", None),
    ]
    n = 0
    for raw, _ in ok_cases:
        if raw.startswith(b'{"type":"variant_posted"') or b'"variant_posted"' in raw:
            n += 1
            raw = raw.replace(b'"n1"', b'"ok%d"' % n).replace(b'"n3"', b'"ok%d"' % (n + 100))
        r = c.ingest(base, raw)
        check(not isinstance(r, RespError), "valid JSON accepted: %r -> %r" % (raw[:80], getattr(r, "msg", r)))
    for m in s.drain(0.2):
        m.encode("utf-8")               # surrogateescape'd bytes would raise here
        json.loads(m)

    # model check: random number spellings and random string bytes; the
    # library accepts exactly what the model accepts, and a refusal names
    # the member and changes nothing
    rnd = random.Random(11)
    alphabet = "0123456789.-+eExXinfaN"
    agree = 0
    for i in range(400):
        if i % 4 == 1:
            tok = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 6))).encode()
            raw = pu % tok
            member = "view_count"
        elif i % 2:
            # number-shaped: sign, integer part, fraction, exponent, each
            # drawn from valid and invalid spellings
            tok = "".join(rnd.choice(p) for p in (["", "", "-", "+"], ["", "0", "00", "01", "1", "12", "0x1"],
                                                  ["", "", ".", ".0", ".5"], ["", "", "e", "e1", "E+1", "e-01"]))
            tok = (tok or "0").encode()
            raw = pu % tok
            member = "view_count"
        else:
            content = b"".join(utf8_piece(rnd) for _ in range(rnd.randrange(1, 5)))
            raw = b'{"type":"variant_posted","variant_id":"m%d","predicted_er":0.05,"content":"%s"}' % (i, content)
            member = "content"
        try:
            v = json_text_ok(raw)
            want_ok = member == "content" or (isinstance(v["view_count"], (int, float))
                                             and not isinstance(v["view_count"], bool)
                                             and math.isfinite(v["view_count"])
                                             and float(v["view_count"]).is_integer()
                                             and 0 <= v["view_count"] <= MAX_COUNT)
        except (ValueError, UnicodeDecodeError):
            want_ok = False
        before = c.state(base + "*") if not want_ok else None
        r = c.ingest(base, raw)
        got_ok = not isinstance(r, RespError)
        if got_ok != want_ok:
            check(False, "model: %r: library %s, model %s (%r)" % (raw, got_ok, want_ok, getattr(r, "msg", r)))
            continue
        if not got_ok:
            fields = ("INVALID field=%s: " % member, "INVALID field=event: ")
            check(r.msg.startswith(fields), "model: %r refused as %r" % (raw, r.msg))
            eq(c.state(base + "*"), before, "model: refused %r changes nothing" % raw)
        agree += 1
    check(agree == 400, "model agreed on %d of 400" % agree)
    s.close()


def accepted_by_model(raw):
    try:
        json_text_ok(raw)
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def t_duplicates_and_kills(c):
    base = "pulse:{p_dup}"
    t = T0
    pid = c.must(base, post(base, "d1", t, pred=0.05))
    xlen = c.r.ok("XLEN", base + ":stream")
    before = c.state(base + "*")
    again = c.must(base, post(base, "d1", t + 5000, pred=0.05))    # retry, different ts
    eq(again, pid, "identical re-post returns the original id")
    eq(c.state(base + "*"), before, "identical re-post changes nothing")
    eq(c.r.ok("XLEN", base + ":stream"), xlen, "identical re-post appends nothing")
    eq(c.r.ok("HGET", base + ":persona", "total_variants"), "1", "no double count")
    c.must(base, perf("d1", 1000, 80, t + MIN))
    kid = c.must(base, kill("d1", t + 10 * MIN))
    before = c.state(base + "*")
    eq(c.must(base, kill("d1", t + 11 * MIN)), kid, "kill retry returns the original id")
    eq(c.state(base + "*"), before, "kill retry changes nothing")
    # a performance update after the kill: accepted, counted on the variant, status stays killed
    ttl_before = c.r.ok("TTL", base + ":v:d1")
    sid = c.must(base, perf("d1", 2000, 100, t + 12 * MIN))
    d = c.msg(base, sid)["data"]
    eq((d["status"], d["view_count"], d["interaction_count"], d["stale"]), ("killed", 2000, 100, False),
       "update after kill accepted without status change")
    eq(c.r.ok("HGET", base + ":v:d1", "status"), "killed", "status stays killed")
    check(0 < c.r.ok("TTL", base + ":v:d1") <= ttl_before, "killed TTL kept after a late update")
    eq(c.r.ok("HGET", base + ":persona", "er_sum_u"), "0", "killed variant not in er_sum_u")
    eq(c.r.ok("HGET", base + ":persona", "active_variants"), "0", "active_variants")
    c.must(base, post(base, "d2", t, pred=0.05))
    c.must(base, kill("d2", t + MIN), {"killed_ttl_s": 100})
    ttl = c.r.ok("TTL", base + ":v:d2")
    check(0 < ttl <= 100, "killed_ttl_s option honoured (ttl=%r)" % ttl)
    c.must(base, post(base, "d3", t, pred=0.05), {"variant_ttl_s": 500})
    ttl = c.r.ok("TTL", base + ":v:d3")
    check(0 < ttl <= 500, "variant_ttl_s option honoured (ttl=%r)" % ttl)
    eq(c.r.ok("TTL", base + ":v:d1") > 0, True, "default: killed variant expires")
    c.must(base, post(base, "d4", t, pred=0.05))
    eq(c.r.ok("TTL", base + ":v:d4"), -1, "default: active variant has no TTL")
    # kill day counters are pruned after 8 days
    c.must(base, kill("d4", t + 10 * DAYMS))
    fields = c.r.ok("HKEYS", base + ":persona")
    eq(sorted(f for f in fields if f.startswith("kills:")), ["kills:" + day(t + 10 * DAYMS)],
       "old kill day fields pruned")


def t_fatigue(c):
    base = "pulse:{p_fat}"
    s = c.sub(base + ":events")
    t = T0
    kinds = []
    pubs = []
    for n in range(1, 8):
        xlen = c.r.ok("XLEN", base + ":stream")
        pid = c.must(base, post(base, "f%d" % n, t + n * MIN, pattern="question_hook"))
        added = c.r.ok("XLEN", base + ":stream") - xlen
        pubs = s.drain()
        kinds.append(added)
        if n == 6:
            eq(added, 2, "6th use (> threshold 5) adds a fatigue entry")
            ent = c.r.ok("XRANGE", base + ":stream", "(" + pid, "+")
            eq(len(ent), 1, "one entry after the post")
            fid, fields = ent[0]
            f = dict(zip(fields[0::2], fields[1::2]))
            eq((f["t"], f["p"], f["v"]), ("pattern_fatigue", "question_hook", "f6"), "fatigue stream fields")
            m = json.loads(f["m"])
            eq(m["offset"], fid, "fatigue offset = its own id")
            check(id_tuple(fid) > id_tuple(pid), "fatigue id after the post id")
            compare_data(m["data"], {"event_type": "pattern_fatigue", "pattern": "question_hook",
                                     "usage_count": 6, "window": "24h", "window_ms": DAYMS}, "fatigue data")
            eq([json.loads(x)["data"]["event_type"] for x in pubs], ["variant_posted", "pattern_fatigue"],
               "post then fatigue published")
            eq(pubs[1], f["m"], "fatigue published == stream m")
    eq(kinds, [1, 1, 1, 1, 1, 2, 1], "fatigue fires exactly once, when crossing")
    snap = json.loads(c.snapshot(base, {"now_ms": t + 8 * MIN}))
    eq(snap["patterns"], [{"pattern": "question_hook", "usage_count": 7, "fatigued": True}], "snapshot patterns")
    # other pattern, smaller threshold via options; then the window rolls
    for n in range(3):
        c.must(base, post(base, "g%d" % n, t + n * MIN, pattern="listicle"), {"pattern_fatigue_threshold": 2})
    eq(c.r.ok("XLEN", base + ":stream"), 8 + 4, "threshold option: fatigue on 3rd use")
    snap = json.loads(c.snapshot(base, {"now_ms": t + 8 * MIN, "pattern_fatigue_threshold": 2}))
    eq(snap["patterns"], [{"pattern": "question_hook", "usage_count": 7, "fatigued": True},
                          {"pattern": "listicle", "usage_count": 3, "fatigued": True}], "snapshot two patterns")
    later = t + DAYMS + 30 * MIN
    snap = json.loads(c.snapshot(base, {"now_ms": later}))
    eq(snap["patterns"], [], "pattern usage window rolled")
    for n in range(6):
        xlen = c.r.ok("XLEN", base + ":stream")
        c.must(base, post(base, "h%d" % n, later + n * MIN, pattern="question_hook"))
        eq(c.r.ok("XLEN", base + ":stream") - xlen, 2 if n == 5 else 1, "fatigue crosses again after the window (%d)" % n)
    eq(c.r.ok("ZCARD", base + ":pat:question_hook"), 6, "old pattern uses pruned")
    s.close()


def t_snapshot_shape(c):
    base = "pulse:{p_snap}"
    raw = c.snapshot(base)
    check('"active_variants":[]' in raw and '"patterns":[]' in raw and '"recent_kills":[]' in raw,
          "empty arrays encode as []: " + raw)
    snap = json.loads(raw)
    eq(snap["offset"], None, "offset null for an empty persona")
    eq(snap["summary"], {"total_variants": 0, "active_variants": 0, "avg_engagement_rate": None,
                         "kills_today": 0, "avg_time_to_kill_minutes": None, "kill_rate": None,
                         "posted_in_window": 0, "killed_in_window": 0, "kill_rate_window_ms": DAYMS},
       "empty summary")
    now = int(time.time() * 1000)
    for n in range(5):
        c.must(base, post(base, "s%d" % n, now - 1000 + n, pattern=None if n % 2 else "hook"))
    c.must(base, perf("s0", 1000, 50, now))
    c.must(base, kill("s1", now))
    snap = json.loads(c.snapshot(base))           # real time
    last = c.r.ok("XREVRANGE", base + ":stream", "+", "-", "COUNT", 1)[0][0]
    eq(snap["offset"], last, "offset = last stream id")
    check(abs(snap["now"] - now) < 60000, "now defaults to TIME")
    eq(set(snap), {"offset", "now", "summary", "active_variants", "active_variants_truncated", "patterns",
                   "recent_kills"}, "top-level keys")
    eq(snap["summary"]["kills_today"], 1, "kills_today (real time)")
    v = {x["variant_id"]: x for x in snap["active_variants"]}["s0"]
    eq(set(v), {"variant_id", "content", "predicted_er", "pattern_used", "posted_at", "status", "view_count",
                "interaction_count", "current_er", "performance_vs_prediction", "last_updated", "er_5m",
                "er_15m", "er_60m", "er_series", "er_series_start"}, "active variant keys")
    close(v["er_5m"], 0.05, "er_5m in real time")
    eq(len(v["er_series"]), 60, "er_series length")
    check(0.05 in v["er_series"][-2:], "er_series last point")
    eq(snap["active_variants_truncated"], False, "not truncated")
    snap = json.loads(c.snapshot(base, {"max_variants": 2}))
    eq([x["variant_id"] for x in snap["active_variants"]], ["s4", "s3"], "max_variants caps, newest first")
    eq(snap["active_variants_truncated"], True, "truncated flag")
    eq(len(json.loads(c.snapshot(base, {"recent_kills": 0}))["recent_kills"]), 0, "recent_kills option")
    v = c.variant(base, "s0")
    eq(set(v), {"variant_id", "content", "predicted_er", "pattern_used", "posted_at", "status", "view_count",
                "interaction_count", "current_er", "performance_vs_prediction", "last_updated", "er_5m",
                "er_15m", "er_60m", "er_series", "er_series_start", "posted_id", "kill_reason", "final_er",
                "sample_size", "killed_at", "kill_id", "time_to_kill_minutes", "ttl_ms", "buckets"},
       "pulse_variant keys")
    eq((v["view_count"], v["interaction_count"], v["ttl_ms"]), (1000, 50, -1), "pulse_variant counts, no TTL")
    eq([(b["view_delta"], b["interaction_delta"]) for b in v["buckets"]], [(1000, 50)], "pulse_variant buckets")
    eq(v["last_updated"], now, "pulse_variant last_updated")
    k = c.variant(base, "s1")
    eq((k["status"], k["kill_reason"], k["sample_size"]), ("killed", "low_engagement", 1200), "killed variant view")
    check(0 < k["ttl_ms"] <= 604800000, "killed variant ttl_ms")
    eq(c.variant(base, "s2")["buckets"], [], "no buckets -> []")
    check('"buckets":[]' in c.r.call("FCALL_RO", "pulse_variant", 1, base, "s2"), "buckets [] in raw JSON")
    eq(c.variant(base, "nope"), None, "unknown variant -> nil")
    r = c.r.call("FCALL_RO", "pulse_variant", 1, base, "bad id")
    check(isinstance(r, RespError) and r.msg.startswith("INVALID field=variant_id: "), "pulse_variant validates the id")
    r = c.r.call("FCALL_RO", "pulse_variant", 1, base)
    check(isinstance(r, RespError) and r.msg.startswith("INVALID field=args: "), "pulse_variant argument count")
    # snapshot is read-only: FCALL_RO works, nothing changes
    before = c.state()
    c.snapshot(base)
    eq(c.state(), before, "snapshot writes nothing")
    ro = c.r.call("FCALL_RO", "pulse_ingest", 1, base, json.dumps(perf("s0", 1, 1, now)))
    check(isinstance(ro, RespError), "pulse_ingest refused by FCALL_RO")


def t_ids(c):
    base = "pulse:{p_ids}"
    t = T0
    c.must(base, post(base, "i", t))
    ids = [c.must(base, perf("i", 10 + k, 1, t + k)) for k in range(300)]
    check(all(id_tuple(a) < id_tuple(b) for a, b in zip(ids, ids[1:])), "300 ids strictly increasing")
    # cold id cache (library reloaded, as after a restart or failover): ids keep increasing
    with open(c.lib, "rb") as f:
        c.r.ok("FUNCTION", "LOAD", "REPLACE", f.read())
    nid = c.must(base, perf("i", 1000, 2, t))
    check(id_tuple(nid) > id_tuple(ids[-1]), "id after a cold cache")
    # the stream got ahead of the cache (foreign XADD with a future id)
    fut = "%d-5" % (int(time.time() * 1000) + 3600000)
    c.r.ok("XADD", base + ":stream", fut, "m", "{}")
    nid = c.must(base, perf("i", 1001, 2, t))
    eq(id_tuple(nid), (id_tuple(fut)[0], 6), "id after a foreign future entry (XADD refused, resync, retry)")
    eq(c.msg(base, nid)["offset"], nid, "retried message carries its final id")
    nid2 = c.must(base, post(base, "i2", t))
    eq(id_tuple(nid2), (id_tuple(fut)[0], 7), "next id continues from the resynced one")
    c.r.ok("XADD", base + ":stream", "%d-0" % (id_tuple(fut)[0] + 5), "m", "{}")
    nid3 = c.must(base, kill("i2", t + MIN))
    eq(id_tuple(nid3), (id_tuple(fut)[0] + 5, 1), "generic append path resyncs too")
    eq(c.msg(base, nid3)["offset"], nid3, "resynced kill message carries its final id")
    snap = json.loads(c.snapshot(base))
    eq(snap["offset"], nid3, "snapshot offset = stream last id")
    # stream_maxlen trims approximately
    for k in range(1200):
        c.must(base, perf("i", 2000 + k, 3, t), {"stream_maxlen": 100})
    n = c.r.ok("XLEN", base + ":stream")
    check(100 <= n < 400, "stream trimmed by MAXLEN ~ 100 (len=%d)" % n)


def t_keys_and_prefix(c):
    base = "myapp:{tenant-1.x}"
    s = c.sub(base + ":events")
    t = T0
    c.must(base, post(base, "k1", t, pattern="p.q:r-s_t"))
    c.must(base, perf("k1", 10, 1, t + MIN))
    c.must(base, kill("k1", t + 2 * MIN))
    eq(len(s.drain()), 3, "custom prefix channel receives events")
    keys = set()
    cursor = "0"
    while True:
        cursor, ks = c.r.ok("SCAN", cursor, "MATCH", "*tenant-1.x*", "COUNT", 1000)
        keys |= set(ks)
        if cursor == "0":
            break
    check(all(k.startswith(base + ":") for k in keys), "every key derives from KEYS[1]: %s" % sorted(keys))
    eq(sorted(keys), sorted(base + x for x in [":stream", ":persona", ":v:k1", ":posted", ":killed", ":kills",
                                               ":patterns", ":pat:p.q:r-s_t"]), "key layout")
    check(all(re.match(r"^[^{]*\{([^}]*)\}", k).group(1) == "tenant-1.x" for k in keys),
          "every key carries the {persona} hash tag first")
    s.close()


def t_timestamps(c):
    base = "pulse:{p_ts}"
    c.must(base, post(base, "ts", T0))
    rnd = random.Random(3)
    for ts in [0, 5, 59999, 951782400000, 1732240000123, 4102444799999, 99999999999999] + \
            [rnd.randrange(0, 99999999999999) for _ in range(30)]:
        sid = c.must(base, perf("ts", 0, 0, ts))
        eq(c.msg(base, sid)["timestamp"], rfc3339(ts), "RFC 3339 of %d" % ts)
    sid = c.must(base, perf("ts", 0, 0, None) | {"ts": None})
    check(abs(datetime.datetime.strptime(c.msg(base, sid)["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
              .replace(tzinfo=datetime.timezone.utc).timestamp() - time.time()) < 60, "ts defaults to TIME")


def t_publish(c):
    """pulse_publish, with the library loaded as a gateway declaring two namespaces."""
    def publish(base, msg):
        return c.r.call("FCALL", "pulse_publish", 1, base, msg if isinstance(msg, (str, bytes)) else json.dumps(msg))

    refused = publish("pulse:{task:1}", {"a": 1})
    check(isinstance(refused, RespError) and "field=namespace" in refused.msg,
          "the built-in library knows no namespace: %r" % refused)
    with open(c.lib, "r") as f:
        first, rest = f.read().split("\n", 1)
    conf = "local CONFIGURED = {['channels'] = {['task'] = 50, ['live'] = 0}, ['max_publish_bytes'] = 2048};"
    eq(c.r.ok("FUNCTION", "LOAD", "REPLACE", first + "\n" + conf + rest), "pulse", "load with channels")
    base = "pulse:{task:t-1}"
    s = c.sub(base + ":events")
    ids = [publish(base, {"type": "task_output", "data": {"seq": k}}) for k in range(3)]
    check(all(isinstance(i, str) for i in ids), "ids returned: %r" % ids)
    check(all(id_tuple(a) < id_tuple(b) for a, b in zip(ids, ids[1:])), "ids increasing")
    got = [json.loads(m) for m in s.drain()]
    eq([m["offset"] for m in got], ids, "published with their offsets, in order")
    eq(got[0], {"offset": ids[0], "type": "task_output", "data": {"seq": 0}}, "the message with its offset first")
    eq(c.msg(base, ids[1])["data"]["seq"], 1, "stored in the stream")
    entry = c.r.ok("XRANGE", base + ":stream", ids[0], ids[0])[0][1]
    eq(dict(zip(entry[0::2], entry[1::2]))["t"], "task_output", "t = the message's type")
    empty = publish(base, "  {  }  ")
    eq(c.msg(base, empty), {"offset": empty}, "an empty object gets its offset")
    s.close()
    # errors name the field and write nothing
    n = c.r.ok("XLEN", base + ":stream")
    for msg, field in [("nope", "message"), ("[1]", "message"), ('{"offset":"1-0"}', "offset"),
                       ('{"a":1e}', "message"), ('{"x":"%s"}' % ("y" * 3000), "message"),
                       (b'{"a":"\xff"}', "message.a")]:
        r = publish(base, msg)
        check(isinstance(r, RespError) and ("field=" + field) in r.msg, "%r refused naming %s: %r" % (msg, field, r))
    for key, field in [("pulse:{chat:1}", "namespace"), ("pulse:{persona:1}", "namespace"),
                       ("pulse:{task:a b}", "id"), ("pulse:{task}", "key"), ("pulse:task:1", "key")]:
        r = publish(key, {})
        check(isinstance(r, RespError) and ("field=" + field) in r.msg, "%s refused naming %s: %r" % (key, field, r))
    eq(c.r.ok("XLEN", base + ":stream"), n, "nothing written by refused calls")
    # trimmed to about the history
    for k in range(400):
        publish(base, {"k": k})
    n = c.r.ok("XLEN", base + ":stream")
    check(50 <= n < 300, "stream trimmed by MAXLEN ~ 50 (len=%d)" % n)
    # no history: published as given, nothing stored, nil returned
    live = "pulse:{live:x}"
    s = c.sub(live + ":events")
    eq(publish(live, '{"n":1}'), None, "no history: nil")
    eq(s.drain(), ['{"n":1}'], "published verbatim")
    eq(c.r.ok("EXISTS", live + ":stream"), 0, "no stream without history")
    s.close()
    with open(c.lib, "rb") as f:
        c.r.ok("FUNCTION", "LOAD", "REPLACE", f.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--lib", default=os.path.join(os.path.dirname(__file__), "..", "..", "lua", "pulse.lua"))
    a = ap.parse_args()
    c = Ctx(a.host, a.port)
    c.lib = a.lib
    c.r.ok("FLUSHALL")
    with open(a.lib, "rb") as f:
        eq(c.r.ok("FUNCTION", "LOAD", "REPLACE", f.read()), "pulse", "FUNCTION LOAD")
    tests = [t_version, t_event_types, t_aggregates, t_windows, t_random_model, t_out_of_order,
             t_validation, t_json_text, t_duplicates_and_kills, t_fatigue, t_snapshot_shape, t_ids, t_keys_and_prefix,
             t_timestamps, t_publish]
    for tfn in tests:
        n = len(FAILS)
        try:
            tfn(c)
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            FAILS.append("%s raised %r" % (tfn.__name__, e))
        print("%-26s %s" % (tfn.__name__, "ok" if len(FAILS) == n else "FAILED"))
    print("%d checks, %d failures" % (CHECKS[0], len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
