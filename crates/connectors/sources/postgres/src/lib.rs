//! The `postgres_source` source: reads PostgreSQL tables with upstream's options and
//! output, and commits nothing before Iggy stored what it read. Two modes:
//!
//! **Polling** (`mode = "polling"`): each poll reads, per table, up to `batch_size`
//! rows past the table's tracking offset (`tracking_column > offset ORDER BY
//! tracking_column`, or `custom_query`), and produces one message per row: upstream's
//! `DatabaseRecord` JSON (`table_name`, `operation_type` = `"SELECT"`, `timestamp`,
//! `data`, `old_data`), or the `payload_column` alone. The batch carries the state the
//! source would have once it is stored: the new offsets (and, with
//! `delete_after_read` or `processed_column`, the keys of its rows).
//!
//! Ack-gated: the offsets move, and the rows are deleted or marked processed, only in
//! `on_batch_result(Accepted)`, which the runtime calls once Iggy stored the batch and
//! the state is saved. Killed before that, the rows are still there and the offsets
//! where they were: the next run reads them again. Killed after the state was saved
//! but before the rows were deleted, the next run's `open` finishes the deletes (the
//! saved state names the rows). So no row is lost and none deleted unsent. Each message
//! has a stable id (from the table and the row's primary key), so a row read twice is
//! recognisable downstream (the `postgres_sink` keeps one row per id).
//!
//! **CDC** (`mode = "cdc"`): logical decoding through a `test_decoding` replication
//! slot (see [`cdc`] for why that plugin), one message per INSERT, UPDATE or DELETE in
//! upstream's record format, in commit order. The slot is read with
//! `pg_logical_slot_peek_changes`, which consumes nothing; the batch's state is the
//! end of its last commit, and the slot is advanced there
//! (`pg_replication_slot_advance`) only in `on_batch_result(Accepted)`. Killed before
//! that, the next run peeks the same transactions again (and, if the runtime saved the
//! state, first advances the slot to it): a crash replays, never skips. A change's
//! message id comes from its commit position and its place in the transaction, so a
//! replayed change carries the id it had.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use connector_sdk::{
    BatchOutcome, ConnectorContext, Error, ErrorKind, ProducedBatch, ProducedMessage, Schema,
    Source,
};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_postgres::types::{FromSql, Type};

pub mod cdc;

#[path = "../../../sinks/postgres/src/connect.rs"]
#[allow(dead_code)] // what only the sink uses
mod connect;

use connect::{ConnectOptions, transient, with_causes};

