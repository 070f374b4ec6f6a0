//! The `[[streams]]` entries of connector configs: what a sink consumes and where a
//! source produces. Each holds a [`StreamPayload`], the part both kinds share; in a
//! file its keys (`schema`, `avro_schema_json`, ...) sit in the entry's one table,
//! read and written through [`crate::flat`].

use serde::{Deserialize, Deserializer, Serialize};
use transforms::StreamPayload;

use crate::flat::{self, FlatError, Table};
use crate::runtime::ConfigDuration;

/// A `[[streams]]` entry of a sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkStream {
    /// Stream name.
    pub stream: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// The schema the messages are in, and where an Avro or Protobuf message schema
    /// comes from.
    #[serde(flatten)]
    pub payload: StreamPayload,
    /// Messages per poll.
    pub batch_length: u32,
    /// Pause between polls.
    pub poll_interval: ConfigDuration,
    /// Consumer group; default `iggy-connect-sink-{key}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
}

/// A `[[streams]]` entry of a source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStream {
    /// Stream name.
    pub stream: String,
    /// Topic to produce to.
    pub topic: String,
    /// The schema the messages are written in, and where an Avro or Protobuf message
    /// schema comes from.
    #[serde(flatten)]
    pub payload: StreamPayload,
    /// Messages per send.
    pub batch_length: u32,
    /// Most payload bytes per send (a larger message still goes, alone); none = no
    /// limit but `batch_length`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_send_bytes: Option<u64>,
    /// Longest wait to fill a batch.
    pub linger_time: ConfigDuration,
}

/// `batch_length` when the entry has none.
pub(crate) fn default_batch_length() -> u32 {
    1000
}

/// `poll_interval` (sinks) and `linger_time` (sources) when the entry has none.
pub(crate) fn default_interval() -> ConfigDuration {
    ConfigDuration::from_millis(5)
}

impl SinkStream {
    /// Reads a flat `[[streams]]` table of a sink.
    pub(crate) fn read(table: &mut Table) -> Result<Self, FlatError> {
        let stream = table.required("stream");
        let topics = table.required("topics");
        let payload = table.part(&StreamPayload::KEYS);
        let batch_length = table.or_else("batch_length", default_batch_length);
        let poll_interval = table.or_else("poll_interval", default_interval);
        let consumer_group = table.or_else("consumer_group", || None);
        table.finish()?;
        Ok(SinkStream {
            stream: stream?,
            topics: topics?,
            payload: payload?,
            batch_length: batch_length?,
            poll_interval: poll_interval?,
            consumer_group: consumer_group?,
        })
    }
}

impl SourceStream {
    /// Reads a flat `[[streams]]` table of a source.
    pub(crate) fn read(table: &mut Table) -> Result<Self, FlatError> {
        let stream = table.required("stream");
        let topic = table.required("topic");
        let payload = table.part(&StreamPayload::KEYS);
        let batch_length = table.or_else("batch_length", default_batch_length);
        let max_send_bytes = table.or_else("max_send_bytes", || None);
        let linger_time = table.or_else("linger_time", default_interval);
        table.finish()?;
        Ok(SourceStream {
            stream: stream?,
            topic: topic?,
            payload: payload?,
            batch_length: batch_length?,
            max_send_bytes: max_send_bytes?,
            linger_time: linger_time?,
        })
    }
}

impl<'de> Deserialize<'de> for SinkStream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        flat::deserialize(deserializer, "struct SinkStream", SinkStream::read)
    }
}

impl<'de> Deserialize<'de> for SourceStream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        flat::deserialize(deserializer, "struct SourceStream", SourceStream::read)
    }
}

#[cfg(test)]
mod tests {
    use connector_sdk::Schema;

    use super::*;

    #[test]
    fn the_payload_keys_sit_in_the_entry_and_keep_their_place_when_written() {
        let json = serde_json::json!({
            "stream": "s", "topic": "t", "schema": "avro", "avro_schema_path": "/a.avsc",
            "max_send_bytes": 10
        });
        let stream: SourceStream = serde_json::from_value(json).unwrap();
        assert_eq!(stream.payload.schema, Schema::Avro);
        assert_eq!(stream.payload.avro_schema_path.as_deref(), Some("/a.avsc"));
        assert_eq!(stream.linger_time, default_interval());
        assert_eq!(
            serde_json::to_string(&stream).unwrap(),
            r#"{"stream":"s","topic":"t","schema":"avro","avro_schema_path":"/a.avsc","batch_length":1000,"max_send_bytes":10,"linger_time":"5ms"}"#
        );

        let error = serde_json::from_value::<SinkStream>(serde_json::json!({
            "stream": "s", "topics": ["t"], "schema": "jsn"
        }))
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("`schema`: unknown variant `jsn`"),
            "{error}"
        );
        let error = serde_json::from_value::<SinkStream>(serde_json::json!({
            "stream": "s", "topicz": ["t"], "schema": "json"
        }))
        .unwrap_err();
        assert!(
            error.to_string().ends_with("did you mean `topics`?"),
            "{error}"
        );
    }

    #[test]
    fn an_entry_reads_its_keys_and_the_payload_part_in_file_order() {
        // Every key a stream's reader takes, the payload's included, in file order.
        assert_eq!(
            flat::keys_read_by(SinkStream::read),
            [
                "stream",
                "topics",
                "schema",
                "avro_schema_json",
                "avro_schema_path",
                "proto_descriptor_set",
                "proto_message_type",
                "flat_buffer_schema_path",
                "flat_buffer_root_table",
                "batch_length",
                "poll_interval",
                "consumer_group"
            ]
        );
        assert_eq!(
            flat::keys_read_by(SourceStream::read)[..3],
            ["stream", "topic", "schema"]
        );
    }
}
