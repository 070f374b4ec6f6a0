# Multi-stage build: the runtime binary and the bundled connector libraries on a slim
# base, run as a non-root user. A test (tests/dockerfile.rs) checks what this file
# relies on: package and file names, environment variables, the port and the health
# check command.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The binary and every bundled connector: the workspace packages named iggy_connector_*
# are exactly the list in crates/connectors/bundled/Cargo.toml (tests/bundled.rs).
RUN cargo build --release --locked -p iggy-connectors -p 'iggy_connector_*'

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/iggy-connectors iggy-connectors \
    && mkdir -p /etc/iggy-connectors/connectors /var/lib/iggy-connectors \
    && chown iggy-connectors /var/lib/iggy-connectors
COPY --from=build /src/target/release/iggy-connectors /usr/local/bin/iggy-connectors
# Connector configs name these with an absolute `path`, e.g.
# path = "/usr/local/lib/iggy-connectors/libiggy_connector_stdout_sink"
# This is one of the default plugin directories ([plugins] directories): add your own
# connectors here, or set IGGY_CONNECTORS_PLUGINS_DIRECTORIES to where they are.
COPY --from=build /src/target/release/libiggy_connector_*.so /usr/local/lib/iggy-connectors/
# Configure with environment variables (every key has one, see configs/config.toml) or
# mount a config file and set IGGY_CONNECTORS_CONFIG_PATH (or pass --config). Connector
# configs go under /etc/iggy-connectors/connectors. The API listens on every address, so
# it needs a key: mount one as the secret iggy_connectors_api_key (docker run
# --secret, or a compose `secrets:` entry); without it the runtime refuses to start.
ENV IGGY_CONNECTORS_HTTP_ENABLED=true \
    IGGY_CONNECTORS_HTTP_ADDRESS=0.0.0.0:8081 \
    IGGY_CONNECTORS_HTTP_API_KEY=\${file:/run/secrets/iggy_connectors_api_key} \
    IGGY_CONNECTORS_STATE_PATH=/var/lib/iggy-connectors/state \
    IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR=/etc/iggy-connectors/connectors
EXPOSE 8081
USER iggy-connectors
WORKDIR /var/lib/iggy-connectors
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/iggy-connectors", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/iggy-connectors"]
