//! The test server's own features, through the real client: fault injection, TLS,
//! membership cleanup, and the binary. (These need our server, so they ignore
//! `IGGY_TEST_ADDRESS`.)

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use iggy::clients::client_builder::TcpClientBuilder;
use iggy::prelude::*;
use iggy_test_server::{ServerConfig, TestServer, TlsFiles, eventually};

const DEADLINE: Duration = Duration::from_secs(30);

async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("no answer in time")
}

fn builder(address: &str) -> TcpClientBuilder {
    IggyClient::builder()
        .with_tcp()
        .with_server_address(address.to_owned())
        .with_auto_sign_in(AutoLogin::Enabled(Credentials::UsernamePassword(
            "iggy".to_owned(),
            "iggy".into(),
        )))
        .with_reconnection_max_retries(Some(20))
        .with_reconnection_interval(NonZeroIggyDuration::from_str("50ms").unwrap())
        // The default waits 5 s before re-establishing a dropped connection.
        .with_reestablish_after(IggyDuration::from_str("50ms").unwrap())
}

async fn client(server: &TestServer) -> IggyClient {
    let client = builder(&server.address().to_string()).build().unwrap();
    within(client.connect()).await.unwrap();
    client
}

fn id(name: &str) -> Identifier {
    Identifier::named(name).unwrap()
}

async fn topic(client: &IggyClient, stream: &str, partitions: u32) {
    client.create_stream(stream).await.unwrap();
    let options = TopicCreateOptions {
        partitions_count: Some(partitions),
        ..TopicCreateOptions::default()
    };
    client
        .create_topic(&id(stream), "t", &options)
        .await
        .unwrap();
}

async fn send(client: &IggyClient, stream: &str, payload: &str) -> Result<(), IggyError> {
    let mut messages = [IggyMessage::from_str(payload).unwrap()];
    client
        .send_messages(
            &id(stream),
            &id("t"),
            &Partitioning::partition_id(0),
            &mut messages,
        )
        .await
        .map(|_| ())
}

/// Retries `call` until it succeeds (the client may fail the request that found the
/// connection gone, then reconnect).
async fn until_ok<T, F: Future<Output = Result<T, IggyError>>>(mut call: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) => {
                assert!(Instant::now() < deadline, "never succeeded: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn failed_sends_are_refused_and_not_stored() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server).await;
    topic(&client, "s", 1).await;
    server.fail_next_sends(2);
    for _ in 0..2 {
        let error = send(&client, "s", "refused").await.unwrap_err();
        assert!(matches!(error, IggyError::CannotAppendMessage), "{error:?}");
    }
    send(&client, "s", "stored").await.unwrap();
    let stored = server.messages("s", "t").unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(&stored[0].payload[..], b"stored");
    assert_eq!(stored[0].offset, 0);
}

#[tokio::test]
async fn dropped_connections_reconnect_and_leave_their_groups() {
    let server = TestServer::start().await.unwrap();
    let admin = client(&server).await;
    topic(&admin, "s", 2).await;
    admin
        .create_consumer_group(&id("s"), &id("t"), "g")
        .await
        .unwrap();
    let member = client(&server).await;
    member
        .join_consumer_group(&id("s"), &id("t"), &id("g"))
        .await
        .unwrap();
    let members = || {
        let admin = &admin;
        async move {
            admin
                .get_consumer_group(&id("s"), &id("t"), &id("g"))
                .await
                .map(|group| group.map_or(0, |group| group.members_count))
        }
    };
    assert_eq!(members().await.unwrap(), 1);

    server.drop_connections();
    eventually("every connection closed", || server.open_connections() == 0).await;
    // The member's connection is gone, so is its membership; the clients reconnect.
    assert_eq!(until_ok(members).await, 0);
    until_ok(|| send(&member, "s", "after-drop")).await;
    assert_eq!(server.messages("s", "t").unwrap().len(), 1);
}

#[tokio::test]
async fn restart_keeps_the_data_and_clients_reconnect() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server).await;
    topic(&client, "s", 1).await;
    send(&client, "s", "before").await.unwrap();
    let address = server.address();
    within(server.restart()).await.unwrap();
    assert_eq!(server.address(), address);
    until_ok(|| send(&client, "s", "after")).await;
    let payloads: Vec<_> = server
        .messages("s", "t")
        .unwrap()
        .into_iter()
        .map(|message| message.payload)
        .collect();
    assert_eq!(payloads, ["before", "after"]);
}

#[tokio::test]
async fn delayed_replies_arrive_late() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server).await;
    server.delay_replies(Duration::from_millis(300));
    let started = Instant::now();
    within(client.ping()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "the reply was not held back: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let dir = std::env::temp_dir().join(format!("iggy-test-server-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();

    let server = TestServer::start_with(ServerConfig {
        tls: Some(TlsFiles {
            cert_file: cert_file.clone(),
            key_file,
        }),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let address = format!("localhost:{}", server.address().port());
    let secure = builder(&address)
        .with_tls_enabled(true)
        .with_tls_domain("localhost".to_owned())
        .with_tls_ca_file(cert_file.display().to_string())
        .build()
        .unwrap();
    within(secure.connect()).await.unwrap();
    within(secure.create_stream("over-tls")).await.unwrap();
    assert!(
        within(secure.get_stream(&id("over-tls")))
            .await
            .unwrap()
            .is_some()
    );

    let bad = TestServer::start_with(ServerConfig {
        tls: Some(TlsFiles {
            cert_file: dir.join("missing.pem"),
            key_file: dir.join("missing-key.pem"),
        }),
        ..ServerConfig::default()
    })
    .await
    .unwrap_err();
    assert!(bad.to_string().contains("missing.pem"), "{bad}");
}

#[tokio::test]
async fn the_binary_serves_and_exits_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iggy-test-server"))
        .args([
            "--address",
            "127.0.0.1:0",
            "--username",
            "admin",
            "--password",
            "secret",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The first log line names the address it listens on.
    let address = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        lines
            .find_map(|line| {
                let line = line.ok()?;
                let at = line.find("address=")?;
                Some(
                    line[at + "address=".len()..]
                        .split_whitespace()
                        .next()?
                        .to_owned(),
                )
            })
            .expect("the server logs its address")
    });
    let address = within(address).await.unwrap();
    let client = IggyClient::builder()
        .with_tcp()
        .with_server_address(address)
        .with_auto_sign_in(AutoLogin::Enabled(Credentials::UsernamePassword(
            "admin".to_owned(),
            "secret".into(),
        )))
        .with_reconnection_max_retries(Some(0))
        .build()
        .unwrap();
    within(client.connect()).await.unwrap();
    within(client.ping()).await.unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = within(tokio::task::spawn_blocking(move || child.wait()))
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
