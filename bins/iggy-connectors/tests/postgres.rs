//! The PostgreSQL connectors through the binary, killed with SIGKILL mid-stream and
//! started again: nothing lost, nothing doubled. Against the Iggy test server or a real
//! one (`IGGY_TEST_ADDRESS`), and the real PostgreSQL (`IGGY_TEST_POSTGRES_URL`).

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use iggy_connectors_tests::services::{Service, service_url};
use iggy_connectors_tests::{plugin_path, prepare_topic, temp_dir, unique};
use iggy_test_server::TestTarget;
use tokio_postgres::{Client, NoTls};

mod support;
use support::{Reaped, lines_of, runtime_command, runtime_with_connectors};

async fn database(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// (rows, distinct message ids, distinct `seq`s) in the sink's table.
async fn sink_counts(db: &Client, table: &str) -> (i64, i64, i64) {
    // The table appears with the sink's first open.
    let row = db
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT id), count(DISTINCT payload->>'seq') \
                 FROM \"{table}\""
            ),
            &[],
        )
        .await;
    match row {
        Ok(row) => (row.get(0), row.get(1), row.get(2)),
        Err(_) => (0, 0, 0),
    }
}

/// Drops `table` (the test's own, named by `unique`), when the test is done with it.
async fn drop_table(db: &Client, table: &str) {
    db.batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
        .await
        .unwrap();
}

