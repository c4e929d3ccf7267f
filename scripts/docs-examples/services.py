"""The servers one Markdown file's examples run against: a fresh
redis-server, a throwaway PostgreSQL cluster when a block asks for one, and
the gateway. Each on a free loopback port, each stopped (by the process id
we started) and its files removed when the file is done.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


class ServiceError(RuntimeError):
    pass


def clean_env():
    """The caller's environment without what would point an example or the
    gateway elsewhere: PULSEGATE_* settings, REDIS_URL, DATABASE_URL."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PULSEGATE_") and k not in ("REDIS_URL", "DATABASE_URL")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def stop_group(proc, grace=5.0):
    """Stops a process started with start_new_session=True, and its children."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def http_json(url, timeout=2.0):
    """(status, parsed body) of GET url; (None, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (OSError, ValueError):
        return None, None


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return ANSI.sub("", "".join(f.readlines()[-lines:]))
    except OSError:
        return ""


def problems(path, lines=8):
    """The gateway log's last warnings and errors."""
    found = [line for line in tail(path, 400).splitlines() if " WARN " in line or " ERROR " in line]
    return "\n".join(found[-lines:])


class Redis:
    def __init__(self, binary, workdir):
        self.port = free_port()
        self.log = os.path.join(workdir, "redis.log")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--logfile", self.log],
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"redis-server did not start:\n{tail(self.log)}")
            time.sleep(0.02)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        stop_group(self.proc)


def _is_root():
    return os.geteuid() == 0


class Postgres:
    """initdb + pg_ctl in a temporary directory (as the postgres user when we
    are root: initdb and postgres refuse root)."""

    def __init__(self, bindir):
        if not bindir:
            raise ServiceError("a block needs PostgreSQL, but no --pg-bin was given")
        self.bindir = bindir
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pulsegate-docs-pg-")
        if _is_root():
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        try:
            self._start()
        except (ServiceError, subprocess.TimeoutExpired):
            self.stop()
            raise

    def _start(self):
        self._run("initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D", self.data)
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off")
        self._run("pg_ctl", "-w", "-D", self.data, "-o", opts, "-l", os.path.join(self.dir, "log"), "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "pulsegate")

    def _run(self, tool, *args):
        cmd = [os.path.join(self.bindir, tool), *args]
        if _is_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise ServiceError(f"{tool} failed: {r.stderr.strip()}")

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/pulsegate"

    def stop(self):
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        except (ServiceError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Gateway:
    """`pulsegate serve`, started by the runner, or adopted from a block
    marked `background` (the quickstart's own serve command)."""

    def __init__(self, port, proc, log):
        self.port, self.proc, self.log = port, proc, log

    @classmethod
    def start(cls, binary, port, redis_url, database_url, workdir, cwd):
        log = os.path.join(workdir, "gateway.log")
        cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--redis-url", redis_url]
        if database_url:
            cmd += ["--database-url", database_url]
        env = clean_env()
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        gateway = cls(port, proc, log)
        gateway.wait_ready()
        return gateway

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            status, _ = http_json(f"{self.base}/readyz")
            if status == 200:
                return
            if self.proc.poll() is not None:
                raise ServiceError(f"the gateway exited ({self.proc.returncode}):\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"the gateway is not ready after {timeout:.0f}s:\n{tail(self.log)}")
            time.sleep(0.1)

    def wait_audit(self, redis_port, prefix="pulse", timeout=20.0):
        """Until the audit follows every persona stream in Redis and has
        written every entry, as a reader who waits a few seconds would see."""
        import redis

        r = redis.Redis(port=redis_port, decode_responses=True)
        deadline = time.monotonic() + timeout
        while True:
            streams = sum(1 for _ in r.scan_iter(match=f"{prefix}:*:stream", count=1000))
            _, ready = http_json(f"{self.base}/readyz")
            audit = (ready or {}).get("audit") or {}
            if audit.get("postgres") is True and audit.get("streams", 0) >= streams and audit.get("lag_entries") == 0:
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"the audit did not catch up within {timeout:.0f}s: {audit}")
            time.sleep(0.2)

    def stop(self):
        stop_group(self.proc, grace=10.0)
