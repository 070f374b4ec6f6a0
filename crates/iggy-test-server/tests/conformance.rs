//! Conformance suite: the real `iggy` 0.11 client, through its public API only, against
//! the test server, or against any Iggy server named by `IGGY_TEST_ADDRESS=host:port`
//! (user iggy/iggy), with no code change.
//!
//! Every test uses stream names of its own, so runs against a long-lived real server do
//! not collide, and wraps its work in a deadline (the client waits 30 s for a reply).

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use iggy::prelude::*;
use iggy_test_server::{OffsetOwner, TestTarget};

const DEADLINE: Duration = Duration::from_secs(30);

/// The server under test: ours, or the one `IGGY_TEST_ADDRESS` names.
async fn target() -> TestTarget {
    TestTarget::from_env().await.unwrap()
}

/// A name no earlier run used.
fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("conf-{label}-{}-{nanos}", std::process::id())
}

async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("the server did not answer in time")
}

async fn connect(address: &str, login: AutoLogin) -> Result<IggyClient, IggyError> {
    // Fail fast instead of retrying forever.
    connect_retrying(address, login, 2).await
}

/// A client that reconnects up to `retries` times, 50 ms apart.
async fn connect_retrying(
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

async fn client(target: &TestTarget) -> IggyClient {
    let login = AutoLogin::Enabled(Credentials::UsernamePassword(
        "iggy".to_owned(),
        "iggy".into(),
    ));
    within(connect(&target.address, login)).await.unwrap()
}

fn id(name: &str) -> Identifier {
    Identifier::named(name).unwrap()
}

/// Creates the stream and topic unless they exist.
///
/// Some real-server builds refuse the 0.11.0 client's topic options
/// (`UnsupportedOptionKey`, see the protocol reference's appendix): for those,
/// `IGGY_TEST_CREATE_TOPIC_COMMAND` creates the topic (see
/// [`TestTarget::create_topic_by_command`]).
async fn ensure_topic(client: &IggyClient, stream: &str, topic: &str, partitions: u32) {
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

fn text_messages(prefix: &str, count: usize) -> Vec<IggyMessage> {
    (0..count)
        .map(|n| IggyMessage::from_str(&format!("{prefix}-{n}")).unwrap())
        .collect()
}

/// Sends `count` text messages `{prefix}-{n}` to one partition of `stream`/t.
async fn send_text(client: &IggyClient, stream: &str, partition: u32, prefix: &str, count: usize) {
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
async fn poll_partition(
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
async fn read_all(client: &IggyClient, stream: &str, topic: &str) -> Vec<(u32, String)> {
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

#[tokio::test]
async fn password_sign_in_and_wrong_credentials() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        client.ping().await.unwrap();
        let me = client.get_me().await.unwrap();
        assert!(me.user_id.is_some());

        let wrong = AutoLogin::Enabled(Credentials::UsernamePassword(
            "iggy".to_owned(),
            "not-the-password".into(),
        ));
        let error = connect(&target.address, wrong)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(error, IggyError::InvalidCredentials),
            "expected InvalidCredentials, got {error:?}"
        );

        let anonymous = connect(&target.address, AutoLogin::Disabled).await.unwrap();
        let error = anonymous.get_streams().await.unwrap_err();
        assert!(matches!(error, IggyError::Unauthenticated), "{error:?}");
    })
    .await;
}

#[tokio::test]
async fn token_sign_in() {
    let target = target().await;
    within(async {
        let admin = client(&target).await;
        let token = admin
            .create_personal_access_token(&unique("pat"), PersonalAccessTokenExpiry::NeverExpire)
            .await
            .unwrap()
            .token;
        let login = AutoLogin::Enabled(Credentials::PersonalAccessToken(token.clone().into()));
        let by_token = connect(&target.address, login).await.unwrap();
        by_token.ping().await.unwrap();
        let stream = unique("pat-stream");
        by_token.create_stream(&stream).await.unwrap();
        assert!(by_token.get_stream(&id(&stream)).await.unwrap().is_some());

        let plain = connect(&target.address, AutoLogin::Disabled).await.unwrap();
        plain
            .login_with_personal_access_token(&token)
            .await
            .unwrap();
        plain.ping().await.unwrap();

        let bad = AutoLogin::Enabled(Credentials::PersonalAccessToken("nope".to_owned().into()));
        assert!(connect(&target.address, bad).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn streams_and_topics_are_created_when_missing() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("create");
        assert!(client.get_stream(&id(&stream)).await.unwrap().is_none());
        let created = client.create_stream(&stream).await.unwrap();
        assert_eq!(created.name, stream);
        let error = client.create_stream(&stream).await.unwrap_err();
        assert!(
            matches!(error, IggyError::StreamNameAlreadyExists(_)),
            "{error:?}"
        );

        assert!(
            client
                .get_topic(&id(&stream), &id("t"))
                .await
                .unwrap()
                .is_none()
        );
        ensure_topic(&client, &stream, "t", 3).await;
        let topic = client
            .get_topic(&id(&stream), &id("t"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(topic.partitions_count, 3);
        assert_eq!(topic.partitions.len(), 3);
        let by_number = client
            .get_stream(&Identifier::numeric(created.id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_number.name, stream);
        assert_eq!(by_number.topics_count, 1);
        let streams = client.get_streams().await.unwrap();
        assert!(streams.iter().any(|listed| listed.name == stream));
        let topics = client.get_topics(&id(&stream)).await.unwrap();
        assert_eq!(topics.len(), 1);
        assert_eq!(topics[0].name, "t");
        client.delete_topic(&id(&stream), &id("t")).await.unwrap();
        assert!(
            client
                .get_topic(&id(&stream), &id("t"))
                .await
                .unwrap()
                .is_none()
        );

        // The producer does the same by itself (unless the server refuses this client's
        // topic options, see `ensure_topic`).
        if std::env::var_os("IGGY_TEST_CREATE_TOPIC_COMMAND").is_some() {
            eprintln!("skipped the producer's create-if-missing: the server refuses topic options");
            return;
        }
        let producer_stream = unique("producer-creates");
        let producer = client
            .producer(&producer_stream, "auto")
            .unwrap()
            .direct(DirectConfig::builder().build())
            .create_topic_if_not_exists(2, IggyExpiry::NeverExpire, MaxTopicSize::ServerDefault)
            .build();
        producer.init().await.unwrap();
        producer.send(text_messages("auto", 3)).await.unwrap();
        assert_eq!(read_all(&client, &producer_stream, "auto").await.len(), 3);
    })
    .await;
}

#[tokio::test]
async fn direct_producer_balanced_and_keyed_partitioning() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("direct");
        ensure_topic(&client, &stream, "t", 3).await;

        let balanced = client
            .producer(&stream, "t")
            .unwrap()
            .direct(DirectConfig::builder().batch_length(4).build())
            .partitioning(Partitioning::balanced())
            .build();
        balanced.init().await.unwrap();
        for chunk in 0..6 {
            balanced
                .send(text_messages(&format!("b{chunk}"), 4))
                .await
                .unwrap();
        }
        let all = read_all(&client, &stream, "t").await;
        assert_eq!(all.len(), 24);
        let used: BTreeSet<u32> = all.iter().map(|(partition, _)| *partition).collect();
        assert_eq!(
            used,
            BTreeSet::from([0, 1, 2]),
            "balanced sends use every partition"
        );

        let keyed = client
            .producer(&stream, "t")
            .unwrap()
            .direct(DirectConfig::builder().build())
            .partitioning(Partitioning::messages_key_str("customer-7").unwrap())
            .build();
        keyed.init().await.unwrap();
        for round in 0..3 {
            keyed
                .send(text_messages(&format!("k{round}"), 5))
                .await
                .unwrap();
        }
        let keyed_partitions: BTreeSet<u32> = read_all(&client, &stream, "t")
            .await
            .into_iter()
            .filter(|(_, payload)| payload.starts_with('k'))
            .map(|(partition, _)| partition)
            .collect();
        assert_eq!(keyed_partitions.len(), 1, "one key, one partition");

        if let Some(server) = &target.server {
            let stored = server.messages(&stream, "t").unwrap();
            assert_eq!(stored.len(), 24 + 15);
        }
    })
    .await;
}

#[tokio::test]
async fn background_producer_delivers_everything_by_shutdown() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("background");
        ensure_topic(&client, &stream, "t", 1).await;
        let producer = client
            .producer(&stream, "t")
            .unwrap()
            .background(BackgroundConfig::builder().build())
            .partitioning(Partitioning::partition_id(0))
            .build();
        producer.init().await.unwrap();
        for round in 0..10 {
            producer
                .send(text_messages(&format!("bg{round}"), 10))
                .await
                .unwrap();
        }
        producer.shutdown().await;
        let all = read_all(&client, &stream, "t").await;
        assert_eq!(all.len(), 100);
        assert_eq!(all[0].1, "bg0-0");
        assert_eq!(all[99].1, "bg9-9");
    })
    .await;
}

