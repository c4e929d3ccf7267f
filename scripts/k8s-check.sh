#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests: deploy/helm/pulsegate rendered
# with its defaults (scripts/k8s/helmlite.py: Helm is in none of the
# reachable registries) and deploy/k8s, validated against the Kubernetes
# schemas of PyPI's kubernetes-validate, held equal to each other, and
# checked for the drain timing, probes, selectors and secrets
# (scripts/k8s/check.py says what exactly); and, where a Python >= 3.12
# can carry PyPI's helm-sdkpy, `helm lint` with the real Helm.
#
#   scripts/k8s-check.sh
#
# Environment: PULSEGATE_BIN, when set, is also asked (`pulsegate config`)
# whether it accepts the ConfigMap's pulsegate.toml.
# Prints `k8s checks: N passed, M failed`.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="k8s-check"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

{
  read -r python
  read -r helm_python || true
} < <(bash "$SCRIPT_DIR/ensure-k8s-validate.sh")
[[ -x "$python" ]] || die "scripts/ensure-k8s-validate.sh gave no python"
HELM_LINT_PYTHON="$helm_python" exec "$python" "$SCRIPT_DIR/k8s/check.py"