/// The `postgres_source` source's `plugin_config`: upstream's keys and defaults.
///
/// `mode = "cdc"` reads a logical replication slot made with the `test_decoding`
/// plugin (it ships with PostgreSQL, and upstream's slots use it; `pgoutput` needs the
/// streaming replication protocol, which the SQL functions cannot read), through
/// `pg_logical_slot_peek_changes`, which consumes nothing: the slot moves
/// (`pg_replication_slot_advance`) only once Iggy stored the batch, so a crash replays
/// changes and never skips one (upstream's `pg_logical_slot_get_changes` consumes them
/// when read). One message per INSERT, UPDATE and DELETE, in commit order, as
/// upstream's record: `operation_type`, `data` (the new row; for a DELETE the deleted
/// row's identity), `old_data` (an UPDATE's old key, the whole old row with `REPLICA
/// IDENTITY FULL`; a DELETE's row). Transactions come whole (one larger than
/// `batch_size` is one batch); their BEGIN and COMMIT make no messages. The server
/// needs `wal_level = logical` (checked at open), and the user the `REPLICATION`
/// attribute. `tracking_column`, `custom_query`, `payload_column`, `delete_after_read`
/// and `processed_column` are polling keys, ignored (with a warning) in CDC, as
/// upstream does.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// The database to read: a URL (`postgres://user:password@host:5432/db`) or libpq's
    /// `key=value` form, with `sslmode` as the `postgres_sink` reads it (TLS through
    /// rustls).
    #[schemars(extend("x-secret" = true))]
    pub connection_string: String,
    /// `polling` (rows past a tracking offset) or `cdc` (logical decoding of
    /// INSERT, UPDATE and DELETE; needs `wal_level = logical` on the server).
    pub mode: Mode,
    /// The tables to read (`name` or `schema.name`). With `cdc`, a bare `name` matches
    /// the table in any schema, and an empty list captures every table.
    pub tables: Vec<String>,
    /// The pause before reading again when the last read found less than a full batch
    /// ("500ms", "1s").
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
    /// Rows read per table per poll at most. With `cdc`: the changes a read asks the
    /// slot for; it returns whole transactions, and over a backlog a read takes as much
    /// new WAL as the server decodes again for it (up to 64 MiB), so a batch may hold
    /// more.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// The column whose values increase with new rows: rows past the last value read
    /// are new. Rows that share a value may be split across polls and then skipped: use
    /// a unique column (a serial key).
    #[serde(default = "default_tracking_column")]
    pub tracking_column: String,
    /// The offset to start from when the state has none for a table (rows with a
    /// tracking value above it are read). None: every row.
    #[serde(default)]
    pub initial_offset: Option<String>,
    /// Upstream's pool size. Accepted for upstream's configs; the source's calls come
    /// one at a time, so it keeps one connection.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: u32,
    /// A query instead of the built one, with `$table`, `$offset`, `$limit`, `$now`
    /// (RFC 3339) and `$now_unix` replaced as text; it must return the tracking column
    /// (and the primary key column to delete or mark rows), in tracking order.
    #[serde(default)]
    pub custom_query: Option<String>,
    /// Column names in snake_case in the record's `data` (`userId` becomes `user_id`).
    #[serde(default)]
    pub snake_case_columns: bool,
    /// Upstream's `DatabaseRecord` with the row as `data` (else the row goes in as
    /// `data.data`, as upstream does).
    #[serde(default = "yes")]
    pub include_metadata: bool,
    /// `cdc`: the logical replication slot to read (lowercase letters, digits and `_`,
    /// at most 63). Made with the `test_decoding` plugin at the first open when it does
    /// not exist; changes committed before that are not captured. One slot per
    /// connector: a slot holds WAL until it is read, so drop it
    /// (`SELECT pg_drop_replication_slot('iggy_slot')`) when the connector goes. Default:
    /// `iggy_slot`.
    #[serde(default)]
    pub replication_slot: Option<String>,
    /// `cdc`: the changes to emit, any of `INSERT`, `UPDATE`, `DELETE`. Default: all
    /// three.
    #[serde(default)]
    pub capture_operations: Option<Vec<String>>,
    /// `cdc`: upstream's choice of decoder; only `builtin` (the default, a
    /// `test_decoding` slot read with SQL) is here.
    #[serde(default)]
    pub cdc_backend: Option<String>,
    /// Deletes each row once Iggy stored its message.
    #[serde(default)]
    pub delete_after_read: bool,
    /// A boolean column: only rows where it is false are read, and it is set to true
    /// once Iggy stored the row's message.
    #[serde(default)]
    pub processed_column: Option<String>,
    /// The column that identifies a row, to delete or mark it and for the message id.
    /// Default: the tracking column.
    #[serde(default)]
    pub primary_key_column: Option<String>,
    /// A column whose value alone is the message (instead of the record JSON), read as
    /// `payload_format` says.
    #[serde(default)]
    pub payload_column: Option<String>,
    /// How `payload_column` is read: `json` (its bytes or text, as JSON messages;
    /// the default), `bytea` or `raw` (bytes, raw messages), `text` (text messages),
    /// `json_direct` or `jsonb` (a JSON column, written compactly, JSON messages).
    #[serde(default)]
    pub payload_format: PayloadFormat,
    /// Logs every batch read at info level (else debug).
    #[serde(default)]
    pub verbose_logging: bool,
    /// Attempts at deleting or marking the rows of a stored batch before the failure
    /// goes to the runtime (which restarts the source; `open` then finishes them).
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 1))]
    pub max_retries: u32,
    /// The pause after a transient failure, times the attempt number.
    #[serde(
        default = "default_retry_delay",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub retry_delay: Duration,
}

/// How the source finds changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Reads rows past a tracking offset.
    Polling,
    /// Logical decoding of a replication slot (`test_decoding`).
    Cdc,
}

/// How `payload_column` is read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// The column's bytes (text as UTF-8), JSON messages.
    #[default]
    Json,
    /// Bytes, raw messages.
    #[serde(alias = "raw")]
    Bytea,
    /// Text, text messages.
    Text,
    /// A JSON value, serialised compactly, JSON messages.
    #[serde(alias = "jsonb", alias = "jsonb_direct")]
    JsonDirect,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_batch_size() -> u32 {
    1000
}

fn default_tracking_column() -> String {
    "id".to_owned()
}

fn default_max_connections() -> u32 {
    10
}

fn yes() -> bool {
    true
}

fn default_max_retries() -> u32 {
    3
}

fn default_retry_delay() -> Duration {
    Duration::from_secs(1)
}

/// What the runtime keeps for the source (JSON): upstream's offsets per table and row
/// count, and the keys of the last stored batch's rows still to delete or mark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The tracking value of the last row stored, per table.
    pub tracking_offsets: BTreeMap<String, String>,
    /// Rows stored, in all.
    pub processed_rows: u64,
    /// Primary keys per table of rows stored but maybe not deleted or marked yet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sent_keys: BTreeMap<String, Vec<String>>,
    /// `cdc`: the end of the last commit whose changes are all stored (`16/B374D848`):
    /// the slot's position once this state is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc_lsn: Option<String>,
}

/// The slot name when the config names none (upstream's).
const DEFAULT_SLOT: &str = "iggy_slot";