#[tokio::test]
async fn consumer_group_with_auto_commit_reads_everything_once() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("group");
        ensure_topic(&client, &stream, "t", 2).await;
        for partition in 0..2 {
            send_text(&client, &stream, partition, &format!("p{partition}"), 15).await;
        }
        let mut consumer = client
            .consumer_group("sinks", &stream, "t")
            .unwrap()
            .auto_commit(AutoCommit::When(AutoCommitWhen::PollingMessages))
            .create_consumer_group_if_not_exists()
            .auto_join_consumer_group()
            .polling_strategy(PollingStrategy::next())
            .batch_length(7)
            .poll_interval(IggyDuration::from_str("1ms").unwrap())
            .polling_retry_interval(NonZeroIggyDuration::from_str("10ms").unwrap())
            .build();
        consumer.init().await.unwrap();
        let mut seen = BTreeSet::new();
        while seen.len() < 30 {
            let received = consumer.next().await.unwrap().unwrap();
            assert!(
                seen.insert(received.message.payload_as_string().unwrap()),
                "a message came twice"
            );
        }
        consumer.shutdown().await.unwrap();
        let group = Consumer::group(id("sinks"));
        for partition in 0..2 {
            let offset = client
                .get_consumer_offset(&group, &id(&stream), &id("t"), Some(partition))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(offset.stored_offset, 14, "partition {partition}");
        }
        if let Some(server) = &target.server {
            let owner = OffsetOwner::Group("sinks".to_owned());
            assert_eq!(server.stored_offset(&stream, "t", &owner, 1), Some(14));
        }
        let details = client
            .get_consumer_group(&id(&stream), &id("t"), &id("sinks"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(details.members_count, 0, "shutdown leaves the group");
    })
    .await;
}

