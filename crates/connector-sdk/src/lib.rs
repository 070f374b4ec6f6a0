//! The connector SDK: everything a connector author depends on.
//!
//! A connector is a [`Sink`] (writes messages consumed from Iggy to an external system) or
//! a [`Source`] (reads from an external system; the runtime produces what it reads to
//! Iggy). Implement the trait, then call [`export_sink!`] or [`export_source!`] once at
//! the crate root. The same crate then works two ways, through the one descriptor the
//! macro builds:
//! - built as a `cdylib`, the runtime loads it from a file at run time;
//! - linked as an `rlib`, a program registers it with `plugin-host` through the
//!   generated `descriptor()` function.
//!
//! The SDK knows nothing of the runtime or of Iggy's client: its dependencies are serde,
//! tokio (each connector instance runs on an executor of its own) and tracing (events are
//! forwarded to the host, tagged with the connector key).
//!
//! The [`abi`] module is the contract between plugin and host; connector authors never
//! use it directly.

#[doc(hidden)]
#[path = "export.rs"]
pub mod __export;
pub mod abi;
mod connector;
pub mod duration;
mod error;
mod log_forward;
mod message;

/// The `bytes` crate that [`ProducedMessage::payload`] is made of, so that connectors
/// use the same version.
pub use bytes;
pub use connector::{ConnectorContext, ConnectorKind, Sink, Source};
pub use error::{Error, ErrorKind, parse_config};
pub use log_forward::{level_code, level_from_code};
pub use message::{
    BatchOutcome, Header, HeaderKind, Message, MessageBatch, OwnedHeader, ProducedBatch,
    ProducedMessage, Schema,
};
