//! The `postgres_sink` sink: writes each message as a row of a PostgreSQL table, with
//! upstream's options, defaults and table layout (the message id as primary key), and
//! none of its losses or duplicates.
//!
//! How a batch is written: every message of the runtime's batch is encoded in
//! PostgreSQL's binary COPY format and copied into a temporary staging table, then one
//! `INSERT ... SELECT` moves the rows into the target table, `ON CONFLICT (id) DO
//! NOTHING` (or, with `insert_mode = "upsert"`, `DO UPDATE` on the key columns), and
//! the transaction commits before `consume` returns. So:
//!
//! - a batch delivered twice (after a crash, a retry, a rebalance) leaves one row per
//!   message id (or per key);
//! - a batch is all written or not at all;
//! - with `delete_on_tombstone` (upsert only), a message with an empty or `null`
//!   payload deletes its key's row, in the same statement: per key, the batch's latest
//!   message decides whether the row is written or deleted;
//! - COPY is one round trip for the whole batch, where upstream sends a multi-row
//!   INSERT of `batch_size` rows at a time (see `benches/postgres_sink.rs`).
//!
//! Errors: a lost connection or a transaction the server gave up on (serialization
//! failure, deadlock, ...) is retried here on a new connection (`max_retries`,
//! `retry_delay`), then handed to the runtime as retryable. A message that can never
//! be written (not JSON for a `jsonb` payload, a constraint it breaks, a value of the
//! wrong type for its column) makes the batch a permanent error naming its offsets: the
//! connector's `error_policy` decides (`skip` and `dead_letter` retry the batch one
//! message at a time and route the one that fails).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use connector_sdk::{ConnectorContext, Error, Header, HeaderKind, Message, MessageBatch, Sink};
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, Statement};

pub mod connect;

use connect::{ConnectOptions, transient};

/// The `postgres_sink` sink's `plugin_config`: upstream's keys and defaults, and our
/// additions (`insert_mode`, `key_columns`, `columns`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// The database to write to: a URL (`postgres://user:password@host:5432/db`) or
    /// libpq's `key=value` form. `sslmode` is `disable`, `prefer` (the default),
    /// `require`, `verify-ca` or `verify-full` (TLS through rustls; `sslrootcert`
    /// names a PEM file of trusted certificates, else the Mozilla roots are trusted).
    #[schemars(extend("x-secret" = true))]
    pub connection_string: String,
    /// The table the rows go to (one identifier, quoted as given).
    pub target_table: String,
    /// Upstream's rows per INSERT statement. Accepted for upstream's configs; this
    /// sink writes the runtime's whole batch (the stream's `batch_length`) with one
    /// COPY in one transaction, whatever this says.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// Upstream's pool size. Accepted for upstream's configs; the runtime calls a sink
    /// one batch at a time, so this sink keeps one connection (and makes a new one when
    /// it is lost).
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: u32,
    /// Creates the table at start when it does not exist, in upstream's layout: `id
    /// DECIMAL(39, 0) PRIMARY KEY` (the message id), the metadata columns asked for,
    /// `payload` and `created_at` (with `columns`, the mapped columns instead of
    /// `payload`; with `insert_mode = "upsert"`, the key columns as primary key).
    #[serde(default)]
    pub auto_create_table: bool,
    /// Writes Iggy's metadata: `iggy_offset`, `iggy_timestamp`, `iggy_stream`,
    /// `iggy_topic`, `iggy_partition_id`.
    #[serde(default = "yes")]
    pub include_metadata: bool,
    /// Writes the message's checksum as `iggy_checksum`.
    #[serde(default = "yes")]
    pub include_checksum: bool,
    /// Writes the producer's timestamp as `iggy_origin_timestamp`.
    #[serde(default = "yes")]
    pub include_origin_timestamp: bool,
    /// How the `payload` column holds the message: `bytea` (the bytes as they are),
    /// `json` or `jsonb` (a `JSONB` column; a payload that is not JSON is an error for
    /// the `error_policy`), `text` (UTF-8, else an error for the `error_policy`).
    #[serde(default)]
    pub payload_format: PayloadFormat,
    /// Logs every batch written at info level (else debug).
    #[serde(default)]
    pub verbose_logging: bool,
    /// Attempts at a batch whose failure is transient (a lost connection, a
    /// serialization failure) before it goes back to the runtime, which retries it
    /// again under its `[retry]` settings.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 1))]
    pub max_retries: u32,
    /// The pause after a transient failure, times the attempt number ("500ms", "1s").
    #[serde(
        default = "default_retry_delay",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub retry_delay: Duration,
    /// `insert`: one row per message id, a message seen again is left out (`ON
    /// CONFLICT (id) DO NOTHING`). `upsert`: one row per `key_columns` value, the
    /// latest message's values win (`ON CONFLICT (...) DO UPDATE`), which keeps a table
    /// current from a topic.
    #[serde(default)]
    pub insert_mode: InsertMode,
    /// The columns that identify a row for `upsert` (they need a unique constraint;
    /// `auto_create_table` makes them the primary key). Empty: `id`.
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Columns filled from the JSON payload's fields (then there is no `payload`
    /// column): each `{ field = "user.id", column = "user_id", type = "bigint" }`, a
    /// dotted path into the payload, the column, and its SQL type (`text`, `bigint`,
    /// `integer`, `smallint`, `double precision`, `real`, `numeric`, `boolean`,
    /// `timestamptz`, `timestamp`, `date`, `uuid`, `jsonb` or `json`). A missing field
    /// is NULL; a value that does not convert is an error for the `error_policy`.
    #[serde(default)]
    pub columns: Vec<ColumnMapping>,
    /// With `insert_mode = "upsert"`: a tombstone (a message whose payload is empty or
    /// JSON `null`) deletes the row of its key instead of writing one. The key comes
    /// from the message: `id` is the message id, a metadata column its metadata, and a
    /// mapped column (`columns`) the header named as the column (a string or integer
    /// header; a tombstone without it is an error for the `error_policy`). Within a
    /// batch the latest message per key wins, a tombstone included.
    #[serde(default)]
    pub delete_on_tombstone: bool,
}

