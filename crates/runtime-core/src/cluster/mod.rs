//! Cluster mode: several runtimes share one set of connector configs, and every source
//! runs on exactly one of them, chosen through Iggy itself.
//!
//! - **Membership and placement.** Each runtime ([`Cluster`]) joins the consumer group
//!   named after the cluster on the coordination topic. A source maps to one of that
//!   topic's partitions ([`partition_of`]: a hash of its key), and runs on the member
//!   the server assigns that partition to. When a member leaves or its connection
//!   closes, the server deals its partitions to the others, whose coordinators see it
//!   at their next sync (`coordinator.rs`) and start those sources.
//! - **Fencing.** A member that has not heard from the server for
//!   [`ClusterSettings::fence_timeout`] (or whose coordination connection dropped)
//!   stops its sources; a member that gains a partition waits `fence_timeout` before it
//!   starts its sources. So by the time a source starts on its new member, the member
//!   that had it was asked to stop it. The batch it had in flight gets
//!   `sync_interval` to finish; after that the runtime stops waiting for it, but a
//!   send (or state write) already handed to the client may still reach the server
//!   later: duplicates, never a gap, since the new member resumes from the newest
//!   state record, which never runs ahead of what Iggy stored.
//! - **State.** A source's state is a record in the state topic (`state_log.rs`), the
//!   newest record of a source winning, so whichever member runs it next resumes from
//!   it.
//!
//! Sinks are not placed: every member runs every sink, and the members share each
//! topic's partitions through the sink's own consumer group.

mod coordinator;
mod state_log;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::bus::{Destination, GroupMember};

pub(crate) use state_log::StateLog;

/// How a member takes part in its cluster (`[cluster]` of the runtime config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The cluster: the members' consumer group, and the mark on its state records.
    pub name: String,
    /// What this member is called in [`ClusterView`].
    pub member_name: String,
    /// The coordination topic.
    pub coordination: Destination,
    /// The topic of the sources' state records.
    pub state: Destination,
    /// The partitions both topics are made with, when they are missing.
    pub partitions: u32,
    /// How long the state and coordination topics keep a record (`None`: for ever);
    /// the state of a source that saved none for a quarter of it is written again.
    pub state_retention: Option<Duration>,
    /// How often the member asks the server for its partitions.
    pub sync_interval: Duration,
    /// How long a member that does not hear from the server keeps its sources, and how
    /// long a member that gains a partition waits before it starts its sources.
    pub fence_timeout: Duration,
}

impl ClusterSettings {
    /// The settings of an enabled `[cluster]` section (`None` when it is off); an empty
    /// `member_name` becomes the host name.
    pub fn from_config(config: &config_provider::ClusterConfig) -> Option<ClusterSettings> {
        if !config.enabled {
            return None;
        }
        let member_name = if config.member_name.is_empty() {
            host_name()
        } else {
            config.member_name.clone()
        };
        Some(ClusterSettings {
            name: config.name.clone(),
            member_name,
            coordination: Destination::new(&config.stream, &config.topic),
            state: Destination::new(&config.stream, &config.state_topic),
            partitions: config.partitions,
            state_retention: Some(config.state_retention.get())
                .filter(|retention| !retention.is_zero()),
            sync_interval: config.sync_interval.get(),
            fence_timeout: config.fence_timeout.get(),
        })
    }
}

/// This machine's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), or "member".
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "member".to_owned())
}

/// The coordination partition of the source `key`, out of `partitions`: FNV-1a of the
/// key, so that every member (and every version of this program) agrees.
///
/// ```
/// let partition = runtime_core::cluster::partition_of("postgres_orders", 32);
/// assert!(partition < 32);
/// assert_eq!(partition, runtime_core::cluster::partition_of("postgres_orders", 32));
/// ```
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    (crate::state::fnv1a(&[key.as_bytes()]) % u64::from(partitions.max(1))) as u32
}

/// Which coordination partitions' sources run here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Placement {
    /// The coordination topic's partition count; 0 until known (nothing runs).
    partitions: u32,
    /// The partitions whose sources run here, each since when.
    here: BTreeMap<u32, SystemTime>,
}

impl Placement {
    fn runs(&self, key: &str) -> bool {
        self.partitions > 0 && self.here.contains_key(&partition_of(key, self.partitions))
    }
}

/// A member as the last sync saw it, and what its last card said.
#[derive(Debug, Clone, Default)]
struct Members {
    /// The group's members with their partitions, as listed after this member's last
    /// sync that found it a member (empty while it is none).
    listed: Vec<GroupMember>,
    /// The newest card of each member (by its card id), as read from the topic.
    cards: BTreeMap<String, Card>,
    /// This member's partitions as the server last assigned them (those still in
    /// their handover wait too).
    assigned: BTreeSet<u32>,
    /// When the last sync the server answered was sent.
    heard: Option<tokio::time::Instant>,
}

