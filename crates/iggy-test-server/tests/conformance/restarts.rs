//! Restarts: what a killed server keeps of its consumer groups' members, and deleting
//! the group as the way out.

use std::time::Duration;

use iggy::prelude::*;
use iggy_test_server::{TestTarget, unique};

use crate::support::{client, connect_retrying, ensure_topic, id, send_text, within};

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
    let stream = unique("conf-ghost");
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