/// One column filled from a field of the JSON payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    /// The field: a key of the payload's top-level object, or a dotted path
    /// (`user.address.city`).
    pub field: String,
    /// The column it fills.
    pub column: String,
    /// The column's SQL type (see `columns`). Default: `text`.
    #[serde(default = "default_column_type", rename = "type")]
    pub sql_type: String,
}

/// How the payload column holds the message.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// `BYTEA`: the payload's bytes.
    #[default]
    Bytea,
    /// `JSONB`: the payload parsed as JSON (`json` and `jsonb` alike).
    #[serde(alias = "jsonb")]
    Json,
    /// `TEXT`: the payload as UTF-8 text.
    Text,
}

/// What a message already written does to its row.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum InsertMode {
    /// Left as it is (one row per message id).
    #[default]
    Insert,
    /// Updated to the latest message's values (one row per key).
    Upsert,
}

fn default_batch_size() -> u32 {
    100
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

fn default_column_type() -> String {
    "text".to_owned()
}

/// The SQL types a mapped column may have: spelled here, never taken from the config
/// into SQL unchecked.
const COLUMN_TYPES: [&str; 14] = [
    "text",
    "bigint",
    "integer",
    "smallint",
    "double precision",
    "real",
    "numeric",
    "boolean",
    "timestamptz",
    "timestamp",
    "date",
    "uuid",
    "jsonb",
    "json",
];

/// Writes batches to a PostgreSQL table.
pub struct PostgresSink {
    config: PostgresSinkConfig,
    key: String,
    options: ConnectOptions,
    sql: Sql,
    connection: Option<Connection>,
    /// Whether batches go straight into the table first (see `write`).
    direct: bool,
    written: u64,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: its connection string may hold a password.
        f.debug_struct("PostgresSink")
            .field("key", &self.key)
            .field("table", &self.config.target_table)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// A connection with its staging table made and its statement prepared.
struct Connection {
    client: Client,
    insert: Statement,
}

/// The statements of this config, built once.
struct Sql {
    create_table: String,
    create_stage: String,
    copy: String,
    copy_direct: String,
    insert: String,
}

/// Why a write failed, sorted for what to do about it.
enum WriteError {
    /// Try again on a new connection.
    Transient(String),
    /// The batch holds something that can never be written.
    Permanent(String),
    /// A message that can never be written, named by its offset already.
    Message(String),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(error: tokio_postgres::Error) -> Self {
        let text = describe(&error);
        if transient(&error) {
            WriteError::Transient(text)
        } else {
            WriteError::Permanent(text)
        }
    }
}

/// A PostgreSQL error with the server's detail, when it sent one.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => connect::with_causes(error),
    }
}

impl Sink for PostgresSink {
    type Config = PostgresSinkConfig;

