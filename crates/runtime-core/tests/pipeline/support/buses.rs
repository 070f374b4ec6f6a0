//! Message buses that wrap the runtime's: one that makes topics by command on real-server
//! builds that refuse the client's topic options, and one that records what connectors
//! ask of Iggy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use iggy_test_server::TestTarget;
use runtime_core::{
    BusError, BusErrorKind, Destination, MessageBus, OutgoingMessage, PreparedSend, RuntimeContext,
    SavedState, StateStore,
};

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

/// A bus that passes every call on to the runtime's bus, so that connectors take the
/// production path (each its own connection through `for_connector`, sends prepared
/// while the one before is in flight), and records what tests look at: each send's
/// messages and payload bytes (with a state directory, also the random source's saved
/// record as the send goes), each poll and each offset store. Offset stores can be held
/// back ([`RecordingBus::hold_stores`]).
pub struct RecordingBus {
    inner: Arc<dyn MessageBus>,
    record: Arc<Record>,
}

/// What every bus of one [`RecordingBus::around`] records, the connectors' own included.
struct Record {
    state: Option<std::path::PathBuf>,
    /// Sends prepared and not yet sent, by the address and length of their wire body
    /// (opaque to a wrapper, and moved unchanged from `prepare_send` to `send_prepared`).
    prepared: Mutex<HashMap<(usize, usize), Carried>>,
    sends: Mutex<Vec<(usize, usize)>>,
    saved_at_send: Mutex<Vec<(SavedState, Option<u128>)>>,
    polls: Mutex<Vec<Poll>>,
    stores: Mutex<Vec<Store>>,
    /// `Some(n)` while offset stores are held back: `n` more may go.
    gate: tokio::sync::watch::Sender<Option<u32>>,
    /// Offset stores waiting at the gate.
    held: std::sync::atomic::AtomicUsize,
}

/// What one send carries.
#[derive(Debug, Clone, Copy)]
struct Carried {
    count: usize,
    bytes: usize,
    /// The send marker on its last message.
    marker: Option<u128>,
}

impl Carried {
    fn of(messages: &[OutgoingMessage]) -> Carried {
        Carried {
            count: messages.len(),
            bytes: messages.iter().map(|message| message.payload.len()).sum(),
            marker: messages.last().and_then(|message| {
                message
                    .headers
                    .iter()
                    .find(|header| header.key == runtime_core::SEND_MARKER_HEADER)
                    .map(|header| u128::from_le_bytes(header.value.clone().try_into().unwrap()))
            }),
        }
    }
}

/// A group poll that came back: its partition and how many messages it brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    pub partition: u32,
    pub messages: usize,
}

/// An offset store and what came of it (`Err` with the error's kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Store {
    pub partition: u32,
    pub offset: u64,
    pub outcome: Result<(), BusErrorKind>,
}

fn wire_key(body: &bytes::Bytes) -> (usize, usize) {
    (body.as_ptr() as usize, body.len())
}

impl RecordingBus {
    /// Records what goes through `context`'s bus from now on.
    pub fn around(context: &mut RuntimeContext) -> Arc<RecordingBus> {
        Self::watching(context, None)
    }

    /// As `around`, reading the source `random`'s state in `state` as each send goes.
    pub fn watching(
        context: &mut RuntimeContext,
        state: Option<std::path::PathBuf>,
    ) -> Arc<RecordingBus> {
        let recording = Arc::new(RecordingBus {
            inner: context.bus.clone(),
            record: Arc::new(Record {
                state,
                prepared: Mutex::default(),
                sends: Mutex::default(),
                saved_at_send: Mutex::default(),
                polls: Mutex::default(),
                stores: Mutex::default(),
                gate: tokio::sync::watch::channel(None).0,
                held: std::sync::atomic::AtomicUsize::new(0),
            }),
        });
        context.bus = recording.clone();
        recording
    }

    /// Each send Iggy stored: its messages and payload bytes.
    pub fn sends(&self) -> Vec<(usize, usize)> {
        self.record.sends.lock().unwrap().clone()
    }

    /// The record saved as each send went, with the marker of the send's last message.
    pub fn saved_at_send(&self) -> Vec<(SavedState, Option<u128>)> {
        self.record.saved_at_send.lock().unwrap().clone()
    }

    /// Every group poll that came back, in order.
    pub fn polls(&self) -> Vec<Poll> {
        self.record.polls.lock().unwrap().clone()
    }

    /// Every offset store that was answered, in order.
    pub fn stores(&self) -> Vec<Store> {
        self.record.stores.lock().unwrap().clone()
    }

    /// Makes offset stores wait before they reach Iggy (until let through one by one,
    /// or released): a sink then holds its batch in hand.
    pub fn hold_stores(&self) {
        self.record.gate.send_replace(Some(0));
    }

    /// Lets one more offset store through while they are held back.
    pub fn let_store_through(&self) {
        self.record
            .gate
            .send_modify(|gate| *gate = gate.map(|more| more + 1));
    }

    /// Lets every store go on, now and from now on.
    pub fn release_stores(&self) {
        self.record.gate.send_replace(None);
    }