/// A group's offset on a partition is the owner's to store: a client that is not a
/// member (or no longer is, after a reconnect) is refused until it joins. The real
/// server (HEAD `cc269ef`) fences with `ConsumerGroupPartitionNotOwned`, but what
/// reaches the client is `ResourceNotFound`.
#[tokio::test]
async fn only_a_member_that_owns_the_partition_stores_the_group_offset() {
    let target = target().await;
    within(async {
        let member = client(&target).await;
        let outsider = client(&target).await;
        let stream = unique("fence");
        ensure_topic(&member, &stream, "t", 1).await;
        send_text(&member, &stream, 0, "m", 5).await;
        member
            .create_consumer_group(&id(&stream), &id("t"), "g")
            .await
            .unwrap();
        let group = Consumer::group(id("g"));
        let store = async |client: &IggyClient, offset: u64| {
            client
                .store_consumer_offset(&group, &id(&stream), &id("t"), Some(0), offset)
                .await
        };
        let refused = store(&member, 1).await;
        assert!(
            matches!(refused, Err(IggyError::ResourceNotFound(_))),
            "before joining: {refused:?}"
        );
        member
            .join_consumer_group(&id(&stream), &id("t"), &id("g"))
            .await
            .unwrap();
        store(&member, 2).await.unwrap();
        let refused = store(&outsider, 4).await;
        assert!(
            matches!(refused, Err(IggyError::ResourceNotFound(_))),
            "not a member: {refused:?}"
        );
        let stored = outsider
            .get_consumer_offset(&group, &id(&stream), &id("t"), Some(0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.stored_offset, 2, "anyone may read it");
    })
    .await;
}

#[tokio::test]
async fn single_consumer_with_manual_offsets() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("manual");
        ensure_topic(&client, &stream, "t", 1).await;
        send_text(&client, &stream, 0, "m", 10).await;
        let consumer = Consumer::new(id("manual-reader"));
        let poll = |strategy: PollingStrategy, count: u32| {
            let client = &client;
            let stream = stream.clone();
            let consumer = consumer.clone();
            async move {
                poll_partition(client, &stream, "t", 0, &consumer, strategy, count)
                    .await
                    .unwrap()
            }
        };
        assert!(
            client
                .get_consumer_offset(&consumer, &id(&stream), &id("t"), Some(0))
                .await
                .unwrap()
                .is_none()
        );
        let first = poll(PollingStrategy::next(), 4).await;
        let offsets: Vec<u64> = first.messages.iter().map(|m| m.header.offset).collect();
        assert_eq!(
            offsets,
            vec![0, 1, 2, 3],
            "next starts at 0 with nothing stored"
        );
        client
            .store_consumer_offset(&consumer, &id(&stream), &id("t"), Some(0), 3)
            .await
            .unwrap();
        let stored = client
            .get_consumer_offset(&consumer, &id(&stream), &id("t"), Some(0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.stored_offset, 3);
        assert_eq!(stored.current_offset, 9);
        let next = poll(PollingStrategy::next(), 2).await;
        assert_eq!(
            next.messages[0].header.offset, 4,
            "next continues after the stored offset"
        );
        assert_eq!(next.current_offset, 9);

        client
            .delete_consumer_offset(&consumer, &id(&stream), &id("t"), Some(0))
            .await
            .unwrap();
        let again = poll(PollingStrategy::next(), 1).await;
        assert_eq!(again.messages[0].header.offset, 0);
    })
    .await;
}

