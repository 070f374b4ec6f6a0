//! Where a source resumes: its state is saved before each send (as a pending send with
//! a marker, by default), and a restart asks Iggy which pending sends it stored.

use std::time::Duration;

use config_provider::ConnectorConfig;
use iggy_connectors_tests::{target, temp_dir, unique};
use runtime_core::{Destination, Runtime, SavedState, StateStore};

use crate::support::{
    RecordingBus, active, context, newest_state, plugins_for_test, position, produced,
    random_source, read_topic, seqs,
};

/// Runs the source `random` for 400 messages in sends of one 20-message batch each, from
/// a plugin that never waits (so that sends would run ahead of the state if nothing held
/// them), and returns the record saved at each send with the send's marker.
async fn saved_at_each_send(label: &str, verified_resume: bool) -> Vec<(SavedState, Option<u128>)> {
    let target = target().await;
    let dir = temp_dir(&format!("e2e-{label}"));
    let stream = unique(&format!("e2e-{label}"));
    let mut source = random_source(&stream, 400);
    if let ConnectorConfig::Source(source) = &mut source {
        assert_eq!(source.max_unsaved_sends, 1, "the default");
        assert!(source.verified_resume, "the default");
        source.verified_resume = verified_resume;
        source.streams[0].batch_length = 20;
        source.common.plugin_config = Some(serde_json::json!({
            "interval": "0ms", "max_count": 400, "messages_range": [20, 20], "payload_size": 10
        }));
    }
    let state = dir.join("state");
    let mut context = context(&target, &state).await;
    let recording = RecordingBus::watching(&mut context, Some(state));
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 400).await;
    runtime.shutdown(Duration::from_secs(10)).await;
    let sends = recording.sends();
    assert_eq!(sends.len(), 20, "{sends:?}");
    assert!(sends.iter().all(|(count, _)| *count == 20), "{sends:?}");
    recording.saved_at_send()
}

/// Without verified resume, with the default `max_unsaved_sends` (1), no send starts
/// before the state covering every earlier send is on disk, so a crash makes the
/// source produce again at most the send in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_a_send_waits_for_the_state_of_the_ones_before() {
    for (index, (saved, marker)) in saved_at_each_send("unsaved", false)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            position(saved.state.as_deref()),
            20 * index as u64,
            "a send began before the state caught up"
        );
        assert!(
            saved.pending.is_empty() && marker.is_none(),
            "nothing marked"
        );
    }
}

/// With verified resume (the default), each send goes only once a record naming it is
/// on disk: the state it leads to and the marker its last message carries, after the
/// confirmed state of the sends before (or theirs, pending too). So a crash at any
/// moment leaves a record from which a restart finds what Iggy stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_each_send_is_saved_as_pending_before_it_goes() {
    for (index, (saved, marker)) in saved_at_each_send("pending", true)
        .await
        .into_iter()
        .enumerate()
    {
        // The builder may have saved the next send already: the record then names both.
        let this = saved
            .pending
            .iter()
            .find(|send| Some(send.marker) == marker)
            .expect("the send is saved as pending, with its marker");
        assert_eq!(
            position(this.state.as_deref()),
            20 * (index as u64 + 1),
            "the state it leads to"
        );
        assert_eq!(
            position(saved.state.as_deref()) + 20 * saved.pending.len() as u64,
            newest_state(&saved),
            "the pending sends follow the confirmed state: {saved:?}"
        );
    }
}

