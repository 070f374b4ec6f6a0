//! Finding sinks whose consumer group sits on unread messages that nobody reads.
//!
//! A killed Iggy server keeps the group members of the connections it lost, holding
//! their partitions with nobody behind them (iggy-server 0.9.0-edge.5; see the test
//! server's `restart_after`): a sink that reconnects joins as a new member and gets
//! only what is left, possibly nothing, and its polls come back empty while the
//! topic grows. A sink therefore looks at its group's stored offsets every
//! [`CHECK_INTERVAL`]: that is its lag, and a partition whose unread messages have
//! not moved its offset for [`StallPolicy::reset_group_after`] has no live reader,
//! so the sink resets the group (`MessageBus::reset_group`).

use std::time::{Duration, Instant};

use crate::bus::GroupProgress;

/// When a sink whose group has unread messages counts as stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallPolicy {
    /// A running sink with unread messages that delivered nothing for this long is
    /// reported `stalled` (and `/ready` says so) until it delivers again.
    pub report_after: Duration,
    /// A partition with unread messages whose group offset has not moved for this
    /// long is taken to have no live reader: the sink resets its group.
    pub reset_group_after: Duration,
}

impl StallPolicy {
    /// Reports after `report_after`, and resets a group after a third of it, so that
    /// a group a killed server left stuck moves again before anyone is told.
    pub fn new(report_after: Duration) -> Self {
        StallPolicy {
            report_after,
            reset_group_after: report_after / 3,
        }
    }
}

impl Default for StallPolicy {
    fn default() -> Self {
        StallPolicy::new(Duration::from_secs(30))
    }
}

/// How often a sink looks at its group's progress.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What one sink (stream and topic) saw of its group's progress.
#[derive(Debug, Default)]
pub(crate) struct GroupWatch {
    last_check: Option<Instant>,
    /// Whether the bus tells a group's progress.
    pub(crate) measures: Measures,
    /// The group id of the last look: a group made again starts every clock again.
    group_id: Option<u32>,
    /// The partitions with unread messages, with their stored offset and since when
    /// it has been that.
    unread: Vec<Unread>,
}

/// Whether a sink's lag comes from its group's progress.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measures {
    /// Not asked yet, or the last look failed: the lag is the polled partition's.
    #[default]
    Unknown,
    /// The bus tells the group's progress: the lag is the group's.
    Group,
    /// The bus cannot tell: it is not asked again.
    CannotTell,
}

#[derive(Debug)]
struct Unread {
    partition_id: u32,
    stored: Option<u64>,
    since: Instant,
}

/// One look at a group's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupLook {
    /// Messages beyond the group's stored offsets, over every partition.
    pub(crate) lag: u64,
    /// The longest a partition with unread messages has had its offset stand still.
    pub(crate) stuck_for: Duration,
}

