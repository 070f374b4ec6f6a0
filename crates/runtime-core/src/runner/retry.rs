//! Retrying a failed call with exponential backoff, as `[runtime.retry]` (or a
//! connector's `[retry]`) says, counting each retry in the connector's status.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::status::StatusCell;

/// How failed calls are retried before the error policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: usize,
    /// Pause before the first retry; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::from(config_provider::ConnectorRetry::default())
    }
}

impl From<config_provider::ConnectorRetry> for RetryPolicy {
    fn from(config: config_provider::ConnectorRetry) -> Self {
        RetryPolicy {
            attempts: usize::try_from(config.max_attempts.max(1)).unwrap_or(usize::MAX),
            initial_backoff: config.initial_backoff.get(),
            max_backoff: config.max_backoff.get(),
        }
    }
}

impl RetryPolicy {
    /// The pause after the `failures`-th consecutive failure.
    pub(crate) fn backoff(&self, failures: usize) -> Duration {
        let doublings = u32::try_from(failures.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// Runs `call` until it succeeds, fails in a way `retryable` refuses, or the
    /// attempts run out, counting retries.
    pub(crate) async fn run_when<T, E, F, Fut>(
        &self,
        status: &StatusCell,
        what: &str,
        retryable: impl FnMut(&E) -> bool,
        call: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(self.attempts.saturating_sub(1));
        call.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(retryable)
            .notify(|error: &E, pause: Duration| {
                tracing::warn!(what, %error, ?pause, "retrying");
                status.retried(error.to_string());
            })
            .await
    }

    /// [`RetryPolicy::run_when`] for calls whose every failure may be retried.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        status: &StatusCell,
        what: &str,
        call: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_when(status, what, |_| true, call).await
    }
}
