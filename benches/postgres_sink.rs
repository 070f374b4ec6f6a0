//! PostgreSQL sink throughput: rows per second into the local PostgreSQL
//! (`IGGY_TEST_POSTGRES_URL`, default on loopback) for ~200-byte JSON messages, three
//! ways in the same run, each into a fresh table of upstream's layout:
//!
//! - `ours`: the `postgres_sink` (linked in, through `connector_sdk::testing`), batches
//!   of 1000, one transaction each: new rows go by one binary COPY straight into the
//!   table; then the same rows again (`ours again`: every batch a redelivery, whose
//!   COPY breaks the primary key), which go by COPY into the staging table and
//!   `INSERT ... ON CONFLICT (id) DO NOTHING`;
//! - `upstream`: what upstream's sink does: a prepared multi-row INSERT of 100 rows
//!   (its `batch_size` default) with bound parameters, statements one after another,
//!   each committed by itself (no de-duplication);
//! - `bare COPY`: one binary COPY of each 1000 rows straight into the table, nothing
//!   else: the floor for writing these rows.
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench postgres_sink`
//! (`BENCH_ROWS` sets the rows per case, default 100000; `BENCH_FORMAT` the payload
//! column, `json` (default) or `bytea`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
use futures_util::SinkExt;
use iggy_connector_postgres_sink::PostgresSink;
use iggy_connectors_benches::env_or;
use iggy_connectors_tests::services::{Service, service_url};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

const BATCH: usize = 1000;
const UPSTREAM_ROWS_PER_INSERT: usize = 100;
const STREAM: &str = "bench";
const TOPIC: &str = "events";
const PARTITION: i32 = 1;

/// One message: about 200 bytes of JSON.
struct Row {
    id: u128,
    offset: u64,
    timestamp: u64,
    payload: Bytes,
}

fn rows(count: usize) -> Vec<Row> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64);
    (0..count)
        .map(|n| {
            let mut payload = format!(
                r#"{{"seq":{n},"user_id":{},"event":"page_view","path":"/products/{}","ok":true,"text":""#,
                n % 9973,
                n % 517
            );
            while payload.len() < 198 {
                payload.push('x');
            }
            payload.push_str("\"}");
            Row {
                id: 0x1234_5678_9abc_def0_u128 << 64 | n as u128,
                offset: n as u64,
                timestamp: now + n as u64,
                payload: Bytes::from(payload),
            }
        })
        .collect()
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
    tokio::spawn(connection);
    client
}

/// A fresh table of upstream's layout (what the sink's `auto_create_table` makes).
async fn fresh_table(db: &Client, table: &str, payload_type: &str) {
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id DECIMAL(39, 0) PRIMARY KEY, \
         iggy_offset BIGINT, iggy_timestamp TIMESTAMP WITH TIME ZONE, iggy_stream TEXT, \
         iggy_topic TEXT, iggy_partition_id INTEGER, iggy_checksum BIGINT, \
         iggy_origin_timestamp TIMESTAMP WITH TIME ZONE, payload {payload_type}, \
         created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW())"
    ))
    .await
    .unwrap_or_else(|error| panic!("creating {table}: {error}"));
}

async fn row_count(db: &Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or_else(|error| panic!("counting {table}: {error}"))
}

async fn ours(url: &str, table: &str, format: &str, rows: &[Row]) -> Duration {
    let batches: Vec<TestBatch> = rows
        .chunks(BATCH)
        .map(|chunk| {
            TestBatch::new()
                .stream(STREAM)
                .topic(TOPIC)
                .partition_id(PARTITION as u32)
                .messages(chunk.iter().map(|row| {
                    TestMessage::new(row.payload.clone())
                        .id(row.id)
                        .offset(row.offset)
                        .timestamp(row.timestamp)
                        .origin_timestamp(row.timestamp)
                }))
        })
        .collect();
    let config = serde_json::json!({
        "connection_string": url,
        "target_table": table,
        "payload_format": format,
    });
    let mut sink = SinkHarness::<PostgresSink>::open(config)
        .await
        .unwrap_or_else(|error| panic!("opening the sink: {error}"));
    let start = Instant::now();
    for batch in &batches {
        sink.consume(batch)
            .await
            .unwrap_or_else(|error| panic!("the sink: {error}"));
    }
    let elapsed = start.elapsed();
    let _ = sink.close().await;
    elapsed
}

fn micros_to_system_time(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

async fn upstream(db: &Client, table: &str, json: bool, rows: &[Row]) -> Duration {
    const COLUMNS: usize = 9;
    let payload_param = if json { "::text::jsonb" } else { "" };
    let statement_for = |count: usize| {
        let values: Vec<String> = (0..count)
            .map(|row| {
                let base = row * COLUMNS;
                let mut value = format!("(${}::text::numeric", base + 1);
                for column in 2..COLUMNS {
                    value.push_str(&format!(", ${}", base + column));
                }
                value.push_str(&format!(", ${}{payload_param})", base + COLUMNS));
                value
            })
            .collect();
        format!(
            "INSERT INTO {table} (id, iggy_offset, iggy_timestamp, iggy_stream, iggy_topic, \
             iggy_partition_id, iggy_checksum, iggy_origin_timestamp, payload) VALUES {}",
            values.join(", ")
        )
    };
    // Prepared once, as sqlx's statement cache does for upstream.
    let full = db
        .prepare(&statement_for(UPSTREAM_ROWS_PER_INSERT))
        .await
        .unwrap_or_else(|error| panic!("preparing: {error}"));
    let start = Instant::now();
    for chunk in rows.chunks(UPSTREAM_ROWS_PER_INSERT) {
        let ids: Vec<String> = chunk.iter().map(|row| row.id.to_string()).collect();
        let offsets: Vec<i64> = chunk.iter().map(|row| row.offset as i64).collect();
        let times: Vec<SystemTime> = chunk
            .iter()
            .map(|row| micros_to_system_time(row.timestamp))
            .collect();
        let texts: Vec<&str> = chunk
            .iter()
            .map(|row| std::str::from_utf8(&row.payload).unwrap_or_default())
            .collect();
        let blobs: Vec<&[u8]> = chunk.iter().map(|row| row.payload.as_ref()).collect();
        let checksum = 0_i64;
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * COLUMNS);
        for at in 0..chunk.len() {
            params.push(&ids[at]);
            params.push(&offsets[at]);
            params.push(&times[at]);
            params.push(&STREAM);
            params.push(&TOPIC);
            params.push(&PARTITION);
            params.push(&checksum);
            params.push(&times[at]);
            if json {
                params.push(&texts[at]);
            } else {
                params.push(&blobs[at]);
            }
        }
        let result = if chunk.len() == UPSTREAM_ROWS_PER_INSERT {
            db.execute(&full, &params).await
        } else {
            db.execute(statement_for(chunk.len()).as_str(), &params)
                .await
        };
        result.unwrap_or_else(|error| panic!("upstream's insert: {error}"));
    }
    start.elapsed()
}

/// `value` as PostgreSQL's binary NUMERIC (base-10000 digits, most significant first).
fn put_numeric(out: &mut BytesMut, value: u128) {
    let mut digits = Vec::new();
    let mut rest = value;
    while rest > 0 {
        digits.push((rest % 10_000) as i16);
        rest /= 10_000;
    }
    digits.reverse();
    out.put_i32(8 + 2 * digits.len() as i32);
    out.put_i16(digits.len() as i16);
    out.put_i16(digits.len().saturating_sub(1) as i16); // weight
    out.put_u16(0); // sign: positive
    out.put_u16(0); // display scale
    for digit in digits {
        out.put_i16(digit);
    }
}

async fn bare_copy(db: &Client, table: &str, json: bool, rows: &[Row]) -> Duration {
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    let statement = format!(
        "COPY {table} (id, iggy_offset, iggy_timestamp, iggy_stream, iggy_topic, \
         iggy_partition_id, iggy_checksum, iggy_origin_timestamp, payload) FROM STDIN (FORMAT binary)"
    );
    let start = Instant::now();
    for chunk in rows.chunks(BATCH) {
        // Encoding counts: a writer has to do it too.
        let mut out = BytesMut::with_capacity(chunk.len() * 300);
        out.put_slice(b"PGCOPY\n\xff\r\n\0");
        out.put_i32(0);
        out.put_i32(0);
        for row in chunk {
            out.put_i16(9);
            put_numeric(&mut out, row.id);
            out.put_i32(8);
            out.put_i64(row.offset as i64);
            out.put_i32(8);
            out.put_i64(row.timestamp as i64 - POSTGRES_EPOCH_MICROS);
            out.put_i32(STREAM.len() as i32);
            out.put_slice(STREAM.as_bytes());
            out.put_i32(TOPIC.len() as i32);
            out.put_slice(TOPIC.as_bytes());
            out.put_i32(4);
            out.put_i32(PARTITION);
            out.put_i32(8);
            out.put_i64(0);
            out.put_i32(8);
            out.put_i64(row.timestamp as i64 - POSTGRES_EPOCH_MICROS);
            if json {
                out.put_i32(row.payload.len() as i32 + 1);
                out.put_u8(1);
            } else {
                out.put_i32(row.payload.len() as i32);
            }
            out.put_slice(&row.payload);
        }
        out.put_i16(-1);
        let sink = db
            .copy_in::<_, Bytes>(&statement)
            .await
            .unwrap_or_else(|error| panic!("COPY: {error}"));
        let mut sink = std::pin::pin!(sink);
        sink.send(out.freeze())
            .await
            .unwrap_or_else(|error| panic!("COPY: {error}"));
        sink.as_mut()
            .finish()
            .await
            .unwrap_or_else(|error| panic!("COPY: {error}"));
    }
    start.elapsed()
}

fn main() {
    let Some(url) = service_url(Service::Postgres) else {
        return;
    };
    let count: usize = env_or("BENCH_ROWS", 100_000);
    let format: String = env_or("BENCH_FORMAT", "json".to_owned());
    let json = format != "bytea";
    let payload_type = if json { "JSONB" } else { "BYTEA" };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("tokio: {error}"));
    runtime.block_on(async {
        let db = connect(&url).await;
        let rows = rows(count);
        let mean = rows.iter().map(|row| row.payload.len()).sum::<usize>() / rows.len().max(1);
        println!(
            "{count} rows of {mean} B JSON, payload column {payload_type}, batches of {BATCH}"
        );
        println!(
            "{:<34} {:>10} {:>12} {:>10}",
            "case", "seconds", "rows/s", "vs upstream"
        );
        let process = std::process::id();
        let mut upstream_rate = 0.0;
        let cases = ["upstream", "ours", "ours again", "bare COPY"];
        for case in cases {
            // "ours again" writes the same rows into the table "ours" filled: every batch
            // a redelivery, so every one goes through the staging table.
            let table = format!(
                "bench_pg_sink_{}_{process}",
                case.trim_end_matches(" again").replace(' ', "_")
            );
            if case != "ours again" {
                fresh_table(&db, &table, payload_type).await;
            }
            // Settle the server between cases (checkpoints, autovacuum of the last one).
            db.batch_execute("CHECKPOINT").await.unwrap_or(());
            let elapsed = match case {
                "upstream" => upstream(&db, &table, json, &rows).await,
                "ours" | "ours again" => ours(&url, &table, &format, &rows).await,
                _ => bare_copy(&db, &table, json, &rows).await,
            };
            assert_eq!(row_count(&db, &table).await, count as i64, "{case}");
            let rate = count as f64 / elapsed.as_secs_f64();
            if case == "upstream" {
                upstream_rate = rate;
            }
            let label = match case {
                "upstream" => "upstream (INSERT of 100 rows)",
                "ours" => "ours (new rows: direct COPY)",
                "ours again" => "ours (all repeats: staged, ON CONFLICT)",
                _ => "bare COPY (binary, no dedup)",
            };
            println!(
                "{label:<40} {:>8.3} {:>10.0} {:>10.2}x",
                elapsed.as_secs_f64(),
                rate,
                rate / upstream_rate
            );
            if case != "ours" {
                db.batch_execute(&format!("DROP TABLE {table}"))
                    .await
                    .unwrap_or(());
            }
        }
    });
}
