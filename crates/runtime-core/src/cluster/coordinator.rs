//! The member's coordinator: one task, on a connection of its own (its membership is
//! that connection's), that keeps the member in the group, asks the server for its
//! partitions every `sync_interval`, places their sources here once the handover wait
//! is over, and fences the member when it cannot hear from the server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;
use std::time::SystemTime;

use tokio::time::Instant;

use super::{Card, Cluster, Placement, unix_millis};
use crate::bus::{BusError, MessageBus, OutgoingMessage};

/// Cards read back from the coordination topic for the view (each member writes one
/// per change of its partitions, and one every [`CARD_EVERY`]).
const CARDS_READ: u32 = 200;

/// How often a member writes its card when nothing changed, so that other members'
/// cards do not push it out of the last [`CARDS_READ`].
const CARD_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Rounds between two checks of the coordination topic's partition count.
const RECOUNT_EVERY: u32 = 20;

/// What the coordinator knows between syncs.
struct Coordinator {
    cluster: Cluster,
    bus: Arc<dyn MessageBus>,
    /// The coordination topic's partitions; 0 until it was made or found.
    partitions: u32,
    /// Partitions assigned to this member whose handover wait is not over yet.
    waiting: BTreeMap<u32, Instant>,
    /// What the last card said (assigned and running partitions), and when it went.
    carded: Option<(BTreeSet<u32>, BTreeSet<u32>, Instant)>,
    /// Rounds since the partition count was last checked.
    rounds: u32,
}

impl Cluster {
    /// Runs the member's coordinator until [`Cluster::leave`], on a connection of its
    /// own from `bus` ([`MessageBus::for_connector`]); leaving, it leaves the group.
    pub async fn coordinate(self, bus: Arc<dyn MessageBus>) {
        let mut leaving = self.inner.leaving.subscribe();
        let own = loop {
            match bus.for_connector("cluster-coordinator").await {
                Ok(own) => break own.unwrap_or_else(|| bus.clone()),
                Err(error) => {
                    tracing::warn!(%error, "cannot open the cluster coordinator's connection; trying again");
                    tokio::select! {
                        _ = leaving.wait_for(|leaving| *leaving) => return,
                        () = tokio::time::sleep(self.settings().sync_interval) => {}
                    }
                }
            }
        };
        let mut coordinator = Coordinator {
            cluster: self.clone(),
            bus: own.clone(),
            partitions: 0,
            waiting: BTreeMap::new(),
            carded: None,
            rounds: 0,
        };
        tracing::info!(
            cluster = %self.settings().name,
            member = %self.settings().member_name,
            topic = %self.settings().coordination,
            "joining the cluster"
        );
        // An idle source's state is written again well before its records expire.
        let refresh_every = self
            .settings()
            .state_retention
            .map(|retention| retention / 4);
        let mut refreshed = Instant::now();
        // On a task of its own, so that the syncs keep their pace; one at a time.
        let mut refreshing: Option<tokio::task::JoinHandle<()>> = None;
        let settings = self.settings().clone();
        loop {
            // A round's requests all share one deadline, so that a round (its work
            // and the pause after it) never takes more than two sync intervals,
            // however the server answers: `unheard` counts on it. Setting up the
            // topics may take longer; nothing runs here until it is done.
            let budget = if coordinator.partitions == 0 {
                settings
                    .fence_timeout
                    .max(std::time::Duration::from_secs(2))
            } else {
                settings.sync_interval
            };
            let round_started = Instant::now();
            tokio::select! {
                _ = leaving.wait_for(|leaving| *leaving) => break,
                done = tokio::time::timeout(budget, coordinator.sync()) => {
                    // Out of time after the sync was answered: only the view is older.
                    let answered = coordinator
                        .cluster
                        .last_heard()
                        .is_some_and(|heard| heard >= round_started);
                    if done.is_err() && !answered {
                        coordinator.unheard("the server did not answer within sync_interval", Instant::now());
                    }
                }
            }
            if let Some(every) = refresh_every
                && refreshed.elapsed() >= every
                && refreshing.as_ref().is_none_or(|task| task.is_finished())
            {
                refreshed = Instant::now();
                let placed = self.clone();
                refreshing = Some(tokio::spawn(async move {
                    placed
                        .inner
                        .state
                        .refresh_idle(every, |key| placed.runs_here(key))
                        .await;
                }));
            }
            tokio::select! {
                _ = leaving.wait_for(|leaving| *leaving) => break,
                () = tokio::time::sleep(self.settings().sync_interval) => {}
            }
        }
        if let Some(task) = refreshing {
            task.abort();
        }
        // Its sources have stopped (the runtime leaves after them).
        self.inner
            .placement
            .send_modify(|placement| placement.here.clear());
        match tokio::time::timeout(
            settings.sync_interval,
            own.leave_group(&settings.coordination, &settings.name),
        )
        .await
        {
            Ok(Ok(())) => {
                tracing::info!(cluster = %settings.name, member = %settings.member_name, "left the cluster")
            }
            Ok(Err(error)) => {
                tracing::warn!(cluster = %settings.name, %error, "cannot leave the cluster's group; the server deals its partitions out once the connection closes")
            }
            Err(_) => {
                tracing::warn!(cluster = %settings.name, "the server did not answer the leave in time; it deals the partitions out once the connection closes")
            }
        }
        if !Arc::ptr_eq(&own, &bus) {
            own.close().await;
        }
    }
}

