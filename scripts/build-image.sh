#!/usr/bin/env bash
# Build the container image without a container registry, and smoke-test it.
#
#   scripts/build-image.sh            build, then run and check GET /healthz
#   scripts/build-image.sh --no-run   build only
#   scripts/build-image.sh --full     build the Dockerfile itself, both stages
#                                     (see below), then run and check
#
# No registry is needed: the base image (debian:bookworm-slim) is replaced by
# a Debian bookworm root filesystem made with debootstrap from Debian's own
# mirror, and the Dockerfile's builder stage by a host build of the release
# binary (the host is Debian 12 too, so the glibc matches). Steps:
#
# 1. cargo build --release --locked --bin pulsegate (or IMAGE_BIN=PATH)
# 2. debootstrap --variant=minbase bookworm into .local/image/base
# 3. podman/buildah (vfs storage, chroot isolation): import that root
#    filesystem as localhost/debian:bookworm-slim, then build the
#    Dockerfile's runtime stage (extracted from the Dockerfile, with the
#    builder's COPY --from lines pointed at the host build) as
#    localhost/pulsegate:dev
# 4. unless --no-run: start a redis-server on a free port, run the image as
#    its non-root user with the default config (podman run, network host),
#    and check GET /healthz answers 200
# If podman/buildah refuse (nested user namespaces, no overlay, seccomp…),
# step 3/4 fall back to doing the runtime stage's steps by hand in a copy of
# the root filesystem and running the binary there with chroot
# --userspec=10001:10001; what refused is printed and logged in
# .local/image/refused.log.
#
# --full replaces only the base images: localhost/debian:bookworm-slim as
# above, and rust:1-bookworm by that root filesystem plus gcc and the host's
# Rust toolchain (at /usr/local/cargo and /usr/local/rustup, as in the
# official image); the Dockerfile is then built unchanged with buildah
# (crates come from crates.io, which is reachable). It takes a release build
# inside the builder: tens of minutes on a busy machine.
#
# Not part of scripts/test.sh: it downloads ~150 MB of Debian packages and
# takes minutes. Needs root (debootstrap, chroot). Environment:
#   IMAGE_BIN      use this binary instead of building target/release/pulsegate
#   DEBIAN_MIRROR  default: the first URIs: of /etc/apt/sources.list.d/debian.sources,
#                  else http://deb.debian.org/debian
#   IMAGE_TAG      default localhost/pulsegate:dev
#   IMAGE_NO_PODMAN=1  skip podman/buildah, go straight to the chroot
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX="build-image"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"

run_it=1
full=0
case "${1:-}" in
  --no-run) run_it=0 ;;
  --full) full=1 ;;
  "") ;;
  -h | --help)
    sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

is_root || die "needs root (debootstrap and chroot)"

state="$REPO_ROOT/.local/image"
base="$state/base"
refused="$state/refused.log"
tag="${IMAGE_TAG:-localhost/pulsegate:dev}"
mkdir -p "$state"
: >"$refused"

mirror="${DEBIAN_MIRROR:-}"
if [[ -z "$mirror" && -r /etc/apt/sources.list.d/debian.sources ]]; then
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

# refuse STEP CMD...: run CMD; on failure record the command and its error.
refuse() {
  local step="$1" out rc=0
  shift
  out="$("$@" 2>&1)" || rc=$?
  if [[ "$rc" -ne 0 ]]; then
    {
      printf '## %s refused (exit %d)\n$ %s\n' "$step" "$rc" "$*"
      printf '%s\n' "$out" | tail -n 15
      printf '\n'
    } >>"$refused"
    warn "$step refused (exit $rc): $* -- $(printf '%s' "$out" | tail -n 1)"
    return "$rc"
  fi
  printf '%s\n' "$out"
}

# 1. The binary (the builder stage makes its own with --full).
if [[ "$full" == 1 ]]; then
  bin=/bin/true
elif [[ -n "${IMAGE_BIN:-}" ]]; then
  bin="$IMAGE_BIN"
