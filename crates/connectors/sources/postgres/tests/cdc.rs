//! CDC mode against a real PostgreSQL: a private cluster with `wal_level = logical`
//! per test (`iggy_connectors_tests::postgres_cluster`; the shared server runs with
//! `replica`), through `connector_sdk::testing::SourceHarness` (the runtime's settling
//! rules).

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use connector_sdk::testing::SourceHarness;
use connector_sdk::{ProducedBatch, Schema};
use iggy_connector_postgres_source::PostgresSource;
use iggy_connectors_tests::postgres_cluster::PostgresCluster;
use iggy_connectors_tests::services::{Service, service_url};
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

/// A private cluster that can decode, and a client of it.
async fn cluster(label: &str) -> Option<(PostgresCluster, Client)> {
    let cluster = PostgresCluster::start(label, &[("wal_level", "logical")])?;
    let (client, connection) = tokio_postgres::connect(&cluster.url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    Some((cluster, client))
}

fn config(url: &str, extra: Value) -> Value {
    let mut config = json!({
        "connection_string": url,
        "mode": "cdc",
        "tables": ["users"],
        "replication_slot": "test_slot",
        "poll_interval": "10ms",
        "retry_delay": "10ms",
    });
    if let (Some(object), Value::Object(extra)) = (config.as_object_mut(), extra) {
        object.extend(extra);
    }
    config
}

fn records(batch: &ProducedBatch) -> Vec<Value> {
    batch
        .messages
        .iter()
        .map(|message| serde_json::from_slice(&message.payload).unwrap())
        .collect()
}

/// (operation, data, old_data) of each record.
fn changes(batch: &ProducedBatch) -> Vec<(String, Value, Value)> {
    records(batch)
        .into_iter()
        .map(|record| {
            (
                record["operation_type"].as_str().unwrap().to_owned(),
                record["data"].clone(),
                record["old_data"].clone(),
            )
        })
        .collect()
}

/// The source's next batch; a test fails (rather than hangs) when none comes in 30 s.
async fn next_batch(source: &mut SourceHarness<PostgresSource>) -> ProducedBatch {
    source
        .poll_timeout(std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a batch within 30 s")
}

/// Where the slot stands: its confirmed position.
async fn confirmed(db: &Client) -> String {
    db.query_one(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'test_slot'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

fn state_lsn(state: &[u8]) -> String {
    let state: Value = serde_json::from_slice(state).unwrap();
    state["cdc_lsn"].as_str().unwrap().to_owned()
}

/// INSERT, UPDATE (of a column, and of the key) and DELETE come as upstream's records
/// with new and old data, in commit order, one message per change: the transactions'
/// BEGIN and COMMIT make none, and changes of other tables are left out.
#[tokio::test]
async fn inserts_updates_and_deletes_come_as_upstreams_records_with_old_data() {
    let Some((cluster, db)) = cluster("cdc-records").await else {
        return;
    };
    db.batch_execute(
        "CREATE TABLE users (id integer PRIMARY KEY, name text, score numeric); \
         CREATE TABLE other (id integer PRIMARY KEY)",
    )
    .await
    .unwrap();
    let mut source = SourceHarness::<PostgresSource>::open(config(&cluster.url(), json!({})), None)
        .await
        .unwrap();
    db.batch_execute(
        "BEGIN; INSERT INTO users VALUES (1, 'ann', 1.5), (2, 'bob', NULL); \
         INSERT INTO other VALUES (7); COMMIT; \
         UPDATE users SET name = 'anna' WHERE id = 1; \
         UPDATE users SET id = 20 WHERE id = 2; \
         DELETE FROM users WHERE id = 1;",
    )
    .await
    .unwrap();
    let batch = next_batch(&mut source).await;
    assert_eq!(batch.schema, Schema::Json);
    assert_eq!(
        changes(&batch),
        [
            (
                "INSERT".to_owned(),
                json!({"id": 1, "name": "ann", "score": 1.5}),
                Value::Null
            ),
            (
                "INSERT".to_owned(),
                json!({"id": 2, "name": "bob", "score": null}),
                Value::Null
            ),
            (
                "UPDATE".to_owned(),
                json!({"id": 1, "name": "anna", "score": 1.5}),
                Value::Null
            ),
            (
                "UPDATE".to_owned(),
                json!({"id": 20, "name": "bob", "score": null}),
                json!({"id": 2})
            ),
            ("DELETE".to_owned(), json!({"id": 1}), json!({"id": 1})),
        ]
    );
    let record = &records(&batch)[0];
    assert_eq!(record["table_name"], json!("users"));
    assert!(
        record["timestamp"].as_str().unwrap().ends_with('Z'),
        "{record}"
    );
    let ids: std::collections::HashSet<_> = batch.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 5, "one id per change");
    assert!(ids.iter().all(Option::is_some));
    source.accept().await.unwrap();
}

/// With `REPLICA IDENTITY FULL` an UPDATE's and a DELETE's old data is the whole old
/// row.
#[tokio::test]
async fn with_replica_identity_full_the_old_data_is_the_whole_row() {
    let Some((cluster, db)) = cluster("cdc-full").await else {
        return;
    };
    db.batch_execute(
        "CREATE TABLE users (id integer PRIMARY KEY, name text); \
         ALTER TABLE users REPLICA IDENTITY FULL; INSERT INTO users VALUES (1, 'ann')",
    )
    .await
    .unwrap();
    let mut source = SourceHarness::<PostgresSource>::open(
        config(
            &cluster.url(),
            json!({ "capture_operations": ["UPDATE", "DELETE"] }),
        ),
        None,
    )
    .await
    .unwrap();
    db.batch_execute(
        "INSERT INTO users VALUES (2, 'bob'); UPDATE users SET name = 'anna' WHERE id = 1; \
         DELETE FROM users WHERE id = 1",
    )
    .await
    .unwrap();
    let batch = next_batch(&mut source).await;
    assert_eq!(
        changes(&batch),
        [
            (
                "UPDATE".to_owned(),
                json!({"id": 1, "name": "anna"}),
                json!({"id": 1, "name": "ann"})
            ),
            (
                "DELETE".to_owned(),
                json!({"id": 1, "name": "anna"}),
                json!({"id": 1, "name": "anna"})
            ),
        ],
        "capture_operations leaves the INSERT out"
    );
}

/// The slot does not move while a batch waits for its outcome; a rejected batch comes
/// again with the same ids; an accepted one moves the slot to the batch's state, and
/// the next batch holds only later changes.
#[tokio::test]
async fn the_slot_moves_only_when_the_batch_is_accepted() {
    let Some((cluster, db)) = cluster("cdc-ack").await else {
        return;
    };
    db.batch_execute("CREATE TABLE users (id integer PRIMARY KEY)")
        .await
        .unwrap();
    let mut source = SourceHarness::<PostgresSource>::open(config(&cluster.url(), json!({})), None)
        .await
        .unwrap();
    let at_open = confirmed(&db).await;
    db.batch_execute("INSERT INTO users VALUES (1); INSERT INTO users VALUES (2)")
        .await
        .unwrap();
    let first = next_batch(&mut source).await;
    assert_eq!(first.messages.len(), 2);
    assert_eq!(
        confirmed(&db).await,
        at_open,
        "nothing consumed by the read"
    );
    source.reject().await.unwrap();
    let again = next_batch(&mut source).await;
    let ids = |batch: &ProducedBatch| batch.messages.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(changes(&again), changes(&first));
    assert_eq!(confirmed(&db).await, at_open);
    source.accept().await.unwrap();
    let saved = state_lsn(source.state().unwrap());
    assert_eq!(
        confirmed(&db).await,
        saved,
        "advanced to the batch's commit"
    );

    db.batch_execute("INSERT INTO users VALUES (3)")
        .await
        .unwrap();
    let next = next_batch(&mut source).await;
    assert_eq!(
        changes(&next),
        [("INSERT".to_owned(), json!({"id": 3}), Value::Null)]
    );
}

/// Killed between the read and the accept (nothing saved): the next run reads the same
/// changes again, with the same ids. Killed after the runtime saved the batch's state
/// but before the slot moved: the next run moves the slot to the state at open, and
/// the batch does not come again.
#[tokio::test]
async fn a_crash_replays_what_was_not_stored_and_skips_what_was() {
    let Some((cluster, db)) = cluster("cdc-crash").await else {
        return;
    };
    db.batch_execute("CREATE TABLE users (id integer PRIMARY KEY)")
        .await
        .unwrap();
    let settings = config(&cluster.url(), json!({}));
    let mut first_run = SourceHarness::<PostgresSource>::open(settings.clone(), None)
        .await
        .unwrap();
    db.batch_execute("INSERT INTO users VALUES (1), (2)")
        .await
        .unwrap();
    let polled = next_batch(&mut first_run).await;
    drop(first_run); // killed: no settle, no close

    let mut second_run = SourceHarness::<PostgresSource>::open(settings.clone(), None)
        .await
        .unwrap();
    let replayed = next_batch(&mut second_run).await;
    assert_eq!(changes(&replayed), changes(&polled));
    let ids = |batch: &ProducedBatch| batch.messages.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&replayed),
        ids(&polled),
        "a replay carries the same ids"
    );
    drop(second_run); // killed again, after the runtime saved the state this time

    let saved = replayed.state.clone().unwrap();
    let mut third_run = SourceHarness::<PostgresSource>::open(settings, Some(saved.clone()))
        .await
        .unwrap();
    assert_eq!(confirmed(&db).await, state_lsn(&saved), "advanced at open");
    db.batch_execute("INSERT INTO users VALUES (3)")
        .await
        .unwrap();
    let next = next_batch(&mut third_run).await;
    assert_eq!(
        changes(&next),
        [("INSERT".to_owned(), json!({"id": 3}), Value::Null)]
    );
}

/// Transactions with nothing to emit (other tables) move the slot without a batch, so
/// it holds no WAL for them.
#[tokio::test]
async fn transactions_with_nothing_to_emit_move_the_slot() {
    let Some((cluster, db)) = cluster("cdc-skip").await else {
        return;
    };
    db.batch_execute(
        "CREATE TABLE users (id integer PRIMARY KEY); CREATE TABLE other (id integer)",
    )
    .await
    .unwrap();
    let mut source = SourceHarness::<PostgresSource>::open(config(&cluster.url(), json!({})), None)
        .await
        .unwrap();
    db.batch_execute("INSERT INTO other VALUES (1); INSERT INTO users VALUES (1)")
        .await
        .unwrap();
    let batch = next_batch(&mut source).await;
    assert_eq!(batch.messages.len(), 1, "only the users change");
    source.accept().await.unwrap();
    let accepted = lsn(&state_lsn(source.state().unwrap()));
    db.batch_execute("INSERT INTO other VALUES (2)")
        .await
        .unwrap();
    // Each poll reads the `other` transaction, sends nothing, and passes it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let batch = source
            .poll_timeout(std::time::Duration::from_millis(50))
            .await
            .unwrap();
        assert!(batch.is_none(), "nothing to send: {batch:?}");
        let now = lsn(&confirmed(&db).await);
        if now > accepted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot stays at the accepted batch"
        );
    }
}