#[tokio::test]
async fn every_polling_strategy() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("strategies");
        ensure_topic(&client, &stream, "t", 1).await;
        send_text(&client, &stream, 0, "early", 5).await;
        let between = IggyTimestamp::now();
        // Timestamps are in microseconds; make sure the second batch is strictly later.
        tokio::time::sleep(Duration::from_millis(2)).await;
        send_text(&client, &stream, 0, "late", 5).await;
        let consumer = Consumer::new(id("strategies"));
        let poll = |strategy: PollingStrategy, count: u32| {
            let client = &client;
            let stream = stream.clone();
            let consumer = consumer.clone();
            async move {
                let polled = poll_partition(client, &stream, "t", 0, &consumer, strategy, count)
                    .await
                    .unwrap();
                polled
                    .messages
                    .iter()
                    .map(|m| (m.header.offset, m.payload_as_string().unwrap()))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            poll(PollingStrategy::first(), 2).await,
            vec![(0, "early-0".to_owned()), (1, "early-1".to_owned())]
        );
        assert_eq!(
            poll(PollingStrategy::offset(6), 2).await,
            vec![(6, "late-1".to_owned()), (7, "late-2".to_owned())]
        );
        assert_eq!(
            poll(PollingStrategy::last(), 2).await,
            vec![(8, "late-3".to_owned()), (9, "late-4".to_owned())]
        );
        let from_time = poll(PollingStrategy::timestamp(between), 100).await;
        assert_eq!(from_time.first().unwrap(), &(5, "late-0".to_owned()));
        assert_eq!(from_time.len(), 5);
        assert!(poll(PollingStrategy::offset(10), 5).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn user_headers_and_ids_round_trip() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("headers");
        ensure_topic(&client, &stream, "t", 1).await;
        let headers = BTreeMap::from([
            (
                HeaderKey::from_str("content-type").unwrap(),
                HeaderValue::from_str("application/json").unwrap(),
            ),
            (
                HeaderKey::from_str("attempt").unwrap(),
                HeaderValue::from(3u32),
            ),
            (
                HeaderKey::from_str("final").unwrap(),
                HeaderValue::from(true),
            ),
        ]);
        let message = IggyMessage::builder()
            .id(0xfeed_beef_u128)
            .payload(Bytes::from_static(b"{\"a\":1}"))
            .user_headers(headers.clone())
            .build()
            .unwrap();
        client
            .send_messages(
                &id(&stream),
                &id("t"),
                &Partitioning::partition_id(0),
                &mut [message],
            )
            .await
            .unwrap();
        let polled = poll_partition(
            &client,
            &stream,
            "t",
            0,
            &Consumer::new(id("h")),
            PollingStrategy::first(),
            1,
        )
        .await
        .unwrap();
        let received = &polled.messages[0];
        assert_eq!(received.header.id, 0xfeed_beef);
        assert_eq!(&received.payload[..], b"{\"a\":1}");
        assert_eq!(received.user_headers_map().unwrap().unwrap(), headers);
        assert!(received.header.timestamp > 0);
    })
    .await;
}

#[tokio::test]
async fn unknown_streams_topics_and_partitions_are_errors() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("missing");
        let consumer = Consumer::new(id("x"));
        let error = poll_partition(
            &client,
            &stream,
            "t",
            0,
            &consumer,
            PollingStrategy::first(),
            1,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, IggyError::StreamIdNotFound(_)), "{error:?}");
        ensure_topic(&client, &stream, "t", 1).await;
        let error = poll_partition(
            &client,
            &stream,
            "nope",
            0,
            &consumer,
            PollingStrategy::first(),
            1,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, IggyError::TopicIdNotFound(..)), "{error:?}");
        let error = poll_partition(
            &client,
            &stream,
            "t",
            5,
            &consumer,
            PollingStrategy::first(),
            1,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, IggyError::PartitionNotFound(..)),
            "{error:?}"
        );
        let error = client
            .send_messages(
                &id(&stream),
                &id("t"),
                &Partitioning::partition_id(9),
                &mut text_messages("x", 1),
            )
            .await
            .unwrap_err();
        // A real server answers a send to a missing partition with ResourceNotFound.
        assert!(matches!(error, IggyError::ResourceNotFound(_)), "{error:?}");
    })
    .await;
}

