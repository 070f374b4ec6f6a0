//! Conformance suite: the real `iggy` 0.11 client, through its public API only, against
//! the test server, or against any Iggy server named by `IGGY_TEST_ADDRESS=host:port`
//! (user iggy/iggy), with no code change.
//!
//! Every test uses stream names of its own, so runs against a long-lived real server do
//! not collide, and wraps its work in a deadline (the client waits 30 s for a reply).

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

mod auth;
mod consumer_groups;
mod messages;
mod producers;
mod restarts;
mod streams;
mod support;