    fn check_config(config: &PostgresSinkConfig) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(why) = ConnectOptions::parse(&config.connection_string) {
            problems.push(format!("plugin_config.connection_string: {why}"));
        }
        let mut identifiers = vec![("target_table".to_owned(), config.target_table.as_str())];
        for (at, key) in config.key_columns.iter().enumerate() {
            identifiers.push((format!("key_columns[{at}]"), key));
        }
        for (at, mapping) in config.columns.iter().enumerate() {
            identifiers.push((format!("columns[{at}].column"), &mapping.column));
            if mapping.field.is_empty() || mapping.field.split('.').any(str::is_empty) {
                problems.push(format!(
                    "plugin_config.columns[{at}].field: {:?} is not a field path",
                    mapping.field
                ));
            }
            if column_type(&mapping.sql_type).is_none() {
                problems.push(format!(
                    "plugin_config.columns[{at}].type: {:?} is not one of {}",
                    mapping.sql_type,
                    COLUMN_TYPES.join(", ")
                ));
            }
        }
        for (key, name) in identifiers {
            if name.is_empty() || name.contains('\0') {
                problems.push(format!(
                    "plugin_config.{key}: an identifier cannot be empty or hold NUL"
                ));
            }
        }
        if config.insert_mode == InsertMode::Insert && !config.key_columns.is_empty() {
            problems.push(
                "plugin_config.key_columns: only used with insert_mode = \"upsert\"".to_owned(),
            );
        }
        if config.delete_on_tombstone {
            if config.insert_mode != InsertMode::Upsert {
                problems.push(
                    "plugin_config.delete_on_tombstone: only meaningful with insert_mode = \
                     \"upsert\" (a tombstone deletes the row of its key_columns)"
                        .to_owned(),
                );
            }
            if config.key_columns.iter().any(|key| key == "payload") {
                problems.push(
                    "plugin_config.delete_on_tombstone: the key cannot be the payload, which a \
                     tombstone does not have"
                        .to_owned(),
                );
            }
        }
        let known: Vec<&str> = row_columns(config).iter().map(|(name, _)| *name).collect();
        for key in &config.key_columns {
            if !known.contains(&key.as_str()) {
                problems.push(format!(
                    "plugin_config.key_columns: {key:?} is not a column this sink writes \
                     ({})",
                    known.join(", ")
                ));
            }
        }
        problems
    }

    async fn open(config: PostgresSinkConfig, context: ConnectorContext) -> Result<Self, Error> {
        let problems = Self::check_config(&config);
        if !problems.is_empty() {
            return Err(Error::invalid_config(problems.join("; ")));
        }
        let options =
            ConnectOptions::parse(&config.connection_string).map_err(Error::invalid_config)?;
        let sql = Sql::new(&config);
        let mut sink = PostgresSink {
            key: context.key,
            options,
            sql,
            connection: None,
            direct: config.insert_mode == InsertMode::Insert && config.columns.is_empty(),
            written: 0,
            config,
        };
        // Connecting at open reports a wrong address or password at start, not at the
        // first message; the runtime starts a failed open again with backoff.
        let connection = sink.connect().await.map_err(|error| match error {
            WriteError::Transient(text) => Error::retryable(text),
            WriteError::Permanent(text) | WriteError::Message(text) => Error::permanent(text),
        })?;
        sink.connection = Some(connection);
        tracing::info!(
            connector = %sink.key,
            table = %sink.config.target_table,
            mode = ?sink.config.insert_mode,
            "PostgreSQL sink opened"
        );
        Ok(sink)
    }

    async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
        let (Some(first), Some(last)) = (batch.messages.first(), batch.messages.last()) else {
            return Ok(());
        };
        let place = format!(
            "{}/{} partition {} offsets {}..={}",
            batch.stream,
            batch.topic,
            batch.partition_id,
            first.offset(),
            last.offset()
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.write(&batch).await {
                Ok(()) => break,
                Err(WriteError::Permanent(why)) => {
                    return Err(Error::permanent(format!("{place}: {why}")));
                }
                Err(WriteError::Message(why)) => return Err(Error::permanent(why)),
                Err(WriteError::Transient(why)) => {
                    // The connection may be gone or in a state we cannot trust: the next
                    // attempt makes a new one.
                    self.connection = None;
                    if attempt >= self.config.max_retries {
                        return Err(Error::retryable(format!(
                            "{place}: {why} (after {attempt} attempts)"
                        )));
                    }
                    tracing::warn!(
                        connector = %self.key,
                        attempt,
                        error = %why,
                        "transient PostgreSQL failure; reconnecting"
                    );
                    tokio::time::sleep(self.config.retry_delay * attempt).await;
                }
            }
        }
        self.written += batch.messages.len() as u64;
        if self.config.verbose_logging {
            tracing::info!(connector = %self.key, rows = batch.messages.len(), %place, "batch written");
        } else {
            tracing::debug!(connector = %self.key, rows = batch.messages.len(), %place, "batch written");
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        self.connection = None;
        tracing::info!(connector = %self.key, messages = self.written, "PostgreSQL sink closed");
        Ok(())
    }
}

