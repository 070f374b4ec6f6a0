//! Message buses that wrap the runtime's: one that makes topics by command on real-server
//! builds that refuse the client's topic options, and one that records each send.

use std::sync::Arc;

use iggy_test_server::TestTarget;
use runtime_core::{Destination, RuntimeContext, SavedState, StateStore};

/// Against a real server whose build refuses the 0.11 client's topic options (see
/// `ensure_topic` in the test server's conformance tests), topics are created by
/// `IGGY_TEST_CREATE_TOPIC_COMMAND` ([`TestTarget::create_topic_by_command`]) when the
/// client's create fails. Everything else goes to the bus.
pub struct TopicCommandBus {
    inner: Arc<dyn runtime_core::MessageBus>,
}

impl TopicCommandBus {
    /// `bus` as it is, unless `IGGY_TEST_CREATE_TOPIC_COMMAND` is set.
    pub fn wrap(bus: Arc<dyn runtime_core::MessageBus>) -> Arc<dyn runtime_core::MessageBus> {
        if std::env::var_os(iggy_test_server::CREATE_TOPIC_COMMAND_ENV).is_some() {
            Arc::new(TopicCommandBus { inner: bus })
        } else {
            bus
        }
    }
}

#[async_trait::async_trait]
impl runtime_core::MessageBus for TopicCommandBus {
    async fn ensure_topic(&self, to: &Destination) -> Result<(), runtime_core::BusError> {
        if self.inner.ensure_topic(to).await.is_ok() {
            return Ok(());
        }
        // The client created the stream before its topic create was refused.
        if let Some(created) = TestTarget::create_topic_by_command(&to.stream, &to.topic, 1) {
            created.map_err(runtime_core::BusError::new)?;
        }
        self.inner.ensure_topic(to).await
    }

    async fn send(
        &self,
        to: &Destination,
        messages: Vec<runtime_core::OutgoingMessage>,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.send(to, messages).await
    }

    async fn prepare_send(
        &self,
        to: &Destination,
        messages: Vec<runtime_core::OutgoingMessage>,
    ) -> Result<runtime_core::PreparedSend, runtime_core::BusError> {
        self.inner.prepare_send(to, messages).await
    }

    async fn send_prepared(
        &self,
        to: &Destination,
        prepared: runtime_core::PreparedSend,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.send_prepared(to, prepared).await
    }

    async fn join_group(
        &self,
        to: &Destination,
        group: &str,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.join_group(to, group).await
    }

    async fn poll(
        &self,
        to: &Destination,
        group: &str,
        count: u32,
    ) -> Result<runtime_core::Polled, runtime_core::BusError> {
        self.inner.poll(to, group, count).await
    }

    async fn read(
        &self,
        to: &Destination,
        partition: u32,
        offset: u64,
        count: u32,
    ) -> Result<Option<runtime_core::Polled>, runtime_core::BusError> {
        self.inner.read(to, partition, offset, count).await
    }

    async fn store_offset(
        &self,
        to: &Destination,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.store_offset(to, group, partition, offset).await
    }

    async fn find_marker(
        &self,
        to: &Destination,
        marker: u128,
    ) -> Result<Option<bool>, runtime_core::BusError> {
        self.inner.find_marker(to, marker).await
    }

    async fn group_progress(
        &self,
        to: &Destination,
        group: &str,
    ) -> Result<Option<runtime_core::GroupProgress>, runtime_core::BusError> {
        self.inner.group_progress(to, group).await
    }

    async fn reset_group(
        &self,
        to: &Destination,
        group: &str,
        seen: u32,
    ) -> Result<bool, runtime_core::BusError> {
        self.inner.reset_group(to, group, seen).await
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    async fn for_connector(
        &self,
        key: &str,
    ) -> Result<Option<Arc<dyn runtime_core::MessageBus>>, runtime_core::BusError> {
        let own = self.inner.for_connector(key).await?;
        Ok(own.map(|bus| {
            Arc::new(TopicCommandBus { inner: bus }) as Arc<dyn runtime_core::MessageBus>
        }))
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

/// A bus that records how many messages and payload bytes each send carried, passing
/// everything on; with a state directory, also the random source's saved position
/// (messages) as each send starts.
pub struct RecordingBus {
    inner: Arc<dyn runtime_core::MessageBus>,
    sends: std::sync::Mutex<Vec<(usize, usize)>>,
    state: Option<std::path::PathBuf>,
    saved_at_send: std::sync::Mutex<Vec<(SavedState, Option<u128>)>>,
}

impl RecordingBus {
    /// Records the sends made through `context`'s bus from now on.
    pub fn around(context: &mut RuntimeContext) -> Arc<RecordingBus> {
        Self::watching(context, None)
    }

    /// As `around`, reading the source `random`'s state in `state` at each send.
    pub fn watching(
        context: &mut RuntimeContext,
        state: Option<std::path::PathBuf>,
    ) -> Arc<RecordingBus> {
        let recording = Arc::new(RecordingBus {
            inner: context.bus.clone(),
            sends: std::sync::Mutex::new(Vec::new()),
            state,
            saved_at_send: std::sync::Mutex::new(Vec::new()),
        });
        context.bus = recording.clone();
        recording
    }

    pub fn sends(&self) -> Vec<(usize, usize)> {
        self.sends.lock().unwrap().clone()
    }

    /// The record saved at each send, with the marker of the send's last message.
    pub fn saved_at_send(&self) -> Vec<(SavedState, Option<u128>)> {
        self.saved_at_send.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl runtime_core::MessageBus for RecordingBus {
    async fn ensure_topic(&self, to: &Destination) -> Result<(), runtime_core::BusError> {
        self.inner.ensure_topic(to).await
    }

    async fn send(
        &self,
        to: &Destination,
        messages: Vec<runtime_core::OutgoingMessage>,
    ) -> Result<(), runtime_core::BusError> {
        let count = messages.len();
        let bytes = messages.iter().map(|message| message.payload.len()).sum();
        if let Some(dir) = &self.state {
            // The random source's state is the count of messages it has committed.
            let saved = StateStore::new(dir).read_saved("random").await.unwrap();
            let marker = messages.last().and_then(|message| {
                message
                    .headers
                    .iter()
                    .find(|header| header.key == runtime_core::SEND_MARKER_HEADER)
                    .map(|header| u128::from_le_bytes(header.value.clone().try_into().unwrap()))
            });
            self.saved_at_send.lock().unwrap().push((saved, marker));
        }
        self.inner.send(to, messages).await?;
        self.sends.lock().unwrap().push((count, bytes));
        Ok(())
    }

    async fn join_group(
        &self,
        to: &Destination,
        group: &str,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.join_group(to, group).await
    }

    async fn poll(
        &self,
        to: &Destination,
        group: &str,
        count: u32,
    ) -> Result<runtime_core::Polled, runtime_core::BusError> {
        self.inner.poll(to, group, count).await
    }

    async fn store_offset(
        &self,
        to: &Destination,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.store_offset(to, group, partition, offset).await
    }

    async fn find_marker(
        &self,
        to: &Destination,
        marker: u128,
    ) -> Result<Option<bool>, runtime_core::BusError> {
        self.inner.find_marker(to, marker).await
    }
}
