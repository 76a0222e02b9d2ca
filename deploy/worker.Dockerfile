# syntax=docker/dockerfile:1
# The worker image (lvd-worker: `run` works the queues, `migrate` applies
# migrations/, which are compiled into the binary). From the repository's root:
#   docker build -f deploy/worker.Dockerfile -t REGISTRY/lvd-worker:VERSION .
# Only the sources the workspace needs are copied (never target/ or
# node_modules), so the build context stays small without a .dockerignore.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Every workspace member must be present for cargo to load the workspace,
# though only lvd-worker and what it depends on compile.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY components components
COPY runtime runtime
COPY worker worker
COPY tests tests
COPY migrations migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p lvd-worker \
 && cp target/release/lvd-worker /lvd-worker

# Debian slim, as the builder, so glibc matches. The worker needs no system
# certificates (mail TLS uses the roots compiled into it) and writes no file.
FROM debian:bookworm-slim
COPY --from=build /lvd-worker /usr/local/bin/lvd-worker
# An unprivileged user with no home: the Kubernetes manifests run it with a
# read-only root filesystem.
USER 65532:65532
EXPOSE 9100
ENTRYPOINT ["/usr/local/bin/lvd-worker"]
CMD ["run"]