impl PostgresSink {
    /// Makes a connection: creates the table when asked, the session's staging table,
    /// and prepares the insert.
    async fn connect(&self) -> Result<Connection, WriteError> {
        let client = connect::connect(&self.options, &format!("iggy-connectors/{}", self.key))
            .await
            .map_err(|error| {
                if error.transient {
                    WriteError::Transient(error.message)
                } else {
                    WriteError::Permanent(error.message)
                }
            })?;
        if self.config.auto_create_table {
            client.batch_execute(&self.sql.create_table).await?;
        }
        client.batch_execute(&self.sql.create_stage).await?;
        let insert = client.prepare(&self.sql.insert).await?;
        Ok(Connection { client, insert })
    }

    /// Writes one batch in one transaction.
    ///
    /// Fast path (`insert` mode without mapped columns): one COPY straight into the
    /// table. A batch seen before (after a crash, a retry) breaks the primary key
    /// there, and a table whose column types differ from upstream's layout refuses the
    /// binary rows: then the slow path, for this batch (or for good, on a type
    /// mismatch): COPY into the session's staging table and `INSERT ... SELECT ... ON
    /// CONFLICT`, which skips the ids already written and casts to the table's types.
    /// Either way the batch is one transaction, committed before this returns.
    async fn write(&mut self, batch: &MessageBatch<'_>) -> Result<(), WriteError> {
        if self.connection.is_none() {
            self.connection = Some(self.connect().await?);
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(WriteError::Transient("no connection".to_owned()));
        };
        if self.direct {
            // Encoding first: a payload this sink can never write is found here and
            // named by its offset.
            let rows =
                encode_rows(&self.config, batch, Layout::Direct).map_err(WriteError::Message)?;
            let refused =
                match copy(&mut connection.client, &self.sql.copy_direct, rows, None).await {
                    Ok(()) => return Ok(()),
                    Err(error) if transient(&error) => return Err(error.into()),
                    Err(error) => error,
                };
            // unique_violation: some of these ids are written already, the staging path
            // leaves them out. Anything else may be a table whose types differ from
            // upstream's layout (the staging path casts), or bad data (which fails
            // there too, and is reported from there).
            let duplicate = refused.as_db_error().map(|db| db.code().code()) == Some("23505");
            let rows =
                encode_rows(&self.config, batch, Layout::Stage).map_err(WriteError::Message)?;
            copy(
                &mut connection.client,
                &self.sql.copy,
                rows,
                Some(&connection.insert),
            )
            .await?;
            if !duplicate {
                tracing::info!(
                    connector = %self.key,
                    error = %describe(&refused),
                    "the table refuses binary rows of upstream's layout; writing through the staging table from now on"
                );
                self.direct = false;
            }
            return Ok(());
        }
        let rows = encode_rows(&self.config, batch, Layout::Stage).map_err(WriteError::Message)?;
        copy(
            &mut connection.client,
            &self.sql.copy,
            rows,
            Some(&connection.insert),
        )
        .await?;
        Ok(())
    }
}

/// In one transaction: COPY `rows` with `statement`, then `then` (the insert from the
/// staging table, whose rows go with the transaction: `ON COMMIT DELETE ROWS`, and a
/// rollback drops them too), then commit.
async fn copy(
    client: &mut Client,
    statement: &str,
    rows: Bytes,
    then: Option<&Statement>,
) -> Result<(), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let sink = transaction.copy_in::<_, Bytes>(statement).await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(rows).await?;
    sink.as_mut().finish().await?;
    if let Some(insert) = then {
        transaction.execute(insert, &[]).await?;
    }
    transaction.commit().await
}

/// `name` as a quoted SQL identifier (upstream quotes the table name whole, so a dot
/// is part of the name, not a schema).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a quoted SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The canonical SQL type for a configured mapped column type, if it is one.
fn column_type(text: &str) -> Option<&'static str> {
    let wanted = text.trim().to_ascii_lowercase();
    let wanted = match wanted.as_str() {
        "int8" => "bigint",
        "int" | "int4" => "integer",
        "int2" => "smallint",
        "float8" | "double" => "double precision",
        "float4" => "real",
        "bool" => "boolean",
        "varchar" | "string" => "text",
        "timestamp with time zone" => "timestamptz",
        other => other,
    };
    COLUMN_TYPES.iter().copied().find(|known| *known == wanted)
}

