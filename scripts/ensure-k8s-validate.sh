#!/usr/bin/env bash
# Make sure a Python that can import kubernetes_validate (PyPI's
# kubernetes-validate, which ships the Kubernetes JSON schemas and validates
# manifests offline) and PyYAML is available, for the deploy/ checks.
#
#   scripts/ensure-k8s-validate.sh    create .local/venv-k8s (Debian's python3
#                                     with python3-venv) and pip install the
#                                     pinned kubernetes-validate into it
#
# Prints the venv's python on stdout, everything else on stderr. Idempotent:
# nothing is installed when the venv already has the pinned version.
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
