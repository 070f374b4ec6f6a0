//! The `template` sink: writes each message to a file of its own,
//! `<directory>/<stream>/<topic>/<partition>-<offset>`, holding its payload.
//!
//! A copy source for a new connector (see `docs/writing-a-connector.md`): replace the
//! files with your external system and keep the shape. What it shows:
//!
//! - a documented `Config`: each doc comment is a line of the generated reference, a
//!   secret field is marked `x-secret`, and `check_config` finds what the types cannot
//!   express, without any I/O;
//! - the delivery contract: a batch is durable (each file synced, then its directory)
//!   before `consume` returns `Ok`, because the runtime then stores the consumer offset;
//! - idempotence: a batch can come twice (after a crash, or when the runtime retries
//!   a failed batch message by message), so each message is written under a key of
//!   its own (partition and offset) and a second delivery overwrites the first;
//! - errors: I/O failures are retryable (the runtime retries them with backoff), a
//!   message this sink can never write is a permanent error naming it (the connector's
//!   `error_policy` decides: fail, skip or dead letter).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use connector_sdk::{ConnectorContext, Error, Message, MessageBatch, Sink};
use serde::{Deserialize, Serialize};

// Each doc comment below is the config's reference: the generated page
// `docs/connectors/<name>.md`, the README's table and the API's plugin description.
/// The `template` sink's `plugin_config`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSinkConfig {
    /// The directory that receives the files; created when missing.
    pub directory: PathBuf,
    /// The largest payload written, in bytes: a larger message is refused, and the
    /// connector's `error_policy` decides what happens to it.
    #[serde(default = "default_max_payload_bytes")]
    #[schemars(range(min = 1))]
    pub max_payload_bytes: u64,
    /// A credential of the external system (this template only checks that it is not
    /// empty). A secret: marked so for the reference, and named like one, which makes
    /// the API and the logs show it as `******`.
    #[serde(default)]
    #[schemars(extend("x-secret" = true))]
    pub token: Option<String>,
}

fn default_max_payload_bytes() -> u64 {
    1024 * 1024
}

/// Writes one file per message.
#[derive(Debug)]
pub struct TemplateSink {
    config: TemplateSinkConfig,
    written: u64,
}

impl Sink for TemplateSink {
    type Config = TemplateSinkConfig;

    /// Offline checks, for `iggy-connectors validate` and the API: no I/O here.
    fn check_config(config: &TemplateSinkConfig) -> Vec<String> {
        let mut problems = Vec::new();
        if config.directory.as_os_str().is_empty() {
            problems.push("plugin_config.directory: empty; name a directory".to_owned());
        }
        if config.token.as_deref() == Some("") {
            problems.push("plugin_config.token: empty; leave it out instead".to_owned());
        }
        problems
    }

    /// Connects: here, makes the directory. A failure fails this run of the connector,
    /// and the runtime starts it again after `[runtime.restart]`'s backoff.
    async fn open(config: TemplateSinkConfig, context: ConnectorContext) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.directory).map_err(|error| {
            let directory = config.directory.display();
            Error::retryable(format!("cannot create {directory}: {error}"))
        })?;
        tracing::info!(connector = %context.key, directory = %config.directory.display(), "template sink opened");
        Ok(TemplateSink { config, written: 0 })
    }

    async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
        let directory = self
            .config
            .directory
            .join(file_name(batch.stream))
            .join(file_name(batch.topic));
        std::fs::create_dir_all(&directory).map_err(|error| io(&directory, error))?;
        for message in batch.messages {
            self.write(&directory, batch.partition_id, message)?;
        }
        // Durable before `Ok`: the files were synced, and now the directory that names
        // them. The sink owns its executor, so blocking calls delay only this connector.
        File::open(&directory)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| io(&directory, error))?;
        self.written += batch.messages.len() as u64;
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        tracing::info!(messages = self.written, "template sink closed");
        Ok(())
    }
}

impl TemplateSink {
    /// Writes one message under its own key, replacing what an earlier delivery wrote:
    /// to a temporary file, synced, then renamed over the final name, so a crash never
    /// leaves half a file under it.
    fn write(&self, directory: &Path, partition: u32, message: &Message<'_>) -> Result<(), Error> {
        let payload = message.payload();
        if payload.len() as u64 > self.config.max_payload_bytes {
            // Retrying cannot help: the error policy gets this message.
            return Err(Error::permanent(format!(
                "offset {}: payload of {} bytes is over max_payload_bytes ({})",
                message.offset(),
                payload.len(),
                self.config.max_payload_bytes
            )));
        }
        let name = format!("{partition}-{}", message.offset());
        let path = directory.join(&name);
        let temporary = directory.join(format!(".{name}.tmp"));
        let written = File::create(&temporary).and_then(|mut file| {
            file.write_all(payload)?;
            file.sync_data()
        });
        written
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|error| io(&path, error))
    }
}

/// An I/O failure: passing (a full disk, a lost mount), so the runtime retries it.
fn io(path: &Path, error: std::io::Error) -> Error {
    Error::retryable(format!("cannot write {}: {error}", path.display()))
}

/// A stream or topic name as one safe path component: ASCII letters, digits, `-` and
/// `_` as they are, every other byte as `%XX` (so `..` or `a/b` cannot leave the
/// directory).
fn file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

connector_sdk::export_sink!(TemplateSink, "template");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_directory() {
        assert_eq!(file_name("orders"), "orders");
        assert_eq!(file_name(".."), "%2E%2E");
        assert_eq!(file_name("a/b c"), "a%2Fb%20c");
    }
}
