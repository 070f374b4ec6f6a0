//! The PostgreSQL source against the real PostgreSQL (`IGGY_TEST_POSTGRES_URL`, default
//! on loopback), through `connector_sdk::testing::SourceHarness` (the runtime's settling
//! rules): each test reads a table of its own.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use connector_sdk::testing::SourceHarness;
use connector_sdk::{ProducedBatch, Schema};
use iggy_connector_postgres_source::PostgresSource;
use iggy_connectors_tests::services::{Service, service_url};
use iggy_connectors_tests::{unique, upstream_connectors_dir};
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

async fn database() -> Option<(String, Client)> {
    let url = service_url(Service::Postgres)?;
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    Some((url, client))
}

/// A fresh table `name (id serial, "userName" text, processed boolean)` with `rows`
/// rows named `user0`, `user1`...
async fn table_with_rows(db: &Client, label: &str, rows: usize) -> String {
    let table = unique(label).replace('-', "_");
    db.batch_execute(&format!(
        "CREATE TABLE \"{table}\" (id serial PRIMARY KEY, \"userName\" text, \
         doc jsonb, processed boolean NOT NULL DEFAULT FALSE)"
    ))
    .await
    .unwrap();
    insert(db, &table, 0..rows).await;
    table
}

async fn insert(db: &Client, table: &str, names: std::ops::Range<usize>) {
    for n in names {
        db.execute(
            &format!(
                "INSERT INTO \"{table}\" (\"userName\", doc) VALUES ($1, \
                 jsonb_build_object('n', $2::int))"
            ),
            &[&format!("user{n}"), &(n as i32)],
        )
        .await
        .unwrap();
    }
}

async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

fn config(url: &str, table: &str, extra: Value) -> Value {
    let mut config = json!({
        "connection_string": url,
        "mode": "polling",
        "tables": [table],
        "poll_interval": "10ms",
        "retry_delay": "10ms",
    });
    if let (Some(object), Value::Object(extra)) = (config.as_object_mut(), extra) {
        object.extend(extra);
    }
    config
}

fn payloads(batch: &ProducedBatch) -> Vec<Value> {
    batch
        .messages
        .iter()
        .map(|message| serde_json::from_slice(&message.payload).unwrap())
        .collect()
}

fn names(batch: &ProducedBatch) -> Vec<String> {
    payloads(batch)
        .iter()
        .map(|record| record["data"]["userName"].as_str().unwrap().to_owned())
        .collect()
}

/// Drops `table` (the test's own, named by `unique`), when the test is done with it.
async fn drop_table(db: &Client, table: &str) {
    db.batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
        .await
        .unwrap();
}

#[tokio::test]
async fn rows_come_as_upstreams_records_and_the_offset_moves_only_on_accept() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table_with_rows(&db, "src_records", 3).await;
    let mut source = SourceHarness::<PostgresSource>::open(config(&url, &table, json!({})), None)
        .await
        .unwrap();
    let batch = source.poll().await.unwrap();
    assert_eq!(batch.schema, Schema::Json);
    let record = &payloads(&batch)[0];
    assert_eq!(record["table_name"], json!(table));
    assert_eq!(record["operation_type"], json!("SELECT"));
    assert_eq!(record["data"]["id"], json!(1));
    assert_eq!(record["data"]["doc"], json!({ "n": 0 }));
    assert_eq!(record["old_data"], Value::Null);
    assert!(
        record["timestamp"].as_str().unwrap().ends_with('Z'),
        "{record}"
    );
    assert_eq!(names(&batch), ["user0", "user1", "user2"]);
    assert_eq!(source.state(), None, "nothing saved before the accept");
    source.accept().await.unwrap();
    let state: Value = serde_json::from_slice(source.state().unwrap()).unwrap();
    assert_eq!(state["tracking_offsets"][&table], json!("3"));

    insert(&db, &table, 3..4).await;
    let next = source.poll().await.unwrap();
    assert_eq!(
        names(&next),
        ["user3"],
        "only the row past the accepted offset"
    );
    drop_table(&db, &table).await;
}

/// A rejected batch (Iggy did not store it) comes again, the same rows with the same
/// message ids.
#[tokio::test]
async fn a_rejected_batch_comes_again_with_the_same_ids() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table_with_rows(&db, "src_reject", 2).await;
    let mut source = SourceHarness::<PostgresSource>::open(config(&url, &table, json!({})), None)
        .await
        .unwrap();
    let first = source.poll().await.unwrap();
    source.reject().await.unwrap();
    let again = source.poll().await.unwrap();
    assert_eq!(names(&again), names(&first));
    let ids = |batch: &ProducedBatch| batch.messages.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first));
    assert!(ids(&first).iter().all(Option::is_some));
    drop_table(&db, &table).await;
}

