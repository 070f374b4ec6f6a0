//! What the runtime reports about each connector.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use connector_sdk::ConnectorKind;

/// Where a connector is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectorState {
    /// Opening its plugin and reaching Iggy.
    Starting,
    /// Moving data.
    Running,
    /// Stopped on request (or at shutdown).
    Stopped,
    /// Stopped by an error that retries did not overcome; see `last_error`.
    Failed,
    /// Failed, and waiting to be started again.
    Restarting,
}

impl std::fmt::Display for ConnectorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectorState::Starting => "starting",
            ConnectorState::Running => "running",
            ConnectorState::Stopped => "stopped",
            ConnectorState::Failed => "failed",
            ConnectorState::Restarting => "restarting",
        })
    }
}

/// A snapshot of one connector's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorStatus {
    /// Sink or source.
    pub kind: ConnectorKind,
    /// The connector key.
    pub key: String,
    /// The config version it runs.
    pub version: u64,
    /// Its state.
    pub state: ConnectorState,
    /// The error that made it fail (or the last one retried).
    pub last_error: Option<String>,
    /// Messages moved (produced by a source, delivered by a sink).
    pub messages: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Times the connector was restarted after failing.
    pub restarts: u32,
    /// Seconds in the current state.
    pub seconds_in_state: u64,
}

/// The live status a runner updates and the runtime reads.
#[derive(Debug, Clone)]
pub(crate) struct StatusCell {
    inner: Arc<Mutex<(ConnectorStatus, Instant)>>,
}

impl StatusCell {
    pub(crate) fn new(kind: ConnectorKind, key: &str, version: u64) -> Self {
        StatusCell {
            inner: Arc::new(Mutex::new((
                ConnectorStatus {
                    kind,
                    key: key.to_owned(),
                    version,
                    state: ConnectorState::Starting,
                    last_error: None,
                    messages: 0,
                    retries: 0,
                    restarts: 0,
                    seconds_in_state: 0,
                },
                Instant::now(),
            ))),
        }
    }

    fn update(&self, change: impl FnOnce(&mut ConnectorStatus)) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = guard.0.state;
        change(&mut guard.0);
        if guard.0.state != before {
            guard.1 = Instant::now();
        }
    }

    pub(crate) fn set_state(&self, state: ConnectorState) {
        self.update(|status| status.state = state);
    }

    pub(crate) fn fail(&self, error: String) {
        self.update(|status| {
            status.state = ConnectorState::Failed;
            status.last_error = Some(error);
        });
    }

    pub(crate) fn restarting(&self) {
        self.update(|status| {
            status.state = ConnectorState::Restarting;
            status.restarts += 1;
        });
    }

    pub(crate) fn retried(&self, error: String) {
        self.update(|status| {
            status.retries += 1;
            status.last_error = Some(error);
        });
    }

    pub(crate) fn moved(&self, messages: usize) {
        self.update(|status| status.messages += messages as u64);
    }

    pub(crate) fn snapshot(&self) -> ConnectorStatus {
        let guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut status = guard.0.clone();
        status.seconds_in_state = guard.1.elapsed().as_secs();
        status
    }
}