/// The staging table's columns, in COPY order: every value the sink can write. The id
/// travels as text (binary NUMERIC is not worth encoding) and is cast on insert.
const STAGE_COLUMNS: &str = "id text, iggy_offset bigint, iggy_timestamp timestamptz, \
     iggy_stream text, iggy_topic text, iggy_partition_id integer, iggy_checksum bigint, \
     iggy_origin_timestamp timestamptz, payload";

/// The staging table, private to the session (`pg_temp`).
const STAGE: &str = "pg_temp.iggy_sink_stage";

/// The target's columns this config writes, each with the expression that computes it
/// from the staging table: `(column, expression)`.
fn row_columns(config: &PostgresSinkConfig) -> Vec<(&str, String)> {
    let mut columns = vec![("id", "id::numeric".to_owned())];
    if config.include_metadata {
        for name in [
            "iggy_offset",
            "iggy_timestamp",
            "iggy_stream",
            "iggy_topic",
            "iggy_partition_id",
        ] {
            columns.push((name, name.to_owned()));
        }
    }
    if config.include_checksum {
        columns.push(("iggy_checksum", "iggy_checksum".to_owned()));
    }
    if config.include_origin_timestamp {
        columns.push(("iggy_origin_timestamp", "iggy_origin_timestamp".to_owned()));
    }
    if config.columns.is_empty() {
        columns.push(("payload", "payload".to_owned()));
    }
    for mapping in &config.columns {
        let path = mapping
            .field
            .split('.')
            .map(literal)
            .collect::<Vec<_>>()
            .join(", ");
        let expression = match column_type(&mapping.sql_type) {
            Some("jsonb") => format!("jsonb_extract_path(payload, {path})"),
            Some("json") => format!("jsonb_extract_path(payload, {path})::json"),
            Some(sql_type) => format!("jsonb_extract_path_text(payload, {path})::{sql_type}"),
            None => "NULL".to_owned(), // refused by check_config before this runs
        };
        columns.push((mapping.column.as_str(), expression));
    }
    columns
}

