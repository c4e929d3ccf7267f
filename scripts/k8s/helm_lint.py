"""`helm lint` with the real Helm (4), through PyPI's helm-sdkpy, which
carries Helm as a shared library (no helm binary in any registry these
machines reach). Lint renders every template with the chart's default
values, so it catches what scripts/k8s/helmlite.py might render
differently. Needs Python >= 3.12 (helm-sdkpy's floor); run by check.py
when scripts/ensure-k8s-validate.sh found one.

    python scripts/k8s/helm_lint.py CHART_DIR

Exit 0 when lint reports no error (severity 3 or more), else 1.
"""

import asyncio
import sys

from helm_sdkpy import Configuration
from helm_sdkpy.chart import Lint

# Lint needs no cluster; an empty kubeconfig keeps it from looking for one.
EMPTY_KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"
SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


def main():
    cfg = Configuration(namespace="default", kubeconfig=EMPTY_KUBECONFIG)
    result = asyncio.run(Lint(cfg).run(sys.argv[1]))
    worst = 0
    for m in result.get("Messages") or []:
        sev = m.get("Severity", 0)
        worst = max(worst, sev)
        print(f"helm lint: {SEVERITY.get(sev, sev)} in {m.get('Path')}")
    if result.get("Errors") or worst >= 3:
        sys.exit(1)


if __name__ == "__main__":
    main()
