"""Offline checks of deploy/helm/pulsegate and deploy/k8s (scripts/k8s-check.sh).

1. renders the chart with its default values (helmlite.py) and, for other
   values, with everything optional turned off;
2. validates every rendered object and every file in deploy/k8s against the
   Kubernetes schemas shipped by kubernetes-validate (strict: unknown fields
   are errors). The ServiceMonitor is a CRD those schemas do not hold: it
   is checked by hand below (its fields, and that it selects the Service and
   names one of its ports);
3. deploy/k8s equals the chart rendered with release name "pulsegate";
4. the drain fits: readiness on /readyz, liveness on /healthz, preStop >=
   shutdown.lb_grace, terminationGracePeriodSeconds > preStop +
   shutdown.drain_timeout (from the ConfigMap's pulsegate.toml, defaults
   from src/config/shutdown.rs where it leaves them out); the Service, PDB,
   HPA and ServiceMonitor select the Deployment's pods; every Secret key
   the pods read exists;
5. with HELM_LINT_PYTHON set: `helm lint` with the real Helm (helm_lint.py);
6. with PULSEGATE_BIN set: `pulsegate config` accepts the ConfigMap's
   pulsegate.toml with the Secret's variables set (real values).

Prints `k8s checks: N passed, M failed`; exit status 1 when any failed.
"""

import copy
import glob
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import kubernetes_validate
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helmlite  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "deploy", "helm", "pulsegate")
PLAIN = os.path.join(ROOT, "deploy", "k8s")
# The oldest Kubernetes these manifests claim (autoscaling/v2 and policy/v1
# PDBs are GA since 1.23) and the newest the package ships.
K8S_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]
# src/config/shutdown.rs, ShutdownConfig::default().
SHUTDOWN_DEFAULTS = {"lb_grace": 2.0, "drain_window": 10.0, "drain_timeout": 15.0}

passed = 0
failed = []


def check(name, fn):
    global passed
    try:
        fn()
        passed += 1
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - every failure is reported
        failed.append(name)
        print(f"FAIL {name}: {e}")


def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if d]


def render(values=None):
    r = helmlite.Renderer(CHART, "pulsegate", "default", values)
    return [d for text in r.render().values() for d in docs_of(text)]


def key(obj):
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    if not m:
        raise ValueError(f"duration {text!r}: write it as Nms, Ns or Nm")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def validate_servicemonitor(sm):
    assert sm["apiVersion"] == "monitoring.coreos.com/v1", sm["apiVersion"]
    allowed_spec = {"selector", "endpoints", "namespaceSelector", "jobLabel", "podTargetLabels", "targetLabels"}
    extra = set(sm["spec"]) - allowed_spec
    assert not extra, f"unknown ServiceMonitor spec fields {extra}"
    assert set(sm["spec"]["selector"]) <= {"matchLabels", "matchExpressions"}
    assert sm["spec"]["endpoints"], "no endpoints"
    allowed_ep = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings", "metricRelabelings"}
    for ep in sm["spec"]["endpoints"]:
        assert set(ep) <= allowed_ep, f"unknown endpoint fields {set(ep) - allowed_ep}"
        assert isinstance(ep["port"], str), "endpoints[].port names a Service port"
        if "interval" in ep:
            duration_s(ep["interval"])


def validate_all(objs, where):
    for obj in objs:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            validate_servicemonitor(obj)
            continue
        for v in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{where}: {key(obj)} against Kubernetes {v}: {e.message} at {list(e.path)}")


