# syntax=docker/dockerfile:1
#
# pulsegate container image.
#
#   docker build -t pulsegate .
#   docker run --rm -p 8081:8081 -e REDIS_URL=redis://redis:6379 pulsegate
#
# Without a registry (no base images to pull): scripts/build-image.sh
# (docs/deploy.md, "The container image").
#
# Settings come from /etc/pulsegate/pulsegate.toml, then REDIS_URL /
# DATABASE_URL / PULSEGATE_* environment variables, then command-line flags.

############################ builder ############################
FROM rust:1-bookworm AS builder
WORKDIR /src

# 1. Dependencies only, with stub sources, so this layer is reused until
#    Cargo.toml / Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src loadtest/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > loadtest/src/main.rs \
 && cargo build --release --locked --bin pulsegate \
 && rm -rf src loadtest/src \
           target/release/.fingerprint/pulsegate-* \
           target/release/deps/pulsegate-* \
           target/release/deps/libpulsegate-* \
           target/release/pulsegate*

# 2. The real sources. lua/, ui/ (the dashboard page), the client library and
#    the audit migrations (under src/) are embedded in the binary
#    (include_str!/include_bytes!), and config/ holds the default config
#    file. tests/integration/container.rs fails when an embedded file is
#    missing here or excluded by .dockerignore.
COPY src/ src/
COPY lua/ lua/
COPY ui/ ui/
COPY clients/js/pulsegate.js clients/js/pulsegate.js
COPY config/ config/
COPY loadtest/ loadtest/
# COPY leaves the files' old mtimes; touch them so cargo never mistakes the
# stub build for an up-to-date one.
RUN find src loadtest/src lua ui clients -type f -exec touch {} + \
 && cargo build --release --locked --bin pulsegate \
 && ./target/release/pulsegate --version

############################ runtime ############################
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pulsegate \
 && useradd --system --uid 10001 --gid pulsegate --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin pulsegate

COPY --from=builder /src/target/release/pulsegate /usr/local/bin/pulsegate
COPY --from=builder /src/config/pulsegate.toml /etc/pulsegate/pulsegate.toml

USER pulsegate
WORKDIR /
EXPOSE 8081
ENV PULSEGATE_LISTEN=0.0.0.0:8081
# No HEALTHCHECK: the slim image has no curl/wget, and pulsegate has no
# self-probe subcommand. Let the orchestrator probe GET /readyz (readiness)
# on port 8081 instead, e.g. a Kubernetes httpGet probe.
ENTRYPOINT ["pulsegate"]
CMD ["serve", "--config", "/etc/pulsegate/pulsegate.toml"]