impl Sql {
    fn new(config: &PostgresSinkConfig) -> Sql {
        let table = quote(&config.target_table);
        let columns = row_columns(config);
        let keys: Vec<String> = match (config.insert_mode, config.key_columns.is_empty()) {
            (InsertMode::Upsert, false) => config.key_columns.iter().map(|k| quote(k)).collect(),
            _ => vec![quote("id")],
        };
        let names: Vec<String> = columns.iter().map(|(name, _)| quote(name)).collect();
        let name_list = names.join(", ");

        // Upstream's layout, plus the mapped columns.
        let mut definitions = Vec::new();
        for (name, _) in &columns {
            let sql_type = match *name {
                "id" => "DECIMAL(39, 0)".to_owned(),
                "iggy_offset" | "iggy_checksum" => "BIGINT".to_owned(),
                "iggy_timestamp" | "iggy_origin_timestamp" => "TIMESTAMP WITH TIME ZONE".to_owned(),
                "iggy_stream" | "iggy_topic" => "TEXT".to_owned(),
                "iggy_partition_id" => "INTEGER".to_owned(),
                "payload" => config.payload_format.sql_type().to_owned(),
                other => config
                    .columns
                    .iter()
                    .find(|mapping| mapping.column == other)
                    .and_then(|mapping| column_type(&mapping.sql_type))
                    .unwrap_or("TEXT")
                    .to_uppercase(),
            };
            definitions.push(format!("{} {sql_type}", quote(name)));
        }
        definitions.push("created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()".to_owned());
        definitions.push(format!("PRIMARY KEY ({})", keys.join(", ")));
        let create_table = format!(
            "CREATE TABLE IF NOT EXISTS {table} ({})",
            definitions.join(", ")
        );

        // With mapped columns the payload is staged as JSONB, which the mapping reads.
        let stage_payload = if config.columns.is_empty() {
            config.payload_format.sql_type()
        } else {
            "JSONB"
        };
        let create_stage = format!(
            "CREATE TEMP TABLE IF NOT EXISTS iggy_sink_stage ({STAGE_COLUMNS} {stage_payload}, \
             iggy_sink_tombstone boolean) ON COMMIT DELETE ROWS"
        );
        let copy = format!("COPY {STAGE} FROM STDIN (FORMAT binary)");
        let copy_direct = format!("COPY {table} ({name_list}) FROM STDIN (FORMAT binary)");

        let expressions: Vec<String> = columns
            .iter()
            .map(|(name, expression)| format!("{expression} AS {}", quote(name)))
            .collect();
        let insert = match config.insert_mode {
            InsertMode::Insert => format!(
                "INSERT INTO {table} ({name_list}) SELECT {} FROM {STAGE} \
                 ON CONFLICT ({}) DO NOTHING",
                expressions.join(", "),
                keys.join(", ")
            ),
            InsertMode::Upsert => {
                // One row per key from the batch (ON CONFLICT DO UPDATE refuses to touch
                // a row twice in one statement): the message with the highest offset.
                let updates: Vec<String> = names
                    .iter()
                    .filter(|name| !keys.contains(name))
                    .map(|name| format!("{name} = EXCLUDED.{name}"))
                    .collect();
                let action = if updates.is_empty() {
                    "DO NOTHING".to_owned()
                } else {
                    format!("DO UPDATE SET {}", updates.join(", "))
                };
                if config.delete_on_tombstone {
                    // The latest message per key decides: a tombstone deletes the
                    // row, anything else writes it; one statement, one snapshot.
                    let matches: Vec<String> = keys
                        .iter()
                        .map(|key| format!("target.{key} = latest.{key}"))
                        .collect();
                    return Sql {
                        create_table,
                        create_stage,
                        copy,
                        copy_direct,
                        insert: format!(
                            "WITH latest AS (SELECT DISTINCT ON ({keys}) {exprs}, \
                             iggy_sink_tombstone, iggy_offset AS iggy_sink_order FROM {STAGE} \
                             ORDER BY {keys}, iggy_sink_order DESC), \
                             deleted AS (DELETE FROM {table} AS target USING latest \
                             WHERE latest.iggy_sink_tombstone AND {matches}) \
                             INSERT INTO {table} ({name_list}) SELECT {name_list} FROM latest \
                             WHERE NOT latest.iggy_sink_tombstone ON CONFLICT ({keys}) {action}",
                            keys = keys.join(", "),
                            exprs = expressions.join(", "),
                            matches = matches.join(" AND "),
                        ),
                    };
                }
                format!(
                    "INSERT INTO {table} ({name_list}) SELECT {name_list} FROM (\
                     SELECT DISTINCT ON ({keys}) {exprs}, iggy_offset AS iggy_sink_order \
                     FROM {STAGE} ORDER BY {keys}, iggy_sink_order DESC) AS latest \
                     ON CONFLICT ({keys}) {action}",
                    keys = keys.join(", "),
                    exprs = expressions.join(", "),
                )
            }
        };
        Sql {
            create_table,
            create_stage,
            copy,
            copy_direct,
            insert,
        }
    }
}

impl PayloadFormat {
    fn sql_type(self) -> &'static str {
        match self {
            PayloadFormat::Bytea => "BYTEA",
            PayloadFormat::Json => "JSONB",
            PayloadFormat::Text => "TEXT",
        }
    }
}

/// Microseconds from the UNIX epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Which table a COPY goes to, which decides the columns and the id's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The staging table: every column, the id as text.
    Stage,
    /// The target table itself: the columns this config writes, the id as NUMERIC.
    Direct,
}