/// `delete_after_read`: the rows stay until the runtime accepts their batch (Iggy
/// stored it), then they go.
#[tokio::test]
async fn rows_are_deleted_only_once_their_batch_is_accepted() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table_with_rows(&db, "src_delete", 3).await;
    let mut source = SourceHarness::<PostgresSource>::open(
        config(&url, &table, json!({ "delete_after_read": true })),
        None,
    )
    .await
    .unwrap();
    let batch = source.poll().await.unwrap();
    assert_eq!(batch.messages.len(), 3);
    let rows = format!("SELECT count(*) FROM \"{table}\"");
    assert_eq!(count(&db, &rows).await, 3, "nothing deleted unsent");
    source.accept().await.unwrap();
    assert_eq!(count(&db, &rows).await, 0);
    drop_table(&db, &table).await;
}

/// The runtime killed between the poll and the accept (nothing saved): the next run
/// reads the same rows again, none deleted.
#[tokio::test]
async fn killed_between_poll_and_accept_the_rows_come_again() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table_with_rows(&db, "src_killed", 3).await;
    let settings = config(&url, &table, json!({ "delete_after_read": true }));
    let mut first_run = SourceHarness::<PostgresSource>::open(settings.clone(), None)
        .await
        .unwrap();
    let polled = first_run.poll().await.unwrap();
    let saved = first_run.state().map(<[u8]>::to_vec);
    drop(first_run); // killed: no settle, no close
    let rows = format!("SELECT count(*) FROM \"{table}\"");
    assert_eq!(count(&db, &rows).await, 3);

    let mut second_run = SourceHarness::<PostgresSource>::open(settings, saved)
        .await
        .unwrap();
    let again = second_run.poll().await.unwrap();
    assert_eq!(names(&again), names(&polled));
    second_run.accept().await.unwrap();
    assert_eq!(count(&db, &rows).await, 0);
    drop_table(&db, &table).await;
}

/// Killed after Iggy stored the batch and the runtime saved its state, but before the
/// source deleted the rows: the next run deletes them at open and goes on past them.
#[tokio::test]
async fn killed_after_the_state_was_saved_the_next_run_finishes_the_deletes() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table_with_rows(&db, "src_saved", 3).await;
    let settings = config(&url, &table, json!({ "delete_after_read": true }));
    let mut first_run = SourceHarness::<PostgresSource>::open(settings.clone(), None)
        .await
        .unwrap();
    let polled = first_run.poll().await.unwrap();
    drop(first_run);
    let rows = format!("SELECT count(*) FROM \"{table}\"");
    assert_eq!(count(&db, &rows).await, 3);

    // The state the runtime saved with the batch's acceptance.
    let mut second_run = SourceHarness::<PostgresSource>::open(settings, polled.state.clone())
        .await
        .unwrap();
    assert_eq!(count(&db, &rows).await, 0, "open finished the deletes");
    insert(&db, &table, 3..4).await;
    let next = second_run.poll().await.unwrap();
    assert_eq!(names(&next), ["user3"]);
    drop_table(&db, &table).await;
}

/// `processed_column`: rows are marked after the accept, and marked rows are not read.
#[tokio::test]
async fn rows_are_marked_processed_after_the_accept() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table_with_rows(&db, "src_mark", 2).await;
    let mut source = SourceHarness::<PostgresSource>::open(
        config(&url, &table, json!({ "processed_column": "processed" })),
        None,
    )
    .await
    .unwrap();
    source.poll().await.unwrap();
    let marked = format!("SELECT count(*) FROM \"{table}\" WHERE processed");
    assert_eq!(count(&db, &marked).await, 0);
    source.accept().await.unwrap();
    assert_eq!(count(&db, &marked).await, 2);
    drop_table(&db, &table).await;
}

/// `payload_column` with `json_direct`: the column's JSON alone is the message.
#[tokio::test]
async fn a_payload_column_is_the_message() {
    let Some((url, db)) = database().await else {
        return;
    };
    let table = table_with_rows(&db, "src_payload", 2).await;
    let mut source = SourceHarness::<PostgresSource>::open(
        config(
            &url,
            &table,
            json!({ "payload_column": "doc", "payload_format": "json_direct", "batch_size": 1 }),
        ),
        None,
    )
    .await
    .unwrap();
    let batch = source.poll().await.unwrap();
    assert_eq!(batch.schema, Schema::Json);
    assert_eq!(batch.messages.len(), 1, "batch_size rows at most");
    assert_eq!(&batch.messages[0].payload[..], br#"{"n":0}"#);
    drop_table(&db, &table).await;
}

/// Upstream's example config loads unchanged: the plugin's own check accepts it.
#[test]
fn upstreams_config_is_accepted() {
    let text =
        std::fs::read_to_string(upstream_connectors_dir().join("postgres_source.toml")).unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    let plugin_config = serde_json::to_value(&file["plugin_config"]).unwrap();
    assert_eq!(
        SourceHarness::<PostgresSource>::validate(plugin_config),
        Vec::<String>::new()
    );
}
