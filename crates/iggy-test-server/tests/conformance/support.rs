//! Helpers shared by every module: the deadline, connecting and signing in, creating
//! topics, sending text messages and polling them back.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use iggy::prelude::*;
use iggy_test_server::TestTarget;

const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("the server did not answer in time")
}

pub(crate) async fn connect(address: &str, login: AutoLogin) -> Result<IggyClient, IggyError> {
    // Fail fast instead of retrying forever.
    connect_retrying(address, login, 2).await
}

/// A client that reconnects up to `retries` times, 50 ms apart.
pub(crate) async fn connect_retrying(
    address: &str,
    login: AutoLogin,
    retries: u32,
) -> Result<IggyClient, IggyError> {
    let client = IggyClient::builder()
        .with_tcp()
        .with_server_address(address.to_owned())
        .with_auto_sign_in(login)
        .with_reconnection_max_retries(Some(retries))
        .with_reconnection_interval(NonZeroIggyDuration::from_str("50ms").unwrap())
        .build()?;
    client.connect().await?;
    Ok(client)
}

pub(crate) async fn client(target: &TestTarget) -> IggyClient {
    let login = AutoLogin::Enabled(Credentials::UsernamePassword(
        "iggy".to_owned(),
        "iggy".into(),
    ));
    within(connect(&target.address, login)).await.unwrap()
}

pub(crate) fn id(name: &str) -> Identifier {
    Identifier::named(name).unwrap()
}

/// Creates the stream and topic unless they exist.
///
/// Some real-server builds refuse the 0.11.0 client's topic options
/// (`UnsupportedOptionKey`, see the protocol reference's appendix): for those,
/// `IGGY_TEST_CREATE_TOPIC_COMMAND` creates the topic (see
/// [`TestTarget::create_topic_by_command`]).
pub(crate) async fn ensure_topic(client: &IggyClient, stream: &str, topic: &str, partitions: u32) {
    if client.get_stream(&id(stream)).await.unwrap().is_none() {
        client.create_stream(stream).await.unwrap();
    }
    if client
        .get_topic(&id(stream), &id(topic))
        .await
        .unwrap()
        .is_none()
    {
        let options = TopicCreateOptions {
            partitions_count: Some(partitions),
            ..TopicCreateOptions::default()
        };
        match client.create_topic(&id(stream), topic, &options).await {
            Ok(_) => {}
            Err(IggyError::UnsupportedOptionKey(_)) => {
                TestTarget::create_topic_by_command(stream, topic, partitions)
                    .expect("the server refuses the client's topic options")
                    .unwrap();
            }
            Err(error) => panic!("create_topic failed: {error}"),
        }
    }
}

pub(crate) fn text_messages(prefix: &str, count: usize) -> Vec<IggyMessage> {
    (0..count)
        .map(|n| IggyMessage::from_str(&format!("{prefix}-{n}")).unwrap())
        .collect()
}

/// Sends `count` text messages `{prefix}-{n}` to one partition of `stream`/t.
pub(crate) async fn send_text(
    client: &IggyClient,
    stream: &str,
    partition: u32,
    prefix: &str,
    count: usize,
) {
    client
        .send_messages(
            &id(stream),
            &id("t"),
            &Partitioning::partition_id(partition),
            &mut text_messages(prefix, count),
        )
        .await
        .unwrap();
}

/// Polls `count` messages of one partition without committing.
pub(crate) async fn poll_partition(
    client: &IggyClient,
    stream: &str,
    topic: &str,
    partition: u32,
    consumer: &Consumer,
    strategy: PollingStrategy,
    count: u32,
) -> Result<PolledMessages, IggyError> {
    client
        .poll_messages(
            &id(stream),
            &id(topic),
            Some(partition),
            consumer,
            &strategy,
            count,
            false,
        )
        .await
}

/// Every payload of every partition, by polling each from the start.
pub(crate) async fn read_all(client: &IggyClient, stream: &str, topic: &str) -> Vec<(u32, String)> {
    let details = client
        .get_topic(&id(stream), &id(topic))
        .await
        .unwrap()
        .unwrap();
    let consumer = Consumer::new(id("reader"));
    let mut all = Vec::new();
    for partition in 0..details.partitions_count {
        let polled = poll_partition(
            client,
            stream,
            topic,
            partition,
            &consumer,
            PollingStrategy::offset(0),
            10_000,
        )
        .await
        .unwrap();
        for message in polled.messages {
            all.push((partition, message.payload_as_string().unwrap()));
        }
    }
    all
}