/// After a crash, a restart asks Iggy which of the pending sends it stored: it resumes
/// after the last one found (its marker is in the topic) and produces the first one not
/// found again, however far the record had got; the marker never reaches a sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_pending_sends_iggy_stored() {
    use runtime_core::{OutgoingMessage, PendingSend, SEND_MARKER_HEADER};
    let target = target().await;
    let dir = temp_dir("e2e-resume");
    let stream = unique("e2e-resume");
    let state = dir.join("state");
    let context = context(&target, &state).await;
    // What a crash leaves: confirmed at 50; a send up to 80 that Iggy stored (its
    // marked message is in the topic); a send up to 120 it did not store.
    let (stored, lost) = (0x5eed_0001_u128, 0x5eed_0002_u128);
    let marked = |marker: u128| connector_sdk::OwnedHeader {
        key: SEND_MARKER_HEADER.to_owned(),
        kind: connector_sdk::HeaderKind::Uint128,
        value: marker.to_le_bytes().to_vec(),
    };
    context
        .bus
        .ensure_topic(&Destination::new(&stream, "t"))
        .await
        .unwrap();
    context
        .bus
        .send(
            &Destination::new(&stream, "t"),
            vec![OutgoingMessage {
                id: None,
                headers: vec![
                    marked(stored),
                    connector_sdk::OwnedHeader::string("kept", "yes"),
                ],
                payload: bytes::Bytes::from_static(b"{\"seq\":79}"),
            }],
        )
        .await
        .unwrap();
    let pending = |upto: u64, marker: u128| PendingSend {
        state: Some(upto.to_le_bytes().to_vec()),
        stream: stream.clone(),
        topic: "t".to_owned(),
        marker,
    };
    StateStore::new(&state)
        .write_saved(
            "random",
            SavedState {
                state: Some(50u64.to_le_bytes().to_vec()),
                pending: vec![pending(80, stored), pending(120, lost)],
            },
        )
        .await
        .unwrap();

    let runtime = Runtime::start(
        active(vec![random_source(&stream, 150)]),
        plugins_for_test(),
        context,
    )
    .await;
    produced(&runtime, 70).await;
    runtime.shutdown(Duration::from_secs(10)).await;

    let messages = read_topic(&target, &stream, "t", 71).await;
    let values: Vec<serde_json::Value> = messages
        .iter()
        .map(|message| serde_json::from_slice(&message.payload).unwrap())
        .collect();
    assert_eq!(
        seqs(&values),
        (79..150).collect::<Vec<_>>(),
        "resumed after the stored send (80), not after the lost one (120)"
    );
    let headers: Vec<&str> = messages[0]
        .headers
        .iter()
        .map(|header| header.key.as_str())
        .collect();
    assert_eq!(headers, ["kept"], "the marker is not handed on");
    let saved = StateStore::new(&state).read_saved("random").await.unwrap();
    assert_eq!(
        (saved.state, saved.pending.len()),
        (Some(150u64.to_le_bytes().to_vec()), 0)
    );
}

/// The marker search reads back from the topic's end: a marker behind other messages
/// is found, one that was never sent or lies beyond the search depth is not. (The depth
/// is per partition: the last check expects the topic as the runtime creates it, with
/// one partition.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_is_found_behind_other_messages_within_the_search_depth() {
    use runtime_core::{MARKER_SEARCH_DEPTH, OutgoingMessage, SEND_MARKER_HEADER};
    let target = target().await;
    let dir = temp_dir("e2e-marker");
    let stream = unique("e2e-marker");
    let bus = context(&target, &dir.join("state")).await.bus;
    let message = |marker: Option<u128>| OutgoingMessage {
        id: None,
        headers: marker
            .map(|marker| connector_sdk::OwnedHeader {
                key: SEND_MARKER_HEADER.to_owned(),
                kind: connector_sdk::HeaderKind::Uint128,
                value: marker.to_le_bytes().to_vec(),
            })
            .into_iter()
            .collect(),
        payload: bytes::Bytes::from_static(b"{}"),
    };
    let (bus, stream) = (&bus, stream.as_str());
    let others = |count: u32| async move {
        for _ in 0..count / 500 {
            bus.send(
                &Destination::new(stream, "t"),
                (0..500).map(|_| message(None)).collect(),
            )
            .await
            .unwrap();
        }
    };
    bus.ensure_topic(&Destination::new(stream, "t"))
        .await
        .unwrap();
    assert_eq!(
        bus.find_marker(&Destination::new(stream, "t"), 1)
            .await
            .unwrap(),
        Some(false),
        "empty topic"
    );
    bus.send(&Destination::new(stream, "t"), vec![message(Some(1))])
        .await
        .unwrap();
    others(2500).await;
    assert_eq!(
        bus.find_marker(&Destination::new(stream, "t"), 1)
            .await
            .unwrap(),
        Some(true),
        "three pages back"
    );
    assert_eq!(
        bus.find_marker(&Destination::new(stream, "t"), 2)
            .await
            .unwrap(),
        Some(false),
        "never sent"
    );
    others(MARKER_SEARCH_DEPTH).await;
    assert_eq!(
        bus.find_marker(&Destination::new(stream, "t"), 1)
            .await
            .unwrap(),
        Some(false),
        "beyond the search depth"
    );
}
