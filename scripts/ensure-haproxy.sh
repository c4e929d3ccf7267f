#!/usr/bin/env bash
# Install HAProxy from Debian's packages when it is missing (idempotent) and
# print the path of the binary on stdout.
#
#   scripts/ensure-haproxy.sh
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="ensure-haproxy"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

if ! command -v haproxy >/dev/null 2>&1; then
  apt_install haproxy
fi
bin="$(command -v haproxy)" || die "haproxy is still not on PATH after installing it"
log "haproxy present: $bin ($("$bin" -v | head -n 1))"
printf '%s\n' "$bin"
