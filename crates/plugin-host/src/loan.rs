//! Payload memory lent out of a source plugin's unsettled batches.
//!
//! A source batch's payloads live in the plugin until the batch is settled (the ABI
//! keeps them valid and unchanged until then). Copying them out is the source path's
//! largest cost the raw client does not pay, so [`SourceBatch::payloads`] hands out
//! `Bytes` that read the plugin's memory directly. Each `Bytes` holds a [`Loan`]; a
//! batch is settled (and so freed by the plugin) only once its loans are all back, and
//! an instance is closed only once every loan is back.
//!
//! [`SourceBatch::payloads`]: crate::SourceBatch::payloads

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The loans out per batch of one source instance.
#[derive(Debug, Default)]
pub(crate) struct Loans {
    /// Loans not yet given back, by batch id (batches without loans are absent).
    out: Mutex<HashMap<u64, usize>>,
    /// Woken whenever a batch's last loan comes back.
    returned: Notify,
}

impl Loans {
    fn lend(&self, batch: u64) {
        if let Ok(mut out) = self.out.lock() {
            *out.entry(batch).or_default() += 1;
        }
    }

    fn give_back(&self, batch: u64) {
        let last = self
            .out
            .lock()
            .is_ok_and(|mut out| match out.get_mut(&batch) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    out.remove(&batch);
                    true
                }
                None => false,
            });
        if last {
            self.returned.notify_waiters();
        }
    }

    /// Whether a loan on `batch` is still out. A poisoned lock counts as "out": nothing
    /// is freed that might still be read.
    pub(crate) fn out_on(&self, batch: u64) -> bool {
        self.out.lock().map_or(true, |out| out.contains_key(&batch))
    }

    /// Whether a loan on any batch is still out (a poisoned lock counts as "out").
    pub(crate) fn any_out(&self) -> bool {
        self.out.lock().map_or(true, |out| !out.is_empty())
    }

    /// Waits until every loan on `batch` is back.
    pub(crate) async fn all_back(&self, batch: u64) {
        loop {
            // Registered before the check, so a return between the two is not missed.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if !self.out_on(batch) {
                return;
            }
            returned.await;
        }
    }
}

/// One stretch of a batch's payload memory, lent as the owner of a `Bytes`.
pub(crate) struct Loan {
    ptr: *const u8,
    len: usize,
    batch: u64,
    loans: Arc<Loans>,
}

// SAFETY: the memory is only read, by whichever thread holds the `Bytes`, and the plugin
// neither changes nor frees it before the batch is settled, which waits for this loan
// to be dropped.
unsafe impl Send for Loan {}

impl Loan {
    /// Lends `len` bytes at `ptr` of unsettled `batch`.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be readable and stay valid and unchanged until `batch` is
    /// settled or its instance closed, and both must wait for [`Loans::all_back`].
    pub(crate) unsafe fn new(ptr: *const u8, len: usize, batch: u64, loans: &Arc<Loans>) -> Self {
        loans.lend(batch);
        Loan {
            ptr,
            len,
            batch,
            loans: loans.clone(),
        }
    }
}

impl AsRef<[u8]> for Loan {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `new`'s contract: the memory stays valid while the loan lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        self.loans.give_back(self.batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_back_only_when_its_last_loan_is() {
        let loans = Arc::new(Loans::default());
        let memory = [1u8, 2, 3];
        // SAFETY: `memory` outlives every loan below.
        let (first, second, other) = unsafe {
            (
                Loan::new(memory.as_ptr(), 2, 7, &loans),
                Loan::new(memory.as_ptr(), 3, 7, &loans),
                Loan::new(memory.as_ptr(), 1, 8, &loans),
            )
        };
        assert_eq!(second.as_ref(), &[1, 2, 3]);
        drop(first);
        assert!(loans.out_on(7));
        let waiting = tokio::spawn({
            let loans = loans.clone();
            async move { loans.all_back(7).await }
        });
        drop(second);
        waiting.await.unwrap();
        assert!(!loans.out_on(7));
        assert!(loans.any_out(), "batch 8 still has a loan");
        drop(other);
        assert!(!loans.any_out());
    }
}
