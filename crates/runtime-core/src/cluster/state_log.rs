//! Source state in Iggy, for cluster mode: every save is a message in the state topic,
//! on the partition of the source's key ([`super::partition_of`]), marked with the
//! cluster and the source; the newest such message is the source's state. Whichever
//! member runs the source next reads it there.
//!
//! A message's payload is the same checksummed record as a state file's slot
//! (`crate::state`), so a torn or foreign payload is skipped, never taken for a state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_sdk::OwnedHeader;
use tokio::sync::OnceCell;

use crate::bus::{BusError, Destination, IncomingMessage, MessageBus, OutgoingMessage};
use crate::state::SavedState;

/// The header that names the cluster of a state record.
pub const CLUSTER_HEADER: &str = "iggy_connectors_cluster";

/// The header that names the source of a state record.
pub const SOURCE_HEADER: &str = "iggy_connectors_source";

/// Records read per request, newest page first, looking for a source's newest record.
const PAGE: u32 = 1_000;

/// Where sources of a cluster keep their state.
pub(crate) struct StateLog {
    bus: Arc<dyn MessageBus>,
    to: Destination,
    cluster: String,
    partitions: u32,
    retention: Option<std::time::Duration>,
    /// The connection records go on (one of its own, made on first use) and the
    /// state topic's partition count.
    ready: OnceCell<(Arc<dyn MessageBus>, u32)>,
    /// Per source: held while its state is read or written here, and when it was last
    /// read or written.
    keys: Mutex<HashMap<String, KeyUse>>,
}

/// A source's lock (held while its state is read or written) and its last use.
type KeyUse = (Arc<tokio::sync::Mutex<()>>, Instant);

impl std::fmt::Debug for StateLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateLog")
            .field("to", &self.to)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn io_error(error: BusError) -> std::io::Error {
    std::io::Error::other(format!("source state in Iggy: {error}"))
}

fn header_is(message: &IncomingMessage, key: &str, value: &str) -> bool {
    message
        .headers
        .iter()
        .any(|header| header.key == key && header.value == value.as_bytes())
}

impl StateLog {
    /// A log in `to` for the cluster `cluster`, over `bus` (a connection of its own is
    /// asked for on first use); the topic is made with `partitions` and `retention` if
    /// missing.
    pub(crate) fn new(
        bus: Arc<dyn MessageBus>,
        to: Destination,
        cluster: String,
        partitions: u32,
        retention: Option<std::time::Duration>,
    ) -> Self {
        StateLog {
            bus,
            to,
            cluster,
            partitions,
            retention,
            ready: OnceCell::new(),
            keys: Mutex::default(),
        }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyUse>> {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until no one else reads or writes `key`'s state here, and marks it used
    /// now; the guard lets the next one in.
    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut keys = self.keys();
            let entry = keys
                .entry(key.to_owned())
                .or_insert_with(|| (Arc::default(), Instant::now()));
            entry.1 = Instant::now();
            entry.0.clone()
        };
        lock.lock_owned().await
    }

    /// The sources whose state was last read or written here `idle_for` ago or more.
    pub(crate) fn idle_keys(&self, idle_for: Duration) -> Vec<String> {
        self.keys()
            .iter()
            .filter(|(_, (_, used))| used.elapsed() >= idle_for)
            .map(|(key, _)| key.clone())
            .collect()
    }

    async fn ready(&self) -> std::io::Result<&(Arc<dyn MessageBus>, u32)> {
        self.ready
            .get_or_try_init(|| async {
                let bus = self
                    .bus
                    .for_connector("cluster-state")
                    .await
                    .map_err(io_error)?
                    .unwrap_or_else(|| self.bus.clone());
                let partitions = bus
                    .ensure_partitioned_topic(&self.to, self.partitions, self.retention)
                    .await
                    .map_err(io_error)?;
                if partitions == 0 {
                    return Err(std::io::Error::other(format!(
                        "the state topic {} has no partitions",
                        self.to
                    )));
                }
                Ok((bus, partitions))
            })
            .await
    }

    /// The newest record of `key` (the last one in its partition), with its
    /// sequence; `None` when it has none. Records are looked for on the key's
    /// partition, and, when it holds none, on every other one (the topic's partition
    /// count changed since they were written), where the highest sequence wins.
    pub(crate) async fn newest(&self, key: &str) -> std::io::Result<Option<(u64, SavedState)>> {
        let (bus, partitions) = self.ready().await?;
        let ends = bus.partition_ends(&self.to).await.map_err(io_error)?;
        let own = super::partition_of(key, *partitions);
        if let Some(end) = ends.get(own as usize)
            && let Some(found) = self.newest_in(bus.as_ref(), key, own, *end).await?
        {
            return Ok(Some(found));
        }
        let mut newest: Option<(u64, SavedState)> = None;
        for (partition, end) in ends.iter().enumerate() {
            let partition = partition as u32;
            if partition == own {
                continue;
            }
            if let Some((sequence, saved)) =
                self.newest_in(bus.as_ref(), key, partition, *end).await?
                && newest.as_ref().is_none_or(|(best, _)| sequence > *best)
            {
                newest = Some((sequence, saved));
            }
        }
        if newest.is_some() {
            tracing::warn!(connector = %key, topic = %self.to, "the source's state was on another partition of the state topic: were its partitions changed?");
        }
        Ok(newest)
    }

    /// The last record of `key` in `partition`, which ends at `end`, read backwards a
    /// page at a time.
    async fn newest_in(
        &self,
        bus: &dyn MessageBus,
        key: &str,
        partition: u32,
        end: u64,
    ) -> std::io::Result<Option<(u64, SavedState)>> {
        let mut end = end;
        while end > 0 {
            let start = end.saturating_sub(u64::from(PAGE));
            // Everything in [start, end): a read may answer fewer than asked.
            let mut page: Vec<IncomingMessage> = Vec::new();
            let mut next = start;
            while next < end {
                let want = u32::try_from(end - next).unwrap_or(PAGE).min(PAGE);
                let read = bus
                    .read(&self.to, partition, next, want)
                    .await
                    .map_err(io_error)?
                    .ok_or_else(|| std::io::Error::other("this bus cannot read by offset"))?;
                let Some(last) = read.messages.last() else {
                    // Nothing more there (expired, or not yet visible).
                    break;
                };
                next = last.offset + 1;
                page.extend(
                    read.messages
                        .into_iter()
                        .filter(|message| message.offset < end),
                );
            }
            let found = page
                .iter()
                .rev()
                .filter(|message| {
                    header_is(message, CLUSTER_HEADER, &self.cluster)
                        && header_is(message, SOURCE_HEADER, key)
                })
                .find_map(|message| crate::state::decode_record(&message.payload));
            if found.is_some() {
                return Ok(found);
            }
            end = start;
        }
        Ok(None)
    }

    /// Appends `saved` as `key`'s newest record, with `sequence`; when this returns,
    /// Iggy stored it.
    pub(crate) async fn append(
        &self,
        key: &str,
        sequence: u64,
        saved: &SavedState,
    ) -> std::io::Result<()> {
        let (bus, partitions) = self.ready().await?;
        let record = crate::state::encode_record(sequence, saved)?;
        let message = OutgoingMessage {
            id: None,
            headers: vec![
                OwnedHeader::string(CLUSTER_HEADER, &self.cluster),
                OwnedHeader::string(SOURCE_HEADER, key),
            ],
            payload: record.into(),
        };
        bus.send_to_partition(
            &self.to,
            super::partition_of(key, *partitions),
            vec![message],
        )
        .await
        .map_err(io_error)
    }
}
