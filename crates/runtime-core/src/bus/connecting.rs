//! [`ConnectingBus`]: a [`MessageBus`] usable before its connection is made, so that a
//! program can run its connectors and serve its API while it signs in to Iggy.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{
    BusError, Destination, GroupMember, GroupProgress, MessageBus, OutgoingMessage, Polled,
    PreparedSend,
};

/// How far the connection has come.
#[derive(Clone)]
enum Connection {
    Pending,
    Ready(Arc<dyn MessageBus>),
    Failed(BusError),
}

/// A [`MessageBus`] whose connection is being made in the background: every call waits
/// for it and then goes to the bus it made, or fails with its error. It reports
/// [`MessageBus::connected`] `false` until then.
///
/// Signing in to a real Iggy server takes tens of milliseconds (it checks the password
/// hash), which a program need not spend before it answers `/health`.
///
/// ```
/// use std::sync::Arc;
/// use runtime_core::{BusError, ConnectingBus, MessageBus};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (bus, connected) = ConnectingBus::spawn(async {
///     Err::<Arc<dyn MessageBus>, _>(BusError::new("no server here"))
/// });
/// assert!(!bus.connected());
/// let error = connected.await.unwrap().unwrap_err();
/// assert_eq!(error.to_string(), "no server here");
/// # }
/// ```
pub struct ConnectingBus {
    connection: watch::Receiver<Connection>,
    /// Set by [`MessageBus::close`]: a connection made afterwards is closed at once.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl ConnectingBus {
    /// Starts `connect` on a task of its own. The handle answers with its outcome, for
    /// a program that gives up when the first connection fails.
    pub fn spawn<F>(connect: F) -> (ConnectingBus, tokio::task::JoinHandle<Result<(), BusError>>)
    where
        F: Future<Output = Result<Arc<dyn MessageBus>, BusError>> + Send + 'static,
    {
        let (made, connection) = watch::channel(Connection::Pending);
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closing = closed.clone();
        let task = tokio::spawn(async move {
            let (outcome, state) = match connect.await {
                Ok(bus) => (Ok(()), Connection::Ready(bus)),
                Err(error) => (Err(error.clone()), Connection::Failed(error)),
            };
            let ready = match &state {
                Connection::Ready(bus) => Some(bus.clone()),
                _ => None,
            };
            made.send_replace(state);
            // Closed while it was being made: nobody will close it later.
            if let Some(bus) = ready
                && closing.load(std::sync::atomic::Ordering::SeqCst)
            {
                bus.close().await;
            }
            outcome
        });
        (ConnectingBus { connection, closed }, task)
    }

    /// The bus once connected, or why it is not.
    async fn bus(&self) -> Result<Arc<dyn MessageBus>, BusError> {
        let mut connection = self.connection.clone();
        let made = connection
            .wait_for(|state| !matches!(state, Connection::Pending))
            .await
            .map_err(|_| BusError::new("the connection to Iggy was abandoned"))?;
        match &*made {
            Connection::Ready(bus) => Ok(bus.clone()),
            Connection::Failed(error) => Err(error.clone()),
            Connection::Pending => Err(BusError::new("not connected to Iggy yet")),
        }
    }
}

#[async_trait]
impl MessageBus for ConnectingBus {
    async fn ensure_topic(&self, to: &Destination) -> Result<(), BusError> {
        self.bus().await?.ensure_topic(to).await
    }

    async fn send(&self, to: &Destination, messages: Vec<OutgoingMessage>) -> Result<(), BusError> {
        self.bus().await?.send(to, messages).await
    }

    async fn prepare_send(
        &self,
        to: &Destination,
        messages: Vec<OutgoingMessage>,
    ) -> Result<PreparedSend, BusError> {
        self.bus().await?.prepare_send(to, messages).await
    }

    async fn send_prepared(
        &self,
        to: &Destination,
        prepared: PreparedSend,
    ) -> Result<(), BusError> {
        self.bus().await?.send_prepared(to, prepared).await
    }

    async fn join_group(&self, from: &Destination, group: &str) -> Result<(), BusError> {
        self.bus().await?.join_group(from, group).await
    }

    async fn poll(&self, from: &Destination, group: &str, count: u32) -> Result<Polled, BusError> {
        self.bus().await?.poll(from, group, count).await
    }

