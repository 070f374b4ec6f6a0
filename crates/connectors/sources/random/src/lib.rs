//! The `random` source: generates JSON messages, for demos, tests and benchmarks.
//!
//! `plugin_config` (the keys of upstream's random source):
//! - `interval` (duration, default `"1s"`): pause between batches.
//! - `max_count` (integer, optional): total messages to produce; after that the source
//!   stays idle. Counted across restarts through the source state.
//! - `messages_range` (`[min, max]`, default `[1, 10]`): messages per batch.
//! - `payload_size` (integer, default `100`): bytes of random text in each message.
//!
//! Each message is `{"seq": n, "key": "<connector key>", "text": "<random>", "created_at": micros}`
//! with the id `hash(key) << 64 | seq`, so ids are unique per source and a batch produced
//! again after a crash carries the same ids. The state is the count of messages in
//! accepted batches; a rejected batch (and every batch after it) is produced again with
//! the same sequence numbers. Up to [`RandomSource::MAX_UNSETTLED_BATCHES`] batches may
//! wait for their outcome, so the runtime can send one while the next is generated.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use connector_sdk::bytes::{BufMut, BytesMut};
use connector_sdk::{
    BatchOutcome, ConnectorContext, Error, ProducedBatch, ProducedMessage, Schema, Source,
};
use serde::{Deserialize, Serialize};

/// The source's `plugin_config`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomSourceConfig {
    /// Pause between batches (a duration: "500ms", "1s", "1m").
    #[serde(
        default = "default_interval",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// Total messages to produce, counted across restarts; unset: no limit.
    #[serde(default)]
    pub max_count: Option<u64>,
    /// Minimum and maximum messages per batch.
    #[serde(default = "default_range")]
    pub messages_range: [u32; 2],
    /// Bytes of random text per message.
    #[serde(default = "default_payload_size")]
    pub payload_size: usize,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_range() -> [u32; 2] {
    [1, 10]
}

fn default_payload_size() -> usize {
    100
}

/// Generates random messages.
#[derive(Debug)]
pub struct RandomSource {
    config: RandomSourceConfig,
    key: String,
    id_prefix: u128,
    /// Messages in accepted batches (the persisted state).
    produced: u64,
    /// Where the next batch starts: `produced` plus the unsettled batches.
    next: u64,
    /// Where each unsettled batch ends, oldest first.
    unsettled: VecDeque<u64>,
    rng: XorShift,
    text: TextPool,
    buffers: BufferPool,
    polled_once: bool,
}

impl Source for RandomSource {
    type Config = RandomSourceConfig;

    const MAX_UNSETTLED_BATCHES: u32 = 16;

    fn check_config(config: &RandomSourceConfig) -> Vec<String> {
        let [min, max] = config.messages_range;
        if min == 0 || min > max {
            vec![format!(
                "plugin_config.messages_range: expected [min, max] with 1 <= min <= max, got [{min}, {max}]"
            )]
        } else {
            Vec::new()
        }
    }