/// A `pg_lsn`'s text as a number.
fn lsn(text: &str) -> u64 {
    let (high, low) = text.split_once('/').unwrap();
    (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
}

/// A server without `wal_level = logical` is refused at open, saying what to change.
#[tokio::test]
async fn a_server_that_cannot_decode_is_refused_with_what_to_change() {
    let Some(url) = service_url(Service::Postgres) else {
        return;
    };
    let (db, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let level: String = db.query_one("SHOW wal_level", &[]).await.unwrap().get(0);
    if level == "logical" {
        // Another setup than ours: the private clusters test the working case.
        eprintln!("SKIPPED: the shared server has wal_level = logical");
        return;
    }
    let error = SourceHarness::<PostgresSource>::open(config(&url, json!({})), None)
        .await
        .err()
        .unwrap();
    assert!(
        error.message().contains(&format!(
            "needs wal_level = logical, and the server has wal_level = {level}"
        )),
        "{error}"
    );
}

/// The CDC keys are checked before anything opens.
#[test]
fn cdc_keys_are_checked() {
    let problems = SourceHarness::<PostgresSource>::validate(config(
        "postgres://u@h/db",
        json!({
            "replication_slot": "Bad-Slot",
            "capture_operations": ["INSERT", "UPSERT"],
            "cdc_backend": "pg_replicate",
        }),
    ));
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("plugin_config.replication_slot:"));
    assert!(problems[1].contains("\"UPSERT\""));
    assert!(problems[2].starts_with("plugin_config.cdc_backend:"));
    let fine = SourceHarness::<PostgresSource>::validate(config(
        "postgres://u@h/db",
        json!({ "cdc_backend": "builtin", "tables": [] }),
    ));
    assert_eq!(fine, Vec::<String>::new());
}

/// A backlog is read in batches that grow with the WAL the server would decode again
/// (its `restart_lsn` lags the slot's confirmed position between running-transactions
/// records): fewer batches than `batch_size` reads would take, each change once and
/// in commit order.
#[tokio::test]
async fn a_backlog_is_read_in_batches_sized_by_the_wal_decoded_again() {
    let Some((cluster, db)) = cluster("cdc-backlog").await else {
        return;
    };
    db.batch_execute("CREATE TABLE users (id integer PRIMARY KEY, name text)")
        .await
        .unwrap();
    let mut source = SourceHarness::<PostgresSource>::open(
        config(&cluster.url(), json!({ "batch_size": 500 })),
        None,
    )
    .await
    .unwrap();
    const ROWS: i64 = 40_000;
    db.batch_execute(&format!(
        "DO $$ BEGIN FOR t IN 0..{} LOOP INSERT INTO users \
         SELECT n, repeat('x', 100) FROM generate_series(t * 500, t * 500 + 499) AS n; \
         COMMIT; END LOOP; END $$",
        ROWS / 500 - 1
    ))
    .await
    .unwrap();
    let mut ids = Vec::new();
    let mut batches = 0;
    while (ids.len() as i64) < ROWS {
        let batch = next_batch(&mut source).await;
        batches += 1;
        ids.extend(
            records(&batch)
                .iter()
                .map(|record| record["data"]["id"].as_i64().unwrap()),
        );
        source.accept().await.unwrap();
    }
    assert_eq!(ids, (0..ROWS).collect::<Vec<_>>(), "each once, in order");
    assert!(
        batches < ROWS / 500,
        "{batches} batches: as many as batch_size reads"
    );
}

/// A state saved with another slot (the slot was dropped, or the database moved to
/// another server, whose positions are lower): the new slot's changes all come; the
/// old position does not hide them as if they were stored.
#[tokio::test]
async fn a_position_saved_with_another_slot_hides_no_change_of_a_new_one() {
    let Some((old_cluster, old_db)) = cluster("cdc-old-server").await else {
        return;
    };
    old_db
        .batch_execute("CREATE TABLE users (id integer PRIMARY KEY)")
        .await
        .unwrap();
    let mut old =
        SourceHarness::<PostgresSource>::open(config(&old_cluster.url(), json!({})), None)
            .await
            .unwrap();
    // Positions far past a fresh server's: each switch starts a new 16 MiB segment.
    old_db
        .batch_execute(
            "SELECT pg_switch_wal(); INSERT INTO users VALUES (0); SELECT pg_switch_wal(); \
             INSERT INTO users VALUES (1)",
        )
        .await
        .unwrap();
    let mut read = 0;
    while read < 2 {
        read += next_batch(&mut old).await.messages.len();
        old.accept().await.unwrap();
    }
    let saved = old.state().unwrap().to_vec();
    drop(old);
    drop(old_cluster);

    let Some((cluster, db)) = cluster("cdc-new-server").await else {
        return;
    };
    db.batch_execute("CREATE TABLE users (id integer PRIMARY KEY)")
        .await
        .unwrap();
    let mut source = SourceHarness::<PostgresSource>::open(
        config(&cluster.url(), json!({})),
        Some(saved.clone()),
    )
    .await
    .unwrap();
    let now: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        lsn(&now) < lsn(&state_lsn(&saved)),
        "{now}: the test needs lower positions"
    );
    db.batch_execute("INSERT INTO users VALUES (7)")
        .await
        .unwrap();
    let batch = next_batch(&mut source).await;
    assert_eq!(
        changes(&batch),
        [("INSERT".to_owned(), json!({"id": 7}), Value::Null)]
    );
}
