//! The PostgreSQL sink against the real PostgreSQL (`IGGY_TEST_POSTGRES_URL`, default
//! on loopback): each test writes to a table of its own.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use connector_sdk::ErrorKind;
use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage, context};
use iggy_connector_postgres_sink::PostgresSink;
use iggy_connectors_tests::services::{Service, service_url};
use iggy_connectors_tests::{unique, upstream_connectors_dir};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

/// The database URL and a client of the test's own, or `None` (skipped) when
/// PostgreSQL is not reachable.
async fn database() -> Option<(String, Client)> {
    let url = service_url(Service::Postgres)?;
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    Some((url, client))
}

/// A table name no other test (or run) uses.
fn table(label: &str) -> String {
    unique(label).replace('-', "_")
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The sink's `plugin_config` for `table`, with `extra` keys added.
fn sink_config(url: &str, table: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut config = json!({
        "connection_string": url,
        "target_table": table,
        "auto_create_table": true,
        "retry_delay": "10ms",
    });
    if let (Some(object), serde_json::Value::Object(extra)) = (config.as_object_mut(), extra) {
        object.extend(extra);
    }
    config
}

fn json_batch(first_offset: u64, count: u64) -> TestBatch {
    TestBatch::new()
        .stream("orders")
        .topic("created")
        .partition_id(2)
        .messages((first_offset..first_offset + count).map(|offset| {
            TestMessage::json(json!({ "n": offset, "text": "x".repeat(20) }))
                .offset(offset)
                .id(1_000_000 + u128::from(offset))
        }))
}

/// Drops `table` (the test's own, named by `unique`), when the test is done with it.
async fn drop_table(db: &Client, table: &str) {
    db.batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_batch_is_in_the_table_in_upstreams_layout_when_consume_returns() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_layout");
    let mut sink = SinkHarness::<PostgresSink>::open(sink_config(
        &url,
        &table,
        json!({ "payload_format": "jsonb" }),
    ))
    .await
    .unwrap();
    let batch = TestBatch::new()
        .stream("orders")
        .topic("created")
        .partition_id(2)
        .message(
            TestMessage::json(json!({ "a": 1 }))
                .offset(7)
                .id(u128::MAX)
                .timestamp(1_700_000_000_000_001)
                .origin_timestamp(1_600_000_000_000_000)
                .checksum(u64::MAX),
        );
    sink.consume(&batch).await.unwrap();
    let row = db
        .query_one(
            &format!(
                "SELECT id::text, iggy_offset, extract(epoch from iggy_timestamp)::text, \
                 iggy_stream, iggy_topic, iggy_partition_id, iggy_checksum, \
                 extract(epoch from iggy_origin_timestamp)::text, payload::text \
                 FROM \"{table}\""
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), u128::MAX.to_string());
    assert_eq!(row.get::<_, i64>(1), 7);
    assert_eq!(row.get::<_, String>(2), "1700000000.000001");
    assert_eq!(row.get::<_, String>(3), "orders");
    assert_eq!(row.get::<_, String>(4), "created");
    assert_eq!(row.get::<_, i32>(5), 2);
    assert_eq!(
        row.get::<_, i64>(6),
        -1,
        "the u64 checksum's bits, as upstream"
    );
    assert_eq!(row.get::<_, String>(7), "1600000000.000000");
    assert_eq!(row.get::<_, String>(8), r#"{"a": 1}"#);
    // The message id is the primary key, as upstream creates it.
    let key = db
        .query_one(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
            &[&format!("\"{table}\"")],
        )
        .await
        .unwrap();
    assert_eq!(key.get::<_, String>(0), "id");
    sink.close().await.unwrap();
    drop_table(&db, &table).await;
}

/// At least once means twice sometimes: the same batch again (a crash before the
/// offset was stored, a retry) adds no row.
#[tokio::test]
async fn a_batch_delivered_twice_leaves_one_row_per_message_id() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_twice");
    let mut sink = SinkHarness::<PostgresSink>::open(sink_config(&url, &table, json!({})))
        .await
        .unwrap();
    sink.consume(&json_batch(0, 100)).await.unwrap();
    sink.consume(&json_batch(0, 100)).await.unwrap();
    // Overlapping: half again, half new.
    sink.consume(&json_batch(50, 100)).await.unwrap();
    let rows = count(&db, &format!("SELECT count(*) FROM \"{table}\"")).await;
    let ids = count(&db, &format!("SELECT count(DISTINCT id) FROM \"{table}\"")).await;
    assert_eq!((rows, ids), (150, 150));
    drop_table(&db, &table).await;
}

/// A payload that can never go into a `jsonb` column fails the batch as a permanent
/// error naming its offset, and writes none of it (the runtime's `error_policy` then
/// retries the messages one by one, and the good ones land).
#[tokio::test]
async fn a_payload_that_is_not_json_is_a_permanent_error_naming_its_offset() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_bad_json");
    let mut sink = SinkHarness::<PostgresSink>::open(sink_config(
        &url,
        &table,
        json!({ "payload_format": "json" }),
    ))
    .await
    .unwrap();
    let batch = TestBatch::new()
        .message(TestMessage::new(r#"{"ok":true}"#).offset(40))
        .message(TestMessage::new("{not json").offset(41));
    let error = sink.consume(&batch).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert!(error.message().starts_with("offset 41:"), "{error}");
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM \"{table}\"")).await,
        0
    );
    // As the error policy retries it: the good message alone is written.
    let good = TestBatch::new().message(TestMessage::new(r#"{"ok":true}"#).offset(40));
    sink.consume(&good).await.unwrap();
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM \"{table}\"")).await,
        1
    );
    drop_table(&db, &table).await;
}

