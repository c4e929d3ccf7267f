"""Finds the marked examples in a Markdown file.

A marker is an HTML comment (invisible once rendered) on the line right
before a fenced code block:

    <!-- run: sh -->                  run the block with bash
    <!-- run: sh, background -->      start it and leave it running (a gateway)
    <!-- run: sh, postgres -->        the file's gateway needs an audit database
    <!-- run: console -->             `$ command` lines and the output they print
    <!-- run: python -->              a Python program
    <!-- run: node -->                a Node.js ES module
    <!-- run: ws -->                  a WebSocket exchange (→ sent, ← received)
    <!-- expect: json -->             what the previous run block prints
    <!-- expect: json, shape -->      the same, from a bigger state: keys and types

Options after the kind: `background`, `postgres`, `shape`, `timeout=SECONDS`.
Unmarked blocks are illustrations and are never run. A marker that is not
followed by a fence, or that names an unknown kind or option, is an error.
"""

import re
from dataclasses import dataclass, field

MARKER = re.compile(r"^\s*<!--\s*(run|expect)\s*:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")

KINDS = {
    "run": {"sh", "console", "python", "node", "ws"},
    "expect": {"json"},
}
OPTIONS = {"background", "postgres", "shape"}


class MarkerError(ValueError):
    def __init__(self, line, message):
        super().__init__(message)
        self.line = line


@dataclass
class Block:
    path: str
    line: int  # 1-based line of the opening fence
    action: str  # "run" or "expect"
    kind: str
    text: str
    options: set = field(default_factory=set)
    timeout: float = 0.0

    @property
    def where(self):
        return f"{self.path}:{self.line}"


def _parse_marker(line_no, action, spec):
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or parts[0] not in KINDS[action]:
        raise MarkerError(line_no, f"unknown {action} kind in marker: {spec!r}")
    options, timeout = set(), 0.0
    for p in parts[1:]:
        if p.startswith("timeout="):
            try:
                timeout = float(p.split("=", 1)[1])
            except ValueError:
                raise MarkerError(line_no, f"bad timeout in marker: {p!r}") from None
        elif p in OPTIONS:
            options.add(p)
        else:
            raise MarkerError(line_no, f"unknown option in marker: {p!r}")
    return parts[0], options, timeout


def extract(path, text, display_path=None):
    """The marked blocks of one file, in order. Raises MarkerError."""
    lines = text.split("\n")
    blocks, i = [], 0
    shown = display_path or path
    while i < len(lines):
        m = MARKER.match(lines[i])
        fence = FENCE.match(lines[i])
        if fence:
            # Skip unmarked blocks whole, so that markers inside them (e.g. in
            # this module's own documentation) are not taken for markers.
            i = _fence_end(lines, i, fence)[1]
            continue
        if not m:
            i += 1
            continue
        action, spec = m.group(1), m.group(2)
        kind, options, timeout = _parse_marker(i + 1, action, spec)
        if i + 1 >= len(lines) or not FENCE.match(lines[i + 1]):
            raise MarkerError(i + 1, "a marker must be on the line right before a ``` fence")
        body, after = _fence_end(lines, i + 1, FENCE.match(lines[i + 1]))
        blocks.append(Block(shown, i + 2, action, kind, body, options, timeout))
        i = after
    return blocks


def _fence_end(lines, start, fence):
    """(body de-indented, index after the closing fence) of the block opened
    at lines[start]."""
    indent, ticks = len(fence.group(1)), fence.group(2)
    body, j = [], start + 1
    while j < len(lines):
        close = FENCE.match(lines[j])
        if close and close.group(2).startswith(ticks[0]) and len(close.group(2)) >= len(ticks) and not close.group(3).strip():
            return "\n".join(body) + "\n", j + 1
        line = lines[j]
        body.append(line[indent:] if line[:indent].strip() == "" else line)
        j += 1
    raise MarkerError(start + 1, "code block is never closed")