else
  log "cargo build --release --locked --bin pulsegate"
  cargo build --release --locked --bin pulsegate >&2
  bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/pulsegate"
fi
[[ -x "$bin" ]] || die "no binary at $bin"

# 2. The base root filesystem.
apt_install debootstrap
if [[ ! -x "$base/usr/bin/apt-get" ]]; then
  rm -rf "$base"
  log "debootstrap --variant=minbase bookworm $base $mirror"
  debootstrap --variant=minbase bookworm "$base" "$mirror" >"$state/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $state/debootstrap.log"
fi
log "base root filesystem: $base ($(du -sh "$base" | cut -f1))"

# The runtime stage of the Dockerfile, with the builder's outputs taken from
# a build context holding the host build.
ctx="$state/context"
rm -rf "$ctx"
mkdir -p "$ctx/src/target/release" "$ctx/src/config"
cp "$bin" "$ctx/src/target/release/pulsegate"
cp config/pulsegate.toml "$ctx/src/config/pulsegate.toml"
awk '/^FROM .* AS runtime/ {on = 1} on' Dockerfile |
  sed -e 's#^FROM debian:bookworm-slim#FROM localhost/debian:bookworm-slim#' \
    -e 's#^COPY --from=builder /src/#COPY src/#' >"$ctx/Containerfile"
grep -q '^COPY src/target/release/pulsegate' "$ctx/Containerfile" ||
  die "could not find the runtime stage's COPY --from=builder lines in the Dockerfile"

# healthz PORT: GET /healthz answers 200, then GET /readyz too (the gateway
# reached the Redis given in REDIS_URL).
healthz() {
  local port="$1" path i status=""
  for path in /healthz /readyz; do
    for ((i = 0; i < 100; i++)); do
      status="$(http_status 127.0.0.1 "$port" "$path" || true)"
      [[ "$status" == 200 ]] && break
      sleep 0.2
    done
    if [[ "$status" != 200 ]]; then
      warn "GET $path on 127.0.0.1:$port: ${status:-no answer}"
      return 1
    fi
  done
}

redis_pid="" redis_port="" gw_pid="" podman_ctr=""
cleanup() {
  if [[ -n "$podman_ctr" ]]; then podman --storage-driver vfs rm -f "$podman_ctr" >/dev/null 2>&1 || true; fi
  if [[ -n "$gw_pid" ]]; then kill "$gw_pid" 2>/dev/null || true; fi
  if [[ -n "$redis_pid" ]]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_redis: a throwaway redis-server on a free port; sets redis_port
# (and redis_pid, for the cleanup: no subshell).
start_redis() {
  redis_port="$(free_port)"
  bash "$SCRIPT_DIR/ensure-redis.sh" --install-only >/dev/null
  "$(redis_server_bin)" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$state/redis.log" 2>&1 &
  redis_pid=$!
  wait_for_port 127.0.0.1 "$redis_port" 10 redis "$redis_pid" || die "redis-server did not start"
}

# 3+4 with podman/buildah.
with_podman() {
  apt_install podman buildah || return 1
  local tar="$state/base.tar"
  tar -C "$base" -cf "$tar" . || return 1
  refuse "podman import" podman --storage-driver vfs import "$tar" localhost/debian:bookworm-slim >/dev/null || return 1
  refuse "buildah bud" buildah --storage-driver vfs bud --isolation chroot --pull=never \
    -t "$tag" -f "$ctx/Containerfile" "$ctx" >"$state/buildah.log" || return 1
  log "built $tag with buildah"
  [[ "$run_it" == 1 ]] || return 0
  local port
  start_redis
  port="$(free_port)"
  podman_ctr="pulsegate-smoke-$$"
  local run=(run -d --name "$podman_ctr" --network host
    -e "PULSEGATE_LISTEN=127.0.0.1:$port" -e "REDIS_URL=redis://127.0.0.1:$redis_port")
  # As a user would run it first; in sandboxes (Firecracker VMs, cgroup v1)
  # crun and runc both refuse podman's default rlimits, and runc accepts
  # lower ones: try that before giving up.
  if ! refuse "podman run" podman --storage-driver vfs "${run[@]}" "$tag" >/dev/null; then
    podman --storage-driver vfs rm -f "$podman_ctr" >/dev/null 2>&1 || true
    apt_install runc || return 1
    refuse "podman run (runc, lower rlimits)" podman --storage-driver vfs --runtime runc "${run[@]}" \
      --ulimit "nofile=$(ulimit -n):$(ulimit -Hn)" --ulimit nproc=4096:4096 "$tag" >/dev/null || return 1
  fi
  local user
  user="$(podman --storage-driver vfs inspect --format '{{.Config.User}}' "$podman_ctr" 2>/dev/null || echo '?')"
  healthz "$port" || {
    podman --storage-driver vfs logs "$podman_ctr" >&2 || true
    return 1
  }
  local pid uid
  pid="$(podman --storage-driver vfs inspect --format '{{.State.Pid}}' "$podman_ctr")"
  uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo '?')"
  log "podman run $tag: GET /healthz and /readyz 200 (USER $user, process uid $uid)"
}

