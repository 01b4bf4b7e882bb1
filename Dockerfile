# Multi-stage build of a small static, non-root image of the tested binary.
#   docker build -t routerpolicy/routerpolicy:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY crds ./crds
COPY examples ./examples
# Cargo.toml names the bench and example targets; their files must exist to read the manifest
# (only the binary is built).
COPY benches ./benches
COPY tools ./tools
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin routerpolicy \
 && cp target/x86_64-unknown-linux-musl/release/routerpolicy /routerpolicy

FROM scratch
COPY --from=build /routerpolicy /routerpolicy
USER 65532:65532
# 8080: the operator's /metrics; 8090: `routerpolicy gateway`.
EXPOSE 8080 8090
ENTRYPOINT ["/routerpolicy"]
CMD ["run"]
