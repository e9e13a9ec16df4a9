# One multi-stage build for the three Sparkle Community binaries.
#
#   docker build --target command-api -t sparkle/command-api .
#   docker build --target query-api   -t sparkle/query-api   .
#   docker build --target projector   -t sparkle/projector   .
#
# Stages: chef (toolchain + cargo-chef) → planner (dependency recipe from the
# manifests only) → cook (dependencies compiled; this layer is reused until
# Cargo.toml/Cargo.lock change) → build-<binary> (our code) → <binary>
# (distroless runtime). The build context is whitelisted by .dockerignore.
#
# Runtime: gcr.io/distroless/cc-debian12:nonroot — glibc, libgcc, libssl3 and
# CA certificates, no shell, no package manager, user 65532:65532. The builder
# is Debian 12 (bookworm) too, so the binaries link against the same glibc.

ARG RUST_VERSION=1.95.0
ARG CARGO_CHEF_VERSION=0.1.77

# ---------------------------------------------------------------- chef
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
# pkg-config + libssl-dev only matter if a dependency links OpenSSL (the
# workspace prefers rustls); they cost nothing at runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app
# The build never needs a live database: queries are checked at run time and
# the migrations are embedded from migrations/.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

# ---------------------------------------------------------------- planner
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------- cook
FROM chef AS cook
COPY --from=planner /app/recipe.json recipe.json
# All workspace dependencies, release profile. The recipe carries Cargo.lock;
# the `cargo build --locked` below fails if the lock file is out of date.
RUN cargo chef cook --release --recipe-path recipe.json

# ---------------------------------------------------------------- sources
FROM cook AS source
# Cargo.toml, Cargo.lock, services/ and migrations/ (command-api embeds the SQL
# migrations at compile time with sqlx::migrate!), plus .sqlx/ and
# rust-toolchain.toml when present — see .dockerignore.
COPY . .

# ---------------------------------------------------------------- builds
FROM source AS build-command-api
RUN cargo build --release --locked -p command-api --bin command-api \
 && install -D -m 0755 target/release/command-api /out/command-api

FROM source AS build-query-api
RUN cargo build --release --locked -p query-api --bin query-api \
 && install -D -m 0755 target/release/query-api /out/query-api

FROM source AS build-projector
RUN cargo build --release --locked -p projector --bin projector \
 && install -D -m 0755 target/release/projector /out/projector

# ---------------------------------------------------------------- runtime
# Release pipelines pin the digest without editing this file (BuildKit named
# context): docker buildx build --build-context \
#   gcr.io/distroless/cc-debian12:nonroot=docker-image://gcr.io/distroless/cc-debian12:nonroot@sha256:… …
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
# Numeric, so Kubernetes can verify runAsNonRoot without /etc/passwd lookups.
USER 65532:65532
LABEL org.opencontainers.image.vendor="Sparkle Community" \
      org.opencontainers.image.description="Sparkle Community CQRS backend"

# The binaries are owned by root and not writable by the runtime user.
FROM runtime AS command-api
LABEL org.opencontainers.image.title="command-api"
COPY --from=build-command-api /out/command-api /usr/local/bin/command-api
# 8080 REST API (HTTP_ADDR), 9090 /livez /readyz /metrics (ADMIN_ADDR)
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/command-api"]

FROM runtime AS query-api
LABEL org.opencontainers.image.title="query-api"
COPY --from=build-query-api /out/query-api /usr/local/bin/query-api
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/query-api"]

FROM runtime AS projector
LABEL org.opencontainers.image.title="projector"
COPY --from=build-projector /out/projector /usr/local/bin/projector
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/projector"]
