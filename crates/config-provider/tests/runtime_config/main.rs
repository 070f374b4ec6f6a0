//! The runtime config as a user writes it: files, environment variables, secrets, and
//! every kind of mistake.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

mod every_key;
mod loading;
mod mistakes;
mod problem_sources;
mod properties;
mod provider_kind;
mod secrets;
mod support;
