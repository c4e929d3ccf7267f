"""Documented JSON against real JSON: parsing the docs' abbreviated JSON and
comparing shapes.

The docs write JSON the way people read it: `{...}` for "an object, contents
not shown", `,...}` or `"...": "..."` for "more keys", `[...]` for "more
elements". `parse_doc` turns every such `...` outside a string into an
ELIDED marker (a key in objects, an element in arrays), so the result is
plain Python data.

`compare` checks real data against documented data and returns a list of
differences (empty when it matches). Two modes:

- exact: every documented key is present, and no other key unless the object
  says `...`; strings are equal; booleans and nulls are equal; numbers only
  need to be numbers (they are counts and times that vary). Strings that
  look like a stream offset (`1795317600123-0`) or an RFC 3339 timestamp
  only need to look like one. Lists: element by element, the same length
  unless `...` is listed.
- shape: for answers the docs show "shortened" from a bigger state.
  Documented keys must be present (extra real keys are fine), types must
  agree (a null on either side agrees with anything), strings are not
  compared. Each documented list element must match some real element, when
  the real list is not empty.
"""

import json
import re

ELIDED = "\u2026"
OFFSET = re.compile(r"^\d+-\d+$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class DocJsonError(ValueError):
    pass


def _mark_ellipses(text):
    """Rewrites `...` outside strings into JSON the decoder accepts."""
    out, stack, i, in_str = [], [], 0, False
    while i < len(text):
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1 : i + 2])
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif c in "{[":
            stack.append(c)
            out.append(c)
        elif c in "}]":
            if stack:
                stack.pop()
            out.append(c)
        elif text.startswith("...", i):
            if not stack:
                raise DocJsonError("`...` outside an object or array")
            out.append(f'"{ELIDED}":null' if stack[-1] == "{" else f'"{ELIDED}"')
            i += 3
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def parse_doc_prefix(text):
    """Parses one documented JSON value at the start of `text`; returns
    (value, rest of the text)."""
    marked = _mark_ellipses(text)
    try:
        value, end = json.JSONDecoder().raw_decode(marked.lstrip())
    except json.JSONDecodeError as e:
        raise DocJsonError(f"not JSON: {e}") from None
    return value, marked.lstrip()[end:]


def parse_doc_values(text):
    """Every documented JSON value in `text` (one or more, whitespace apart)."""
    values, rest = [], text.strip()
    while rest:
        value, rest = parse_doc_prefix(rest)
        values.append(value)
        rest = rest.strip()
    return values


def parse_real_values(text):
    """Every JSON value in a program's output (curl prints answers back to
    back, often without a newline in between)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        value, end = decoder.raw_decode(text, i)
        values.append(value)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    return values


def _kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _is_elision(k):
    return k in (ELIDED, "...")


def compare(doc, real, exact=True, path="$"):
    """Differences between documented `doc` and real `real`, as strings."""
    dk, rk = _kind(doc), _kind(real)
    if not exact and "null" in (dk, rk):
        return []
    if dk != rk:
        return [f"{path}: documented {dk} {json.dumps(doc)[:60]}, got {rk} {json.dumps(real)[:60]}"]
    if dk == "object":
        return _compare_objects(doc, real, exact, path)
    if dk == "array":
        return _compare_arrays(doc, real, exact, path)
    if dk == "string":
        for pattern in (OFFSET, TIMESTAMP):
            if pattern.match(doc):
                if pattern.match(real):
                    return []
                return [f"{path}: documented {doc!r}, got {real!r}"]
        if exact and doc != real and not _is_elision(doc):
            return [f"{path}: documented {doc!r}, got {real!r}"]
    if dk == "boolean" and exact and doc != real:
        return [f"{path}: documented {doc}, got {real}"]
    return []


def _compare_objects(doc, real, exact, path):
    keys = [k for k in doc if not _is_elision(k)]
    elided = len(keys) < len(doc)
    diffs = [f"{path}: documented key {k!r} is missing" for k in keys if k not in real]
    if exact and not elided:
        extra = sorted(set(real) - set(keys))
        if extra:
            diffs.append(f"{path}: undocumented keys {extra}")
    for k in keys:
        if k in real:
            diffs += compare(doc[k], real[k], exact, f"{path}.{k}")
    return diffs


def _compare_arrays(doc, real, exact, path):
    items = [d for d in doc if not (isinstance(d, str) and _is_elision(d))]
    elided = len(items) < len(doc)
    if not exact:
        if not real:
            return []
        diffs = []
        for i, d in enumerate(items):
            attempts = [compare(d, r, False, f"{path}[{i}]") for r in real]
            if all(attempts):
                diffs += min(attempts, key=len)
        return diffs
    if len(real) < len(items) or (not elided and len(real) != len(items)):
        return [f"{path}: documented {len(items)} element(s), got {len(real)}"]
    diffs = []
    for i, d in enumerate(items):
        diffs += compare(d, real[i], True, f"{path}[{i}]")
    return diffs
