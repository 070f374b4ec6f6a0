//! Cluster mode's source state in Iggy: a member reads what another saved, the newest
//! record wins, clusters sharing the topic keep apart, and an idle source's state is
//! written again so that the topic's expiry cannot take it.

use std::sync::Arc;
use std::time::Duration;

use iggy_connectors_tests::unique;
use iggy_test_server::TestTarget;
use runtime_core::cluster::ClusterSettings;
use runtime_core::{
    Destination, IggyBus, IggySettings, MessageBus, PendingSend, SavedState, StateStore,
};

fn cluster_settings(stream: &str, name: &str) -> ClusterSettings {
    ClusterSettings {
        name: name.to_owned(),
        member_name: "m".to_owned(),
        coordination: Destination::new(stream, "coordination"),
        state: Destination::new(stream, "state"),
        partitions: 2,
        state_retention: Some(Duration::from_secs(3600)),
        sync_interval: Duration::from_millis(100),
        fence_timeout: Duration::from_secs(1),
    }
}

/// The messages in the state topic's partitions, in all.
async fn records(bus: &dyn MessageBus, to: &Destination) -> usize {
    let mut count = 0;
    for partition in 0..2 {
        let mut offset = 0;
        while let Some(polled) = bus.read(to, partition, offset, 1_000).await.unwrap() {
            let Some(last) = polled.messages.last() else {
                break;
            };
            offset = last.offset + 1;
            count += polled.messages.len();
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_resume_from_the_newest_state_another_saved() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let bus: Arc<dyn MessageBus> = Arc::new(
        IggyBus::connect(&IggySettings::new(target.address.clone()))
            .await
            .unwrap(),
    );
    let stream = unique("cluster-state");
    let settings = cluster_settings(&stream, &unique("c"));
    let one = StateStore::in_iggy(bus.clone(), &settings);
    assert_eq!(one.read("a").await.unwrap(), None, "no state yet");
    one.write("a", b"1".to_vec()).await.unwrap();
    one.write("a", b"2".to_vec()).await.unwrap();
    one.write("b", b"x".to_vec()).await.unwrap();

    // Another member: a store of its own, nothing cached.
    let two = StateStore::in_iggy(bus.clone(), &settings);
    assert_eq!(two.read("a").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(two.read("b").await.unwrap(), Some(b"x".to_vec()));
    let pending = SavedState {
        state: Some(b"3".to_vec()),
        pending: vec![PendingSend {
            state: Some(b"4".to_vec()),
            stream: "s".to_owned(),
            topic: "t".to_owned(),
            marker: 7,
        }],
    };
    two.write_saved("a", pending.clone()).await.unwrap();
    // The first member, back on the source, reads what the second saved.
    assert_eq!(one.read_saved("a").await.unwrap(), pending);

    // A cluster of another name sharing the stream and topic sees none of it.
    let other = StateStore::in_iggy(bus.clone(), &cluster_settings(&stream, &unique("other")));
    assert_eq!(other.read("a").await.unwrap(), None);

    // Refreshing writes again the state of the idle sources that run here (only `a`),
    // and changes nothing it reads.
    let before = records(bus.as_ref(), &settings.state).await;
    one.refresh_idle(Duration::ZERO, |key| key == "a").await;
    assert_eq!(records(bus.as_ref(), &settings.state).await, before + 1);
    assert_eq!(two.read_saved("a").await.unwrap(), pending);
    assert_eq!(two.read("b").await.unwrap(), Some(b"x".to_vec()));
}
