//! Producers: the direct producer's balanced and keyed partitioning, and the background
//! producer delivering everything by shutdown.

use std::collections::BTreeSet;

use iggy::prelude::*;
use iggy_test_server::{target, unique};

use crate::support::{client, ensure_topic, read_all, text_messages, within};

#[tokio::test]
async fn direct_producer_balanced_and_keyed_partitioning() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("conf-direct");
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
        let stream = unique("conf-background");
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