# --full: localhost rust:1-bookworm and debian:bookworm-slim, then the
# Dockerfile as it is.
full_build() {
  apt_install podman buildah runc
  local tar="$state/base.tar" rust="$state/rust"
  tar -C "$base" -cf "$tar" .
  refuse "podman import" podman --storage-driver vfs import "$tar" docker.io/library/debian:bookworm-slim >/dev/null ||
    die "podman import refused (see $refused)"
  # (usr/local/cargo/bin/cargo is an absolute symlink: test its target.)
  if [[ ! -x "$rust/usr/local/rustup/toolchains/host/bin/cargo" ]]; then
    rm -rf "$rust"
    cp -a "$base" "$rust"
    cp /etc/resolv.conf "$rust/etc/resolv.conf"
    chroot "$rust" /bin/sh -c 'apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates && rm -rf /var/lib/apt/lists/*' \
      >"$state/rust-apt.log" 2>&1 || die "installing gcc into the rust base failed; see $state/rust-apt.log"
    local toolchain
    toolchain="$(rustc --print sysroot)"
    mkdir -p "$rust/usr/local/rustup/toolchains" "$rust/usr/local/cargo/bin"
    cp -a "$toolchain" "$rust/usr/local/rustup/toolchains/host"
    local tool
    for tool in cargo rustc rustdoc; do
      ln -s "/usr/local/rustup/toolchains/host/bin/$tool" "$rust/usr/local/cargo/bin/$tool"
    done
  fi
  # This machine's trust store: where a TLS-inspecting proxy stands
  # between the build and crates.io, its CA is there and not in Debian's
  # ca-certificates (cargo otherwise fails with "self-signed certificate in
  # certificate chain").
  cp /etc/ssl/certs/ca-certificates.crt "$rust/etc/ssl/certs/ca-certificates.crt"
  tar -C "$rust" -cf "$state/rust.tar" .
  refuse "podman import (rust)" podman --storage-driver vfs import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    "$state/rust.tar" docker.io/library/rust:1-bookworm >/dev/null || die "podman import refused (see $refused)"
  rm -f "$tar" "$state/rust.tar"
  log "buildah bud --pull=never -f Dockerfile . (the whole Dockerfile; log: $state/buildah-full.log)"
  # No --layers: with vfs every kept layer is a full copy of the tree.
  buildah --storage-driver vfs bud --isolation chroot --pull=never \
    -t "$tag" -f Dockerfile . >"$state/buildah-full.log" 2>&1 || {
    tail -n 20 "$state/buildah-full.log" >&2
    die "buildah bud of the Dockerfile failed; see $state/buildah-full.log"
  }
  log "built $tag from the Dockerfile"
}

