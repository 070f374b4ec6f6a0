//! Streams and topics: creating them when missing (by hand and by the producer), listing
//! and deleting them, and the errors for unknown streams, topics and partitions.

use iggy::prelude::*;
use iggy_test_server::{target, unique};

use crate::support::{client, ensure_topic, id, poll_partition, read_all, text_messages, within};

#[tokio::test]
async fn streams_and_topics_are_created_when_missing() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("conf-create");
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
        let producer_stream = unique("conf-producer-creates");
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
async fn unknown_streams_topics_and_partitions_are_errors() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("conf-missing");
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