impl GroupWatch {
    /// Whether it is time for another look; if so, the look counts as taken (so a
    /// look that fails is not tried again before the next interval).
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        let due = self.measures != Measures::CannotTell
            && self
                .last_check
                .is_none_or(|last| now.saturating_duration_since(last) >= CHECK_INTERVAL);
        if due {
            self.last_check = Some(now);
        }
        due
    }

    /// Takes in the group's progress at `now`.
    pub(crate) fn observe(&mut self, progress: &GroupProgress, now: Instant) -> GroupLook {
        self.measures = Measures::Group;
        if self.group_id.replace(progress.group_id) != Some(progress.group_id) {
            // Made again (reset, here or by another runtime): its members start afresh.
            self.unread.clear();
        }
        let mut unread = Vec::new();
        let mut lag = 0;
        for partition in &progress.partitions {
            let messages = partition.unread();
            if messages == 0 {
                continue;
            }
            lag += messages;
            let since = self
                .unread
                .iter()
                .find(|seen| {
                    seen.partition_id == partition.partition_id && seen.stored == partition.stored
                })
                .map_or(now, |seen| seen.since);
            unread.push(Unread {
                partition_id: partition.partition_id,
                stored: partition.stored,
                since,
            });
        }
        self.unread = unread;
        let stuck_for = self
            .unread
            .iter()
            .map(|partition| now.saturating_duration_since(partition.since))
            .max()
            .unwrap_or_default();
        GroupLook { lag, stuck_for }
    }

    /// Starts over (after the group was reset).
    pub(crate) fn forget(&mut self) {
        self.unread.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::PartitionProgress;

    fn progress(partition_id: u32, end: u64, stored: Option<u64>) -> PartitionProgress {
        PartitionProgress {
            partition_id,
            end,
            stored,
        }
    }

    fn group(partitions: &[PartitionProgress]) -> GroupProgress {
        GroupProgress {
            group_id: 1,
            partitions: partitions.to_vec(),
        }
    }

    #[test]
    fn unread_counts_what_lies_beyond_the_stored_offset() {
        assert_eq!(progress(0, 0, None).unread(), 0);
        assert_eq!(progress(0, 10, None).unread(), 10);
        assert_eq!(progress(0, 10, Some(9)).unread(), 0);
        assert_eq!(progress(0, 10, Some(3)).unread(), 6);
        // A stored offset beyond the end (a server that lost messages) reads as none.
        assert_eq!(progress(0, 2, Some(7)).unread(), 0);
    }

    #[test]
    fn a_partition_is_stuck_while_its_unread_messages_leave_its_offset_where_it_is() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut watch = GroupWatch::default();
        assert!(watch.due(start));
        assert!(!watch.due(start), "taken");
        let look = watch.observe(
            &group(&[progress(0, 10, Some(4)), progress(1, 5, Some(4))]),
            start,
        );
        assert_eq!(
            look,
            GroupLook {
                lag: 5,
                stuck_for: Duration::ZERO
            }
        );
        assert!(watch.due(at(1)));
        // Partition 0 stands still; partition 1 got new messages and nobody reads them.
        let look = watch.observe(
            &group(&[progress(0, 12, Some(4)), progress(1, 8, Some(4))]),
            at(4),
        );
        assert_eq!(look.lag, 10);
        assert_eq!(look.stuck_for, Duration::from_secs(4));
        // Partition 0 moves: its clock starts again; partition 1's clock started when it
        // first had unread messages.
        let look = watch.observe(
            &group(&[progress(0, 12, Some(6)), progress(1, 8, Some(4))]),
            at(6),
        );
        assert_eq!(look.stuck_for, Duration::from_secs(2));
        // All read: nothing is stuck.
        let look = watch.observe(
            &group(&[progress(0, 12, Some(11)), progress(1, 8, Some(7))]),
            at(7),
        );
        assert_eq!(
            look,
            GroupLook {
                lag: 0,
                stuck_for: Duration::ZERO
            }
        );
        let look = watch.observe(&group(&[progress(0, 13, Some(11))]), at(9));
        assert_eq!(
            look.stuck_for,
            Duration::ZERO,
            "new unread messages start a clock"
        );
        watch.forget();
        let look = watch.observe(&group(&[progress(0, 13, Some(11))]), at(12));
        assert_eq!(look.stuck_for, Duration::ZERO, "forgotten");
        let look = watch.observe(&group(&[progress(0, 13, Some(11))]), at(20));
        assert_eq!(look.stuck_for, Duration::from_secs(8));
        // A group made again (another id) starts every clock again.
        let made_again = GroupProgress {
            group_id: 2,
            partitions: vec![progress(0, 13, Some(11))],
        };
        assert_eq!(watch.observe(&made_again, at(21)).stuck_for, Duration::ZERO);
        watch.measures = Measures::CannotTell;
        assert!(
            !watch.due(at(60)),
            "a bus that cannot tell is not asked again"
        );
    }
}