def by_kind(objs):
    out = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def semantics(objs):
    k = by_kind(objs)
    (dep,) = k["Deployment"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert selects(dep["spec"]["selector"]["matchLabels"], labels)
    (c,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ports, f"{probe} port"
    assert c.get("resources", {}).get("requests"), "resources.requests"

    # Config: the file --config names is the ConfigMap's key, mounted there.
    cfg_path = c["args"][c["args"].index("--config") + 1]
    mount = next(m for m in c["volumeMounts"] if cfg_path.startswith(m["mountPath"].rstrip("/") + "/"))
    vol = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    (cm,) = [o for o in k["ConfigMap"] if o["metadata"]["name"] == vol["configMap"]["name"]]
    toml_text = cm["data"][os.path.relpath(cfg_path, mount["mountPath"])]
    cfg = tomllib.loads(toml_text)
    listen_port = int(cfg.get("listen", "127.0.0.1:8081").rsplit(":", 1)[1])
    assert not cfg.get("listen", "127.").startswith("127."), "listen must not be loopback in a pod"
    assert listen_port in ports.values(), f"listen port {listen_port} is not a containerPort"

    # The drain fits in the grace period.
    sd = {n: duration_s(cfg.get("shutdown", {})[n]) if n in cfg.get("shutdown", {}) else d
          for n, d in SHUTDOWN_DEFAULTS.items()}
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[0] == "sleep", cmd
    pre_stop = float(cmd[1])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop >= sd["lb_grace"], f"preStop {pre_stop}s < shutdown.lb_grace {sd['lb_grace']}s"
    need = pre_stop + max(sd["drain_timeout"], sd["lb_grace"] + sd["drain_window"])
    assert grace > need, f"terminationGracePeriodSeconds {grace} <= preStop + drain ({need}s)"

    # Secrets: every key the pod reads exists.
    secrets = {s["metadata"]["name"]: s for s in k.get("Secret", [])}
    env = {}
    for e in c["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            if ref["name"] in secrets:
                s = secrets[ref["name"]]
                data = {**s.get("data", {}), **s.get("stringData", {})}
                assert ref["key"] in data, f"Secret {ref['name']} has no key {ref['key']}"
                env[e["name"]] = data[ref["key"]]
            else:
                env[e["name"]] = None
    assert {"PULSEGATE_AUTH_SECRET", "DATABASE_URL"} <= set(env), "the JWT key and database URL come from a Secret"

    for svc in k["Service"]:
        assert selects(svc["spec"]["selector"], labels), "Service selects the pods"
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports or p["targetPort"] in ports.values()
    for pdb in k.get("PodDisruptionBudget", []):
        assert selects(pdb["spec"]["selector"]["matchLabels"], labels), "PDB selects the pods"
    for hpa in k.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
        assert "replicas" not in dep["spec"], "an HPA owns replicas: the Deployment must not set them"
    for sm in k.get("ServiceMonitor", []):
        svc = next(s for s in k["Service"] if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]))
        names = {p["name"] for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in names, f"ServiceMonitor port {ep['port']} not in {names}"
            assert ep.get("path", "/metrics") == "/metrics"
    return toml_text


def main():
    chart_objs = render()
    plain_objs = []
    for f in sorted(glob.glob(os.path.join(PLAIN, "*.yaml"))):
        with open(f) as fh:
            plain_objs += docs_of(fh.read())

    check("chart renders with default values (every kind present)", lambda: _kinds(chart_objs))
    check("chart objects validate against the Kubernetes schemas", lambda: validate_all(chart_objs, "chart"))
    check("deploy/k8s objects validate against the Kubernetes schemas", lambda: validate_all(plain_objs, "deploy/k8s"))
    check("deploy/k8s equals the chart rendered with its defaults", lambda: _same(chart_objs, plain_objs))
    check("chart: probes, drain timing, config, secrets and selectors fit", lambda: semantics(chart_objs))
    check("deploy/k8s: probes, drain timing, config, secrets and selectors fit", lambda: semantics(plain_objs))

    def optional_off():
        with open(os.path.join(CHART, "values.yaml")) as fh:
            values = yaml.safe_load(fh)
        values = copy.deepcopy(values)
        values["autoscaling"]["enabled"] = False
        values["podDisruptionBudget"]["enabled"] = False
        values["serviceMonitor"]["enabled"] = False
        values["secret"] = {**values["secret"], "create": False, "name": "pulsegate-external"}
        objs = render(values)
        kinds = {o["kind"] for o in objs}
        assert kinds == {"ConfigMap", "Deployment", "Service"}, kinds
        validate_all(objs, "chart (optional parts off)")
        semantics(objs)
        (dep,) = [o for o in objs if o["kind"] == "Deployment"]
        assert dep["spec"]["replicas"] == values["replicaCount"]
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert refs == {"pulsegate-external"}, refs

    check("chart with autoscaling, PDB, ServiceMonitor and Secret off", optional_off)

    helm_python = os.environ.get("HELM_LINT_PYTHON")
    if helm_python:
        def helm_lint():
            lint = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helm_lint.py")
            out = subprocess.run([helm_python, lint, CHART], capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, (out.stdout + out.stderr).strip()[-2000:]

        check("helm lint (Helm 4 through helm-sdkpy) finds no error", helm_lint)
    else:
        print("skip helm lint: no Python >= 3.12 for helm-sdkpy (scripts/ensure-k8s-validate.sh)")

    binary = os.environ.get("PULSEGATE_BIN")
    if binary:
        check("pulsegate config accepts the ConfigMap's pulsegate.toml", lambda: _gateway_accepts(binary, chart_objs))
    else:
        print("skip pulsegate config check (PULSEGATE_BIN not set)")

    print(f"k8s checks: {passed} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


def _kinds(objs):
    want = {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor"}
    got = {o["kind"] for o in objs}
    assert got == want, f"kinds {sorted(got)}, want {sorted(want)}"


def _same(a, b):
    ka = {key(o): o for o in a}
    kb = {key(o): o for o in b}
    assert set(ka) == set(kb), f"only in chart: {set(ka) - set(kb)}; only in deploy/k8s: {set(kb) - set(ka)}"
    for k in ka:
        assert ka[k] == kb[k], f"{k} differs; regenerate: python3 scripts/k8s/helmlite.py deploy/helm/pulsegate --out deploy/k8s"


def _gateway_accepts(binary, objs):
    toml_text = semantics(objs)
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(toml_text)
        f.flush()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEGATE_") and k not in ("REDIS_URL", "DATABASE_URL")}
        env["PULSEGATE_AUTH_SECRET"] = "k8s-check-" + "x" * 32
        env["DATABASE_URL"] = "postgres://pulsegate:pw@postgres:5432/pulsegate"
        out = subprocess.run([binary, "config", "--config", f.name], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"exit {out.returncode}: {out.stderr.strip()}"
        assert '"0.0.0.0:8081"' in out.stdout, out.stdout[:300]
        # The placeholder Secret is refused, so a forgotten override fails loudly.
        env["PULSEGATE_AUTH_SECRET"] = "REPLACE_ME"
        out = subprocess.run([binary, "config", "--config", f.name], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 64 and "auth.secret" in out.stderr, f"placeholder accepted: {out.returncode} {out.stderr.strip()}"


if __name__ == "__main__":
    main()
