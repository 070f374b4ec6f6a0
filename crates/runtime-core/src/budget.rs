//! What one connector's pipeline holds in memory, against its budget
//! (`memory_budget`): the source batches in flight and the requests made of them, a
//! sink's batches read from Iggy, read ahead and built for its plugin. A pipeline
//! reserves what it holds as it takes it ([`MemoryBudget::reserve`]: always granted,
//! so a batch larger than the budget still goes through, alone) and takes more only
//! while the budget has room ([`MemoryBudget::room`]): a source polls its plugin
//! later, a sink reads ahead less. The current and peak figures go to `/stats` and
//! `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One connector's memory budget and what is held against it (a cheap-to-clone handle).
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bytes a pipeline may hold before it waits (0: no limit).
    limit: AtomicU64,
    held: AtomicU64,
    peak: AtomicU64,
    /// Woken whenever bytes are given back.
    released: tokio::sync::Notify,
}

/// Bytes held against a [`MemoryBudget`], given back when dropped.
#[derive(Debug)]
#[must_use = "the bytes are given back when the reservation is dropped"]
pub(crate) struct Reservation {
    budget: MemoryBudget,
    bytes: u64,
}

impl MemoryBudget {
    /// Sets the budget (for a new run: another config version may say another).
    pub(crate) fn set_limit(&self, bytes: u64) {
        self.inner.limit.store(bytes, Ordering::Relaxed);
        self.inner.released.notify_waiters();
    }

    /// The budget in bytes (0: none).
    pub(crate) fn limit(&self) -> u64 {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> u64 {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// The most bytes held at once since the connector was first known.
    pub(crate) fn peak(&self) -> u64 {
        self.inner.peak.load(Ordering::Relaxed)
    }

    /// Holds `bytes` until the reservation is dropped. Always granted: callers ask for
    /// [`MemoryBudget::room`] before they take more.
    pub(crate) fn reserve(&self, bytes: usize) -> Reservation {
        let bytes = bytes as u64;
        self.hold(bytes);
        Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// Counts `bytes` more held (and the peak).
    fn hold(&self, bytes: u64) {
        let held = self.inner.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.inner.peak.fetch_max(held, Ordering::Relaxed);
    }

    /// Whether more may be taken now: less than the budget is held.
    pub(crate) fn has_room(&self) -> bool {
        let limit = self.limit();
        limit == 0 || self.held() < limit
    }

    /// Waits until [`MemoryBudget::has_room`].
    pub(crate) async fn room(&self) {
        loop {
            let released = self.inner.released.notified();
            if self.has_room() {
                return;
            }
            released.await;
        }
    }
}

impl Reservation {
    /// Adds `bytes` to what this reservation holds.
    pub(crate) fn grow(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        self.budget.hold(bytes);
        self.bytes += bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget
                .inner
                .held
                .fetch_sub(self.bytes, Ordering::Relaxed);
            self.budget.inner.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_until_dropped_and_the_peak_stays() {
        let budget = MemoryBudget::default();
        budget.set_limit(100);
        let first = budget.reserve(60);
        assert!(budget.has_room());
        let mut second = budget.reserve(30);
        second.grow(20);
        assert_eq!((budget.held(), budget.peak()), (110, 110));
        assert!(!budget.has_room(), "110 of 100 held");
        drop(first);
        assert_eq!((budget.held(), budget.peak()), (50, 110));
        assert!(budget.has_room());
        drop(second);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn room_waits_for_bytes_to_be_given_back() {
        let budget = MemoryBudget::default();
        budget.set_limit(10);
        let held = budget.reserve(10);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room while the budget is full");
        drop(held);
        waiting.await.unwrap();
    }

    #[test]
    fn no_limit_always_has_room() {
        let budget = MemoryBudget::default();
        let _held = budget.reserve(1 << 30);
        assert!(budget.has_room());
    }
}