/// A value the database refuses (here, text for a BIGINT column) is a permanent error
/// naming the batch's offsets, not a retry loop, and the transaction writes nothing.
#[tokio::test]
async fn a_value_the_database_refuses_is_a_permanent_error() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_refused");
    let mut sink = SinkHarness::<PostgresSink>::open(sink_config(
        &url,
        &table,
        json!({ "columns": [{ "field": "n", "column": "n", "type": "bigint" }] }),
    ))
    .await
    .unwrap();
    let batch = TestBatch::new()
        .partition_id(1)
        .message(TestMessage::json(json!({ "n": 1 })).offset(5))
        .message(TestMessage::json(json!({ "n": "many" })).offset(6));
    let error = sink.consume(&batch).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert!(error.message().contains("offsets 5..=6"), "{error}");
    assert!(error.message().contains("22P02"), "{error}");
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM \"{table}\"")).await,
        0
    );
    drop_table(&db, &table).await;
}

/// Upsert on a key from the payload keeps one row per key with the latest message's
/// values, within a batch and across batches; fields map to typed columns.
#[tokio::test]
async fn upsert_keeps_one_current_row_per_key() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_upsert");
    let mut sink = SinkHarness::<PostgresSink>::open(sink_config(
        &url,
        &table,
        json!({
            "insert_mode": "upsert",
            "key_columns": ["user_id"],
            "include_metadata": false,
            "include_checksum": false,
            "include_origin_timestamp": false,
            "columns": [
                { "field": "user.id", "column": "user_id", "type": "bigint" },
                { "field": "user.name", "column": "name" },
                { "field": "active", "column": "active", "type": "boolean" },
            ],
        }),
    ))
    .await
    .unwrap();
    let user = |id: u64, name: &str, active: bool| {
        TestMessage::json(json!({ "user": { "id": id, "name": name }, "active": active }))
    };
    let first = TestBatch::new()
        .message(user(1, "ann", true))
        .message(user(2, "bob", true))
        .message(user(1, "anne", false))
        .first_offset(0);
    sink.consume(&first).await.unwrap();
    let second = TestBatch::new()
        .message(user(2, "robert", true))
        .first_offset(3);
    sink.consume(&second).await.unwrap();
    let rows: Vec<(i64, String, bool)> = db
        .query(
            &format!("SELECT user_id, name, active FROM \"{table}\" ORDER BY user_id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            (1, "anne".to_owned(), false),
            (2, "robert".to_owned(), true)
        ]
    );
    drop_table(&db, &table).await;
}

/// The server drops the sink's connection (`pg_terminate_backend`, as a restart or a
/// failover does): the next batch is written on a new connection, nothing lost.
#[tokio::test]
async fn a_lost_connection_is_made_again_and_the_batch_written() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_reconnect");
    let key = table.clone();
    let mut sink = SinkHarness::<PostgresSink>::open_with_context(
        sink_config(&url, &table, json!({})),
        context(&key),
    )
    .await
    .unwrap();
    sink.consume(&json_batch(0, 10)).await.unwrap();
    let terminated = count(
        &db,
        &format!(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'iggy-connectors/{key}') AS t"
        ),
    )
    .await;
    assert_eq!(terminated, 1, "the sink's one connection");
    sink.consume(&json_batch(10, 10)).await.unwrap();
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM \"{table}\"")).await,
        20
    );
    drop_table(&db, &table).await;
}

