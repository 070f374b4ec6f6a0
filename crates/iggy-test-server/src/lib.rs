//! An in-memory server that speaks the TCP protocol of Apache Iggy's `iggy` 0.11
//! client, for tests and demos.
//!
//! **It is not an Iggy replacement**: nothing is persisted, there is one node and one
//! user, and only what a connectors runtime uses is implemented (sign-in with a password
//! or a personal access token, streams, topics, partitions, send and poll with every
//! polling strategy, consumer offsets, consumer groups, cluster metadata, ping). The
//! wire format comes from `iggy_binary_protocol`, the crate the client itself encodes
//! and decodes with, so a layout change breaks the build rather than the tests. Every
//! test that uses this server can run against a real Iggy server instead.
//!
//! Tests get a handle ([`TestServer`]) to read what the server holds (messages, stored
//! offsets, how many polls each consumer made that returned messages) and to inject
//! faults: drop every connection, fail the next sends, delay replies, restart keeping
//! the data. A few helpers for such tests ([`target`], [`unique`], [`eventually`]) are
//! here too.

mod dispatch;
mod error;
mod helpers;
mod server;
mod state;
mod wire;

pub use helpers::{WAIT_LIMIT, eventually, eventually_showing, target, unique};
pub use server::{
    CREATE_TOPIC_COMMAND_ENV, OffsetOwner, RESTART_COMMAND_ENV, ServerConfig, StartError,
    StoredMessageInfo, TEST_ADDRESS_ENV, TestServer, TestTarget, TlsFiles, skip,
};

/// The most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1000;
