//! Readiness: a stalled sink makes the runtime unready until it recovers by itself.

use std::time::Duration;

use hyper::StatusCode;
use iggy_connectors_tests::unique;
use iggy_test_server::TestTarget;
use runtime_core::StallPolicy;
use serde_json::{Value, json};

use crate::support::{fixture_on, with_key};

/// The sink's partition belongs to a group member that reads nothing (a client that
/// joined first and hangs; after a killed server, a member nobody is behind): the sink
/// has unread messages and delivers nothing, so `/ready` answers 503 naming it and
/// `/sinks/file` says `stalled`; then the sink resets its group by itself, delivers,
/// and the runtime is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_makes_the_runtime_unready_until_it_recovers_by_itself() {
    use iggy::prelude::{ConsumerGroupClient, Identifier};
    let target = TestTarget::from_env().await.unwrap();
    let stream = unique("api");
    let squatter = iggy_connectors_tests::iggy_client(&target.address)
        .await
        .unwrap();
    iggy_connectors_tests::create_topic(&squatter, &stream, "t", 1)
        .await
        .unwrap();
    let (stream_id, topic_id, group) = (
        Identifier::named(&stream).unwrap(),
        Identifier::named("t").unwrap(),
        "iggy-connect-sink-file",
    );
    squatter
        .create_consumer_group(&stream_id, &topic_id, group)
        .await
        .unwrap();
    squatter
        .join_consumer_group(&stream_id, &topic_id, &Identifier::named(group).unwrap())
        .await
        .unwrap();
    // Reported before it is reset, so that the test sees both.
    let stall = StallPolicy {
        report_after: Duration::from_secs(1),
        reset_group_after: Duration::from_secs(4),
    };
    let fixture = fixture_on(target, &stream, stall, with_key).await;
    let delivered = |value: &Value| value["metrics"]["messages_out"].as_u64().unwrap_or(0);
    let unready = fixture
        .eventually_json("/ready", "the runtime unready", |ready| {
            ready["reasons"].as_array().is_some_and(|reasons| {
                reasons.iter().any(|reason| {
                    reason
                        .as_str()
                        .is_some_and(|reason| reason.starts_with("sink file is stalled"))
                })
            })
        })
        .await;
    assert_eq!(unready["ready"], false, "{unready}");
    assert_eq!(
        fixture.get("/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let stalled = fixture.get("/sinks/file").await.json();
    assert_eq!(
        (&stalled["state"], &stalled["status"]),
        (&json!("stalled"), &json!("running")),
        "a stalled sink is running to upstream's clients: {stalled}"
    );
    assert_eq!(delivered(&stalled), 0, "{stalled}");
    assert!(
        stalled["metrics"]["lag"].as_u64().unwrap_or(0) > 0,
        "{stalled}"
    );
    let recovered = fixture
        .eventually_json("/sinks/file", "the sink delivering", |sink| {
            sink["status"] == "running" && delivered(sink) > 0
        })
        .await;
    assert!(
        recovered["metrics"]["group_resets"].as_u64().unwrap_or(0) >= 1,
        "{recovered}"
    );
    fixture
        .eventually_json("/ready", "the runtime ready again", |ready| {
            ready["ready"] == true
        })
        .await;
    fixture.stop().await;
    drop(squatter);
}
