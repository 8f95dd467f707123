# meterbridge container image.
#   docker build -t meterbridge .
#   docker run -d --name meterbridge --device /dev/ttyUSB0 --group-add dialout \
#     -v meterbridge-data:/data --read-only meterbridge
# Details and choices: docs/docker.md.

# Build: the same command CI runs (`cargo build --release --locked`), on Alpine so the binary is
# linked statically against musl (the add-on image builds it the same way).
FROM rust:1-alpine3.22 AS build
RUN apk add --no-cache musl-dev gcc
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY drivers ./drivers
COPY benches ./benches
RUN cargo build --release --locked \
    && mkdir -p /rootfs/data \
    && chown 10001:10001 /rootfs/data

# Runtime: distroless "static" is CA certificates, /etc/passwd and tzdata and nothing else: no
# shell, no package manager, no libc (the binary needs none). About 2 MB plus the 8 MB binary.
FROM gcr.io/distroless/static-debian12
COPY --from=build /src/target/release/meterbridge /usr/local/bin/meterbridge
# /data owned by the service user, so a fresh named volume is writable by it.
COPY --from=build --chown=10001:10001 /rootfs/data /data
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 10001:10001
WORKDIR /data
VOLUME /data
# The daemon is PID 1, so the container stops when it dies; what the health check adds is a
# daemon that runs but is stuck: its main loop rewrites a heartbeat file in state_dir every
# 30 s, and `meterbridge health` fails when that is older than 2 minutes.
HEALTHCHECK --interval=1m --timeout=10s --start-period=1m \
    CMD ["meterbridge", "health", "--config", "/data/meterbridge.yaml"]
ENTRYPOINT ["meterbridge"]
CMD ["run", "--config", "/data/meterbridge.yaml"]