/// The problems of the `cdc` keys (checked in either mode: upstream's configs may hold
/// them with `polling`, and a typo is better found before someone switches).
fn cdc_problems(config: &PostgresSourceConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(slot) = &config.replication_slot
        && (slot.is_empty()
            || slot.len() > 63
            || !slot
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_'))
    {
        problems.push(format!(
            "plugin_config.replication_slot: {slot:?} is not a slot name (1 to 63 lowercase \
             letters, digits and underscores)"
        ));
    }
    for operation in config.capture_operations.iter().flatten() {
        if cdc::Operation::parse(operation).is_none() {
            problems.push(format!(
                "plugin_config.capture_operations: {operation:?} is not one of \"INSERT\", \
                 \"UPDATE\", \"DELETE\""
            ));
        }
    }
    match config.cdc_backend.as_deref() {
        None | Some("builtin") => {}
        Some("pg_replicate") => problems.push(
            "plugin_config.cdc_backend: \"pg_replicate\" is not built in; use \"builtin\" \
             (a test_decoding slot, acknowledged only once Iggy stored the changes)"
                .to_owned(),
        ),
        Some(other) => problems.push(format!(
            "plugin_config.cdc_backend: {other:?} is not \"builtin\" or \"pg_replicate\""
        )),
    }
    problems
}

/// Reads tables by a tracking column, or a replication slot.
pub struct PostgresSource {
    config: PostgresSourceConfig,
    key: String,
    options: ConnectOptions,
    client: Option<Client>,
    /// As of the last accepted batch.
    committed: State,
    /// The state of the batch polled and not settled yet.
    pending: Option<State>,
    /// Whether the last read filled a batch (then the next poll does not wait).
    full: bool,
    /// `cdc`: which changes are emitted.
    capture: cdc::Capture,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: its connection string may hold a password.
        f.debug_struct("PostgresSource")
            .field("key", &self.key)
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

/// One row read.
struct ReadRow {
    json: String,
    tracking: Option<String>,
    key: Option<String>,
    payload: Option<RawValue>,
}

/// A column's value as the server sent it (binary format), whatever its type.
struct RawValue {
    ty: Type,
    bytes: Vec<u8>,
}

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue {
            ty: ty.clone(),
            bytes: raw.to_vec(),
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl Source for PostgresSource {
    type Config = PostgresSourceConfig;

    fn check_config(config: &PostgresSourceConfig) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(why) = ConnectOptions::parse(&config.connection_string) {
            problems.push(format!("plugin_config.connection_string: {why}"));
        }
        if config.mode == Mode::Polling && config.tables.is_empty() {
            problems.push("plugin_config.tables: name at least one table".to_owned());
        }
        problems.extend(cdc_problems(config));
        let mut identifiers = vec![("tracking_column", config.tracking_column.as_str())];
        for (name, value) in [
            ("processed_column", &config.processed_column),
            ("primary_key_column", &config.primary_key_column),
            ("payload_column", &config.payload_column),
        ] {
            if let Some(value) = value {
                identifiers.push((name, value));
            }
        }
        for table in &config.tables {
            if table
                .split('.')
                .any(|part| part.is_empty() || part.contains('\0'))
            {
                problems.push(format!(
                    "plugin_config.tables: {table:?} is not a table name"
                ));
            }
        }
        for (name, value) in identifiers {
            if value.is_empty() || value.contains('\0') {
                problems.push(format!(
                    "plugin_config.{name}: an identifier cannot be empty or hold NUL"
                ));
            }
        }
        if config.delete_after_read && config.processed_column.is_some() {
            problems.push(
                "plugin_config.delete_after_read: set it or processed_column, not both".to_owned(),
            );
        }
        problems
    }

    async fn open(
        config: PostgresSourceConfig,
        context: ConnectorContext,
        state: Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        let problems = Self::check_config(&config);
        if !problems.is_empty() {
            return Err(Error::invalid_config(problems.join("; ")));
        }
        let options =
            ConnectOptions::parse(&config.connection_string).map_err(Error::invalid_config)?;
        let committed = match state {
            None => State::default(),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                // Starting over would send every row again; better to say so.
                Error::permanent(format!("the saved state is not this source's: {error}"))
            })?,
        };
        let mut source = PostgresSource {
            key: context.key,
            options,
            client: None,
            committed,
            pending: None,
            full: true,
            capture: cdc::Capture {
                tables: config.tables.clone(),
                operations: match &config.capture_operations {
                    Some(names) => names
                        .iter()
                        .filter_map(|name| cdc::Operation::parse(name))
                        .collect(),
                    None => vec![
                        cdc::Operation::Insert,
                        cdc::Operation::Update,
                        cdc::Operation::Delete,
                    ],
                },
            },
            config,
        };
        if source.config.mode == Mode::Cdc {
            source.open_cdc().await?;
            return Ok(source);
        }
        // Rows of the last stored batch that a crash left undeleted (or unmarked).
        if !source.committed.sent_keys.is_empty() {
            let finished = source.committed.clone();
            source.finish(&finished).await?;
            source.committed.sent_keys.clear();
        } else {
            source.client().await?;
        }
        tracing::info!(
            connector = %source.key,
            tables = ?source.config.tables,
            offsets = ?source.committed.tracking_offsets,
            "PostgreSQL source opened"
        );
        Ok(source)
    }

    async fn poll(&mut self) -> Result<ProducedBatch, Error> {
        if self.config.mode == Mode::Cdc {
            return self.poll_cdc().await;
        }
        loop {
            if !self.full {
                // Nothing was taken yet: dropping this wait (a settle, a close) is safe.
                tokio::time::sleep(self.config.poll_interval).await;
            }
            let (messages, next) = match self.read().await {
                Ok(read) => read,
                Err(error) => {
                    self.client = None;
                    self.full = false;
                    return Err(error);
                }
            };
            if messages.is_empty() {
                self.full = false;
                continue;
            }
            let state = serde_json::to_vec(&next)
                .map_err(|error| Error::permanent(format!("state: {error}")))?;
            let count = messages.len();
            if self.config.verbose_logging {
                tracing::info!(connector = %self.key, rows = count, "rows read");
            } else {
                tracing::debug!(connector = %self.key, rows = count, "rows read");
            }
            self.pending = Some(next);
            return Ok(ProducedBatch {
                schema: self.schema(),
                messages,
                state: Some(state),
            });
        }
    }

    async fn on_batch_result(&mut self, outcome: BatchOutcome) -> Result<(), Error> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        if outcome != BatchOutcome::Accepted {
            // Rewind: the offsets stay, the same rows come again.
            self.full = true;
            return Ok(());
        }
        if self.config.mode == Mode::Cdc {
            // Stored in Iggy and the state saved: the slot may move past the batch. The
            // batch counts as done first: should the advance fail, a read before the
            // next open (which advances to the saved state) leaves these out.
            self.committed = pending;
            let Some(lsn) = self.committed.cdc_lsn.clone() else {
                return Ok(());
            };
            return self.advance(&lsn).await;
        }
        // Stored in Iggy and the state saved: now the rows may go.
        self.finish(&pending).await?;
        self.committed = State {
            sent_keys: BTreeMap::new(),
            ..pending
        };
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        self.client = None;
        tracing::info!(
            connector = %self.key,
            rows = self.committed.processed_rows,
            "PostgreSQL source closed"
        );
        Ok(())
    }
}