/// The members a consumer group holds, as (member id, partitions) pairs.
async fn members(client: &IggyClient, stream: &str, group: &str) -> Option<Vec<(u32, Vec<u32>)>> {
    let details = client
        .get_consumer_group(&id(stream), &id("t"), &id(group))
        .await
        .unwrap()?;
    Some(
        details
            .members
            .into_iter()
            .map(|member| (member.id, member.partitions))
            .collect(),
    )
}

/// A killed server (restarted on its data) keeps the members of the connections it
/// lost in their groups, holding their partitions, though nobody is behind them: a
/// client that reconnects is a new member, which gets only what the rebalance on its
/// join gives it. Deleting the group is the way out: it goes with its members and its
/// offsets, and the group made again is empty.
#[tokio::test]
async fn a_killed_server_keeps_the_members_it_lost_until_the_group_is_deleted() {
    let target = TestTarget::restartable().await.unwrap();
    if !target.can_restart() {
        iggy_test_server::skip(
            "a_killed_server_keeps_the_members_it_lost_until_the_group_is_deleted",
            &format!(
                "restarting a real server needs {}",
                iggy_test_server::RESTART_COMMAND_ENV
            ),
        );
        return;
    }
    // It must ride out the restart (a real server takes seconds to start again).
    let login = AutoLogin::Enabled(Credentials::UsernamePassword(
        "iggy".to_owned(),
        "iggy".into(),
    ));
    let before = within(connect_retrying(&target.address, login, 200))
        .await
        .unwrap();
    let stream = unique("ghost");
    ensure_topic(&before, &stream, "t", 2).await;
    within(async {
        before
            .create_consumer_group(&id(&stream), &id("t"), "g")
            .await
            .unwrap();
        before
            .join_consumer_group(&id(&stream), &id("t"), &id("g"))
            .await
            .unwrap();
    })
    .await;
    target.restart(Duration::from_millis(100)).await.unwrap();
    within(async {
        let after = client(&target).await;
        assert_eq!(
            members(&after, &stream, "g").await,
            Some(vec![(0, vec![0, 1])]),
            "the lost member stays"
        );
        after
            .join_consumer_group(&id(&stream), &id("t"), &id("g"))
            .await
            .unwrap();
        assert_eq!(
            members(&after, &stream, "g").await,
            Some(vec![(0, vec![0]), (1, vec![1])]),
            "a new member gets its share; the lost one keeps the rest"
        );
        send_text(&after, &stream, 1, "m", 2).await;
        // The client that was connected reconnected as someone else.
        let group = Consumer::group(id("g"));
        // Once it is connected again (it may still be on its way there).
        let polled = loop {
            let polled = before
                .poll_messages(
                    &id(&stream),
                    &id("t"),
                    None,
                    &group,
                    &PollingStrategy::next(),
                    1,
                    false,
                )
                .await;
            if !matches!(
                polled,
                Err(IggyError::NotConnected | IggyError::Disconnected)
            ) {
                break polled;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            matches!(polled, Err(IggyError::ConsumerGroupMemberNotFound(..))),
            "{polled:?}"
        );
        after
            .store_consumer_offset(&group, &id(&stream), &id("t"), Some(1), 0)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        after
            .delete_consumer_group(&id(&stream), &id("t"), &id("g"))
            .await
            .unwrap();
        after
            .create_consumer_group(&id(&stream), &id("t"), "g")
            .await
            .unwrap();
        assert_eq!(members(&after, &stream, "g").await, Some(vec![]));
        let offset = after
            .get_consumer_offset(&group, &id(&stream), &id("t"), Some(1))
            .await
            .unwrap();
        assert!(
            offset.is_none(),
            "the deleted group's offsets are gone: {offset:?}"
        );
        after
            .join_consumer_group(&id(&stream), &id("t"), &id("g"))
            .await
            .unwrap();
        assert_eq!(
            members(&after, &stream, "g").await,
            Some(vec![(0, vec![0, 1])])
        );
    })
    .await;
}
