//! Reading messages back: a single consumer's stored offsets, every polling strategy,
//! and user headers and ids surviving the round trip.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use iggy::prelude::*;
use iggy_test_server::{target, unique};

use crate::support::{client, ensure_topic, id, poll_partition, send_text, within};

#[tokio::test]
async fn single_consumer_with_manual_offsets() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        let stream = unique("conf-manual");
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
        let stream = unique("conf-strategies");
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
        let stream = unique("conf-headers");
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
