//! End to end through Iggy (the test server, or `IGGY_TEST_ADDRESS`): real connector
//! libraries, the real client, at-least-once delivery.
//!
//! One test binary (linking is the slow part of a build), one module per subject:
//! - `cluster_state`: cluster mode's source state in Iggy;
//! - `source`: what a source produces and how its sends are cut and encoded;
//! - `sink`: delivery to sinks, their retries, reading ahead, sharing a group;
//! - `resume`: the state saved around each send and where a restart resumes;
//! - `lifecycle`: connectors failing, restarting, paused, stopped, reconfigured alone;
//! - `error_policy`: messages a sink cannot handle (dead letter, skip, fail);
//! - `metrics`: upstream's stage histogram as a real run fills it;
//! - `server_faults`: dropped connections, server restarts, group resets;
//! - `support`: what they share (context, buses, configs, reading topics back).

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

mod cluster_state;
mod error_policy;
mod lifecycle;
mod metrics;
mod resume;
mod server_faults;
mod sink;
mod source;
mod support;
