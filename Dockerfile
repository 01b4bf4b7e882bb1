# Multi-stage build of a small static, non-root image of the tested binary, for amd64 and arm64.
#   docker build -t routerpolicy/routerpolicy:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t routerpolicy/routerpolicy:0.1.0 .
# Each platform's build stage runs on that platform (natively, or emulated by buildx) and
# builds the static musl binary of its architecture (TARGETARCH, set by BuildKit).
FROM rust:1.95-bookworm AS build
ARG TARGETARCH
RUN case "${TARGETARCH:-amd64}" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH=${TARGETARCH}: build for linux/amd64 or linux/arm64" >&2; exit 1 ;; \
    esac \
 && echo "$target" > /rust-target \
 && rustup target add "$target" \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY crds ./crds
COPY examples ./examples
# Cargo.toml names the bench and example targets; their files must exist to read the manifest
# (only the binary is built).
COPY benches ./benches
COPY tools ./tools
RUN target="$(cat /rust-target)" \
 && cargo build --release --locked --target "$target" --bin routerpolicy \
 && cp "target/$target/release/routerpolicy" /routerpolicy

FROM scratch
COPY --from=build /routerpolicy /routerpolicy
USER 65532:65532
# 8080: the operator's /metrics; 8090: `routerpolicy gateway`.
EXPOSE 8080 8090
ENTRYPOINT ["/routerpolicy"]
CMD ["run"]
