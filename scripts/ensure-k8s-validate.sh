#!/usr/bin/env bash
# Make sure a Python that can import kubernetes_validate (PyPI's
# kubernetes-validate, which ships the Kubernetes JSON schemas and validates
# manifests offline) and PyYAML is available, for the deploy/ checks.
#
#   scripts/ensure-k8s-validate.sh    create .local/venv-k8s (Debian's python3
#                                     with python3-venv) and pip install the
#                                     pinned kubernetes-validate into it
#
#                                   and, when a Python >= 3.12 is on the
#                                   machine (pyenv's, or python3.12 on PATH),
#                                   .local/venv-helm with PyPI's helm-sdkpy
#                                   (Helm 4 as a shared library), for a real
#                                   `helm lint`
#
# Prints the venv's python on stdout, and on a second line the helm venv's
# python (empty when there is no Python >= 3.12), everything else on
# stderr. Idempotent: nothing is installed when the venvs already have the
# pinned versions.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="ensure-k8s-validate"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

case "${1:-}" in
  "") ;;
  -h | --help)
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument: $1" ;;
esac

# The Kubernetes versions' schemas it ships decide what the checks can
# validate against; bump deliberately.
version=1.37.0
venv="$REPO_ROOT/.local/venv-k8s"
python="$venv/bin/python"

has_it() {
  [[ -x "$python" ]] &&
    "$python" -c "import importlib.metadata as m, yaml, kubernetes_validate; assert m.version('kubernetes-validate') == '$version'" >/dev/null 2>&1
}

if ! has_it; then
  if ! /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv
  fi
  rm -rf "$venv"
  log "creating $venv"
  /usr/bin/python3 -m venv "$venv" >&2
  log "pip install kubernetes-validate==$version"
  "$python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$version" >&2
  has_it || die "$python cannot import kubernetes_validate $version after pip install"
fi
log "kubernetes-validate $version in $venv"
printf '%s\n' "$python"

helm_version=0.1.32
helm_venv="$REPO_ROOT/.local/venv-helm"
helm_python="$helm_venv/bin/python"
has_helm() {
  [[ -x "$helm_python" ]] &&
    "$helm_python" -c "import importlib.metadata as m, helm_sdkpy; assert m.version('helm-sdkpy') == '$helm_version'" >/dev/null 2>&1
}
if ! has_helm; then
  py312=""
  for candidate in python3.13 python3.12 "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      py312="$(command -v "$candidate")"
      break
    fi
  done
  if [[ -z "$py312" ]]; then
    warn "no Python >= 3.12 on this machine: helm lint (helm-sdkpy) skipped"
    printf '\n'
    exit 0
  fi
  rm -rf "$helm_venv"
  log "creating $helm_venv ($("$py312" --version)); pip install helm-sdkpy==$helm_version"
  "$py312" -m venv "$helm_venv" >&2
  if ! "$helm_python" -m pip install --quiet --disable-pip-version-check "helm-sdkpy==$helm_version" >&2 || ! has_helm; then
    warn "helm-sdkpy could not be installed: helm lint skipped"
    printf '\n'
    exit 0
  fi
fi
log "helm-sdkpy $helm_version in $helm_venv"
printf '%s\n' "$helm_python"
