# Tasks for iggy-connectors. `just --list` shows them. (Install just with
# `cargo install just`; every recipe is a plain cargo command you can also run by hand.)

# Build the binary and every plugin library (debug).
build:
    cargo build --workspace

# Build the release binary and the plugin libraries into target/release.
plugins:
    cargo build --release --workspace --exclude iggy-connectors-benches --exclude iggy-connectors-tests

# Run the whole test suite (builds the plugin libraries the tests load).
test:
    cargo test --workspace

# Format check and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Run the benchmarks.
bench:
    cargo bench -p iggy-connectors-benches

# Run the binary with the example config.
run *ARGS:
    cargo run --release --bin iggy-connectors -- --config configs/config.toml {{ARGS}}

# The bundled connectors end to end with the HTTP API, against an in-memory Iggy server.
demo:
    cargo run -- demo

# Check a config (runtime, connectors, plugins, transforms) without connecting to Iggy.
validate CONFIG="configs/config.toml": plugins
    cargo run --release --bin iggy-connectors -- --config {{CONFIG}} validate

# Print what each bundled plugin library is, after building them (every
# libiggy_connector_* there: the bundled ones, crates/connectors/bundled/Cargo.toml).
list-plugins: plugins
    cargo run --release --bin iggy-connectors -- plugins target/release/libiggy_connector_*.so
