//! Payload formats and transforms: what happens to a message between a plugin and Iggy.
//!
//! A source's messages are decoded with the schema the plugin declared, run through the
//! connector's transforms, and encoded with the stream's schema before they are
//! produced; a sink's are decoded with the stream's schema, transformed, and encoded
//! again before the plugin gets them. [`Payload`] is the decoded form (a JSON object is
//! decoded one level deep, so untouched fields are never re-serialised);
//! [`TransformChain`] runs the `[transforms]` tables of a connector in the order the
//! config lists them, counting what each one passed, dropped and failed.
//!
//! ```
//! use connector_sdk::{ConnectorKind, Schema};
//! use serde_json::json;
//! use transforms::{Message, Payload, TransformChain, Verdict};
//!
//! let chain = TransformChain::new(
//!     ConnectorKind::Sink,
//!     &[("delete_fields".to_owned(), json!({ "enabled": true, "fields": ["password"] }))],
//! )?;
//! let mut message = Message {
//!     payload: Payload::decode(Schema::Json, br#"{"user":"ann","password":"x"}"#[..].into())?,
//!     topic: None,
//! };
//! assert_eq!(chain.run(&mut message)?, Verdict::Keep);
//! assert_eq!(message.payload.encode(Schema::Json)?, br#"{"user":"ann"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod avro;
mod chain;
mod codec;
mod convert;
mod flat_buffer;
mod payload;
mod proto;
mod scan;
mod shape;
mod steps;

pub use avro::AvroSchema;
pub use chain::{Message, TRANSFORMS, TransformChain, TransformCounts, TransformError, Verdict};
pub use codec::StreamPayload;
pub use flat_buffer::FlatBufferSchema;
pub use payload::{Codec, FormatError, JsonObject, Payload, supported};
pub use proto::ProtoSchema;
pub use shape::{Shaped, shape, shaping_needed, sink_output};