/// `sslmode=require` connects over TLS (rustls) to a server that offers it;
/// `verify-full` refuses a certificate no trusted root signed.
#[tokio::test]
async fn sslmode_require_encrypts_and_verify_full_checks_the_certificate() {
    let Some((url, db)) = database().await else {
        return;
    };
    let ssl: String = db.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        eprintln!("SKIPPED: the PostgreSQL at {url} does not offer TLS");
        return;
    }
    let with_mode = |mode: &str| {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}sslmode={mode}")
    };
    let table = table("sink_tls");
    let key = table.clone();
    let mut sink = SinkHarness::<PostgresSink>::open_with_context(
        sink_config(&with_mode("require"), &table, json!({})),
        context(&key),
    )
    .await
    .unwrap();
    sink.consume(&json_batch(0, 3)).await.unwrap();
    let encrypted = count(
        &db,
        &format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND application_name = 'iggy-connectors/{key}'"
        ),
    )
    .await;
    assert_eq!(encrypted, 1);
    let refused = SinkHarness::<PostgresSink>::open(sink_config(
        &with_mode("verify-full"),
        &table,
        json!({}),
    ))
    .await
    .unwrap_err();
    assert!(refused.message().contains("certificate"), "{refused}");
    drop_table(&db, &table).await;
}

/// Upstream's example config loads unchanged: the plugin's own check accepts it, and
/// its defaults are upstream's.
#[test]
fn upstreams_config_is_accepted_with_upstreams_defaults() {
    let text =
        std::fs::read_to_string(upstream_connectors_dir().join("postgres_sink.toml")).unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    let plugin_config = serde_json::to_value(&file["plugin_config"]).unwrap();
    assert_eq!(
        SinkHarness::<PostgresSink>::validate(plugin_config.clone()),
        Vec::<String>::new()
    );
    let config: iggy_connector_postgres_sink::PostgresSinkConfig = serde_json::from_value(
        json!({ "connection_string": "postgres://h/db", "target_table": "t" }),
    )
    .unwrap();
    assert_eq!(config.batch_size, 100);
    assert_eq!(config.max_connections, 10);
    assert!(!config.auto_create_table);
    assert!(config.include_metadata && config.include_checksum && config.include_origin_timestamp);
    assert_eq!(
        config.payload_format,
        iggy_connector_postgres_sink::PayloadFormat::Bytea
    );
    assert_eq!(config.max_retries, 3);
    assert_eq!(config.retry_delay, std::time::Duration::from_secs(1));
    assert!(!config.verbose_logging);
}

