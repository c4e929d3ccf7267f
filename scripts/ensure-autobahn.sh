#!/usr/bin/env bash
# Make sure Autobahn|Testsuite's `wstest` (autobahntestsuite 0.8.2, from
# PyPI) is installed, for scripts/autobahn.sh (docs/decisions.md F12).
#
#   scripts/ensure-autobahn.sh     pip install --user it into $AUTOBAHN_PREFIX
#                                  (default /tmp/ab) when missing
#
# wstest 0.8.2 needs Python 2.7, which Debian 12 no longer packages: the
# script uses pyenv's ($PYTHON2, default ~/.pyenv/versions/2.7.18/bin/python).
# Prints the path of wstest on stdout (run it with PYTHONUSERBASE set to the
# prefix), everything else on stderr; exits 1 when there is no Python 2.7 or
# the install fails. Idempotent.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="ensure-autobahn"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

prefix="${AUTOBAHN_PREFIX:-/tmp/ab}"
wstest="$prefix/bin/wstest"
python2="${PYTHON2:-$HOME/.pyenv/versions/2.7.18/bin/python}"

works() { [[ -x "$wstest" ]] && PYTHONUSERBASE="$prefix" "$wstest" --help >/dev/null 2>&1; }

if ! works; then
  [[ -x "$python2" ]] || die "no Python 2.7 at $python2 (set PYTHON2): wstest 0.8.2 needs it"
  log "installing autobahntestsuite 0.8.2 into $prefix"
  PYTHONUSERBASE="$prefix" "$python2" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --user autobahntestsuite==0.8.2 >&2 || die "pip install autobahntestsuite==0.8.2 failed"
  works || die "wstest does not run after installing it ($wstest)"
fi
log "wstest present: $wstest"
printf '%s\n' "$wstest"