impl Coordinator {
    /// One round: make sure of the topics and the membership, ask for the partitions,
    /// place or fence.
    async fn sync(&mut self) {
        let settings = self.cluster.settings().clone();
        if !self.bus.connected() {
            self.fence("its connection to Iggy is down");
        }
        if self.partitions == 0 {
            match self.set_up().await {
                Ok(partitions) => self.partitions = partitions,
                Err(error) => {
                    tracing::warn!(cluster = %settings.name, %error, "cannot set up the cluster's topics; trying again");
                    return;
                }
            }
        }
        self.rounds += 1;
        if self.rounds >= RECOUNT_EVERY {
            self.rounds = 0;
            if let Ok(partitions) = self
                .bus
                .ensure_partitioned_topic(
                    &settings.coordination,
                    settings.partitions,
                    settings.state_retention,
                )
                .await
                && partitions != self.partitions
                && partitions > 0
            {
                // Sources map to partitions by the count: with another one they land
                // elsewhere. Stop them all and place them again by the new count.
                tracing::error!(cluster = %settings.name, topic = %settings.coordination, before = self.partitions, now = partitions, "the coordination topic's partition count changed; sources are placed again by the new count");
                self.fence("the coordination topic's partition count changed");
                self.partitions = partitions;
            }
        }
        let asked_at = Instant::now();
        match self
            .bus
            .assignment(&settings.coordination, &settings.name)
            .await
        {
            Ok(Some(partitions)) => {
                // The answer says how things stood at some moment after it was sent.
                self.cluster.heard(asked_at);
                let assigned: BTreeSet<u32> = partitions.into_iter().collect();
                self.place(assigned.clone(), Instant::now());
                self.cluster.members().assigned = assigned;
                self.list_members().await;
            }
            Ok(None) => {
                // Not a member (first round, or the connection was made again): the
                // server dealt this member's partitions out already.
                self.fence("it is not a member of the cluster's group");
                {
                    let mut members = self.cluster.members();
                    members.listed.clear();
                    members.assigned.clear();
                }
                match self
                    .bus
                    .join_group(&settings.coordination, &settings.name)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(cluster = %settings.name, member = %settings.member_name, "joined the cluster's group")
                    }
                    Err(error) => {
                        tracing::warn!(cluster = %settings.name, %error, "cannot join the cluster's group; trying again")
                    }
                }
            }
            Err(error) => self.unheard(&error.to_string(), Instant::now()),
        }
    }

    /// Creates the stream, the coordination and state topics if missing; the
    /// coordination topic's partitions.
    async fn set_up(&self) -> Result<u32, BusError> {
        let settings = self.cluster.settings();
        // Cards are all the coordination topic holds: they expire as states do.
        let partitions = self
            .bus
            .ensure_partitioned_topic(
                &settings.coordination,
                settings.partitions,
                settings.state_retention,
            )
            .await?;
        self.bus
            .ensure_partitioned_topic(
                &settings.state,
                settings.partitions,
                settings.state_retention,
            )
            .await?;
        if partitions == 0 {
            return Err(BusError::new(format!(
                "the coordination topic {} has no partitions",
                settings.coordination
            )));
        }
        Ok(partitions)
    }

    /// A sync failed: fence once the server has been silent so long that a member
    /// gaining this one's partitions may start their sources within the next round.
    fn unheard(&mut self, why: &str, now: Instant) {
        let settings = self.cluster.settings();
        // The check runs once a round, and a round (its deadline and the pause after
        // it) takes at most two sync intervals: fencing two of them before
        // `fence_timeout` is over fences in time.
        let limit = settings
            .fence_timeout
            .saturating_sub(settings.sync_interval.saturating_mul(2));
        let silent = self
            .cluster
            .last_heard()
            .is_none_or(|heard| now.saturating_duration_since(heard) >= limit);
        tracing::warn!(cluster = %settings.name, error = why, fenced = silent, "cannot sync with the cluster");
        if silent {
            self.fence(why);
        }
    }

    /// Nothing runs here any more: every source of the member stops.
    fn fence(&mut self, why: &str) {
        self.waiting.clear();
        let placement = &self.cluster.inner.placement;
        let had = !placement.borrow().here.is_empty();
        placement.send_modify(|placement| placement.here.clear());
        if had {
            tracing::warn!(cluster = %self.cluster.settings().name, reason = why, "fenced: this member's sources stop");
        }
    }

    /// The server assigned `assigned` (at `now`): partitions lost stop at once,
    /// partitions gained start once their handover wait is over.
    fn place(&mut self, assigned: BTreeSet<u32>, now: Instant) {
        let settings = self.cluster.settings().clone();
        self.waiting
            .retain(|partition, _| assigned.contains(partition));
        let placement = &self.cluster.inner.placement;
        let here: BTreeSet<u32> = placement.borrow().here.keys().copied().collect();
        for partition in &assigned {
            if !here.contains(partition) {
                self.waiting
                    .entry(*partition)
                    .or_insert(now + settings.fence_timeout);
            }
        }
        let due: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, due)| **due <= now)
            .map(|(partition, _)| *partition)
            .collect();
        for partition in &due {
            self.waiting.remove(partition);
        }
        let partitions = self.partitions;
        let changed = placement.send_if_modified(|placement| {
            let before = placement.clone();
            placement.partitions = partitions;
            placement
                .here
                .retain(|partition, _| assigned.contains(partition));
            for partition in &due {
                placement.here.insert(*partition, SystemTime::now());
            }
            *placement != before
        });
        if changed {
            let here: Vec<u32> = placement.borrow().here.keys().copied().collect();
            tracing::info!(cluster = %settings.name, member = %settings.member_name, partitions = ?here, "this member's partitions changed");
        }
    }

    /// Lists the group's members for the view, writes this member's card when its
    /// partitions changed, and reads the newest cards. Failures only leave the view
    /// older.
    async fn list_members(&mut self) {
        let settings = self.cluster.settings().clone();
        let placement = self.cluster.inner.placement.borrow().clone();
        let here: BTreeSet<u32> = placement.here.keys().copied().collect();
        let assigned = self.cluster.members().assigned.clone();
        let stale = self
            .carded
            .as_ref()
            .is_none_or(|(said_assigned, said_here, at)| {
                *said_assigned != assigned || *said_here != here || at.elapsed() >= CARD_EVERY
            });
        if stale {
            let card = Card {
                cluster: settings.name.clone(),
                id: self.cluster.inner.card_id.clone(),
                name: settings.member_name.clone(),
                assigned: assigned.iter().copied().collect(),
                here: placement
                    .here
                    .iter()
                    .map(|(partition, since)| (*partition, unix_millis(*since)))
                    .collect(),
                at: unix_millis(SystemTime::now()),
            };
            if let Ok(payload) = serde_json::to_vec(&card) {
                let message = OutgoingMessage {
                    id: None,
                    headers: Vec::new(),
                    payload: payload.into(),
                };
                if self
                    .bus
                    .send_to_partition(&settings.coordination, 0, vec![message])
                    .await
                    .is_ok()
                {
                    self.carded = Some((assigned, here, Instant::now()));
                }
            }
        }
        if let Ok(listed) = self
            .bus
            .group_members(&settings.coordination, &settings.name)
            .await
        {
            self.cluster.members().listed = listed;
        }
        if let Ok(cards) = self.read_cards().await {
            self.cluster.members().cards = cards;
        }
    }

    /// The newest card of each member among the last [`CARDS_READ`] written.
    async fn read_cards(&self) -> Result<BTreeMap<String, Card>, BusError> {
        let settings = self.cluster.settings();
        let ends = self.bus.partition_ends(&settings.coordination).await?;
        let end = ends.first().copied().unwrap_or(0);
        if end == 0 {
            return Ok(BTreeMap::new());
        }
        let start = end.saturating_sub(u64::from(CARDS_READ));
        let Some(read) = self
            .bus
            .read(&settings.coordination, 0, start, CARDS_READ)
            .await?
        else {
            return Ok(BTreeMap::new());
        };
        let mut cards = BTreeMap::new();
        for message in read.messages {
            if let Ok(card) = serde_json::from_slice::<Card>(&message.payload)
                && card.cluster == settings.name
            {
                cards.insert(card.id.clone(), card);
            }
        }
        Ok(cards)
    }
}