/// The batch in PostgreSQL's binary COPY format, for `layout`. A payload that cannot
/// go into its column is an error naming its offset.
fn encode_rows(
    config: &PostgresSinkConfig,
    batch: &MessageBatch<'_>,
    layout: Layout,
) -> Result<Bytes, String> {
    let payload_bytes: usize = batch.messages.iter().map(|m| m.payload().len()).sum();
    let mut out = BytesMut::with_capacity(19 + payload_bytes + batch.messages.len() * 128 + 2);
    out.put_slice(b"PGCOPY\n\xff\r\n\0");
    out.put_i32(0); // flags
    out.put_i32(0); // header extension length
    let as_json = !config.columns.is_empty() || config.payload_format == PayloadFormat::Json;
    let (fields, metadata, checksum, origin) = match layout {
        Layout::Stage => (10, true, true, true),
        Layout::Direct => (
            2 + 5 * i16::from(config.include_metadata)
                + i16::from(config.include_checksum)
                + i16::from(config.include_origin_timestamp),
            config.include_metadata,
            config.include_checksum,
            config.include_origin_timestamp,
        ),
    };
    for message in batch.messages {
        let payload = message.payload();
        let tombstone = config.delete_on_tombstone && is_tombstone(payload);
        // A tombstone's staged payload: the mapped key columns' values, from its
        // headers, where the key expressions read them (else NULL).
        let key_payload = if tombstone && !config.columns.is_empty() {
            Some(tombstone_keys(config, message)?)
        } else {
            None
        };
        if tombstone {
            // Its payload is not written, so not checked.
        } else if as_json {
            check_json(payload).map_err(|why| {
                format!("offset {}: payload is not JSON: {why}", message.offset())
            })?;
        } else if config.payload_format == PayloadFormat::Text
            && (std::str::from_utf8(payload).is_err() || payload.contains(&0))
        {
            return Err(format!(
                "offset {}: payload is not text (invalid UTF-8 or a NUL byte)",
                message.offset()
            ));
        }
        out.put_i16(fields);
        match layout {
            Layout::Stage => put_field(&mut out, message.id().to_string().as_bytes()),
            Layout::Direct => put_numeric(&mut out, message.id()),
        }
        if metadata {
            out.put_i32(8);
            out.put_i64(message.offset() as i64);
            put_timestamp(&mut out, message.timestamp());
            put_field(&mut out, batch.stream.as_bytes());
            put_field(&mut out, batch.topic.as_bytes());
            out.put_i32(4);
            out.put_i32(batch.partition_id as i32);
        }
        if checksum {
            out.put_i32(8);
            // Upstream stores the u64 checksum's bits as BIGINT.
            out.put_i64(message.checksum() as i64);
        }
        if origin {
            put_timestamp(&mut out, message.origin_timestamp());
        }
        if tombstone && key_payload.is_none() {
            out.put_i32(-1); // NULL
        } else if as_json {
            let payload = key_payload.as_deref().unwrap_or(payload);
            // JSONB's binary form: version 1, then the text.
            out.put_i32(payload.len() as i32 + 1);
            out.put_u8(1);
            out.put_slice(payload);
        } else {
            put_field(&mut out, payload);
        }
        if layout == Layout::Stage {
            out.put_i32(1);
            out.put_u8(u8::from(tombstone));
        }
    }
    out.put_i16(-1);
    Ok(out.freeze())
}

/// Whether `payload` is a tombstone: empty, or JSON `null`.
fn is_tombstone(payload: &[u8]) -> bool {
    payload.trim_ascii().is_empty() || payload.trim_ascii() == b"null"
}

/// A tombstone's key values as the JSON object the mapped key columns' expressions
/// read: each key column's field path holds the value of the header named as the
/// column. An error names the offset and the header that is missing or unusable.
fn tombstone_keys(config: &PostgresSinkConfig, message: &Message<'_>) -> Result<Vec<u8>, String> {
    let mut object = serde_json::Map::new();
    for key in &config.key_columns {
        let Some(mapping) = config.columns.iter().find(|mapping| &mapping.column == key) else {
            continue; // `id` or a metadata column: staged from the message itself
        };
        let header = message.header(key).ok_or_else(|| {
            format!(
                "offset {}: a tombstone without the header {key:?}, the value of key column \
                 {key:?}",
                message.offset()
            )
        })?;
        let value = header_value(&header).ok_or_else(|| {
            format!(
                "offset {}: header {key:?} of a tombstone is not a string or an integer",
                message.offset()
            )
        })?;
        // Nest the value at the field's dotted path.
        let mut parts: Vec<&str> = mapping.field.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut at = &mut object;
        for part in parts {
            let entry = at
                .entry(part.to_owned())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(serde_json::Map::new());
            }
            let serde_json::Value::Object(inner) = entry else {
                return Err(format!(
                    "offset {}: no object at {part:?}",
                    message.offset()
                ));
            };
            at = inner;
        }
        at.insert(last.to_owned(), value);
    }
    serde_json::to_vec(&object).map_err(|error| format!("offset {}: {error}", message.offset()))
}

