//! The HTTP API end to end: a runtime with a random source and a file sink (through the
//! test server or `IGGY_TEST_ADDRESS`), the local config provider, real HTTP requests.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

mod activation;
mod auth;
mod compat;
mod connections;
mod cors;
mod errors;
mod openapi;
mod plugins;
mod properties;
mod readiness;
mod routes;
mod support;
mod tls;