/// A PostgreSQL failure as the SDK's error: retryable when transient.
fn into_error(error: tokio_postgres::Error) -> Error {
    let text = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => with_causes(&error),
    };
    if transient(&error) {
        Error::retryable(text)
    } else {
        Error::permanent(text)
    }
}

/// `name` as one quoted identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table name, each dot-separated part quoted (`public.users`), as upstream does.
fn quote_table(name: &str) -> String {
    name.split('.').map(quote).collect::<Vec<_>>().join(".")
}

/// An offset or key as SQL: a number as it is, anything else a quoted string (as
/// upstream writes offsets).
fn value_literal(value: &str) -> String {
    if value.parse::<i64>().is_ok() || value.parse::<f64>().is_ok_and(f64::is_finite) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

impl PostgresSource {
    /// The connection, made first when there is none.
    async fn client(&mut self) -> Result<&Client, Error> {
        if self.client.is_none() {
            let name = format!("iggy-connectors/{}", self.key);
            let client = connect::connect(&self.options, &name)
                .await
                .map_err(|error| {
                    if error.transient {
                        Error::retryable(error.message)
                    } else {
                        Error::permanent(error.message)
                    }
                })?;
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| Error::retryable("no connection"))
    }

    fn schema(&self) -> Schema {
        if self.config.mode == Mode::Cdc {
            return Schema::Json;
        }
        match (&self.config.payload_column, self.config.payload_format) {
            (Some(_), PayloadFormat::Bytea) => Schema::Raw,
            (Some(_), PayloadFormat::Text) => Schema::Text,
            _ => Schema::Json,
        }
    }

    fn key_column(&self) -> &str {
        self.config
            .primary_key_column
            .as_deref()
            .unwrap_or(&self.config.tracking_column)
    }

    /// The query for `table`, wrapped so every row comes back as JSON with its
    /// tracking value, key and payload column beside it.
    fn query(&self, table: &str) -> String {
        let offset = self
            .committed
            .tracking_offsets
            .get(table)
            .or(self.config.initial_offset.as_ref());
        let tracking = quote(&self.config.tracking_column);
        let inner = match &self.config.custom_query {
            Some(custom) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                // `$now_unix` before `$now`, which is its prefix.
                custom
                    .replace("$table", table)
                    .replace("$offset", offset.map_or("", String::as_str))
                    .replace("$limit", &self.config.batch_size.to_string())
                    .replace("$now_unix", &now.as_secs().to_string())
                    .replace("$now", &rfc3339(now))
            }
            None => {
                let mut conditions = Vec::new();
                if let Some(offset) = offset {
                    conditions.push(format!("{tracking} > {}", value_literal(offset)));
                }
                if let Some(processed) = &self.config.processed_column {
                    conditions.push(format!("{} = FALSE", quote(processed)));
                }
                let filter = if conditions.is_empty() {
                    String::new()
                } else {
                    format!(" WHERE {}", conditions.join(" AND "))
                };
                format!(
                    "SELECT * FROM {}{filter} ORDER BY {tracking} ASC LIMIT {}",
                    quote_table(table),
                    self.config.batch_size
                )
            }
        };
        let payload = match &self.config.payload_column {
            Some(column) => format!(", q.{}", quote(column)),
            None => String::new(),
        };
        format!(
            "SELECT row_to_json(q)::text, (q.{tracking})::text, (q.{})::text{payload} \
             FROM ({inner}) AS q",
            quote(self.key_column())
        )
    }

    /// Reads every table once: the messages and the state once they are stored.
    async fn read(&mut self) -> Result<(Vec<ProducedMessage>, State), Error> {
        let mut next = State {
            sent_keys: BTreeMap::new(),
            ..self.committed.clone()
        };
        let mut messages = Vec::new();
        let mut full = false;
        let tracks_keys = self.config.delete_after_read || self.config.processed_column.is_some();
        let tables = self.config.tables.clone();
        for table in &tables {
            let query = self.query(table);
            let client = self.client().await?;
            let rows = client.query(&query, &[]).await.map_err(into_error)?;
            full |= rows.len() >= self.config.batch_size as usize;
            let mut keys = Vec::new();
            for row in &rows {
                let read = ReadRow {
                    json: row.try_get(0).map_err(into_error)?,
                    tracking: row.try_get(1).map_err(into_error)?,
                    key: row.try_get(2).map_err(into_error)?,
                    payload: if self.config.payload_column.is_some() {
                        row.try_get(3).map_err(into_error)?
                    } else {
                        None
                    },
                };
                messages.push(self.message(table, &read)?);
                if let Some(tracking) = read.tracking {
                    next.tracking_offsets.insert(table.clone(), tracking);
                }
                if let (true, Some(key)) = (tracks_keys, read.key) {
                    keys.push(key);
                }
            }
            if !keys.is_empty() {
                next.sent_keys.insert(table.clone(), keys);
            }
        }
        next.processed_rows += messages.len() as u64;
        self.full = full;
        Ok((messages, next))
    }

    /// The message for one row.
    fn message(&self, table: &str, row: &ReadRow) -> Result<ProducedMessage, Error> {
        let payload = match &self.config.payload_column {
            Some(column) => self.column_payload(table, column, row)?,
            None => self.record(table, &row.json)?,
        };
        let identity = row.key.as_deref().unwrap_or(&row.json);
        let mut message = ProducedMessage::new(payload);
        message.id = Some(stable_id(table, identity));
        message.origin_timestamp = Some(now_micros());
        Ok(message)
    }

    /// Upstream's `DatabaseRecord` JSON for a row.
    fn record(&self, table: &str, row_json: &str) -> Result<Vec<u8>, Error> {
        let bad = |error: serde_json::Error| {
            Error::permanent(format!("{table}: a row that is not JSON: {error}"))
        };
        let mut data: serde_json::Value = serde_json::from_str(row_json).map_err(bad)?;
        if let (true, serde_json::Value::Object(map)) = (self.config.snake_case_columns, &data) {
            data = serde_json::Value::Object(
                map.iter()
                    .map(|(key, value)| (to_snake_case(key), value.clone()))
                    .collect(),
            );
        }
        if !self.config.include_metadata {
            data = serde_json::json!({ "data": data });
        }
        let record = serde_json::json!({
            "table_name": table,
            "operation_type": "SELECT",
            "timestamp": rfc3339(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()),
            "data": data,
            "old_data": null,
        });
        serde_json::to_vec(&record).map_err(bad)
    }

    /// The payload column's value, read as `payload_format` says (NULL: empty, as
    /// upstream).
    fn column_payload(&self, table: &str, column: &str, row: &ReadRow) -> Result<Vec<u8>, Error> {
        let Some(value) = &row.payload else {
            return Ok(Vec::new());
        };
        // JSONB's binary form is a version byte, then the text.
        let bytes = if value.ty == Type::JSONB {
            value.bytes.get(1..).unwrap_or_default()
        } else {
            &value.bytes[..]
        };
        let textual = [
            Type::TEXT,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::NAME,
            Type::JSON,
            Type::JSONB,
        ];
        if value.ty != Type::BYTEA && !textual.contains(&value.ty) {
            return Err(Error::permanent(format!(
                "{table}.{column}: a {} column cannot be a payload (bytea, text or json)",
                value.ty
            )));
        }
        match self.config.payload_format {
            PayloadFormat::Bytea | PayloadFormat::Json => Ok(bytes.to_vec()),
            PayloadFormat::Text => match std::str::from_utf8(bytes) {
                Ok(_) => Ok(bytes.to_vec()),
                Err(_) => Err(Error::permanent(format!(
                    "{table}.{column}: not UTF-8 text (payload_format = \"text\")"
                ))),
            },
            PayloadFormat::JsonDirect => {
                let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
                    Error::permanent(format!("{table}.{column}: not JSON: {error}"))
                })?;
                serde_json::to_vec(&value)
                    .map_err(|error| Error::permanent(format!("{table}.{column}: {error}")))
            }
        }
    }

    /// After failed attempt `attempt` at work on rows Iggy stored already: drops the
    /// connection, and when the failure is transient and attempts are left, says so and
    /// waits before the next try; else gives the error back.
    async fn after_failure(
        &mut self,
        error: &Error,
        attempt: u32,
        what: &'static str,
    ) -> Result<(), Error> {
        self.client = None;
        if error.kind() != ErrorKind::Retryable || attempt >= self.config.max_retries {
            return Err(error.clone());
        }
        tracing::warn!(connector = %self.key, attempt, error = %error, step = what, "retrying on a new connection");
        tokio::time::sleep(self.config.retry_delay * attempt).await;
        Ok(())
    }

    /// Deletes or marks the rows `state.sent_keys` names: retried on a new connection
    /// when the failure is transient, since these rows are in Iggy already.
    async fn finish(&mut self, state: &State) -> Result<(), Error> {
        if state.sent_keys.is_empty() {
            return Ok(());
        }
        let key = quote(self.key_column());
        let mut statements = Vec::new();
        for (table, keys) in &state.sent_keys {
            let list = keys
                .iter()
                .map(|key| value_literal(key))
                .collect::<Vec<_>>()
                .join(", ");
            let table = quote_table(table);
            statements.push(match &self.config.processed_column {
                Some(processed) => format!(
                    "UPDATE {table} SET {} = TRUE WHERE {key} IN ({list})",
                    quote(processed)
                ),
                None => format!("DELETE FROM {table} WHERE {key} IN ({list})"),
            });
        }
        let sql = format!("BEGIN; {}; COMMIT", statements.join("; "));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.client().await {
                Ok(client) => client.batch_execute(&sql).await.map_err(into_error),
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(error) => {
                    self.after_failure(&error, attempt, "deleting or marking stored rows")
                        .await?;
                }
            }
        }
    }
}