/// A table made by hand with other column types than upstream's layout (`payload JSON`,
/// `id TEXT`): the direct COPY is refused, and the batch goes through the staging
/// table, which casts; the next batches too.
#[tokio::test]
async fn a_table_with_other_column_types_is_written_through_the_staging_table() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_own_types");
    db.batch_execute(&format!(
        "CREATE TABLE \"{table}\" (id TEXT PRIMARY KEY, payload JSON)"
    ))
    .await
    .unwrap();
    let mut sink = SinkHarness::<PostgresSink>::open(sink_config(
        &url,
        &table,
        json!({
            "auto_create_table": false,
            "payload_format": "json",
            "include_metadata": false,
            "include_checksum": false,
            "include_origin_timestamp": false,
        }),
    ))
    .await
    .unwrap();
    sink.consume(&json_batch(0, 10)).await.unwrap();
    sink.consume(&json_batch(5, 10)).await.unwrap();
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM \"{table}\"")).await,
        15
    );
    let first: String = db
        .query_one(
            &format!("SELECT payload->>'n' FROM \"{table}\" WHERE id = '1000000'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(first, "0");
    drop_table(&db, &table).await;
}

/// `delete_on_tombstone` with upsert on a key from the payload: a message with an
/// empty or `null` payload deletes the row whose key its header gives (a string or an
/// integer header named as the key column); within a batch the latest message per key
/// wins, so a row written after its tombstone stays and one deleted after its write
/// goes.
#[tokio::test]
async fn tombstones_delete_the_row_of_their_key_when_asked() {
    use connector_sdk::{HeaderKind, OwnedHeader};
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_tombstone");
    let mut sink = SinkHarness::<PostgresSink>::open(sink_config(
        &url,
        &table,
        json!({
            "insert_mode": "upsert",
            "key_columns": ["user_id"],
            "delete_on_tombstone": true,
            "include_metadata": false,
            "columns": [
                { "field": "user.id", "column": "user_id", "type": "bigint" },
                { "field": "user.name", "column": "name" },
            ],
        }),
    ))
    .await
    .unwrap();
    let user =
        |id: u64, name: &str| TestMessage::json(json!({ "user": { "id": id, "name": name } }));
    let rows = || async {
        db.query(
            &format!("SELECT user_id, name FROM \"{table}\" ORDER BY user_id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, i64>(0), row.get::<_, String>(1)))
        .collect::<Vec<_>>()
    };
    let first = TestBatch::new()
        .messages([user(1, "ann"), user(2, "bob"), user(3, "cy")])
        .first_offset(0);
    sink.consume(&first).await.unwrap();
    assert_eq!(rows().await.len(), 3);

    let int_header = |value: i64| OwnedHeader {
        key: "user_id".to_owned(),
        kind: HeaderKind::Int64,
        value: value.to_le_bytes().to_vec(),
    };
    let second = TestBatch::new()
        .messages([
            // Deletes 1 (a string header), and 2 (a `null` payload, an integer header).
            TestMessage::new("").header(OwnedHeader::string("user_id", "1")),
            TestMessage::new("null").header(int_header(2)),
            // 3 deleted, then written again: the write is the latest, it stays.
            TestMessage::new("").header(int_header(3)),
            user(3, "cara"),
            // 4 written, then deleted: the tombstone is the latest, it goes.
            user(4, "dan"),
            TestMessage::new("").header(int_header(4)),
        ])
        .first_offset(3);
    sink.consume(&second).await.unwrap();
    assert_eq!(rows().await, [(3, "cara".to_owned())]);
    drop_table(&db, &table).await;
}

/// Keyed by the message id (no key columns): a tombstone deletes the row of its own
/// id, which a producer sets to the entity's.
#[tokio::test]
async fn a_tombstone_deletes_the_row_of_its_message_id_by_default() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_tombstone_id");
    let mut sink = SinkHarness::<PostgresSink>::open(sink_config(
        &url,
        &table,
        json!({ "insert_mode": "upsert", "delete_on_tombstone": true, "payload_format": "json" }),
    ))
    .await
    .unwrap();
    let batch = TestBatch::new()
        .messages([
            TestMessage::json(json!({ "v": 1 })).id(7),
            TestMessage::json(json!({ "v": 2 })).id(8),
        ])
        .first_offset(0);
    sink.consume(&batch).await.unwrap();
    let tombstone = TestBatch::new()
        .message(TestMessage::new("").id(7))
        .first_offset(2);
    sink.consume(&tombstone).await.unwrap();
    let left = count(&db, &format!("SELECT count(*) FROM \"{table}\"")).await;
    let kept = count(
        &db,
        &format!("SELECT count(*) FROM \"{table}\" WHERE id = 8"),
    )
    .await;
    assert_eq!((left, kept), (1, 1));
    drop_table(&db, &table).await;
}

/// A tombstone that does not say its key (no header for a mapped key column) is a
/// permanent error naming its offset, for the connector's `error_policy`; nothing of
/// the batch is written.
#[tokio::test]
async fn a_tombstone_without_its_key_is_a_permanent_error_naming_its_offset() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table("sink_tombstone_nokey");
    let mut sink = SinkHarness::<PostgresSink>::open(sink_config(
        &url,
        &table,
        json!({
            "insert_mode": "upsert",
            "key_columns": ["user_id"],
            "delete_on_tombstone": true,
            "columns": [{ "field": "id", "column": "user_id", "type": "bigint" }],
        }),
    ))
    .await
    .unwrap();
    let batch = TestBatch::new().messages([
        TestMessage::json(json!({ "id": 1 })).offset(10),
        TestMessage::new("").offset(11),
    ]);
    let error = sink.consume(&batch).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(error.message().contains("offset 11"), "{error}");
    assert!(error.message().contains("\"user_id\""), "{error}");
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM \"{table}\"")).await,
        0
    );
    drop_table(&db, &table).await;
}

/// `delete_on_tombstone` needs upsert (a key to delete by), and the check says so.
#[test]
fn delete_on_tombstone_is_refused_without_upsert() {
    let problems = SinkHarness::<PostgresSink>::validate(sink_config(
        "postgres://u@h/db",
        "t",
        json!({ "delete_on_tombstone": true }),
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("plugin_config.delete_on_tombstone:")
            && problems[0].contains("insert_mode = \"upsert\""),
        "{problems:?}"
    );
}
