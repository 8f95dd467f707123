# meterbridge container image.
#   docker build -t meterbridge .
#   docker run -d --name meterbridge --device /dev/ttyUSB0 --group-add dialout \
#     -v meterbridge-data:/data --read-only meterbridge
# Details and choices: docs/docker.md.

# Build: the same command CI runs, so the image holds the binary the tests ran against.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY drivers ./drivers
COPY benches ./benches
RUN cargo build --release --locked \
    && strip target/release/meterbridge \
    && mkdir -p /rootfs/data \
    && chown 10001:10001 /rootfs/data

# Runtime: distroless "cc" is Debian 12's glibc, libgcc_s (Rust's unwinder) and CA
# certificates, and nothing else: no shell, no package manager. The binary links exactly
# those (libc, libm, libgcc_s); a static musl build for distroless/static would save ~20 MB
# but is a different build from the one CI tests.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/meterbridge /usr/local/bin/meterbridge
# /data owned by the service user, so a fresh named volume is writable by it.
COPY --from=build --chown=10001:10001 /rootfs/data /data
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 10001:10001
WORKDIR /data
VOLUME /data
# The daemon is PID 1, so the container stops when it dies; what the health check adds is
# whether the mounted configuration still validates (an edited file with a mistake, an
# unreadable key_file) — the failure that otherwise shows up only at the next restart.
HEALTHCHECK --interval=5m --timeout=10s --start-period=10s \
    CMD ["meterbridge", "check-config", "/data/meterbridge.yaml"]
ENTRYPOINT ["meterbridge"]
CMD ["run", "--config", "/data/meterbridge.yaml"]