    async fn open(
        config: RandomSourceConfig,
        context: ConnectorContext,
        state: Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        if let Some(problem) = Self::check_config(&config).into_iter().next() {
            return Err(Error::invalid_config(problem));
        }
        let produced = match state {
            None => 0,
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.try_into().map_err(|bytes: Vec<u8>| {
                    Error::permanent(format!(
                        "the saved state has {} bytes, expected 8",
                        bytes.len()
                    ))
                })?;
                u64::from_le_bytes(bytes)
            }
        };
        let id_prefix = u128::from(fnv1a(context.key.as_bytes())) << 64;
        let seed = now_micros() ^ fnv1a(context.key.as_bytes());
        let mut rng = XorShift::new(seed);
        let text = TextPool::new(&mut rng, config.payload_size);
        tracing::info!(produced, "random source opened");
        Ok(RandomSource {
            config,
            key: context.key,
            id_prefix,
            produced,
            next: produced,
            unsettled: VecDeque::new(),
            rng,
            text,
            buffers: BufferPool::default(),
            polled_once: false,
        })
    }

    async fn poll(&mut self) -> Result<ProducedBatch, Error> {
        let remaining = match self.config.max_count {
            Some(max) => max.saturating_sub(self.next),
            None => u64::MAX,
        };
        if remaining == 0 {
            // Done: stay idle until closed (a pending future is cancel-safe).
            std::future::pending::<()>().await;
        }
        // tokio's timer rounds up to whole milliseconds, so even a zero sleep would
        // cost one: skip it.
        if self.polled_once && !self.config.interval.is_zero() {
            tokio::time::sleep(self.config.interval).await;
        }
        self.polled_once = true;
        let [min, max] = self.config.messages_range;
        let wanted = u64::from(min) + self.rng.next() % (u64::from(max - min) + 1);
        let count = wanted.min(remaining);
        let mut messages = Vec::with_capacity(count as usize);
        // The key is escaped once; the text is alphanumeric and needs no escaping, so
        // each record is written directly (serde_json per record costs more than the
        // rest of the pipeline).
        let key = serde_json::to_string(&self.key)
            .map_err(|error| Error::permanent(format!("cannot encode the key: {error}")))?;
        let created_at = now_micros().to_string();
        // One buffer for the whole batch, split into the payloads: one allocation
        // instead of one per message (the fields around the text take under 64 bytes).
        let per_message = self.config.payload_size + key.len() + created_at.len() + 64;
        let buffer = self.buffers.buffer(per_message * count as usize);
        for seq in self.next..self.next + count {
            buffer.extend_from_slice(b"{\"seq\":");
            push_decimal(buffer, seq);
            buffer.extend_from_slice(b",\"key\":");
            buffer.extend_from_slice(key.as_bytes());
            buffer.extend_from_slice(b",\"text\":\"");
            self.text.append(&mut self.rng, buffer);
            buffer.extend_from_slice(b"\",\"created_at\":");
            buffer.extend_from_slice(created_at.as_bytes());
            buffer.put_u8(b'}');
            messages.push(ProducedMessage {
                id: Some(self.id_prefix | u128::from(seq)),
                ..ProducedMessage::new(buffer.split().freeze())
            });
        }
        self.next += count;
        self.unsettled.push_back(self.next);
        Ok(ProducedBatch {
            schema: Schema::Json,
            messages,
            state: Some(self.next.to_le_bytes().to_vec()),
        })
    }

    async fn on_batch_result(&mut self, outcome: BatchOutcome) -> Result<(), Error> {
        match outcome {
            BatchOutcome::Accepted => {
                let end = self.unsettled.pop_front().ok_or_else(|| {
                    Error::permanent("a batch was accepted but none is unsettled")
                })?;
                self.produced = end;
            }
            // The later unsettled batches are discarded with it: start again here.
            BatchOutcome::Rejected => {
                self.unsettled.clear();
                self.next = self.produced;
            }
        }
        Ok(())
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// Appends `value` in decimal (without the formatting machinery: this runs per message).
fn push_decimal(to: &mut impl BufMut, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    to.put_slice(&digits[at..]);
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A small, fast, non-cryptographic generator: random text needs nothing more.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Appends `len` random characters of `[A-Za-z0-9_-]`, eight per generated number.
    fn fill_text(&mut self, text: &mut Vec<u8>, len: usize) {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
        let start = text.len();
        text.resize(start + len, 0);
        for chunk in text[start..].chunks_mut(8) {
            let bits = self.next().to_le_bytes();
            for (byte, random) in chunk.iter_mut().zip(bits) {
                *byte = ALPHABET[usize::from(random & 63)];
            }
        }
    }
}

/// Random text to take message texts from: generating 1 KiB per message costs more
/// than the rest of the pipeline, copying it from a random place does not.
#[derive(Debug)]
struct TextPool {
    text: Vec<u8>,
    /// Bytes each message takes.
    len: usize,
}

impl TextPool {
    /// Room for this many different starting points.
    const STARTS: usize = 4096;

    fn new(rng: &mut XorShift, len: usize) -> Self {
        let mut text = Vec::with_capacity(len + Self::STARTS);
        rng.fill_text(&mut text, len + Self::STARTS);
        TextPool { text, len }
    }

    /// Appends `len` random characters.
    fn append(&self, rng: &mut XorShift, to: &mut impl BufMut) {
        let start = (rng.next() % Self::STARTS as u64) as usize;
        to.put_slice(&self.text[start..start + self.len]);
    }
}

/// Batch buffers kept for reuse. A fresh buffer per batch meets fresh pages, and their
/// page faults were most of this source's CPU time with 1 KiB messages. A buffer is
/// reused only once every payload split off it has been dropped (the runtime drops
/// them before it settles the batch), so a payload in flight is never written over.
#[derive(Debug, Default)]
struct BufferPool {
    buffers: Vec<BytesMut>,
}

impl BufferPool {
    /// Buffers kept: one per batch that may be unsettled at once, and the next.
    const MAX_BUFFERS: usize = RandomSource::MAX_UNSETTLED_BATCHES as usize + 1;
    /// Capacity kept besides the newest buffer, so a source with huge batches does not
    /// hold several of them while idle.
    const MAX_KEPT_BYTES: usize = 32 << 20;

    /// An empty buffer with room for `capacity` bytes: a kept one whose payloads are
    /// all gone when there is one, else a new one, for which the oldest kept buffers
    /// make room (their memory is freed with their payloads).
    fn buffer(&mut self, capacity: usize) -> &mut BytesMut {
        if let Some(index) = self
            .buffers
            .iter_mut()
            .position(|buffer| buffer.try_reclaim(capacity))
        {
            return &mut self.buffers[index];
        }
        while !self.buffers.is_empty()
            && (self.buffers.len() >= Self::MAX_BUFFERS
                || self.kept_bytes() + capacity > Self::MAX_KEPT_BYTES)
        {
            self.buffers.remove(0);
        }
        self.buffers.push(BytesMut::with_capacity(capacity));
        let newest = self.buffers.len() - 1;
        &mut self.buffers[newest]
    }

    fn kept_bytes(&self) -> usize {
        self.buffers.iter().map(BytesMut::capacity).sum()
    }
}

connector_sdk::export_source!(RandomSource, "random");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_like_display() {
        for value in [0, 7, 10, 99, 12345, u64::MAX] {
            let mut written = Vec::new();
            push_decimal(&mut written, value);
            assert_eq!(written, value.to_string().as_bytes());
        }
    }

    #[test]
    fn a_batch_buffer_is_reused_only_after_its_payloads_are_dropped() {
        let mut pool = BufferPool::default();
        let buffer = pool.buffer(64);
        buffer.extend_from_slice(b"first batch");
        let first = buffer.split().freeze();
        let first_at = first.as_ptr();
        // Its payload is alive: the next batch must not write over it.
        let buffer = pool.buffer(64);
        buffer.extend_from_slice(b"second batch");
        let second = buffer.split().freeze();
        assert_eq!(&first[..], b"first batch");
        assert_eq!(&second[..], b"second batch");
        assert_ne!(second.as_ptr(), first_at);
        // Once the first batch's payload is gone, its memory serves the next batch.
        drop(first);
        let buffer = pool.buffer(64);
        buffer.extend_from_slice(b"third");
        let third = buffer.split().freeze();
        assert_eq!(third.as_ptr(), first_at);
        assert_eq!(&second[..], b"second batch");
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_buffers() {
        let mut pool = BufferPool::default();
        let mut alive = Vec::new();
        // More batches in flight than buffers kept: each needs a buffer of its own.
        let rounds = BufferPool::MAX_BUFFERS as u8 + 5;
        for round in 0..rounds {
            let buffer = pool.buffer(16);
            buffer.put_u8(round);
            alive.push(buffer.split().freeze());
            assert!(pool.buffers.len() <= BufferPool::MAX_BUFFERS);
        }
        assert_eq!(pool.buffers.len(), BufferPool::MAX_BUFFERS);
        let bytes: Vec<u8> = alive.iter().map(|payload| payload[0]).collect();
        assert_eq!(
            bytes,
            (0..rounds).collect::<Vec<u8>>(),
            "no payload written over"
        );
        // A buffer over the byte limit is used, and no other is kept beside it.
        let buffer = pool.buffer(BufferPool::MAX_KEPT_BYTES + 1);
        assert!(buffer.capacity() > BufferPool::MAX_KEPT_BYTES);
        assert_eq!(pool.buffers.len(), 1);
        let buffer = pool.buffer(16);
        buffer.put_u8(rounds);
        alive.push(buffer.split().freeze());
        assert_eq!(alive.last().map(|payload| payload[0]), Some(rounds));
    }

    #[test]
    fn text_has_the_asked_length_and_only_safe_characters() {
        let mut rng = XorShift::new(7);
        for len in [0, 1, 7, 8, 9, 10, 11, 964] {
            let mut text = Vec::new();
            rng.fill_text(&mut text, len);
            assert_eq!(text.len(), len);
            let pool = TextPool::new(&mut rng, len);
            let mut from_pool = b"prefix".to_vec();
            pool.append(&mut rng, &mut from_pool);
            assert_eq!(from_pool.len(), len + 6);
            assert!(from_pool.starts_with(b"prefix"));
            assert!(
                from_pool[6..]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
            );
            assert!(
                text.iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
            );
        }
    }
}
