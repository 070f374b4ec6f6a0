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
use support::{Reaped, lines_of, runtime_command};

async fn database(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Writes the runtime config (Iggy at `iggy`, no API) and `connectors` (file name,
/// content) under `dir`; returns the config file.
fn write_config(
    dir: &std::path::Path,
    iggy: &str,
    connectors: &[(&str, String)],
) -> std::path::PathBuf {
    let connectors_dir = dir.join("connectors");
    std::fs::create_dir_all(&connectors_dir).unwrap();
    for (name, text) in connectors {
        std::fs::write(connectors_dir.join(name), text).unwrap();
    }
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[iggy]\naddress = \"{iggy}\"\n[state]\npath = \"{}\"\n[connectors]\nconfig_dir = \"{}\"\n[http]\nenabled = false\n",
            dir.join("state").display(),
            connectors_dir.display()
        ),
    )
    .unwrap();
    config
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
    let config = write_config(
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
    db.batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
        .await
        .unwrap();
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
    let config = write_config(
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
    db.batch_execute(&format!("DROP TABLE IF EXISTS \"{source_table}\""))
        .await
        .unwrap();
    db.batch_execute(&format!("DROP TABLE IF EXISTS \"{sink_table}\""))
        .await
        .unwrap();
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
    let config = write_config(
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
    db.batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
        .await
        .unwrap();
}
