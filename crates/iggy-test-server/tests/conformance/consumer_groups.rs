//! Consumer groups: auto-committing group consumers reading everything once, and only a
//! member that owns the partition storing the group's offset.

use std::collections::BTreeSet;
use std::str::FromStr;

use futures_util::StreamExt;
use iggy::prelude::*;
use iggy_test_server::{OffsetOwner, target, unique};

use crate::support::{client, ensure_topic, id, send_text, within};

#[tokio::test]
async fn consumer_group_with_auto_commit_reads_everything_once() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("conf-group");
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
        let stream = unique("conf-fence");
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
