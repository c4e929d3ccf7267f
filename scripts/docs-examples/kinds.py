"""How each kind of example is run, and the small environment it runs in.

Examples are written for a reader: the gateway on 127.0.0.1:8081, Redis on
127.0.0.1:6379, the release binary. `Context.rewrite` points them at the
servers of this run instead; nothing else in the text is changed. The
commands an example calls are reached through a directory of small
wrappers at the front of PATH:

  redis-cli   the real one with `-p <this run's Redis> --no-raw` (replies
              printed as in a terminal, `(error) ...`); it exits 1 when a
              reply is an error, which redis-cli itself does not do
  curl        the real one with `--fail-with-body`: an HTTP error fails the
              example, and the body is still printed as the reader sees it
  python3     the interpreter that has redis-py (scripts/ensure-python.sh)
  pulsegate   the binary under test

REDIS_URL is set to this run's Redis (scripts/ensure-redis.sh reads it);
DATABASE_URL and PULSEGATE_* variables of the caller are dropped, so that
nothing reaches a real deployment.
"""

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass

import services
import shape
import wsexchange

REAL_OFFSET = re.compile(r"\b\d{10,}-\d+\b")


class ExampleFailed(AssertionError):
    pass


class Skipped(Exception):
    pass


@dataclass
class Context:
    repo: str
    workdir: str
    bindir: str
    redis_port: int
    gateway_port: int
    binary: str
    python: str
    node_modules: str  # "" when the Node examples cannot run
    env: dict

    def rewrite(self, text):
        for old, new in (
            ("127.0.0.1:8081", f"127.0.0.1:{self.gateway_port}"),
            ("localhost:8081", f"127.0.0.1:{self.gateway_port}"),
            ("127.0.0.1:6379", f"127.0.0.1:{self.redis_port}"),
            ("localhost:6379", f"127.0.0.1:{self.redis_port}"),
            ("port=6379", f"port={self.redis_port}"),
            ("target/release/pulsegate", shlex.quote(self.binary)),
        ):
            text = text.replace(old, new)
        return text

    def shell(self, command, timeout=30.0, strict=True):
        """Runs `command` with bash in a session of its own; on timeout the
        whole session is killed (a stuck example may have started others)
        and subprocess.TimeoutExpired is raised."""
        flags = ["-eo", "pipefail"] if strict else []
        proc = subprocess.Popen(["bash", *flags, "-c", command], cwd=self.repo, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def make_context(repo, workdir, redis_port, gateway_port, binary, python, node_modules):
    bindir = os.path.join(workdir, "bin")
    os.makedirs(bindir, exist_ok=True)
    real_cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    real_curl = shutil.which("curl") or "/usr/bin/curl"
    wrappers = {
        "redis-cli": f"""out="$({shlex.quote(real_cli)} -p {redis_port} --no-raw "$@")" || exit $?
printf '%s\\n' "$out"
! grep -q '^(error) ' <<<"$out"
""",
        "curl": f'exec {shlex.quote(real_curl)} --fail-with-body "$@"\n',
        "python3": f'exec {shlex.quote(python)} "$@"\n',
        "pulsegate": f'exec {shlex.quote(binary)} "$@"\n',
    }
    for name, body in wrappers.items():
        path = os.path.join(bindir, name)
        with open(path, "w") as f:
            f.write("#!/usr/bin/env bash\n" + body)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env = services.clean_env()
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}"
    return Context(repo, workdir, bindir, redis_port, gateway_port, binary, python, node_modules, env)


def _check(r, what):
    if r.returncode != 0:
        out = (r.stdout[-1500:] + "\n" + r.stderr[-1500:]).strip()
        raise ExampleFailed(f"{what} exited {r.returncode}:\n{out}")
    return r.stdout


def run_sh(ctx, block, timeout):
    return _check(ctx.shell(ctx.rewrite(block.text), timeout), "the block")


