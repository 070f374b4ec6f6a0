//! Loads connector plugins and drives them through safe handles.
//!
//! `plugin-host` knows the connector ABI (from `connector-sdk`) and nothing of Iggy.
//! A [`Plugin`] comes from a shared library ([`PluginLoader::load`]) or from a connector
//! linked into the program ([`Plugin::from_static`]); both go through the same
//! descriptor check (ABI version first). From a plugin you open [`SinkInstance`]s and
//! [`SourceInstance`]s, whose async methods never block the calling thread: the plugin
//! runs each instance on an executor of its own and answers through a completion
//! callback.
//!
//! # Invariants
//! - A loaded library is never unloaded, so no handle can outlive the code it calls.
//! - Data lent to a plugin (a [`SinkBatch`]) stays alive until the plugin answers, even
//!   if the caller stops waiting: the call's context owns a reference to it.
//! - A source batch is readable only while its [`SourceBatch`] lives; settling it
//!   consumes it. Up to [`Plugin::max_unsettled_batches`] may be unsettled at once,
//!   settled oldest first. A batch dropped unsettled is rejected before the next poll
//!   or settle.
//! - A source batch's payloads lent out by [`SourceBatch::payloads`] are never freed
//!   while one is alive: settling the batch waits for them, and closing (or dropping)
//!   the instance with one alive leaves the instance open instead.
//! - Closing an instance consumes its handle; dropping a handle closes the instance in
//!   the background.
//!
//! ```no_run
//! use std::sync::Arc;
//! use plugin_host::{BatchSource, MessageMeta, OpenOptions, PluginLoader, SinkBatchBuilder};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let loader = PluginLoader::new();
//! let plugin = loader.load("target/debug/libiggy_connector_stdout_sink")?;
//! let sink = plugin.open_sink("stdout", r#"{"print_payload": true}"#, OpenOptions::default()).await?;
//! let source = BatchSource {
//!     stream: "s".into(),
//!     topic: "t".into(),
//!     partition_id: 1,
//!     schema: connector_sdk::Schema::Json,
//!     current_offset: 0,
//! };
//! let mut builder = SinkBatchBuilder::with_capacity(source, 1);
//! builder.push(MessageMeta { id: 1, ..MessageMeta::default() }, vec![], bytes::Bytes::from_static(b"{}"));
//! let batch = Arc::new(builder.build());
//! sink.consume(&batch).await?;
//! sink.close(std::time::Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```

mod call;
mod error;
mod loader;
mod loan;
mod log;
mod plugin;
mod sink;
mod source;

pub use call::Answer;
pub use error::{CallError, CallErrorKind, LoadError};
pub use loader::PluginLoader;
pub use plugin::{ConnectorKind, OpenOptions, Plugin, PluginOrigin};
pub use sink::{
    BatchSource, MessageMeta, SinkBatch, SinkBatchBuffers, SinkBatchBuilder, SinkInstance,
};
pub use source::{SourceBatch, SourceInstance};
