#!/usr/bin/env bash
# Make sure Debian's Chromium is installed (for browser tests).
#
#   scripts/ensure-chromium.sh                install chromium (+ fonts) if missing
#   scripts/ensure-chromium.sh --with-driver  also install chromium-driver
#   scripts/ensure-chromium.sh --optional     a failure only warns (exit 0)
#
# Prints the browser's path on stdout when it is available. Idempotent.
#
# Headless use, as root or in a container, needs e.g.:
#   chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
#     --disable-background-networking --disable-component-update --disable-sync \
#     --user-data-dir="$(mktemp -d)" --screenshot=out.png http://127.0.0.1:8081/...
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="ensure-chromium"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

optional=0
pkgs=(chromium fonts-liberation)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --optional) optional=1 ;;
    --with-driver) pkgs+=(chromium-driver) ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
  shift
done

# apt_install calls die (exit) on failure; run it in a subshell so that
# --optional can turn that into a warning.
if ! (apt_install "${pkgs[@]}"); then
  if [[ "$optional" -eq 1 ]]; then
    warn "could not install ${pkgs[*]}; browser tests will be skipped"
    exit 0
  fi
  die "could not install ${pkgs[*]}"
fi

browser="$(command -v chromium || true)"
if [[ -z "$browser" ]]; then
  [[ "$optional" -eq 1 ]] && {
    warn "chromium installed but not on PATH"
    exit 0
  }
  die "chromium installed but not on PATH"
fi
log "$("$browser" --version 2>/dev/null || echo chromium) at $browser"
printf '%s\n' "$browser"