# 3+4 by hand: the runtime stage's RUN and COPY steps in a copy of the base.
with_chroot() {
  local root="$state/rootfs"
  rm -rf "$root"
  cp -a "$base" "$root"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # The Dockerfile's RUN line, as written there.
  local run_line
  run_line="$(awk '/^FROM .* AS runtime/ {on = 1} on' Dockerfile |
    awk '/^RUN / {on = 1} on {print} on && !/\\$/ {exit}' | sed -e 's/^RUN //' -e 's/\\$//' | tr '\n' ' ')"
  log "chroot: $run_line"
  chroot "$root" /bin/sh -c "$run_line" >"$state/chroot-run.log" 2>&1 ||
    die "the runtime stage's RUN failed in the chroot; see $state/chroot-run.log"
  install -m 0755 "$bin" "$root/usr/local/bin/pulsegate"
  install -D -m 0644 config/pulsegate.toml "$root/etc/pulsegate/pulsegate.toml"
  log "root filesystem ready: $root ($(du -sh "$root" | cut -f1))"
  [[ "$run_it" == 1 ]] || return 0
  local port uid
  start_redis
  port="$(free_port)"
  uid="$(chroot "$root" id -u pulsegate)"
  # USER pulsegate, WORKDIR /, ENV, ENTRYPOINT + CMD of the Dockerfile.
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PULSEGATE_LISTEN="127.0.0.1:$port" REDIS_URL="redis://127.0.0.1:$redis_port" \
    chroot --userspec="$uid:$uid" "$root" /bin/sh -c 'cd / && exec pulsegate serve --config /etc/pulsegate/pulsegate.toml' \
    >"$state/gateway.log" 2>&1 &
  gw_pid=$!
  healthz "$port" || {
    tail -n 20 "$state/gateway.log" >&2
    die "the gateway in the chroot did not answer /healthz"
  }
  local running_uid
  running_uid="$(awk '/^Uid:/ {print $2}' "/proc/$(pgrep -P "$gw_pid" pulsegate || echo "$gw_pid")/status" 2>/dev/null || echo '?')"
  log "chroot --userspec=$uid:$uid: GET /healthz and /readyz 200 (process uid $running_uid, config /etc/pulsegate/pulsegate.toml)"
}

if [[ "$full" == 1 ]]; then
  full_build
  if [[ "$run_it" == 1 ]]; then
    # The image just built: with_podman's run half, without rebuilding.
    run_image() {
      local port
      start_redis
      port="$(free_port)"
      podman_ctr="pulsegate-smoke-$$"
      local run=(run -d --name "$podman_ctr" --network host
        -e "PULSEGATE_LISTEN=127.0.0.1:$port" -e "REDIS_URL=redis://127.0.0.1:$redis_port")
      refuse "podman run (runc, lower rlimits)" podman --storage-driver vfs --runtime runc "${run[@]}" \
        --ulimit "nofile=$(ulimit -n):$(ulimit -Hn)" --ulimit nproc=4096:4096 "$tag" >/dev/null || return 1
      healthz "$port" || return 1
      local pid
      pid="$(podman --storage-driver vfs inspect --format '{{.State.Pid}}' "$podman_ctr")"
      log "podman run $tag: GET /healthz and /readyz 200 (process uid $(awk '/^Uid:/ {print $2}' "/proc/$pid/status"))"
    }
    run_image || die "the image built from the Dockerfile did not answer (see $refused)"
  fi
  log "done: image $tag, built from the Dockerfile"
elif [[ "${IMAGE_NO_PODMAN:-0}" != 1 ]] && with_podman; then
  log "done: image $tag"
else
  warn "podman/buildah could not build or run the image (see $refused); doing the runtime stage by hand in a chroot"
  with_chroot
  log "done: root filesystem $state/rootfs (the image's content, not an OCI image)"
fi
if [[ -s "$refused" ]]; then
  log "what refused:"
  cat "$refused" >&2
fi
