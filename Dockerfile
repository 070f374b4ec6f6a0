# Multi-stage build: the runtime binary and the bundled connector libraries on a slim
# base, run as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p iggy-connectors \
        -p iggy_connector_stdout_sink \
        -p iggy_connector_file_sink \
        -p iggy_connector_null_sink \
        -p iggy_connector_random_source

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/iggy-connectors iggy-connectors \
    && mkdir -p /etc/iggy-connectors/connectors /var/lib/iggy-connectors \
    && chown iggy-connectors /var/lib/iggy-connectors
COPY --from=build /src/target/release/iggy-connectors /usr/local/bin/iggy-connectors
# Connector configs name these with an absolute `path`, e.g.
# path = "/usr/local/lib/iggy-connectors/libiggy_connector_stdout_sink"
COPY --from=build /src/target/release/libiggy_connector_*.so /usr/local/lib/iggy-connectors/
# Mount the runtime config here (and connector configs under connectors/), or point
# IGGY_CONNECTORS_CONFIG_PATH elsewhere.
ENV IGGY_CONNECTORS_CONFIG_PATH=/etc/iggy-connectors/config.toml
USER iggy-connectors
WORKDIR /var/lib/iggy-connectors
# A HEALTHCHECK on the HTTP API's /health comes with the HTTP API.
ENTRYPOINT ["/usr/local/bin/iggy-connectors"]