/// What a member says of itself on the coordination topic whenever its partitions
/// change (and every ten minutes): other members show it in their [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Card {
    cluster: String,
    /// Unique per run of a member.
    id: String,
    name: String,
    /// The partitions the server assigned it (by which the others know it).
    assigned: Vec<u32>,
    /// The partitions whose sources it runs, each since when (Unix milliseconds).
    here: BTreeMap<u32, u64>,
    /// When it wrote the card (Unix milliseconds).
    at: u64,
}

/// This runtime as a member of a cluster: where its sources run. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

#[derive(Debug)]
struct ClusterInner {
    settings: ClusterSettings,
    /// Unique per run: the id on this member's cards.
    card_id: String,
    placement: watch::Sender<Placement>,
    members: Mutex<Members>,
    /// Set once the member is to leave: the coordinator stops and leaves the group.
    leaving: watch::Sender<bool>,
    /// Where its sources keep their state (refreshed by the coordinator).
    state: crate::StateStore,
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl Cluster {
    /// A member with nothing placed on it yet, its sources' state in `state`;
    /// [`Cluster::coordinate`] takes it into the cluster.
    pub fn new(settings: ClusterSettings, state: crate::StateStore) -> Cluster {
        Cluster {
            inner: Arc::new(ClusterInner {
                settings,
                card_id: uuid::Uuid::new_v4().simple().to_string(),
                placement: watch::channel(Placement::default()).0,
                members: Mutex::default(),
                leaving: watch::channel(false).0,
                state,
            }),
        }
    }

    /// How this member takes part.
    pub fn settings(&self) -> &ClusterSettings {
        &self.inner.settings
    }

    /// Whether the source `key` runs on this member now.
    pub fn runs_here(&self, key: &str) -> bool {
        self.inner.placement.borrow().runs(key)
    }

    /// Resolves once the source `key` is placed on this member.
    pub(crate) async fn placed_here(&self, key: &str) {
        let mut placement = self.inner.placement.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail here.
        let _ = placement.wait_for(|placement| placement.runs(key)).await;
    }

    /// Resolves once the source `key` is no longer placed on this member.
    pub(crate) async fn moved_away(&self, key: &str) {
        let mut placement = self.inner.placement.subscribe();
        let _ = placement.wait_for(|placement| !placement.runs(key)).await;
    }

    /// Records that the server answered a sync sent at `asked_at`.
    fn heard(&self, asked_at: tokio::time::Instant) {
        self.members().heard = Some(asked_at);
    }

    /// When the last sync the server answered was sent.
    fn last_heard(&self) -> Option<tokio::time::Instant> {
        self.members().heard
    }

    /// Why this member cannot run sources now: it has not joined the cluster's group,
    /// or has not heard from the server for `fence_timeout`; `None` when it takes
    /// part. (`GET /ready` reports it: a member that never joins runs nothing.)
    pub fn problem(&self) -> Option<String> {
        let settings = &self.inner.settings;
        match self.members().heard {
            None => Some(format!(
                "not yet a member of cluster {}: its coordinator has had no answer from Iggy",
                settings.name
            )),
            Some(heard) if heard.elapsed() >= settings.fence_timeout => Some(format!(
                "cluster {}: no answer from Iggy for {} s; this member runs none of its sources",
                settings.name,
                heard.elapsed().as_secs()
            )),
            Some(_) => None,
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.inner
            .members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cluster as this member sees it, with `sources` (every source key this
    /// runtime has a config for) placed on the members that run them.
    pub fn view(&self, sources: &[String]) -> ClusterView {
        let placement = self.inner.placement.borrow().clone();
        let members = self.members().clone();
        let partitions = placement.partitions;
        let sources_on = |on: &dyn Fn(u32) -> Option<Option<u64>>| -> Vec<PlacedSource> {
            sources
                .iter()
                .filter_map(|key| {
                    let since = on(partition_of(key, partitions))?;
                    Some(PlacedSource {
                        key: key.clone(),
                        since_unix_ms: since,
                    })
                })
                .collect()
        };
        // This member by what the server assigned it: partitions still in their
        // handover wait are its, though their sources do not run yet.
        let mine = members.assigned.clone();
        let mut view = Vec::new();
        view.push(MemberView {
            name: self.inner.settings.member_name.clone(),
            this_member: true,
            partitions: mine.iter().copied().collect(),
            sources: sources_on(&|partition| {
                mine.contains(&partition).then(|| {
                    placement
                        .here
                        .get(&partition)
                        .map(|since| unix_millis(*since))
                })
            }),
        });
        // The server's list holds this member too (the coordinator keeps a list only
        // while it is a member): the entry with its assignment is this member.
        let mut others = members.listed.clone();
        if let Some(me) = others
            .iter()
            .position(|member| member.partitions.iter().copied().collect::<BTreeSet<u32>>() == mine)
        {
            others.remove(me);
        }
        // Cards by newest first; each names one member (by its assignment), and
        // members without partitions take the cards without any in turn.
        let mut cards: Vec<&Card> = members
            .cards
            .values()
            .filter(|card| card.id != self.inner.card_id)
            .collect();
        cards.sort_by_key(|card| std::cmp::Reverse(card.at));
        for member in &others {
            let theirs: BTreeSet<u32> = member.partitions.iter().copied().collect();
            let card = cards
                .iter()
                .position(|card| card.assigned.iter().copied().collect::<BTreeSet<u32>>() == theirs)
                .map(|index| cards.remove(index));
            view.push(MemberView {
                name: card
                    .map_or_else(|| format!("member {}", member.id), |card| card.name.clone()),
                this_member: false,
                partitions: theirs.iter().copied().collect(),
                sources: sources_on(&|partition| {
                    theirs
                        .contains(&partition)
                        .then(|| card.and_then(|card| card.here.get(&partition).copied()))
                }),
            });
        }
        ClusterView {
            cluster: self.inner.settings.name.clone(),
            partitions,
            members: view,
        }
    }

    /// Stops coordinating: the member's sources are no longer placed here, and the
    /// coordinator leaves the group so that the server deals its partitions to the
    /// other members at once. Call it once the sources have stopped.
    pub fn leave(&self) {
        self.inner.leaving.send_replace(true);
    }
}

/// The cluster as one member sees it: `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterView {
    /// The cluster's name.
    pub cluster: String,
    /// The coordination topic's partitions (0 until this member has seen it).
    pub partitions: u32,
    /// This member first, then the others the server lists.
    pub members: Vec<MemberView>,
}

/// One member of a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberView {
    /// Its `member_name` (from its card; "member N" until it wrote one).
    pub name: String,
    /// Whether it is the member answering.
    pub this_member: bool,
    /// The coordination partitions the server assigned it.
    pub partitions: Vec<u32>,
    /// The sources on those partitions, of those the answering member has configs
    /// for: running there, or about to start once the handover wait is over.
    pub sources: Vec<PlacedSource>,
}

/// A source placed on a member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlacedSource {
    /// The source's key.
    pub key: String,
    /// Since when it runs there (Unix milliseconds): `None` while it waits out the
    /// handover, or until that member's card says.
    pub since_unix_ms: Option<u64>,
}

/// A member of a cluster of four partitions syncing every 10 ms, for unit tests.
#[cfg(test)]
fn test_cluster(fence_timeout: Duration) -> Cluster {
    Cluster::new(
        ClusterSettings {
            name: "c".to_owned(),
            member_name: "m".to_owned(),
            coordination: Destination::new("s", "t"),
            state: Destination::new("s", "u"),
            partitions: 4,
            state_retention: None,
            sync_interval: Duration::from_millis(10),
            fence_timeout,
        },
        crate::StateStore::new("unused"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_over_partitions_and_every_member_agrees() {
        let keys: Vec<String> = (0..64).map(|n| format!("source_{n}")).collect();
        let used: BTreeSet<u32> = keys.iter().map(|key| partition_of(key, 8)).collect();
        assert_eq!(used.len(), 8, "64 keys leave no partition of 8 unused");
        assert_eq!(partition_of("a", 1), 0);
        assert_eq!(
            partition_of("a", 0),
            0,
            "no partitions yet: never a division by 0"
        );
    }

    #[test]
    fn a_source_runs_only_where_its_partition_is_placed() {
        let cluster = test_cluster(Duration::from_millis(20));
        assert!(
            !cluster.runs_here("a"),
            "nothing placed before the first sync"
        );
        let partition = partition_of("a", 4);
        cluster.inner.placement.send_replace(Placement {
            partitions: 4,
            here: BTreeMap::from([(partition, SystemTime::now())]),
        });
        assert!(cluster.runs_here("a"));
        cluster.members().assigned = BTreeSet::from([partition]);
        let view = cluster.view(&["a".to_owned()]);
        assert_eq!(view.members.len(), 1);
        assert_eq!(view.members[0].sources[0].key, "a");
        cluster.inner.placement.send_replace(Placement {
            partitions: 4,
            here: BTreeMap::new(),
        });
        assert!(!cluster.runs_here("a"));
    }
}