impl Placement {
    /// For the coordinator's unit tests: the partitions placed.
    #[cfg(test)]
    fn partitions_here(&self) -> BTreeSet<u32> {
        self.here.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coordinator of a fresh test member that heard from the server at `start`.
    fn coordinator(fence: Duration, start: Instant) -> (Cluster, Coordinator) {
        let cluster = super::super::test_cluster(fence);
        cluster.heard(start);
        let coordinator = Coordinator {
            cluster: cluster.clone(),
            bus: Arc::new(crate::bus::Closable::default()),
            partitions: 4,
            waiting: BTreeMap::new(),
            carded: None,
            rounds: 0,
        };
        (cluster, coordinator)
    }

    #[test]
    fn a_gained_partition_waits_out_the_handover_and_a_lost_one_stops_at_once() {
        let start = Instant::now();
        let (cluster, mut coordinator) = coordinator(Duration::from_secs(3), start);
        let here = || cluster.inner.placement.borrow().partitions_here();
        let fence = cluster.settings().fence_timeout;
        coordinator.place(BTreeSet::from([1, 2]), start);
        assert!(here().is_empty(), "gained, but the handover wait is on");
        let almost = start + fence - Duration::from_millis(1);
        coordinator.place(BTreeSet::from([1, 2]), almost);
        assert!(here().is_empty(), "gained, but the handover wait is on");
        coordinator.place(BTreeSet::from([1, 2]), start + fence);
        assert_eq!(here(), BTreeSet::from([1, 2]));
        coordinator.place(BTreeSet::from([2]), start + fence);
        assert_eq!(
            cluster.inner.placement.borrow().partitions_here(),
            BTreeSet::from([2]),
            "a partition dealt to another member stops here at once"
        );
    }

    #[test]
    fn a_member_that_cannot_hear_the_server_fences_itself_in_time() {
        let start = Instant::now();
        let (cluster, mut coordinator) = coordinator(Duration::from_secs(3), start);
        cluster.inner.placement.send_modify(|placement| {
            placement.partitions = 4;
            placement.here.insert(0, SystemTime::now());
        });
        // Rounds of 10 ms: fenced once fewer than two rounds are left.
        coordinator.unheard("test", start + Duration::from_millis(2970));
        assert_eq!(
            cluster.inner.placement.borrow().partitions_here(),
            BTreeSet::from([0])
        );
        coordinator.unheard("test", start + Duration::from_millis(2980));
        assert!(
            cluster
                .inner
                .placement
                .borrow()
                .partitions_here()
                .is_empty(),
            "fenced two rounds before fence_timeout is over"
        );
    }
}
