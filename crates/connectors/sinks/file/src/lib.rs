//! The `file` sink: appends every message to a file.
//!
//! `plugin_config`:
//! - `path` (string, required): the file; created (with its directory) if missing,
//!   appended to otherwise.
//! - `format` (`"json"`, the default, or `"payload"`):
//!   - `json`: one JSON object per line with the message's metadata and payload
//!     (`stream`, `topic`, `partition_id`, `offset`, `id` as a decimal string,
//!     `timestamp`, `origin_timestamp`, `checksum`, `headers`, and `payload` as JSON for
//!     a JSON stream whose payload parses, `payload_text` for other UTF-8 payloads,
//!     `payload_base64` otherwise);
//!   - `payload`: the raw payload followed by a newline.
//! - `fsync` (bool, default `true`): sync the file to disk before `consume` returns.
//!
//! A batch is written with one `write` call and flushed (and synced, with `fsync`)
//! before `consume` returns, so a batch the runtime counts as delivered is in the file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use connector_sdk::{ConnectorContext, Error, HeaderKind, Message, MessageBatch, Schema, Sink};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How each message is written.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Metadata and payload as one JSON object per line.
    #[default]
    Json,
    /// The payload bytes and a newline.
    Payload,
}

/// The sink's `plugin_config`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append to.
    pub path: PathBuf,
    /// The line format.
    #[serde(default)]
    pub format: FileFormat,
    /// Sync to disk before a batch counts as delivered.
    #[serde(default = "default_fsync")]
    pub fsync: bool,
}

fn default_fsync() -> bool {
    true
}

/// Appends messages to a file.
#[derive(Debug)]
pub struct FileSink {
    config: FileSinkConfig,
    file: File,
    buffer: Vec<u8>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    stream: &'a str,
    topic: &'a str,
    partition_id: u32,
    offset: u64,
    id: String,
    timestamp: u64,
    origin_timestamp: u64,
    checksum: u64,
    headers: Vec<JsonHeader<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

#[derive(Serialize)]
struct JsonHeader<'a> {
    key: &'a str,
    kind: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

impl FileSink {
    fn write_json(&mut self, batch: &MessageBatch<'_>, message: &Message<'_>) -> Result<(), Error> {
        let bytes = message.payload();
        let json = if batch.schema == Schema::Json {
            serde_json::from_slice::<&RawValue>(bytes).ok()
        } else {
            None
        };
        // A JSON payload may span lines (pretty-printed); its line in the file must not.
        // Line breaks in valid JSON only separate tokens (a string escapes them), so
        // dropping them keeps the value as it was, numbers and key order included.
        let one_line: Option<Box<RawValue>>;
        let json = match json {
            Some(raw) if raw.get().contains(['\n', '\r']) => {
                one_line = RawValue::from_string(raw.get().replace(['\n', '\r'], "")).ok();
                one_line.as_deref()
            }
            other => other,
        };
        let text = match json {
            Some(_) => None,
            None => message.payload_str(),
        };
        let line = JsonLine {
            stream: batch.stream,
            topic: batch.topic,
            partition_id: batch.partition_id,
            offset: message.offset(),
            id: message.id().to_string(),
            timestamp: message.timestamp(),
            origin_timestamp: message.origin_timestamp(),
            checksum: message.checksum(),
            headers: message
                .headers()
                .map(|header| {
                    let text = (header.kind == HeaderKind::String as u32)
                        .then(|| std::str::from_utf8(header.value).ok())
                        .flatten();
                    JsonHeader {
                        key: header.key,
                        kind: header.kind,
                        value: text,
                        value_base64: text.is_none().then(|| base64(header.value)),
                    }
                })
                .collect(),
            payload: json,
            payload_text: text,
            payload_base64: (json.is_none() && text.is_none()).then(|| base64(bytes)),
        };
        serde_json::to_writer(&mut self.buffer, &line)
            .map_err(|error| Error::permanent(format!("cannot encode a line: {error}")))?;
        self.buffer.push(b'\n');
        Ok(())
    }
}

impl Sink for FileSink {
    type Config = FileSinkConfig;

    async fn open(config: FileSinkConfig, _context: ConnectorContext) -> Result<Self, Error> {
        let opened = (|| {
            if let Some(dir) = config
                .path
                .parent()
                .filter(|dir| !dir.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)?;
            }
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&config.path)
        })();
        let file = opened.map_err(|error| {
            Error::retryable(format!("cannot open {}: {error}", config.path.display()))
        })?;
        tracing::info!(path = %config.path.display(), format = ?config.format, "file sink opened");
        Ok(FileSink {
            config,
            file,
            buffer: Vec::new(),
        })
    }

    async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
        self.buffer.clear();
        for message in batch.messages {
            match self.config.format {
                FileFormat::Json => self.write_json(&batch, message)?,
                FileFormat::Payload => {
                    self.buffer.extend_from_slice(message.payload());
                    self.buffer.push(b'\n');
                }
            }
        }
        // The sink owns its executor, so a blocking write only delays this connector.
        let path = &self.config.path;
        let failed = |error: std::io::Error| {
            Error::retryable(format!("cannot write to {}: {error}", path.display()))
        };
        self.file.write_all(&self.buffer).map_err(failed)?;
        self.file.flush().map_err(failed)?;
        if self.config.fsync {
            self.file.sync_data().map_err(failed)?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        self.file.sync_all().map_err(|error| {
            Error::retryable(format!(
                "cannot sync {}: {error}",
                self.config.path.display()
            ))
        })
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

connector_sdk::export_sink!(FileSink, "file");

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }
}
