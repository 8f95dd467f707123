# Build meterbridge in a Rust image and ship the binary in a small Debian image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY drivers ./drivers
RUN cargo build --release --locked --bin meterbridge

FROM debian:bookworm-slim
RUN useradd --system --no-create-home --groups dialout meterbridge
COPY --from=build /src/target/release/meterbridge /usr/local/bin/meterbridge
USER meterbridge
ENTRYPOINT ["/usr/local/bin/meterbridge"]
CMD ["--help"]