/// CDC mode.
impl PostgresSource {
    /// The slot this source reads.
    fn slot(&self) -> &str {
        self.config
            .replication_slot
            .as_deref()
            .unwrap_or(DEFAULT_SLOT)
    }

    /// Checks the server can decode (`wal_level = logical`), finds or makes the slot,
    /// and moves it to the saved state: the batch the runtime stored last may not have
    /// been advanced past when the last run ended.
    async fn open_cdc(&mut self) -> Result<(), Error> {
        for (key, set) in [
            ("custom_query", self.config.custom_query.is_some()),
            ("payload_column", self.config.payload_column.is_some()),
            ("delete_after_read", self.config.delete_after_read),
            ("processed_column", self.config.processed_column.is_some()),
        ] {
            if set {
                // Upstream ignores them in CDC too; its configs must still load.
                tracing::warn!(connector = %self.key, key, "ignored with mode = \"cdc\"");
            }
        }
        let slot = self.slot().to_owned();
        let client = self.client().await?;
        let wal_level: String = client
            .query_one("SHOW wal_level", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(into_error)?;
        if wal_level != "logical" {
            return Err(Error::permanent(format!(
                "mode = \"cdc\" needs wal_level = logical, and the server has wal_level = \
                 {wal_level}: set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET \
                 wal_level = logical) and restart PostgreSQL"
            )));
        }
        let existing = client
            .query_opt(
                "SELECT plugin::text, database = current_database() FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(into_error)?;
        match existing {
            Some(row) => {
                let plugin: Option<String> = row.try_get(0).map_err(into_error)?;
                let here: Option<bool> = row.try_get(1).map_err(into_error)?;
                if plugin.as_deref() != Some("test_decoding") {
                    return Err(Error::permanent(format!(
                        "replication slot {slot:?} exists with plugin {}, not test_decoding: \
                         drop it (SELECT pg_drop_replication_slot('{slot}')) or set \
                         replication_slot to another name",
                        plugin.as_deref().unwrap_or("none (a physical slot)")
                    )));
                }
                if here != Some(true) {
                    return Err(Error::permanent(format!(
                        "replication slot {slot:?} belongs to another database than the \
                         connection string's: set replication_slot to another name"
                    )));
                }
            }
            None => {
                let lsn: String = client
                    .query_one(
                        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, \
                         'test_decoding')",
                        &[&slot],
                    )
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(into_error)?;
                tracing::info!(
                    connector = %self.key,
                    slot = %slot,
                    lsn = %lsn,
                    "replication slot created: changes committed from here on are captured"
                );
                if let Some(saved) = self.committed.cdc_lsn.take() {
                    // The saved position belongs to a slot that is gone (dropped, or
                    // another server): kept, it would leave out this slot's changes
                    // up to it as if they were stored.
                    tracing::warn!(
                        connector = %self.key,
                        slot = %slot,
                        saved = %saved,
                        "the saved position is not this new slot's; it is dropped"
                    );
                }
            }
        }
        if let Some(lsn) = self.committed.cdc_lsn.clone() {
            self.advance(&lsn).await?;
        }
        tracing::info!(
            connector = %self.key,
            slot = %slot,
            tables = ?self.config.tables,
            lsn = ?self.committed.cdc_lsn,
            "PostgreSQL CDC source opened"
        );
        Ok(())
    }

    /// Reads whole transactions from the slot without consuming them, and returns their
    /// changes as one batch whose state is the end of the last commit.
    async fn poll_cdc(&mut self) -> Result<ProducedBatch, Error> {
        loop {
            if !self.full {
                // Nothing was taken: dropping this wait (a close) is safe.
                tokio::time::sleep(self.config.poll_interval).await;
            }
            let rows = match self.peek().await {
                Ok((rows, more)) => {
                    self.full = more;
                    rows
                }
                Err(error) => {
                    self.client = None;
                    self.full = false;
                    return Err(error);
                }
            };
            let done = self.committed.cdc_lsn.as_deref().and_then(cdc::Lsn::parse);
            let timestamp = rfc3339(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            let decoded = cdc::decode(&rows, done, &self.capture, &timestamp);
            for (lsn, line) in &decoded.unreadable {
                tracing::error!(
                    connector = %self.key,
                    lsn = %lsn,
                    line = %line,
                    "a change of a captured table could not be read; it is left out"
                );
            }
            let Some(boundary) = decoded.boundary else {
                self.full = false;
                continue;
            };
            if decoded.changes.is_empty() {
                // Only transactions of other tables or operations (or ones already
                // stored): nothing to send, so the slot may pass them now. No batch is
                // unsettled (one at a time), so this skips nothing waiting for Iggy.
                let to = done.map_or(boundary, |done| done.max(boundary)).to_string();
                self.advance(&to).await?;
                self.committed.cdc_lsn = Some(to);
                continue;
            }
            let slot = self.slot().to_owned();
            let count = decoded.changes.len();
            let micros = now_micros();
            let messages: Vec<ProducedMessage> = decoded
                .changes
                .into_iter()
                .map(|change| {
                    let id = stable_id(&slot, &format!("{}:{}", change.commit, change.index));
                    let mut message = ProducedMessage::new(change.payload);
                    message.id = Some(id);
                    message.origin_timestamp = Some(micros);
                    message
                })
                .collect();
            let next = State {
                cdc_lsn: Some(boundary.to_string()),
                processed_rows: self.committed.processed_rows + count as u64,
                ..self.committed.clone()
            };
            let state = serde_json::to_vec(&next)
                .map_err(|error| Error::permanent(format!("state: {error}")))?;
            if self.config.verbose_logging {
                tracing::info!(connector = %self.key, changes = count, lsn = %boundary, "changes read");
            } else {
                tracing::debug!(connector = %self.key, changes = count, lsn = %boundary, "changes read");
            }
            self.pending = Some(next);
            return Ok(ProducedBatch {
                schema: Schema::Json,
                messages,
                state: Some(state),
            });
        }
    }

    /// The slot's next whole transactions, left in the slot: at least `batch_size`
    /// rows when there are that many, or, when the server would decode much WAL again
    /// (see below), as much new WAL as it decodes again. Also whether more may wait.
    ///
    /// Every read decodes from the slot's `restart_lsn`, which moves only past the
    /// server's running-transactions records (every 15 s of activity, and at
    /// checkpoints), not with each advance. Reading `batch_size` changes at a time over
    /// a backlog would decode the same WAL again for every batch: measured, 200k rows
    /// took 21 s where 100k took 2.9. A read that takes at least as much new WAL as it
    /// decodes again keeps the work linear.
    async fn peek(&mut self) -> Result<(Vec<cdc::Row>, bool), Error> {
        let slot = self.slot().to_owned();
        let batch_size = self.config.batch_size;
        let client = self.client().await?;
        let position = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, restart_lsn::text FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(into_error)?
            .ok_or_else(|| {
                Error::permanent(format!(
                    "replication slot {slot:?} is gone (dropped while the source ran?)"
                ))
            })?;
        let lsn = |at: usize| -> Result<Option<cdc::Lsn>, Error> {
            let text: Option<String> = position.try_get(at).map_err(into_error)?;
            Ok(text.as_deref().and_then(cdc::Lsn::parse))
        };
        let (confirmed, restart) = (lsn(0)?, lsn(1)?);
        if let (Some(confirmed), Some(restart)) = (confirmed, restart) {
            let again = confirmed.0.saturating_sub(restart.0);
            if again > REDECODE_FLOOR {
                let upto = cdc::Lsn(confirmed.0 + again.min(MAX_READ_WAL)).to_string();
                let rows = peek_rows(client, &slot, Some(&upto), None).await?;
                // A transaction longer than the span has no COMMIT in it: then read
                // by count, which returns it whole.
                if rows.iter().any(|row| row.data.starts_with("COMMIT")) {
                    return Ok((rows, true));
                }
            }
        }
        let limit = i32::try_from(batch_size).unwrap_or(i32::MAX);
        let rows = peek_rows(client, &slot, None, Some(limit)).await?;
        // peek_changes stops at whole transactions once it has `limit` rows: as many as
        // asked means more may be waiting.
        let more = rows.len() >= batch_size as usize;
        Ok((rows, more))
    }

    /// Moves the slot's confirmed position to `lsn` (never back): the transactions up
    /// to it are stored. Retried on a new connection when the failure is transient.
    async fn advance(&mut self, lsn: &str) -> Result<(), Error> {
        let slot = self.slot().to_owned();
        let sql = "SELECT (pg_replication_slot_advance(slot_name, \
                   GREATEST($2::text::pg_lsn, confirmed_flush_lsn))).end_lsn::text \
                   FROM pg_replication_slots WHERE slot_name = $1";
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.client().await {
                Ok(client) => client
                    .query_opt(sql, &[&slot, &lsn])
                    .await
                    .map_err(into_error),
                Err(error) => Err(error),
            };
            match result {
                Ok(Some(_)) => {
                    tracing::debug!(connector = %self.key, slot = %slot, lsn = %lsn, "slot advanced");
                    return Ok(());
                }
                Ok(None) => {
                    return Err(Error::permanent(format!(
                        "replication slot {slot:?} is gone (dropped while the source ran?)"
                    )));
                }
                Err(error) => {
                    self.after_failure(&error, attempt, "advancing the replication slot")
                        .await?;
                }
            }
        }
    }
}

/// WAL the server may decode again per read before reads go by WAL position instead of
/// by `batch_size` (1 MiB).
const REDECODE_FLOOR: u64 = 1 << 20;

/// The most new WAL one read by position covers (64 MiB): bounds a batch's memory.
const MAX_READ_WAL: u64 = 64 << 20;

/// `pg_logical_slot_peek_changes` of `slot` up to `upto` (an LSN) or `limit` rows
/// (then whole transactions past it), BEGIN and COMMIT lines without xids.
async fn peek_rows(
    client: &Client,
    slot: &str,
    upto: Option<&str>,
    limit: Option<i32>,
) -> Result<Vec<cdc::Row>, Error> {
    let rows = client
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, $2::text::pg_lsn, \
             $3, 'include-xids', '0')",
            &[&slot, &upto, &limit],
        )
        .await
        .map_err(into_error)?;
    rows.iter()
        .map(|row| {
            let lsn: String = row.try_get(0).map_err(into_error)?;
            let data: String = row.try_get(1).map_err(into_error)?;
            let lsn = cdc::Lsn::parse(&lsn)
                .ok_or_else(|| Error::permanent(format!("not an LSN: {lsn:?}")))?;
            Ok(cdc::Row { lsn, data })
        })
        .collect()
}