    async fn read(
        &self,
        from: &Destination,
        partition: u32,
        offset: u64,
        count: u32,
    ) -> Result<Option<Polled>, BusError> {
        self.bus().await?.read(from, partition, offset, count).await
    }

    async fn group_progress(
        &self,
        from: &Destination,
        group: &str,
    ) -> Result<Option<GroupProgress>, BusError> {
        self.bus().await?.group_progress(from, group).await
    }

    async fn reset_group(
        &self,
        from: &Destination,
        group: &str,
        seen: u32,
    ) -> Result<bool, BusError> {
        self.bus().await?.reset_group(from, group, seen).await
    }

    async fn store_offset(
        &self,
        from: &Destination,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), BusError> {
        self.bus()
            .await?
            .store_offset(from, group, partition, offset)
            .await
    }

    async fn find_marker(&self, to: &Destination, marker: u128) -> Result<Option<bool>, BusError> {
        self.bus().await?.find_marker(to, marker).await
    }

    async fn ensure_partitioned_topic(
        &self,
        to: &Destination,
        partitions: u32,
        retention: Option<std::time::Duration>,
    ) -> Result<u32, BusError> {
        self.bus()
            .await?
            .ensure_partitioned_topic(to, partitions, retention)
            .await
    }

    async fn assignment(
        &self,
        from: &Destination,
        group: &str,
    ) -> Result<Option<Vec<u32>>, BusError> {
        self.bus().await?.assignment(from, group).await
    }

    async fn group_members(
        &self,
        from: &Destination,
        group: &str,
    ) -> Result<Vec<GroupMember>, BusError> {
        self.bus().await?.group_members(from, group).await
    }

    async fn leave_group(&self, from: &Destination, group: &str) -> Result<(), BusError> {
        self.bus().await?.leave_group(from, group).await
    }

    async fn partition_ends(&self, of: &Destination) -> Result<Vec<u64>, BusError> {
        self.bus().await?.partition_ends(of).await
    }

    async fn send_to_partition(
        &self,
        to: &Destination,
        partition: u32,
        messages: Vec<OutgoingMessage>,
    ) -> Result<(), BusError> {
        self.bus()
            .await?
            .send_to_partition(to, partition, messages)
            .await
    }

    fn connected(&self) -> bool {
        match &*self.connection.borrow() {
            Connection::Ready(bus) => bus.connected(),
            Connection::Pending | Connection::Failed(_) => false,
        }
    }

    async fn for_connector(&self, key: &str) -> Result<Option<Arc<dyn MessageBus>>, BusError> {
        self.bus().await?.for_connector(key).await
    }

    async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let made = self.connection.borrow().clone();
        if let Connection::Ready(bus) = made {
            bus.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::super::Closable;
    use super::*;

    #[tokio::test]
    async fn calls_wait_for_the_connection_and_one_closed_meanwhile_is_closed_once_made() {
        let (made, connect) = tokio::sync::oneshot::channel::<Arc<Closable>>();
        let (bus, connected) = ConnectingBus::spawn(async move {
            let inner = connect.await.map_err(|_| BusError::new("gone"))?;
            Ok(inner as Arc<dyn MessageBus>)
        });
        let to = Destination::new("s", "t");
        let call = tokio::spawn({
            let bus = Arc::new(bus);
            let to = to.clone();
            async move {
                let answer = bus.ensure_topic(&to).await;
                bus.close().await;
                (answer, bus)
            }
        });
        tokio::task::yield_now().await;
        assert!(!call.is_finished(), "a call waits for the connection");
        let inner = Arc::new(Closable::default());
        made.send(inner.clone()).ok();
        connected.await.unwrap().unwrap();
        let (answer, bus) = call.await.unwrap();
        assert_eq!(answer, Ok(()));
        assert!(bus.connected());
        assert!(inner.0.load(Ordering::SeqCst), "closed through the wrapper");

        // Closed before the connection is made: closed as soon as it is.
        let (made, connect) = tokio::sync::oneshot::channel::<Arc<Closable>>();
        let (bus, connected) = ConnectingBus::spawn(async move {
            let inner = connect.await.map_err(|_| BusError::new("gone"))?;
            Ok(inner as Arc<dyn MessageBus>)
        });
        bus.close().await;
        let inner = Arc::new(Closable::default());
        made.send(inner.clone()).ok();
        connected.await.unwrap().unwrap();
        assert!(inner.0.load(Ordering::SeqCst), "closed once made");
    }
}