def run_python(ctx, block, timeout, n):
    path = os.path.join(ctx.workdir, f"example_{n}.py")
    with open(path, "w") as f:
        f.write(ctx.rewrite(block.text))
    return _check(ctx.shell(f"python3 {shlex.quote(path)}", timeout), "python3")


def run_node(ctx, block, timeout, n):
    if not ctx.node_modules:
        raise Skipped("Node.js >= 18.19 with scripts/docs-examples/node_modules is not available")
    link = os.path.join(ctx.workdir, "node_modules")
    if not os.path.exists(link):
        os.symlink(ctx.node_modules, link)
    path = os.path.join(ctx.workdir, f"example_{n}.mjs")
    with open(path, "w") as f:
        f.write(ctx.rewrite(block.text))
    return _check(ctx.shell(f"node {shlex.quote(path)}", timeout), "node")


def run_ws(ctx, block, timeout):
    def shell(command):
        return ctx.shell(command, timeout)

    try:
        wsexchange.play(ctx.rewrite(block.text), f"ws://127.0.0.1:{ctx.gateway_port}", shell)
    except (wsexchange.ExchangeError, shape.DocJsonError) as e:
        raise ExampleFailed(str(e)) from None
    return ""


MARK = "@@docs-examples: end of command@@"


def console_commands(text):
    """[(command, expected output lines)] of a `$ command` transcript."""
    out, cmd, expected, continued = [], None, [], False
    for line in text.rstrip("\n").split("\n"):
        if continued:
            cmd += "\n" + line
            continued = line.endswith("\\")
        elif line.startswith("$ "):
            if cmd is not None:
                out.append((cmd, expected))
            cmd, expected, continued = line[2:], [], line.endswith("\\")
        elif cmd is None:
            raise ExampleFailed(f"a transcript must start with `$ `: {line}")
        else:
            expected.append(line)
    if cmd is not None:
        out.append((cmd, expected))
    return out


def _normalise(lines):
    return [REAL_OFFSET.sub("<offset>", line.rstrip()) for line in lines]


def run_console(ctx, block, timeout):
    """Every command in one bash (so `echo $?` sees the previous command),
    with stderr merged; each command's output must equal the transcript's,
    stream ids aside."""
    commands = console_commands(block.text)
    script = ["exec 2>&1"]
    for cmd, _ in commands:
        script += [ctx.rewrite(cmd), f"__rc=$?; printf '\\n%s\\n' '{MARK}'; (exit $__rc)"]
    r = ctx.shell("\n".join(script), timeout, strict=False)
    chunks = r.stdout.split(f"\n{MARK}\n")
    if len(chunks) < len(commands):
        raise ExampleFailed(f"the transcript stopped after {len(chunks) - 1} of {len(commands)} commands:\n{r.stdout[-1500:]}")
    for (cmd, expected), chunk in zip(commands, chunks):
        got = chunk.split("\n") if chunk else []
        while got and not got[-1].strip():
            got.pop()
        if _normalise(got) != _normalise(expected):
            raise ExampleFailed(f"$ {cmd}\n  documented: {expected}\n  printed:    {got}")
    return r.stdout


def check_expect(stdout, block):
    """A run block's output against the `expect: json` block after it."""
    try:
        docs = shape.parse_doc_values(block.text)
    except shape.DocJsonError as e:
        raise ExampleFailed(f"{block.where}: the expected output is {e}") from None
    try:
        reals = shape.parse_real_values(stdout)
    except ValueError:
        raise ExampleFailed(f"the output is not JSON:\n{stdout[-800:]}") from None
    if len(docs) != len(reals) and len(docs) != 1:
        raise ExampleFailed(f"{len(reals)} JSON value(s) printed, {block.where} documents {len(docs)}")
    if not reals:
        raise ExampleFailed("nothing printed")
    exact = "shape" not in block.options
    for i, real in enumerate(reals):
        doc = docs[i] if len(docs) > 1 else docs[0]
        diffs = shape.compare(doc, real, exact=exact)
        if diffs:
            raise ExampleFailed(f"answer {i + 1} differs from {block.where}:\n  " + "\n  ".join(diffs[:12]))