    /// How many offset stores are held back now.
    pub fn stores_held(&self) -> usize {
        self.record.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until an offset store may go (see [`RecordingBus::hold_stores`]).
    async fn pass_gate(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let mut gate = self.record.gate.subscribe();
        let mut waiting = false;
        loop {
            gate.borrow_and_update();
            let mut passed = false;
            self.record.gate.send_if_modified(|gate| match gate {
                None => {
                    passed = true;
                    false
                }
                Some(0) => false,
                Some(more) => {
                    *more -= 1;
                    passed = true;
                    true
                }
            });
            if passed {
                break;
            }
            if !waiting {
                waiting = true;
                self.record.held.fetch_add(1, SeqCst);
            }
            let _ = gate.changed().await;
        }
        if waiting {
            self.record.held.fetch_sub(1, SeqCst);
        }
    }

    /// Notes the random source's saved record as `send` goes.
    async fn note_send(&self, send: Carried) {
        if let Some(dir) = &self.record.state {
            // The random source's state is the count of messages it has committed.
            let saved = StateStore::new(dir).read_saved("random").await.unwrap();
            self.record
                .saved_at_send
                .lock()
                .unwrap()
                .push((saved, send.marker));
        }
    }
}

#[async_trait::async_trait]
impl MessageBus for RecordingBus {
    async fn ensure_topic(&self, to: &Destination) -> Result<(), BusError> {
        self.inner.ensure_topic(to).await
    }

    async fn send(&self, to: &Destination, messages: Vec<OutgoingMessage>) -> Result<(), BusError> {
        let send = Carried::of(&messages);
        self.note_send(send).await;
        self.inner.send(to, messages).await?;
        self.record
            .sends
            .lock()
            .unwrap()
            .push((send.count, send.bytes));
        Ok(())
    }

    async fn prepare_send(
        &self,
        to: &Destination,
        messages: Vec<OutgoingMessage>,
    ) -> Result<PreparedSend, BusError> {
        let send = Carried::of(&messages);
        let prepared = self.inner.prepare_send(to, messages).await?;
        if let PreparedSend::Wire(body) = &prepared {
            self.record
                .prepared
                .lock()
                .unwrap()
                .insert(wire_key(body), send);
        }
        Ok(prepared)
    }

    async fn send_prepared(
        &self,
        to: &Destination,
        prepared: PreparedSend,
    ) -> Result<(), BusError> {
        let send = match &prepared {
            PreparedSend::Messages(messages) => Carried::of(messages),
            PreparedSend::Wire(body) => self
                .record
                .prepared
                .lock()
                .unwrap()
                .remove(&wire_key(body))
                .expect("a send this bus prepared"),
            other => panic!("a prepared send of an unknown kind: {other:?}"),
        };
        self.note_send(send).await;
        self.inner.send_prepared(to, prepared).await?;
        self.record
            .sends
            .lock()
            .unwrap()
            .push((send.count, send.bytes));
        Ok(())
    }

    async fn join_group(&self, from: &Destination, group: &str) -> Result<(), BusError> {
        self.inner.join_group(from, group).await
    }

    async fn poll(
        &self,
        from: &Destination,
        group: &str,
        count: u32,
    ) -> Result<runtime_core::Polled, BusError> {
        let polled = self.inner.poll(from, group, count).await?;
        self.record.polls.lock().unwrap().push(Poll {
            partition: polled.partition_id,
            messages: polled.messages.len(),
        });
        Ok(polled)
    }

    async fn read(
        &self,
        from: &Destination,
        partition: u32,
        offset: u64,
        count: u32,
    ) -> Result<Option<runtime_core::Polled>, BusError> {
        self.inner.read(from, partition, offset, count).await
    }

    async fn group_progress(
        &self,
        from: &Destination,
        group: &str,
    ) -> Result<Option<runtime_core::GroupProgress>, BusError> {
        self.inner.group_progress(from, group).await
    }

    async fn reset_group(
        &self,
        from: &Destination,
        group: &str,
        seen: u32,
    ) -> Result<bool, BusError> {
        self.inner.reset_group(from, group, seen).await
    }

    async fn store_offset(
        &self,
        from: &Destination,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), BusError> {
        self.pass_gate().await;
        let stored = self
            .inner
            .store_offset(from, group, partition, offset)
            .await;
        self.record.stores.lock().unwrap().push(Store {
            partition,
            offset,
            outcome: stored.as_ref().map(|_| ()).map_err(BusError::kind),
        });
        stored
    }

    async fn find_marker(&self, to: &Destination, marker: u128) -> Result<Option<bool>, BusError> {
        self.inner.find_marker(to, marker).await
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    async fn for_connector(&self, key: &str) -> Result<Option<Arc<dyn MessageBus>>, BusError> {
        let own = self.inner.for_connector(key).await?;
        Ok(own.map(|inner| {
            Arc::new(RecordingBus {
                inner,
                record: self.record.clone(),
            }) as Arc<dyn MessageBus>
        }))
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
