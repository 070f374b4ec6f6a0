//! The random source through `connector_sdk::testing`: batch sizes and payloads, and
//! its cursor (the count of messages in accepted batches) on accept, reject and restart.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use connector_sdk::testing::SourceHarness;
use connector_sdk::{ErrorKind, ProducedBatch, Schema, Source};
use iggy_connector_random_source::RandomSource;
use serde_json::{Value, json};

/// The fields of one produced message.
#[derive(Debug)]
struct Record {
    seq: u64,
    id: u128,
    key: String,
    text: String,
}

fn records(batch: &ProducedBatch) -> Vec<Record> {
    assert_eq!(batch.schema, Schema::Json);
    batch
        .messages
        .iter()
        .map(|message| {
            let value: Value = serde_json::from_slice(&message.payload).unwrap();
            assert!(value["created_at"].as_u64().is_some(), "{value}");
            Record {
                seq: value["seq"].as_u64().unwrap(),
                id: message.id.unwrap(),
                key: value["key"].as_str().unwrap().to_owned(),
                text: value["text"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

fn seqs(batch: &ProducedBatch) -> Vec<u64> {
    records(batch).iter().map(|record| record.seq).collect()
}

fn state_of(count: u64) -> Option<Vec<u8>> {
    Some(count.to_le_bytes().to_vec())
}

async fn open(config: Value, state: Option<Vec<u8>>) -> SourceHarness<RandomSource> {
    SourceHarness::open(config, state).await.unwrap()
}

#[tokio::test]
async fn batches_stay_within_messages_range_with_payloads_of_payload_size() {
    let config = json!({"interval": "0ms", "messages_range": [2, 5], "payload_size": 17});
    let mut source = open(config, None).await;
    let mut sizes = std::collections::BTreeSet::new();
    let mut next_seq = 0;
    let mut id_prefix = None;
    for _ in 0..200 {
        let batch = source.poll().await.unwrap();
        let records = records(&batch);
        assert!(
            (2..=5).contains(&records.len()),
            "{} messages",
            records.len()
        );
        sizes.insert(records.len());
        for record in &records {
            assert_eq!(record.seq, next_seq);
            next_seq += 1;
            assert_eq!(record.key, "test");
            assert_eq!(record.text.len(), 17);
            assert!(
                record
                    .text
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
                "{}",
                record.text
            );
            // The id is the key's hash, then the sequence number.
            assert_eq!(record.id as u64, record.seq);
            let prefix = record.id >> 64;
            assert_eq!(*id_prefix.get_or_insert(prefix), prefix);
        }
        assert_eq!(batch.state, state_of(next_seq));
        source.accept().await.unwrap();
    }
    assert_eq!(
        sizes.into_iter().collect::<Vec<_>>(),
        [2, 3, 4, 5],
        "every size of the range is drawn"
    );
    assert_eq!(source.state(), state_of(next_seq).as_deref());
    source.close().await.unwrap();
}

#[tokio::test]
async fn the_connector_key_is_in_every_payload_and_the_id_prefix() {
    let config = json!({"interval": "0ms", "messages_range": [1, 1]});
    let mut first = open(config.clone(), None).await;
    let context = connector_sdk::testing::context("a \"quoted\" key");
    let mut other = SourceHarness::<RandomSource>::open_with_context(config, context, None)
        .await
        .unwrap();
    let mine = records(&first.poll().await.unwrap()).remove(0);
    let theirs = records(&other.poll().await.unwrap()).remove(0);
    assert_eq!(theirs.key, "a \"quoted\" key");
    assert_eq!(mine.seq, theirs.seq);
    assert_ne!(mine.id, theirs.id, "ids are unique per source");
}

#[tokio::test]
async fn a_rejected_batch_and_the_unsettled_ones_after_it_come_again() {
    let config = json!({"interval": "0ms", "messages_range": [1, 4]});
    let mut source = open(config, None).await;
    let accepted = source.poll().await.unwrap();
    let accepted_end = seqs(&accepted).len() as u64;
    source.accept().await.unwrap();
    assert_eq!(source.state(), state_of(accepted_end).as_deref());

    // Three batches in flight; the first of them is rejected.
    let rejected = source.poll().await.unwrap();
    source.poll().await.unwrap();
    source.poll().await.unwrap();
    assert_eq!(source.unsettled(), 3);
    for _ in 0..3 {
        source.reject().await.unwrap();
    }
    assert_eq!(source.state(), state_of(accepted_end).as_deref());

    // Produced again from the rejected batch's start, with the same ids.
    let again = source.poll().await.unwrap();
    let (rejected, again) = (records(&rejected), records(&again));
    assert_eq!(again[0].seq, accepted_end);
    assert_eq!(again[0].seq, rejected[0].seq);
    assert_eq!(again[0].id, rejected[0].id);
    source.accept().await.unwrap();
    assert_eq!(
        source.state(),
        state_of(accepted_end + again.len() as u64).as_deref()
    );
}

#[tokio::test]
async fn up_to_sixteen_batches_may_be_unsettled_and_settle_in_order() {
    assert_eq!(RandomSource::MAX_UNSETTLED_BATCHES, 16);
    let config = json!({"interval": "0ms", "messages_range": [3, 3]});
    let mut source = open(config, None).await;
    for batch in 0..16u64 {
        assert_eq!(seqs(&source.poll().await.unwrap())[0], batch * 3);
    }
    for accepted in 1..=16u64 {
        source.accept().await.unwrap();
        assert_eq!(source.state(), state_of(accepted * 3).as_deref());
    }
}

#[tokio::test]
async fn a_restart_goes_on_from_the_accepted_state() {
    let config = json!({"interval": "0ms", "messages_range": [2, 2]});
    let mut source = open(config.clone(), None).await;
    let first_id = records(&source.poll().await.unwrap())[0].id;
    source.accept().await.unwrap();
    source.poll().await.unwrap();
    source.accept().await.unwrap();
    // Unsettled when the source stops: not in the state, so produced again.
    source.poll().await.unwrap();
    let state = source.state().map(<[u8]>::to_vec);
    assert_eq!(state, state_of(4));
    source.close().await.unwrap();

    let mut source = open(config, state).await;
    let records = records(&source.poll().await.unwrap());
    assert_eq!(records[0].seq, 4);
    assert_eq!(records[0].id >> 64, first_id >> 64, "same key, same ids");
}

#[tokio::test(start_paused = true)]
async fn max_count_caps_the_total_across_restarts_and_then_the_source_idles() {
    let config = json!({"interval": "0ms", "messages_range": [3, 3], "max_count": 7});
    let mut source = open(config.clone(), None).await;
    assert_eq!(seqs(&source.poll().await.unwrap()), [0, 1, 2]);
    source.accept().await.unwrap();
    assert_eq!(seqs(&source.poll().await.unwrap()), [3, 4, 5]);
    source.accept().await.unwrap();
    assert_eq!(seqs(&source.poll().await.unwrap()), [6]);
    // Rejected: the last message is not produced yet, so it comes again.
    source.reject().await.unwrap();
    assert_eq!(seqs(&source.poll().await.unwrap()), [6]);
    source.accept().await.unwrap();
    let idle = source
        .poll_timeout(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(idle, None);
    let state = source.state().map(<[u8]>::to_vec);
    assert_eq!(state, state_of(7));
    source.close().await.unwrap();

    let mut source = open(config, state).await;
    let idle = source
        .poll_timeout(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(idle, None, "the count goes on across restarts");
}

#[tokio::test(start_paused = true)]
async fn the_interval_separates_batches_but_not_the_first() {
    let config = json!({"interval": "5s", "messages_range": [1, 1]});
    let mut source = open(config, None).await;
    let start = tokio::time::Instant::now();
    source.poll().await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    source.accept().await.unwrap();
    source.poll().await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // A poll abandoned while it waits (the runtime settles or closes meanwhile) loses
    // nothing: the next one produces the next message.
    source.accept().await.unwrap();
    let abandoned = source.poll_timeout(Duration::from_secs(1)).await.unwrap();
    assert_eq!(abandoned, None);
    assert_eq!(seqs(&source.poll().await.unwrap()), [2]);
}

#[tokio::test]
async fn invalid_configs_and_states_are_refused() {
    for range in [[0, 3], [5, 2]] {
        let config = json!({"messages_range": range});
        let error = SourceHarness::<RandomSource>::open(&config, None)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidConfig);
        assert!(
            error.message().starts_with("plugin_config.messages_range:"),
            "{error}"
        );
        assert_eq!(
            SourceHarness::<RandomSource>::validate(&config),
            [error.message()]
        );
    }
    let interval = SourceHarness::<RandomSource>::open(json!({"interval": "fast"}), None)
        .await
        .unwrap_err();
    assert!(
        interval.message().starts_with("plugin_config.interval:"),
        "{interval}"
    );
    assert!(SourceHarness::<RandomSource>::validate(json!({})).is_empty());

    let state = SourceHarness::<RandomSource>::open(json!({}), Some(vec![1, 2, 3]))
        .await
        .unwrap_err();
    assert_eq!(state.kind(), ErrorKind::Permanent);
    assert!(state.message().contains("3 bytes, expected 8"), "{state}");
}