/// A header's value as JSON, for the kinds a key can be: strings (and UTF-8 raw
/// bytes) and integers (Iggy encodes them little-endian).
fn header_value(header: &Header<'_>) -> Option<serde_json::Value> {
    let bytes = header.value;
    let kind = HeaderKind::from_code(header.kind)?;
    let le = |n: usize| -> Option<[u8; 16]> {
        let mut out = [0_u8; 16];
        out.get_mut(..n)?.copy_from_slice(bytes.get(..n)?);
        (bytes.len() == n).then_some(out)
    };
    let signed = |n: usize| -> Option<serde_json::Value> {
        let raw = le(n)?;
        // Sign-extend from the top byte given.
        let fill = if raw[n - 1] & 0x80 != 0 { 0xFF } else { 0 };
        let mut full = [fill; 16];
        full[..n].copy_from_slice(&raw[..n]);
        let value = i128::from_le_bytes(full);
        Some(match i64::try_from(value) {
            Ok(small) => serde_json::Value::from(small),
            Err(_) => serde_json::Value::String(value.to_string()),
        })
    };
    let unsigned = |n: usize| -> Option<serde_json::Value> {
        let value = u128::from_le_bytes(le(n)?);
        Some(match u64::try_from(value) {
            Ok(small) => serde_json::Value::from(small),
            Err(_) => serde_json::Value::String(value.to_string()),
        })
    };
    match kind {
        HeaderKind::String | HeaderKind::Raw => std::str::from_utf8(bytes)
            .ok()
            .map(|text| serde_json::Value::String(text.to_owned())),
        HeaderKind::Int8 => signed(1),
        HeaderKind::Int16 => signed(2),
        HeaderKind::Int32 => signed(4),
        HeaderKind::Int64 => signed(8),
        HeaderKind::Int128 => signed(16),
        HeaderKind::Uint8 => unsigned(1),
        HeaderKind::Uint16 => unsigned(2),
        HeaderKind::Uint32 => unsigned(4),
        HeaderKind::Uint64 => unsigned(8),
        HeaderKind::Uint128 => unsigned(16),
        HeaderKind::Bool | HeaderKind::Float32 | HeaderKind::Float64 => None,
    }
}

/// `value` as a binary NUMERIC: base-10000 digits, most significant first.
fn put_numeric(out: &mut BytesMut, value: u128) {
    let mut digits = [0_i16; 10]; // u128::MAX has 39 decimal digits: 10 base-10000 ones
    let mut count = 0;
    let mut rest = value;
    while rest > 0 {
        digits[count] = (rest % 10_000) as i16;
        rest /= 10_000;
        count += 1;
    }
    out.put_i32(8 + 2 * count as i32);
    out.put_i16(count as i16);
    out.put_i16(count.saturating_sub(1) as i16); // weight of the first digit
    out.put_u16(0); // sign: positive
    out.put_u16(0); // display scale
    for digit in digits[..count].iter().rev() {
        out.put_i16(*digit);
    }
}

fn put_field(out: &mut BytesMut, value: &[u8]) {
    out.put_i32(value.len() as i32);
    out.put_slice(value);
}

/// Iggy's microseconds since the UNIX epoch as a binary `timestamptz`.
fn put_timestamp(out: &mut BytesMut, micros: u64) {
    out.put_i32(8);
    let micros = i64::try_from(micros).unwrap_or(i64::MAX);
    out.put_i64(micros.saturating_sub(POSTGRES_EPOCH_MICROS));
}

/// Whether `payload` is JSON that PostgreSQL's `jsonb` takes: well formed, and no
/// `\u0000` in a string (which `jsonb` refuses).
fn check_json(payload: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).map_err(|error| error.to_string())?;
    if payload
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
    {
        return Err("a \\u0000 in a string, which jsonb cannot hold".to_owned());
    }
    Ok(())
}

connector_sdk::export_sink!(PostgresSink, "postgres_sink");

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> PostgresSinkConfig {
        let mut value = serde_json::json!({
            "connection_string": "postgres://u@h/db",
            "target_table": "t",
        });
        if let (Some(object), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
            object.extend(extra);
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_created_table_has_upstreams_layout() {
        let sql = Sql::new(&config(serde_json::json!({})));
        assert_eq!(
            sql.create_table,
            "CREATE TABLE IF NOT EXISTS \"t\" (\"id\" DECIMAL(39, 0), \"iggy_offset\" BIGINT, \
             \"iggy_timestamp\" TIMESTAMP WITH TIME ZONE, \"iggy_stream\" TEXT, \"iggy_topic\" TEXT, \
             \"iggy_partition_id\" INTEGER, \"iggy_checksum\" BIGINT, \
             \"iggy_origin_timestamp\" TIMESTAMP WITH TIME ZONE, \"payload\" BYTEA, \
             created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(), PRIMARY KEY (\"id\"))"
        );
    }

    #[test]
    fn mapped_types_are_checked_and_identifiers_quoted() {
        let mut bad = config(serde_json::json!({
            "columns": [{ "field": "a", "column": "x\"; drop", "type": "bigint; drop table t" }]
        }));
        assert_eq!(PostgresSink::check_config(&bad).len(), 1);
        bad.columns[0].sql_type = "INT8".to_owned();
        assert!(PostgresSink::check_config(&bad).is_empty());
        let sql = Sql::new(&bad);
        assert!(sql.insert.contains("\"x\"\"; drop\""), "{}", sql.insert);
        assert!(sql.insert.contains("::bigint"), "{}", sql.insert);
    }
}
