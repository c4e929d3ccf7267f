"""Render deploy/helm/pulsegate the way `helm template` would, without Helm.

Helm is in none of the registries these machines reach, so the chart's
templates keep to a small part of Go's text/template and Sprig, and this
renders exactly that part: `{{ }}` with `-` trimming, `{{/* */}}` comments,
`define`/`include`, `if`/`if not`/`else`/`end`, paths under `.Values`,
`.Release`, `.Chart`, and the functions quote, default, toYaml, indent,
nindent and not. Anything else is an error, never a silent misrender: a
template that needs more needs a real Helm (`helm template`).

    python3 scripts/k8s/helmlite.py CHART [--release NAME] [--namespace NS]
                                          [--out DIR]

prints the rendered manifests (or writes one file per template into DIR).
"""

import argparse
import json
import os
import re
import shlex
import sys

import yaml


class TemplateError(Exception):
    pass


ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def tokenize(src, name):
    """Text and action tokens, with Go's `{{-`/`-}}` whitespace trimming."""
    tokens = []
    pos = 0
    for m in ACTION.finditer(src):
        text = src[pos:m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        tokens.append(("text", text))
        tokens.append(("action", m.group(2), m.group(3) == "-"))
        pos = m.end()
    tokens.append(("text", src[pos:]))
    out = []
    trim_next = False
    for tok in tokens:
        if tok[0] == "text":
            text = tok[1].lstrip(" \t\r\n") if trim_next else tok[1]
            out.append(("text", text))
            trim_next = False
        else:
            trim_next = tok[2]
            if not (tok[1].startswith("/*") and tok[1].endswith("*/")):
                out.append(("action", tok[1]))
    if "{{" in "".join(t[1] for t in out if t[0] == "text"):
        raise TemplateError(f"{name}: unbalanced {{{{")
    return out


def parse(tokens, name, defines):
    """A tree of ("text", s) / ("expr", s) / ("if", cond, then, else)."""

    def block(i, stop):
        nodes = []
        while i < len(tokens):
            tok = tokens[i]
            if tok[0] == "text":
                nodes.append(tok)
                i += 1
                continue
            act = tok[1]
            word = act.split(None, 1)[0] if act else ""
            if word in stop:
                return nodes, i
            if word == "if":
                then, i = block(i + 1, ("else", "end"))
                other = []
                if tokens[i][1] == "else":
                    other, i = block(i + 1, ("end",))
                if tokens[i][1] != "end":
                    raise TemplateError(f"{name}: `if` without `end`")
                nodes.append(("if", act[2:].strip(), then, other))
                i += 1
            elif word == "define":
                dname = shlex.split(act)[1]
                body, i = block(i + 1, ("end",))
                defines[dname] = body
                i += 1
            elif word in ("else", "end", "range", "with", "template", "block"):
                raise TemplateError(f"{name}: `{word}` is not supported here")
            else:
                nodes.append(("expr", act))
                i += 1
        if stop:
            raise TemplateError(f"{name}: missing {{{{ end }}}}")
        return nodes, i

    return block(0, ())[0]


def truthy(v):
    return v not in (None, False, 0, "", [], {})


def to_text(v, where):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return str(v)
    raise TemplateError(f"{where}: cannot print a {type(v).__name__} (use toYaml)")


def indent(n, s):
    pad = " " * int(n)
    return pad + s.replace("\n", "\n" + pad)


class Renderer:
    def __init__(self, chart_dir, release, namespace, values=None):
        with open(os.path.join(chart_dir, "Chart.yaml")) as f:
            chart = yaml.safe_load(f)
        if values is None:
            with open(os.path.join(chart_dir, "values.yaml")) as f:
                values = yaml.safe_load(f)
        self.ctx = {
            "Values": values,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion", "")},
        }
        self.chart_dir = chart_dir
        self.defines = {}
        self.templates = {}
        tdir = os.path.join(chart_dir, "templates")
        for fname in sorted(os.listdir(tdir)):
            with open(os.path.join(tdir, fname)) as f:
                tree = parse(tokenize(f.read(), fname), fname, self.defines)
            if fname.endswith((".yaml", ".yml")) and not fname.startswith("_"):
                self.templates[fname] = tree

    def lookup(self, path, ctx, where):
        if path == ".":
            return ctx
        v = ctx
        for part in path.lstrip(".").split("."):
            if not isinstance(v, dict) or part not in v:
                raise TemplateError(f"{where}: {path} is not set")
            v = v[part]
        return v

    def arg(self, word, ctx, where):
        if word.startswith("."):
            return self.lookup(word, ctx, where)
        if word.startswith('"'):
            return json.loads(word)
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word in ("true", "false"):
            return word == "true"
        raise TemplateError(f"{where}: cannot read `{word}`")

    def call(self, fn, args, ctx, where):
        if fn == "quote" and len(args) == 1:
            return json.dumps(to_text(args[0], where))
        if fn == "default" and len(args) == 2:
            return args[1] if truthy(args[1]) else args[0]
        if fn == "toYaml" and len(args) == 1:
            return yaml.safe_dump(args[0], default_flow_style=False, sort_keys=True).rstrip("\n")
        if fn == "indent" and len(args) == 2:
            return indent(args[0], to_text(args[1], where))
        if fn == "nindent" and len(args) == 2:
            return "\n" + indent(args[0], to_text(args[1], where))
        if fn == "not" and len(args) == 1:
            return not truthy(args[0])
        if fn == "include" and len(args) == 2:
            if args[0] not in self.defines:
                raise TemplateError(f"{where}: no define named {args[0]!r}")
            return self.render_nodes(self.defines[args[0]], args[1], where)
        raise TemplateError(f"{where}: unsupported function `{fn}` with {len(args)} argument(s)")

    def eval(self, expr, ctx, where):
        piped = None
        first = True
        for command in split_pipes(expr):
            words = shlex.split(command, posix=False)
            if not words:
                raise TemplateError(f"{where}: empty command in `{expr}`")
            head, rest = words[0], words[1:]
            if first and not rest and not re.fullmatch(r"[a-zA-Z]+", head):
                piped = self.arg(head, ctx, where)
            else:
                args = [self.arg(w, ctx, where) for w in rest]
                if not first:
                    args.append(piped)
                piped = self.call(head, args, ctx, where)
            first = False
        return piped

    def render_nodes(self, nodes, ctx, where):
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "expr":
                out.append(to_text(self.eval(node[1], ctx, where), where))
            else:
                cond = self.eval(node[1], ctx, where)
                out.append(self.render_nodes(node[2] if truthy(cond) else node[3], ctx, where))
        return "".join(out)

    def render(self):
        """{template file name: rendered text} (empty for disabled ones)."""
        return {name: self.render_nodes(tree, self.ctx, name) for name, tree in self.templates.items()}


def split_pipes(expr):
    parts, cur, quoted = [], [], False
    for ch in expr:
        if ch == '"':
            quoted = not quoted
        if ch == "|" and not quoted:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chart")
    ap.add_argument("--release", default="pulsegate")
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--out", help="write one file per template here")
    a = ap.parse_args()
    try:
        rendered = Renderer(a.chart, a.release, a.namespace).render()
    except TemplateError as e:
        sys.exit(f"helmlite: {e}")
    for name, text in rendered.items():
        if not text.strip():
            continue
        if a.out:
            header = (
                "# Generated from deploy/helm/pulsegate with its default values (release\n"
                f"# \"{a.release}\", namespace \"{a.namespace}\"): edit the chart, then\n"
                "# python3 scripts/k8s/helmlite.py deploy/helm/pulsegate --out deploy/k8s\n"
            )
            with open(os.path.join(a.out, name), "w") as f:
                f.write(header + text.strip("\n") + "\n")
        else:
            print(f"---\n# Source: pulsegate/templates/{name}\n{text.strip(chr(10))}")


if __name__ == "__main__":
    main()
