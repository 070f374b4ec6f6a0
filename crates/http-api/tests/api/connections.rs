//! What one client may hold of the server: idle and slow connections are closed after
//! `http.header_read_timeout`, connections beyond `http.max_connections` are turned
//! away, and neither stops `/health` from answering.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{call, fixture};

/// Reads until the server closes the connection (or `limit` passes); whether it did.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 512];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before closing is fine: keep reading to the end.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// The bar: with 300 connections open and silent, `/health` still answers
/// within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_connections_leave_health_answering() {
    let api = fixture(|_| {}).await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(api.address).await.unwrap());
    }
    // Half of them start a request and never finish its head.
    for stream in idle.iter_mut().step_by(2) {
        stream
            .write_all(b"GET /sinks HTTP/1.1\r\nhost: lo")
            .await
            .unwrap();
    }
    let health = tokio::time::timeout(
        Duration::from_secs(1),
        call(api.address, "GET", "/health", &[], None),
    )
    .await
    .expect("/health answers within a second beside 300 idle connections");
    assert_eq!(health.status, StatusCode::OK);
    drop(idle);
    api.stop().await;
}

/// A connection that sends nothing, or only part of a request head, is closed once
/// `header_read_timeout` has passed; one that finished a request gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_after_the_header_read_timeout() {
    let api = fixture(|http| {
        http.header_read_timeout = config_provider::ConfigDuration::from_millis(300);
    })
    .await;
    let mut silent = TcpStream::connect(api.address).await.unwrap();
    let mut slow = TcpStream::connect(api.address).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    // Well past the configured timeout, well short of the default (10 s).
    let limit = Duration::from_secs(5);
    assert!(
        closed_by_server(&mut silent, limit).await,
        "a silent connection stays open"
    );
    assert!(
        closed_by_server(&mut slow, limit).await,
        "a slow request head stays open"
    );
    let health = call(api.address, "GET", "/health", &[], None).await;
    assert_eq!(health.status, StatusCode::OK);
    api.stop().await;
}

/// Connections beyond `max_connections` wait (in the listen backlog) instead of being
/// served; once a held one goes, a waiting one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_until_one_ends() {
    let api = fixture(|http| http.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(api.address).await.unwrap());
    }
    let mut waiting = TcpStream::connect(api.address).await.unwrap();
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        waiting.read_to_string(&mut response),
    )
    .await;
    assert!(early.is_err(), "served beyond the limit: {response:?}");
    held.pop();
    tokio::time::timeout(
        Duration::from_secs(20),
        waiting.read_to_string(&mut response),
    )
    .await
    .expect("served once a held connection ended")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(held);
    api.stop().await;
}

/// A client that sends requests and never reads the answers is disconnected once the
/// server has waited `header_read_timeout` to write; it cannot hold its connection (and
/// a place under the limit) for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_disconnected() {
    let api = fixture(|http| {
        http.header_read_timeout = config_provider::ConfigDuration::from_millis(300);
    })
    .await;
    let mut stream = TcpStream::connect(api.address).await.unwrap();
    let requests = b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n".repeat(1000);
    let disconnected = tokio::time::timeout(Duration::from_secs(30), async {
        while stream.write_all(&requests).await.is_ok() {}
    })
    .await;
    assert!(
        disconnected.is_ok(),
        "the server kept a connection whose client reads nothing"
    );
    let health = call(api.address, "GET", "/health", &[], None).await;
    assert_eq!(health.status, StatusCode::OK);
    api.stop().await;
}