/// The random source produces into Iggy; the PostgreSQL sink writes to a table. The
/// runtime is killed (SIGKILL) mid-stream and started again: in the end the table holds
/// one row per message produced, each id and each sequence number once. The sink may
/// get its last batch again after the restart (its offset was not stored yet); its
/// `ON CONFLICT (id) DO NOTHING` keeps that from doubling rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sink_killed_mid_stream_ends_with_one_row_per_message() {
    let Some(url) = service_url(Service::Postgres) else {
        return;
    };
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("postgres-sink-kill");
    let stream = unique("pgkill");
    let table = unique("pg_sink_kill").replace('-', "_");
    const TOTAL: i64 = 2_000;
    let source = format!(
        "type = \"source\"\nkey = \"random\"\nenabled = true\nversion = 0\nname = \"R\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\nbatch_length = 20\n\
         [plugin_config]\ninterval = \"2ms\"\nmax_count = {TOTAL}\nmessages_range = [20, 20]\npayload_size = 120\n",
        plugin_path("iggy_connector_random_source")
    );
    let sink = format!(
        "type = \"sink\"\nkey = \"postgres\"\nenabled = true\nversion = 0\nname = \"P\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\nbatch_length = 50\npoll_interval = \"2ms\"\n\
         [plugin_config]\nconnection_string = \"{url}\"\ntarget_table = \"{table}\"\nauto_create_table = true\npayload_format = \"json\"\n",
        plugin_path("iggy_connector_postgres_sink")
    );
    let config = runtime_with_connectors(
        &dir,
        &target.address,
        &[("random.toml", source), ("postgres.toml", sink)],
    );
    prepare_topic(&target.address, &stream, "t").await;
    let db = database(&url).await;
    let start = || {
        Reaped::spawn(
            runtime_command(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let first = start();
    while sink_counts(&db, &table).await.0 < 300 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Dropped: SIGKILL, then reaped.
    drop(first);
    let killed_at = sink_counts(&db, &table).await;
    assert!(killed_at.0 < TOTAL, "killed mid-stream: {killed_at:?}");

    let second = start();
    loop {
        let (rows, ids, seqs) = sink_counts(&db, &table).await;
        if ids == TOTAL {
            assert_eq!((rows, ids, seqs), (TOTAL, TOTAL, TOTAL));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ids} of {TOTAL} messages in the table after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let range = db
        .query_one(
            &format!("SELECT min((payload->>'seq')::bigint), max((payload->>'seq')::bigint) FROM \"{table}\""),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (range.get::<_, i64>(0), range.get::<_, i64>(1)),
        (0, TOTAL - 1)
    );
    drop(second);
    drop_table(&db, &table).await;
}

/// The PostgreSQL source reads a table with `delete_after_read` into Iggy, and the
/// PostgreSQL sink writes what Iggy holds to a second table. The runtime is killed
/// (SIGKILL) mid-stream, maybe between a poll and its accept, and started again: in the
/// end the source table is empty and the sink's table holds every row once. A row the
/// source deleted before Iggy stored it would be missing there; one it sent again is
/// the same message id, which the sink keeps once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_source_killed_mid_stream_loses_no_row_and_deletes_none_unsent() {
    let Some(url) = service_url(Service::Postgres) else {
        return;
    };
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("postgres-source-kill");
    let stream = unique("pgsrckill");
    let source_table = unique("pg_src_kill").replace('-', "_");
    let sink_table = unique("pg_src_kill_out").replace('-', "_");
    const TOTAL: i64 = 2_000;
    let db = database(&url).await;
    db.batch_execute(&format!(
        "CREATE TABLE \"{source_table}\" (id serial PRIMARY KEY, name text); \
         INSERT INTO \"{source_table}\" (name) SELECT 'row ' || n FROM generate_series(1, {TOTAL}) AS n"
    ))
    .await
    .unwrap();
    let source = format!(
        "type = \"source\"\nkey = \"pgsource\"\nenabled = true\nversion = 0\nname = \"PS\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\n\
         [plugin_config]\nconnection_string = \"{url}\"\nmode = \"polling\"\ntables = [\"{source_table}\"]\n\
         poll_interval = \"10ms\"\nbatch_size = 50\ndelete_after_read = true\nverbose_logging = true\n",
        plugin_path("iggy_connector_postgres_source")
    );
    let sink = format!(
        "type = \"sink\"\nkey = \"pgsink\"\nenabled = true\nversion = 0\nname = \"P\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\nbatch_length = 50\npoll_interval = \"2ms\"\n\
         [plugin_config]\nconnection_string = \"{url}\"\ntarget_table = \"{sink_table}\"\nauto_create_table = true\npayload_format = \"json\"\n",
        plugin_path("iggy_connector_postgres_sink")
    );
    let config = runtime_with_connectors(
        &dir,
        &target.address,
        &[("pgsource.toml", source), ("pgsink.toml", sink)],
    );
    prepare_topic(&target.address, &stream, "t").await;
    let start = || {
        Reaped::spawn(
            runtime_command(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    let left = || async {
        db.query_one(&format!("SELECT count(*) FROM \"{source_table}\""), &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let written = || async {
        db.query_one(
            &format!(
                "SELECT count(*), count(DISTINCT payload->'data'->>'id') FROM \"{sink_table}\""
            ),
            &[],
        )
        .await
        .map_or((0, 0), |row| (row.get::<_, i64>(0), row.get::<_, i64>(1)))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut first = Reaped::spawn(
        runtime_command(&config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let log = lines_of(first.stderr.take().expect("stderr is piped"));
    // Rows the source read (its `rows read` lines, one per full batch of 50).
    let mut read = 0;
    let mut count_reads = |wait: Duration| {
        let mut next = log.recv_timeout(wait).ok();
        while let Some(line) = next {
            if line.contains("rows read") {
                read += 50;
            }
            next = log.try_recv().ok();
        }
        read
    };
    while left().await > TOTAL - 300 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        count_reads(Duration::from_millis(5));
    }
    // On our test server, the kill lands between a poll and its accept: replies are
    // held back, so the batch the source reads next waits for its send, and the runtime
    // is killed once rows were read that are still in the table. (On a real server the
    // kill lands wherever the stream is.)
    if let Some(server) = &target.server {
        server.delay_replies(Duration::from_secs(5));
        loop {
            let read = count_reads(Duration::from_millis(20));
            let deleted = TOTAL - left().await;
            if read > deleted {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{read} rows read, {deleted} deleted: rows deleted before Iggy stored them"
            );
        }
    }
    drop(first); // SIGKILL, then reaped
    let at_kill = left().await;
    assert!(at_kill > 0, "killed mid-stream, {at_kill} rows left");
    // None deleted unsent: every row gone from the source is in Iggy, so the sink gets
    // it after the restart.
    let second = start();
    loop {
        let (rows, distinct) = written().await;
        if distinct == TOTAL && left().await == 0 {
            assert_eq!(rows, TOTAL, "one row per message id");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{distinct} of {TOTAL} rows written, {} left in the source",
            left().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);
    drop_table(&db, &source_table).await;
    drop_table(&db, &sink_table).await;
}

/// A message the table refuses (a CHECK constraint breaks) is a permanent error for
/// the connector's `error_policy`: with `skip`, the runtime retries the batch one
/// message at a time and passes over exactly the refused ones; every other message of
/// those batches is written. (Were the refusal taken for a passing failure, the
/// sink's 10 s retry delay would hold each batch far past the deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sink_rows_the_table_refuses_go_to_the_error_policy() {
    let Some(url) = service_url(Service::Postgres) else {
        return;
    };
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("postgres-sink-refused");
    let stream = unique("pgrefused");
    let table = unique("pg_sink_refused").replace('-', "_");
    const TOTAL: i64 = 200;
    let db = database(&url).await;
    db.batch_execute(&format!(
        "CREATE TABLE \"{table}\" (id DECIMAL(39, 0) PRIMARY KEY, iggy_offset BIGINT, \
         iggy_timestamp TIMESTAMPTZ, iggy_stream TEXT, iggy_topic TEXT, iggy_partition_id INTEGER, \
         iggy_checksum BIGINT, iggy_origin_timestamp TIMESTAMPTZ, payload JSONB \
         CHECK ((payload->>'seq')::bigint % 10 <> 3), created_at TIMESTAMPTZ DEFAULT NOW())"
    ))
    .await
    .unwrap();
    let source = format!(
        "type = \"source\"\nkey = \"random\"\nenabled = true\nversion = 0\nname = \"R\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\nbatch_length = 20\n\
         [plugin_config]\ninterval = \"2ms\"\nmax_count = {TOTAL}\nmessages_range = [20, 20]\n",
        plugin_path("iggy_connector_random_source")
    );
    let sink = format!(
        "type = \"sink\"\nkey = \"postgres\"\nenabled = true\nversion = 0\nname = \"P\"\npath = \"{}\"\n\
         error_policy = \"skip\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\nbatch_length = 50\npoll_interval = \"2ms\"\n\
         [plugin_config]\nconnection_string = \"{url}\"\ntarget_table = \"{table}\"\npayload_format = \"json\"\nretry_delay = \"10s\"\n",
        plugin_path("iggy_connector_postgres_sink")
    );
    let config = runtime_with_connectors(
        &dir,
        &target.address,
        &[("random.toml", source), ("postgres.toml", sink)],
    );
    prepare_topic(&target.address, &stream, "t").await;
    let runtime = Reaped::spawn(
        runtime_command(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = TOTAL - TOTAL / 10;
    loop {
        let (rows, ids, seqs) = sink_counts(&db, &table).await;
        if rows == expected {
            assert_eq!((ids, seqs), (expected, expected));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{rows} of the {expected} rows the table takes were written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(runtime);
    drop_table(&db, &table).await;
}

/// Changes per table in the CDC kill test.
const CDC_PER_TABLE: usize = 600;

/// The `j`-th change of a table in the CDC kill test, as SQL, and as the record's
/// (operation, data) the source must emit for it: every third change inserts row `j`,
/// the next updates that row, the next deletes it.
fn cdc_change(table: &str, j: usize) -> (String, (String, serde_json::Value)) {
    use serde_json::json;
    match j % 3 {
        0 => (
            format!("INSERT INTO {table} (id, n) VALUES ({j}, {j})"),
            ("INSERT".to_owned(), json!({ "id": j, "n": j })),
        ),
        1 => (
            format!("UPDATE {table} SET n = {j} WHERE id = {}", j - 1),
            ("UPDATE".to_owned(), json!({ "id": j - 1, "n": j })),
        ),
        _ => (
            format!("DELETE FROM {table} WHERE id = {}", j - 2),
            ("DELETE".to_owned(), json!({ "id": j - 2 })),
        ),
    }
}

/// Commits changes `range` of both CDC tables, one transaction each, alternating.
async fn commit_cdc_changes(db: &Client, range: std::ops::Range<usize>) {
    for j in range {
        for table in ["cdc_a", "cdc_b"] {
            db.batch_execute(&cdc_change(table, j).0).await.unwrap();
        }
    }
}

/// What the file sink wrote: per line, (message id, table, operation, data).
fn cdc_written(output: &std::path::Path) -> Vec<(String, String, String, serde_json::Value)> {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    text.lines()
        // The last line may be half written while the sink runs.
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|line| {
            let record = &line["payload"];
            (
                line["id"].as_str().unwrap().to_owned(),
                record["table_name"].as_str().unwrap().to_owned(),
                record["operation_type"].as_str().unwrap().to_owned(),
                record["data"].clone(),
            )
        })
        .collect()
}

/// The PostgreSQL source in CDC mode (a private cluster with `wal_level = logical`)
/// produces every INSERT, UPDATE and DELETE of two tables into Iggy, and a file sink in
/// the same runtime writes what Iggy holds. Changes are committed while the runtime
/// runs, the runtime is killed (SIGKILL) mid-stream (on our test server, once a batch
/// was read from the slot and before it was stored and the slot advanced), more
/// changes are committed while it is down, and more after it started again. In the
/// end every change is in Iggy, and per table the first copy of each (by message id;
/// a replay repeats ids) is in commit order: nothing skipped, nothing reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cdc_source_killed_mid_stream_delivers_every_change_in_commit_order() {
    use iggy_connectors_tests::postgres_cluster::PostgresCluster;
    let Some(cluster) = PostgresCluster::start("cdc-kill", &[("wal_level", "logical")]) else {
        return;
    };
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("postgres-cdc-kill");
    let stream = unique("pgcdckill");
    let output = dir.join("out.jsonl");
    let db = database(&cluster.url()).await;
    db.batch_execute(
        "CREATE TABLE cdc_a (id integer PRIMARY KEY, n integer); \
         CREATE TABLE cdc_b (id integer PRIMARY KEY, n integer)",
    )
    .await
    .unwrap();
    let source = format!(
        "type = \"source\"\nkey = \"pgcdc\"\nenabled = true\nversion = 0\nname = \"CDC\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\n\
         [plugin_config]\nconnection_string = \"{}\"\nmode = \"cdc\"\ntables = [\"cdc_a\", \"public.cdc_b\"]\n\
         replication_slot = \"kill_slot\"\npoll_interval = \"10ms\"\nbatch_size = 50\nverbose_logging = true\n",
        plugin_path("iggy_connector_postgres_source"),
        cluster.url(),
    );
    let sink = format!(
        "type = \"sink\"\nkey = \"file\"\nenabled = true\nversion = 0\nname = \"F\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\nbatch_length = 500\npoll_interval = \"5ms\"\n\
         [plugin_config]\npath = \"{}\"\nformat = \"json\"\nfsync = false\n",
        plugin_path("iggy_connector_file_sink"),
        output.display(),
    );
    let config = runtime_with_connectors(
        &dir,
        &target.address,
        &[("pgcdc.toml", source), ("file.toml", sink)],
    );
    prepare_topic(&target.address, &stream, "t").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let distinct = |output: &std::path::Path| {
        cdc_written(output)
            .into_iter()
            .map(|(id, ..)| id)
            .collect::<std::collections::HashSet<_>>()
            .len()
    };

    let mut first = Reaped::spawn(
        runtime_command(&config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let log = lines_of(first.stderr.take().expect("stderr is piped"));
    // The slot is made at the source's first open: changes before it are not captured.
    loop {
        let made = db
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'kill_slot'",
                &[],
            )
            .await
            .unwrap();
        if made.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the source made no slot");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    const FIRST: usize = 250;
    commit_cdc_changes(&db, 0..FIRST).await;
    while distinct(&output) < 200 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // On our test server the kill lands between a read and its accept: replies are
    // held back, so the batch read next waits for its send, and the runtime is killed
    // once a batch was read past the slot's confirmed position. (On a real server the
    // kill lands wherever the stream is.)
    if let Some(server) = &target.server {
        server.delay_replies(Duration::from_secs(3));
    }
    commit_cdc_changes(&db, FIRST..FIRST + 20).await;
    if target.server.is_some() {
        let lsn_of = |text: &str| {
            let (high, low) = text.split_once('/')?;
            Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
        };
        loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the source reads the new changes");
            let Some(read) = line
                .split_whitespace()
                .filter(|_| line.contains("changes read"))
                .find_map(|field| field.strip_prefix("lsn="))
                .and_then(lsn_of)
            else {
                continue;
            };
            let confirmed: String = db
                .query_one(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots \
                     WHERE slot_name = 'kill_slot'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if lsn_of(&confirmed).is_some_and(|confirmed| read > confirmed) {
                break;
            }
        }
    }
    drop(first); // SIGKILL, then reaped
    let at_kill = distinct(&output);
    assert!(
        at_kill < 2 * CDC_PER_TABLE,
        "killed mid-stream: {at_kill} changes out"
    );
    // Committed while the runtime is down.
    commit_cdc_changes(&db, FIRST + 20..400).await;
    let second = Reaped::spawn(
        runtime_command(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // Committed while it runs again.
    commit_cdc_changes(&db, 400..CDC_PER_TABLE).await;
    while distinct(&output) < 2 * CDC_PER_TABLE {
        assert!(
            Instant::now() < deadline,
            "only {} of {} changes in Iggy after the restart",
            distinct(&output),
            2 * CDC_PER_TABLE
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);

    let written = cdc_written(&output);
    eprintln!(
        "CDC kill: {} changes out at the kill, {} lines for {} changes",
        at_kill,
        written.len(),
        2 * CDC_PER_TABLE
    );
    let mut seen = std::collections::HashSet::new();
    for table in ["cdc_a", "cdc_b"] {
        let firsts: Vec<(String, serde_json::Value)> = written
            .iter()
            .filter(|(id, name, ..)| name == table && seen.insert(id.clone()))
            .map(|(_, _, operation, data)| (operation.clone(), data.clone()))
            .collect();
        let expected: Vec<(String, serde_json::Value)> =
            (0..CDC_PER_TABLE).map(|j| cdc_change(table, j).1).collect();
        assert_eq!(firsts.len(), expected.len(), "{table}: every change once");
        for (at, (got, want)) in firsts.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "{table}: change {at} out of commit order");
        }
    }
    assert_eq!(seen.len(), 2 * CDC_PER_TABLE, "nothing but these changes");
}

/// `url` with its database (the path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{database}{query}")
}

/// Upstream's two PostgreSQL configs (the shared fixtures, unchanged: upstream's
/// stream, topics, tables, consumer group, payload format) run through the binary,
/// only `path` and `connection_string` given by the per-connector environment
/// variables: the source reads upstream's `users` and `orders` tables into
/// `user_events/users`, and the sink writes that topic to upstream's `iggy_messages`
/// table. Upstream's fixed table names live in a database made for this run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_postgres_configs_run_unchanged_through_the_binary() {
    let Some(url) = service_url(Service::Postgres) else {
        return;
    };
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("postgres-upstream");
    let admin = database(&url).await;
    let name = unique("upstream_pg").replace('-', "_");
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let db_url = with_database(&url, &name);
    let db = database(&db_url).await;
    const ROWS: i64 = 30;
    let marker = unique("row");
    db.batch_execute(&format!(
        "CREATE TABLE users (id serial PRIMARY KEY, name text); \
         CREATE TABLE orders (id serial PRIMARY KEY, name text); \
         INSERT INTO users (name) SELECT '{marker} user ' || n FROM generate_series(1, {ROWS}) AS n; \
         INSERT INTO orders (name) SELECT '{marker} order ' || n FROM generate_series(1, {ROWS}) AS n"
    ))
    .await
    .unwrap();
    let fixtures = iggy_connectors_tests::upstream_connectors_dir();
    let connectors: Vec<(&str, String)> = ["postgres_source.toml", "postgres_sink.toml"]
        .into_iter()
        .map(|file| (file, std::fs::read_to_string(fixtures.join(file)).unwrap()))
        .collect();
    let config = runtime_with_connectors(&dir, &target.address, &connectors);
    prepare_topic(&target.address, "user_events", "users").await;
    prepare_topic(&target.address, "user_events", "orders").await;
    let source_path = plugin_path("iggy_connector_postgres_source");
    let sink_path = plugin_path("iggy_connector_postgres_sink");
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let runtime = Reaped::spawn(
        runtime_command(&config)
            .env("NO_COLOR", "1")
            .env("IGGY_CONNECTORS_SOURCE_POSTGRES_PATH", &source_path)
            .env(
                "IGGY_CONNECTORS_SOURCE_POSTGRES_PLUGIN_CONFIG_CONNECTION_STRING",
                &db_url,
            )
            .env("IGGY_CONNECTORS_SINK_POSTGRES_PATH", &sink_path)
            .env(
                "IGGY_CONNECTORS_SINK_POSTGRES_PLUGIN_CONFIG_CONNECTION_STRING",
                &db_url,
            )
            .stdout(Stdio::null())
            .stderr(log),
    );
    // Upstream's record JSON, as the sink's `bytea` payload; rows of an earlier run on
    // a real server (upstream's stream is fixed) carry another marker.
    let flowed = format!(
        "SELECT count(DISTINCT (record->>'table_name', record->'data'->>'id')) FROM \
         (SELECT convert_from(payload, 'UTF8')::jsonb AS record FROM iggy_messages) AS r \
         WHERE record->'data'->>'name' LIKE '{marker} %' AND record->>'operation_type' = 'SELECT'"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // The sink makes the table (upstream's `auto_create_table`) when it opens.
        let written = db
            .query_one(&flowed, &[])
            .await
            .map_or(0, |row| row.get::<_, i64>(0));
        if written == 2 * ROWS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{written} of {} rows went through Iggy to iggy_messages; the runtime's log:\n{}",
            2 * ROWS,
            std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Upstream's layout: the metadata, checksum and origin timestamp columns are there.
    let row = db
        .query_one(
            "SELECT iggy_stream, iggy_topic, iggy_checksum IS NOT NULL, \
             iggy_origin_timestamp IS NOT NULL FROM iggy_messages LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, bool>(2),
            row.get::<_, bool>(3)
        ),
        ("user_events".to_owned(), "users".to_owned(), true, true)
    );
    drop(runtime);
    drop(db);
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}
