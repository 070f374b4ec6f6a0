//! What a connector's pipelines are asked to do: run, pause or stop.
//!
//! The runtime holds the sending side per connector; every pipeline task holds a
//! [`Control`] and checks it between batches, never inside one, so a batch in flight is
//! always finished (or abandoned by the shutdown deadline) and committed consistently.

use tokio::sync::watch;

use crate::status::{ConnectorState, StatusCell};

/// What the runtime wants of a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Desired {
    Run,
    Pause,
    Stop,
}

/// A pipeline's view of what is wanted of it.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    desired: watch::Receiver<Desired>,
}

impl Control {
    pub(crate) fn new(desired: watch::Receiver<Desired>) -> Self {
        Control { desired }
    }

    /// This control, which also asks the pipeline to stop once `trigger` resolves (a
    /// cluster member's source moved to another member).
    pub(crate) fn or_stop_when(
        &self,
        trigger: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Control {
        let mut upstream = self.desired.clone();
        let (forward, desired) = watch::channel(*upstream.borrow());
        tokio::spawn(async move {
            tokio::pin!(trigger);
            loop {
                tokio::select! {
                    () = &mut trigger => {
                        forward.send_replace(Desired::Stop);
                        return;
                    }
                    changed = upstream.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let wanted = *upstream.borrow_and_update();
                        forward.send_replace(wanted);
                    }
                    () = forward.closed() => return,
                }
            }
        });
        Control { desired }
    }

    /// Whether the pipeline should end.
    pub(crate) fn stop_requested(&self) -> bool {
        *self.desired.borrow() == Desired::Stop
    }

    /// Whether the pipeline should go on at once (neither paused nor stopping).
    pub(crate) fn run_requested(&self) -> bool {
        *self.desired.borrow() == Desired::Run
    }

    /// Resolves when the pipeline should end (or the runtime is gone).
    pub(crate) async fn stopping(&mut self) {
        while !self.stop_requested() {
            if self.desired.changed().await.is_err() {
                return;
            }
        }
    }

    /// The next change of what is wanted; `None` when the runtime is gone.
    pub(crate) async fn changed(&mut self) -> Option<Desired> {
        self.desired.changed().await.ok()?;
        Some(*self.desired.borrow_and_update())
    }

    /// Called between batches: while paused, reports `paused` and waits. Returns `false`
    /// when the pipeline should end.
    pub(crate) async fn proceed(&mut self, status: &StatusCell) -> bool {
        let mut paused = false;
        loop {
            let desired = *self.desired.borrow_and_update();
            match desired {
                Desired::Stop => return false,
                Desired::Run => {
                    if paused {
                        status.set_state(ConnectorState::Running);
                    }
                    return true;
                }
                Desired::Pause => {
                    if !paused {
                        paused = true;
                        status.set_state(ConnectorState::Paused);
                    }
                    if self.desired.changed().await.is_err() {
                        return false;
                    }
                }
            }
        }
    }
}
