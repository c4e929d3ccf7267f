#!/usr/bin/env python3
"""Runs the examples marked in Markdown files (blocks.py says how they are
marked) and reports `docs examples: N passed, M failed`.

Each file gets fresh servers (services.py): its own redis-server, a
PostgreSQL cluster when one of its blocks is marked `postgres`, and the
gateway, unless a block marked `background` starts it (the README's
quickstart). Its blocks then run in document order, so an example may rely
on what the examples above it on the same page did, as a reader following
the page would. scripts/docs-examples.sh installs what this needs and calls
it; run that.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback

import blocks
import kinds
import services

DEFAULT_TIMEOUT = 30.0


class Tally:
    def __init__(self):
        self.passed, self.failed, self.skipped, self.failures = 0, 0, 0, []

    def ok(self, block, seconds):
        self.passed += 1
        print(f"ok    {block.where} ({block.kind}, {seconds:.1f}s)", flush=True)

    def fail(self, where, what, detail):
        self.failed += 1
        self.failures.append((where, what, detail))
        print(f"FAIL  {where} ({what})", flush=True)

    def skip(self, block, reason):
        self.skipped += 1
        print(f"skip  {block.where} ({block.kind}): {reason}", flush=True)


def groups(marked):
    """[(run block, expect block or None)]; an expect must follow a run."""
    out = []
    for b in marked:
        if b.action == "run":
            out.append([b, None])
        elif not out or out[-1][1] is not None:
            raise blocks.MarkerError(b.line - 1, "an `expect` marker must follow a `run` block")
        else:
            out[-1][1] = b
    return out


def run_block(ctx, block, n):
    timeout = block.timeout or DEFAULT_TIMEOUT
    if block.kind == "sh":
        return kinds.run_sh(ctx, block, timeout)
    if block.kind == "console":
        return kinds.run_console(ctx, block, timeout)
    if block.kind == "python":
        return kinds.run_python(ctx, block, timeout, n)
    if block.kind == "node":
        return kinds.run_node(ctx, block, timeout, n)
    return kinds.run_ws(ctx, block, timeout)


def start_background(ctx, block, workdir):
    """A `background` block must start the gateway on the rewritten port."""
    log = os.path.join(workdir, f"background-{block.line}.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", ctx.rewrite(block.text)], cwd=ctx.repo, env=ctx.env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    gateway = services.Gateway(ctx.gateway_port, proc, log)
    try:
        gateway.wait_ready(block.timeout or DEFAULT_TIMEOUT)
    except services.ServiceError:
        gateway.stop()
        raise
    return gateway


def run_file(path, args, tally):
    display = os.path.relpath(path, args.repo)
    try:
        with open(path, encoding="utf-8") as f:
            marked = blocks.extract(path, f.read(), display)
        todo = groups(marked)
    except blocks.MarkerError as e:
        tally.fail(f"{display}:{e.line}", "marker", str(e))
        return
    if not todo:
        return
    workdir = tempfile.mkdtemp(prefix="pulsegate-docs-")
    started = []
    try:
        redis = services.Redis(args.redis_server, workdir)
        started.append(redis)
        pg = None
        if any("postgres" in run.options for run, _ in todo):
            pg = services.Postgres(args.pg_bin)
            started.append(pg)
        ctx = kinds.make_context(args.repo, workdir, redis.port, services.free_port(), args.bin,
                                 args.python, args.node_modules)
        gateway = None
        if not any("background" in run.options for run, _ in todo):
            gateway = services.Gateway.start(args.bin, ctx.gateway_port, redis.url, pg and pg.url,
                                             workdir, args.repo)
            started.append(gateway)
    except services.ServiceError as e:
        tally.fail(display, "servers", str(e))
        for s in reversed(started):
            s.stop()
        return
    try:
        for n, (run, expect) in enumerate(todo, start=1):
            t0 = time.monotonic()
            try:
                if "background" in run.options:
                    gateway = start_background(ctx, run, workdir)
                    started.append(gateway)
                    tally.ok(run, time.monotonic() - t0)
                    continue
                if "postgres" in run.options and gateway is not None:
                    gateway.wait_audit(redis.port)
                stdout = run_block(ctx, run, n)
                if args.verbose and stdout.strip():
                    print(stdout.rstrip(), flush=True)
                if expect is not None:
                    kinds.check_expect(stdout, expect)
                tally.ok(run, time.monotonic() - t0)
            except kinds.Skipped as e:
                tally.skip(run, str(e))
            except subprocess.TimeoutExpired as e:
                tally.fail(run.where, run.kind, f"timed out after {e.timeout:.0f}s (an example must exit by itself)")
            except (kinds.ExampleFailed, services.ServiceError) as e:
                log = services.problems(gateway.log) if gateway else ""
                tally.fail(run.where, run.kind, str(e) + (f"\n  gateway log (warnings, errors):\n{log}" if log else ""))
            except Exception:  # a bug here should still name the block
                tally.fail(run.where, run.kind, traceback.format_exc())
    finally:
        for s in reversed(started):
            s.stop()
        subprocess.run(["rm", "-rf", workdir], check=False)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", required=True)
    p.add_argument("--bin", required=True, help="the pulsegate binary")
    p.add_argument("--python", required=True, help="a python3 with redis-py")
    p.add_argument("--redis-server", required=True)
    p.add_argument("--pg-bin", default="", help="PostgreSQL's bin directory (initdb, pg_ctl)")
    p.add_argument("--node-modules", default="", help="node_modules with the packages Node examples import")
    p.add_argument("-v", "--verbose", action="store_true", help="print what each block printed")
    p.add_argument("files", nargs="+")
    args = p.parse_args()

    tally = Tally()
    for path in args.files:
        run_file(os.path.abspath(path), args, tally)
    for where, what, detail in tally.failures:
        print(f"\n--- {where} ({what})\n{detail.rstrip()}")
    skipped = f" ({tally.skipped} skipped)" if tally.skipped else ""
    print(f"\ndocs examples: {tally.passed} passed, {tally.failed} failed{skipped}")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