/// upstream's snake_case: an underscore before each capital that follows a
/// non-capital, all lowercased (`userId` -> `user_id`, `ID` -> `id`).
fn to_snake_case(input: &str) -> String {
    let mut out = String::with_capacity(input.len() + 4);
    let mut previous_upper = false;
    for (at, ch) in input.chars().enumerate() {
        if ch.is_uppercase() {
            if at > 0 && !previous_upper {
                out.push('_');
            }
            out.extend(ch.to_lowercase());
            previous_upper = true;
        } else {
            out.push(ch);
            previous_upper = false;
        }
    }
    out
}

/// A message id that is the same whenever the same row is read: FNV-1a (128 bits) of
/// the table and the row's key.
fn stable_id(table: &str, key: &str) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    for byte in table.bytes().chain([0]).chain(key.bytes()) {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// A time since the UNIX epoch as RFC 3339 in UTC with microseconds
/// (`2024-05-01T12:00:00.000001Z`).
fn rfc3339(since_epoch: Duration) -> String {
    let seconds = since_epoch.as_secs();
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since_epoch.subsec_micros()
    )
}

connector_sdk::export_source!(PostgresSource, "postgres_source");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(Duration::from_micros(1_709_251_199_000_001)),
            "2024-02-29T23:59:59.000001Z"
        );
    }

    #[test]
    fn snake_case_as_upstream() {
        assert_eq!(to_snake_case("userId"), "user_id");
        assert_eq!(to_snake_case("ID"), "id");
        assert_eq!(to_snake_case("already_snake"), "already_snake");
    }

    #[test]
    fn ids_are_stable_per_table_and_key() {
        assert_eq!(stable_id("users", "1"), stable_id("users", "1"));
        assert_ne!(stable_id("users", "1"), stable_id("orders", "1"));
        assert_ne!(stable_id("users", "12"), stable_id("users1", "2"));
    }

    #[test]
    fn offsets_are_numbers_or_quoted_strings() {
        assert_eq!(value_literal("42"), "42");
        assert_eq!(
            value_literal("2024-01-01 00:00:00"),
            "'2024-01-01 00:00:00'"
        );
        assert_eq!(value_literal("it's"), "'it''s'");
        assert_eq!(value_literal("NaN"), "'NaN'");
    }
}
