# syntax=docker/dockerfile:1
# gitamp's container image: built from this source tree, run as a non-root user, happy with a
# read-only root filesystem (it writes only its data volume and /tmp). See the README, Install.
#
#   docker build -t gitamp:0.1.0 \
#     --build-arg GITAMP_BUILD_COMMIT="$(git rev-parse --short=12 HEAD)" \
#     --build-arg GITAMP_BUILD_DATE="$(git log -1 --format=%cs)" .
#   docker run --read-only --tmpfs /tmp -v gitamp-data:/var/lib/gitamp \
#     -p 4320:4320 -p 8080:8080 gitamp:0.1.0 serve --repo https://github.com/acme/collector-config.git
#
# Both images name an exact release (the builder matches Cargo.toml's rust-version, the runtime
# the builder's Debian, so the binary's glibc floor is met); pin them by digest too
# (`image:tag@sha256:…`) where your registry policy asks for it.

FROM rust:1.95.0-slim-bookworm AS build
# The build links OpenSSL and zlib (libgit2's https and ssh) through pkg-config.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No .git in the build context (.dockerignore): build.rs takes the commit from these.
ARG GITAMP_BUILD_COMMIT=unknown
ARG GITAMP_BUILD_DATE=unknown
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    GITAMP_BUILD_COMMIT="$GITAMP_BUILD_COMMIT" GITAMP_BUILD_DATE="$GITAMP_BUILD_DATE" \
    cargo build --release --locked --bin gitamp \
    && install -D -m 0755 target/release/gitamp /out/gitamp \
    && strip --strip-all /out/gitamp

FROM debian:12.12-slim
# libssl3 for https Git remotes (zlib is in every Debian image), ca-certificates to trust them;
# git, gnupg and openssh-client for --verify-signatures, which checks commits with Git's own
# verification (ssh-keygen -Y, gpg).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 git gnupg openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gitamp \
    && useradd --system --uid 10001 --gid gitamp --home-dir /var/lib/gitamp --no-create-home \
        --shell /usr/sbin/nologin gitamp \
    && install -d -o gitamp -g gitamp -m 0700 /var/lib/gitamp
COPY --from=build /out/gitamp /usr/local/bin/gitamp

ARG GITAMP_VERSION=0.1.0
ARG GITAMP_BUILD_COMMIT=unknown
ARG GITAMP_BUILD_DATE=unknown
LABEL org.opencontainers.image.title="gitamp" \
      org.opencontainers.image.description="Run a fleet of OpenTelemetry collectors from Git: an OpAMP server driven by a config repository." \
      org.opencontainers.image.version="$GITAMP_VERSION" \
      org.opencontainers.image.revision="$GITAMP_BUILD_COMMIT" \
      org.opencontainers.image.created="$GITAMP_BUILD_DATE" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/gitamp"

# The store (gitamp.db) and the Git cache. The API listens on every interface here, since the
# container's network is the boundary (the binary's default is localhost); temporary files
# (SQLite's, the collector check's) go to /tmp, a tmpfs with --read-only.
ENV GITAMP_DATA_DIR=/var/lib/gitamp \
    GITAMP_OPAMP_LISTEN=0.0.0.0:4320 \
    GITAMP_API_LISTEN=0.0.0.0:8080 \
    HOME=/var/lib/gitamp \
    TMPDIR=/tmp
VOLUME ["/var/lib/gitamp"]
WORKDIR /var/lib/gitamp
USER 10001:10001
# OpAMP (WebSocket and HTTP, /v1/opamp), then the status API, /metrics and webhooks.
EXPOSE 4320 8080
# No HEALTHCHECK: the image has no HTTP client to run one. Probe GET /healthz (alive) and
# /readyz (serving a revision) on port 8080 from the orchestrator instead.
ENTRYPOINT ["/usr/local/bin/gitamp"]
CMD ["serve"]
