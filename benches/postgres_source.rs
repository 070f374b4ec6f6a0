//! PostgreSQL source throughput: rows per second the `postgres_source` reads from a
//! table of the local PostgreSQL (`IGGY_TEST_POSTGRES_URL`, default on loopback) and
//! settles, through `connector_sdk::testing` (each batch polled, then accepted, as the
//! runtime does once Iggy stored it; Iggy itself is not in the loop: see `test_server`
//! for what it takes). Polling mode, upstream's record JSON, for `batch_size` 1000
//! (upstream's default) and 10000, reading only and with `delete_after_read`.
//!
//! CDC mode: a private cluster with `wal_level = logical`
//! (`iggy_connectors_tests::postgres_cluster`), the same rows inserted after the slot
//! was made, in transactions of `BENCH_CDC_TX` rows (default 1000), then read from the
//! slot (`pg_logical_slot_peek_changes`) and each batch accepted, which advances the
//! slot. `BENCH_SKIP_POLLING=1` runs CDC alone.
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench postgres_source`
//! (`BENCH_ROWS` sets the table's rows, default 1000000).

use std::time::{Duration, Instant};

use connector_sdk::testing::SourceHarness;
use iggy_connector_postgres_source::PostgresSource;
use iggy_connectors_benches::env_or;
use iggy_connectors_tests::postgres_cluster::PostgresCluster;
use iggy_connectors_tests::services::{Service, service_url};
use tokio_postgres::NoTls;

fn main() {
    let Some(url) = service_url(Service::Postgres) else {
        return;
    };
    let rows: i64 = env_or("BENCH_ROWS", 1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("tokio: {error}"));
    runtime.block_on(async {
        let (db, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
        tokio::spawn(connection);
        println!("{rows} rows of (id bigserial, user_id, name, email, created_at, score)");
        println!(
            "{:<34} {:>8} {:>10} {:>9}",
            "case", "seconds", "rows/s", "MB/s out"
        );
        let polling_cases: &[(i64, bool)] = if env_or("BENCH_SKIP_POLLING", 0) == 1 {
            &[]
        } else {
            &[(1000, false), (10_000, false), (1000, true)]
        };
        for &(batch_size, delete) in polling_cases {
            let table = format!("bench_pg_source_{}", std::process::id());
            db.batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigserial PRIMARY KEY, \
                 user_id bigint, name text, email text, created_at timestamptz, score double precision); \
                 INSERT INTO {table} (user_id, name, email, created_at, score) \
                 SELECT n % 9973, 'user ' || n, 'user' || n || '@example.com', now(), n / 7.0 \
                 FROM generate_series(1, {rows}) AS n"
            ))
            .await
            .unwrap_or_else(|error| panic!("filling {table}: {error:?}"));
            // Not in the same implicit transaction: VACUUM refuses to run in one.
            db.batch_execute(&format!("VACUUM ANALYZE {table}"))
                .await
                .unwrap_or_else(|error| panic!("vacuuming {table}: {error:?}"));
            let config = serde_json::json!({
                "connection_string": url,
                "mode": "polling",
                "tables": [table],
                "batch_size": batch_size,
                "poll_interval": "1ms",
                "delete_after_read": delete,
            });
            let mut source = SourceHarness::<PostgresSource>::open(config, None)
                .await
                .unwrap_or_else(|error| panic!("opening the source: {error}"));
            let mut read = 0_i64;
            let mut bytes = 0_usize;
            let start = Instant::now();
            while read < rows {
                let batch = source
                    .poll_timeout(Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|error| panic!("poll: {error}"))
                    .unwrap_or_else(|| panic!("no rows after {read}"));
                read += batch.messages.len() as i64;
                bytes += batch.messages.iter().map(|m| m.payload.len()).sum::<usize>();
                source
                    .accept()
                    .await
                    .unwrap_or_else(|error| panic!("accept: {error}"));
            }
            let elapsed = start.elapsed().as_secs_f64();
            let label = format!(
                "batch_size {batch_size}{}",
                if delete { ", delete_after_read" } else { "" }
            );
            println!(
                "{label:<34} {elapsed:>8.3} {:>10.0} {:>9.1}",
                read as f64 / elapsed,
                bytes as f64 / elapsed / 1e6
            );
            let _ = source.close().await;
            db.batch_execute(&format!("DROP TABLE {table}"))
                .await
                .unwrap_or(());
        }
        cdc(rows).await;
    });
}

/// CDC: `rows` inserts in transactions of `BENCH_CDC_TX`, read from a slot.
async fn cdc(rows: i64) {
    let per_tx: i64 = env_or("BENCH_CDC_TX", 1000);
    let Some(cluster) = PostgresCluster::start("bench-cdc", &[("wal_level", "logical")]) else {
        return;
    };
    let url = cluster.url();
    let (db, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
    tokio::spawn(connection);
    db.batch_execute(
        "CREATE TABLE bench_cdc (id bigserial PRIMARY KEY, user_id bigint, name text, \
         email text, created_at timestamptz, score double precision)",
    )
    .await
    .unwrap_or_else(|error| panic!("creating the table: {error:?}"));
    for batch_size in [1000, 10_000] {
        let slot = format!("bench_slot_{batch_size}");
        let config = serde_json::json!({
            "connection_string": url,
            "mode": "cdc",
            "tables": ["bench_cdc"],
            "replication_slot": slot,
            "batch_size": batch_size,
            "poll_interval": "1ms",
        });
        // The slot is made at open: the changes come after it.
        let mut source = SourceHarness::<PostgresSource>::open(config, None)
            .await
            .unwrap_or_else(|error| panic!("opening the source: {error}"));
        let transactions = rows / per_tx;
        db.batch_execute(&format!(
            "DO $$ BEGIN FOR t IN 1..{transactions} LOOP \
             INSERT INTO bench_cdc (user_id, name, email, created_at, score) \
             SELECT n % 9973, 'user ' || n, 'user' || n || '@example.com', now(), n / 7.0 \
             FROM generate_series(1, {per_tx}) AS n; COMMIT; END LOOP; END $$"
        ))
        .await
        .unwrap_or_else(|error| panic!("inserting: {error:?}"));
        let total = transactions * per_tx;
        let mut read = 0_i64;
        let mut bytes = 0_usize;
        let start = Instant::now();
        while read < total {
            let batch = source
                .poll_timeout(Duration::from_secs(60))
                .await
                .unwrap_or_else(|error| panic!("poll: {error}"))
                .unwrap_or_else(|| panic!("no changes after {read}"));
            read += batch.messages.len() as i64;
            bytes += batch
                .messages
                .iter()
                .map(|m| m.payload.len())
                .sum::<usize>();
            source
                .accept()
                .await
                .unwrap_or_else(|error| panic!("accept: {error}"));
        }
        let elapsed = start.elapsed().as_secs_f64();
        let label = format!("cdc, batch_size {batch_size}, {per_tx} rows/tx");
        println!(
            "{label:<34} {elapsed:>8.3} {:>10.0} {:>9.1}",
            read as f64 / elapsed,
            bytes as f64 / elapsed / 1e6
        );
        let _ = source.close().await;
        db.batch_execute(&format!(
            "SELECT pg_drop_replication_slot('{slot}'); TRUNCATE bench_cdc"
        ))
        .await
        .unwrap_or_else(|error| panic!("dropping the slot: {error:?}"));
    }
}
