//! The server's in-memory data: users, tokens, streams, topics, partitions, messages,
//! consumer offsets and consumer groups. No I/O and no wire types beyond message frames:
//! `dispatch` translates requests into calls here.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use iggy_binary_protocol::WireIdentifier;
use iggy_binary_protocol::batch::{BATCH_MESSAGE_HEADER_SIZE, BatchRef};

use crate::error::{ErrorCode, codes};

/// Microseconds since the UNIX epoch.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
        })
}

/// The id of the item an identifier names: by number, or by name.
fn resolve<T>(
    id: &WireIdentifier,
    items: &BTreeMap<u32, T>,
    name: impl Fn(&T) -> &str,
) -> Option<u32> {
    match id {
        WireIdentifier::Numeric(id) => items.contains_key(id).then_some(*id),
        WireIdentifier::String(wanted) => items
            .iter()
            .find(|(_, item)| name(item) == wanted.as_str())
            .map(|(id, _)| *id),
    }
}

/// A user account.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: u32,
    pub(crate) username: String,
    pub(crate) password: String,
}

/// One stored message: its frame exactly as the producer sent it (48-byte frame header,
/// payload, user headers), plus what the server assigned to its batch.
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub(crate) frame: Bytes,
    /// Base offset of the batch the message arrived in: the frame's `offset_delta` is
    /// relative to it.
    pub(crate) batch_base_offset: u64,
    /// Server timestamp of the batch, microseconds.
    pub(crate) timestamp: u64,
    /// The batch's origin timestamp: the frame's `timestamp_delta` is relative to it.
    pub(crate) batch_origin_timestamp: u64,
}

impl StoredMessage {
    fn u32_at(&self, at: usize) -> u32 {
        self.frame
            .get(at..at + 4)
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    }

    /// The message id.
    pub(crate) fn id(&self) -> u128 {
        self.frame
            .get(8..24)
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, u128::from_le_bytes)
    }

    /// The message's offset in its partition.
    pub(crate) fn offset(&self) -> u64 {
        self.batch_base_offset + u64::from(self.u32_at(24))
    }

    /// The producer's timestamp.
    pub(crate) fn origin_timestamp(&self) -> u64 {
        self.batch_origin_timestamp + u64::from(self.u32_at(28))
    }

    fn lengths(&self) -> (usize, usize) {
        (self.u32_at(36) as usize, self.u32_at(32) as usize)
    }

    /// The payload bytes.
    pub(crate) fn payload(&self) -> Bytes {
        let (payload, _) = self.lengths();
        let start = BATCH_MESSAGE_HEADER_SIZE;
        self.frame
            .slice(start..(start + payload).min(self.frame.len()))
    }

    /// The user headers, in Iggy's binary encoding (empty when none).
    pub(crate) fn user_headers(&self) -> Bytes {
        let (payload, headers) = self.lengths();
        let start = (BATCH_MESSAGE_HEADER_SIZE + payload).min(self.frame.len());
        self.frame
            .slice(start..(start + headers).min(self.frame.len()))
    }
}

/// A partition: an append-only log of messages whose offsets are their indexes.
#[derive(Debug, Clone)]
pub(crate) struct Partition {
    pub(crate) id: u32,
    pub(crate) created_at: u64,
    pub(crate) messages: Vec<StoredMessage>,
    pub(crate) size_bytes: u64,
}

impl Partition {
    fn new(id: u32) -> Self {
        Partition {
            id,
            created_at: now_micros(),
            messages: Vec::new(),
            size_bytes: 0,
        }
    }

    /// The offset of the last message (0 when empty, as Iggy reports it).
    pub(crate) fn current_offset(&self) -> u64 {
        (self.messages.len() as u64).saturating_sub(1)
    }
}

/// A consumer group member: one client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id: u32,
    pub(crate) client: u128,
}

/// A consumer group of a topic.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) members: Vec<Member>,
    next_member_id: u32,
    pub(crate) generation: u64,
    pub(crate) offsets: HashMap<u32, u64>,
}

impl Group {
    /// The partitions of `member`: partitions are dealt round-robin in join order.
    pub(crate) fn assignment(&self, member: usize, partitions: u32) -> Vec<u32> {
        let members = self.members.len();
        (0..partitions)
            .filter(|partition| *partition as usize % members == member)
            .collect()
    }

    pub(crate) fn member_index(&self, client: u128) -> Option<usize> {
        self.members
            .iter()
            .position(|member| member.client == client)
    }
}

/// A topic.
#[derive(Debug, Clone)]
pub(crate) struct Topic {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) created_at: u64,
    pub(crate) partitions: Vec<Partition>,
    pub(crate) groups: BTreeMap<u32, Group>,
    next_group_id: u32,
    /// Where the next balanced send goes.
    pub(crate) next_balanced: u32,
    /// Offsets stored by plain consumers, by (consumer key, partition).
    pub(crate) consumer_offsets: HashMap<(String, u32), u64>,
    /// Polls that returned messages, by consumer (for tests that check how a client
    /// reads, such as a sink reading ahead by offset).
    pub(crate) polls_with_messages: HashMap<ConsumerRef, u64>,
}

impl Topic {
    pub(crate) fn size_bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.size_bytes).sum()
    }

    pub(crate) fn messages_count(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.messages.len() as u64)
            .sum()
    }

    pub(crate) fn partition(&self, id: u32) -> Result<&Partition, ErrorCode> {
        self.partitions
            .get(id as usize)
            .ok_or(codes::PARTITION_NOT_FOUND)
    }

    pub(crate) fn group_id(&self, id: &WireIdentifier) -> Result<u32, ErrorCode> {
        resolve(id, &self.groups, |group| &group.name).ok_or(codes::CONSUMER_GROUP_NOT_FOUND)
    }
}

/// A stream.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) created_at: u64,
    pub(crate) topics: BTreeMap<u32, Topic>,
    next_topic_id: u32,
}

impl Stream {
    pub(crate) fn topic_id(&self, id: &WireIdentifier) -> Result<u32, ErrorCode> {
        resolve(id, &self.topics, |topic| &topic.name).ok_or(codes::TOPIC_NOT_FOUND)
    }
}

/// Where a poll starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    Offset(u64),
    Timestamp(u64),
    First,
    Last,
    Next,
}

/// What a poll asks for.
#[derive(Debug, Clone)]
pub(crate) struct Poll {
    pub(crate) partition: u32,
    pub(crate) consumer: ConsumerRef,
    pub(crate) strategy: Strategy,
    pub(crate) count: u32,
    pub(crate) auto_commit: bool,
}

/// Who consumes: a named (or numbered) consumer, or a group member.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ConsumerRef {
    Consumer(String),
    Group(u32),
}

/// Everything the server holds.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) users: Vec<User>,
    /// Personal access tokens: token -> (user id, token name).
    pub(crate) tokens: HashMap<String, (u32, String)>,
    pub(crate) streams: BTreeMap<u32, Stream>,
    next_stream_id: u32,
    next_session: u64,
}

impl State {
    pub(crate) fn new(username: &str, password: &str) -> Self {
        State {
            users: vec![User {
                id: 0,
                username: username.to_owned(),
                password: password.to_owned(),
            }],
            tokens: HashMap::new(),
            streams: BTreeMap::new(),
            next_stream_id: 0,
            next_session: 1,
        }
    }

    /// A fresh session number (never 0).
    pub(crate) fn new_session(&mut self) -> u64 {
        let session = self.next_session;
        self.next_session += 1;
        session
    }

    pub(crate) fn login(&self, username: &str, password: &str) -> Result<u32, ErrorCode> {
        self.users
            .iter()
            .find(|user| user.username == username && user.password == password)
            .map(|user| user.id)
            .ok_or(codes::INVALID_CREDENTIALS)
    }

    pub(crate) fn login_with_token(&self, token: &str) -> Result<u32, ErrorCode> {
        self.tokens
            .get(token)
            .map(|(user, _)| *user)
            .ok_or(codes::INVALID_PERSONAL_ACCESS_TOKEN)
    }

    pub(crate) fn create_token(&mut self, user: u32, name: &str) -> Result<String, ErrorCode> {
        if self
            .tokens
            .values()
            .any(|(owner, existing)| *owner == user && existing == name)
        {
            return Err(codes::PERSONAL_ACCESS_TOKEN_ALREADY_EXISTS);
        }
        let token = format!(
            "pat-{user}-{}-{:032x}",
            self.tokens.len(),
            now_micros().wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        self.tokens.insert(token.clone(), (user, name.to_owned()));
        Ok(token)
    }

    pub(crate) fn stream_id(&self, id: &WireIdentifier) -> Result<u32, ErrorCode> {
        resolve(id, &self.streams, |stream| &stream.name).ok_or(codes::STREAM_NOT_FOUND)
    }

    pub(crate) fn stream(&self, id: &WireIdentifier) -> Result<&Stream, ErrorCode> {
        let id = self.stream_id(id)?;
        self.streams.get(&id).ok_or(codes::STREAM_NOT_FOUND)
    }

    pub(crate) fn topic(
        &self,
        stream: &WireIdentifier,
        topic: &WireIdentifier,
    ) -> Result<&Topic, ErrorCode> {
        let stream = self.stream(stream)?;
        let id = stream.topic_id(topic)?;
        stream.topics.get(&id).ok_or(codes::TOPIC_NOT_FOUND)
    }

    pub(crate) fn topic_mut(
        &mut self,
        stream: &WireIdentifier,
        topic: &WireIdentifier,
    ) -> Result<&mut Topic, ErrorCode> {
        let stream_id = self.stream_id(stream)?;
        let stream = self
            .streams
            .get_mut(&stream_id)
            .ok_or(codes::STREAM_NOT_FOUND)?;
        let id = stream.topic_id(topic)?;
        stream.topics.get_mut(&id).ok_or(codes::TOPIC_NOT_FOUND)
    }

    pub(crate) fn create_stream(&mut self, name: &str) -> Result<u32, ErrorCode> {
        if self.streams.values().any(|stream| stream.name == name) {
            return Err(codes::STREAM_NAME_EXISTS);
        }
        let id = self.next_stream_id;
        self.next_stream_id += 1;
        self.streams.insert(
            id,
            Stream {
                id,
                name: name.to_owned(),
                created_at: now_micros(),
                topics: BTreeMap::new(),
                next_topic_id: 0,
            },
        );
        Ok(id)
    }

    pub(crate) fn delete_stream(&mut self, id: &WireIdentifier) -> Result<(), ErrorCode> {
        let id = self.stream_id(id)?;
        self.streams.remove(&id);
        Ok(())
    }

    pub(crate) fn create_topic(
        &mut self,
        stream: &WireIdentifier,
        name: &str,
        partitions: u32,
    ) -> Result<(u32, u32), ErrorCode> {
        if partitions > crate::MAX_PARTITIONS {
            return Err(codes::TOO_MANY_PARTITIONS);
        }
        let stream_id = self.stream_id(stream)?;
        let stream = self
            .streams
            .get_mut(&stream_id)
            .ok_or(codes::STREAM_NOT_FOUND)?;
        if stream.topics.values().any(|topic| topic.name == name) {
            return Err(codes::TOPIC_NAME_EXISTS);
        }
        let id = stream.next_topic_id;
        stream.next_topic_id += 1;
        stream.topics.insert(
            id,
            Topic {
                id,
                name: name.to_owned(),
                created_at: now_micros(),
                partitions: (0..partitions).map(Partition::new).collect(),
                groups: BTreeMap::new(),
                next_group_id: 0,
                next_balanced: 0,
                consumer_offsets: HashMap::new(),
                polls_with_messages: HashMap::new(),
            },
        );
        Ok((stream_id, id))
    }

    pub(crate) fn delete_topic(
        &mut self,
        stream: &WireIdentifier,
        topic: &WireIdentifier,
    ) -> Result<(), ErrorCode> {
        let stream_id = self.stream_id(stream)?;
        let stream = self
            .streams
            .get_mut(&stream_id)
            .ok_or(codes::STREAM_NOT_FOUND)?;
        let id = stream.topic_id(topic)?;
        stream.topics.remove(&id);
        Ok(())
    }

    /// Appends a decoded batch to a partition; returns the base offset it got.
    pub(crate) fn append(
        &mut self,
        stream: &WireIdentifier,
        topic: &WireIdentifier,
        partition: u32,
        batch: &BatchRef<'_>,
        body: &Bytes,
        blob_start: usize,
    ) -> Result<u64, ErrorCode> {
        let topic = self.topic_mut(stream, topic)?;
        let partition = topic
            .partitions
            .get_mut(partition as usize)
            .ok_or(codes::PARTITION_NOT_FOUND)?;
        let base_offset = partition.messages.len() as u64;
        let timestamp = now_micros();
        let origin = batch.header.origin_timestamp;
        for (index, framed) in batch.iter_with_offsets().enumerate() {
            if framed.message.header.offset_delta as usize != index {
                // Offsets are base + delta; a gap or reordering would corrupt them.
                partition.messages.truncate(base_offset as usize);
                return Err(codes::INVALID_MESSAGES_COUNT);
            }
            let frame = body.slice(blob_start + framed.start..blob_start + framed.end);
            partition.size_bytes += frame.len() as u64;
            partition.messages.push(StoredMessage {
                frame,
                batch_base_offset: base_offset,
                timestamp,
                batch_origin_timestamp: origin,
            });
        }
        Ok(base_offset)
    }

    /// The partition's current offset and the messages a poll returns. Stores the last
    /// offset for the consumer when `auto_commit` is set.
    pub(crate) fn poll(
        &mut self,
        stream: &WireIdentifier,
        topic: &WireIdentifier,
        poll: &Poll,
    ) -> Result<(u64, Vec<StoredMessage>), ErrorCode> {
        let Poll {
            partition,
            ref consumer,
            strategy,
            count,
            auto_commit,
        } = *poll;
        let topic = self.topic_mut(stream, topic)?;
        let log = topic.partition(partition)?;
        let current_offset = log.current_offset();
        let len = log.messages.len() as u64;
        let start = match strategy {
            Strategy::Offset(offset) => offset,
            Strategy::First => 0,
            Strategy::Last => len.saturating_sub(u64::from(count)),
            Strategy::Timestamp(at) => log
                .messages
                .iter()
                .position(|message| message.timestamp >= at)
                .map_or(len, |index| index as u64),
            Strategy::Next => match stored_offset(topic, consumer, partition) {
                Some(stored) => stored + 1,
                None => 0,
            },
        };
        let log = topic.partition(partition)?;
        let end = start.saturating_add(u64::from(count)).min(len);
        let messages: Vec<StoredMessage> = if start < end {
            log.messages[start as usize..end as usize].to_vec()
        } else {
            Vec::new()
        };
        if auto_commit && let Some(last) = messages.last() {
            store_offset(topic, consumer, partition, last.offset());
        }
        if !messages.is_empty() {
            // The key is cloned once per consumer, not per poll.
            match topic.polls_with_messages.get_mut(consumer) {
                Some(polls) => *polls += 1,
                None => {
                    topic.polls_with_messages.insert(consumer.clone(), 1);
                }
            }
        }
        Ok((current_offset, messages))
    }
}

/// The offset stored for a consumer on a partition.
pub(crate) fn stored_offset(topic: &Topic, consumer: &ConsumerRef, partition: u32) -> Option<u64> {
    match consumer {
        ConsumerRef::Consumer(key) => topic
            .consumer_offsets
            .get(&(key.clone(), partition))
            .copied(),
        ConsumerRef::Group(id) => topic
            .groups
            .get(id)
            .and_then(|group| group.offsets.get(&partition).copied()),
    }
}

/// Stores an offset for a consumer on a partition.
pub(crate) fn store_offset(topic: &mut Topic, consumer: &ConsumerRef, partition: u32, offset: u64) {
    match consumer {
        ConsumerRef::Consumer(key) => {
            topic
                .consumer_offsets
                .insert((key.clone(), partition), offset);
        }
        ConsumerRef::Group(id) => {
            if let Some(group) = topic.groups.get_mut(id) {
                group.offsets.insert(partition, offset);
            }
        }
    }
}

/// Deletes a consumer's stored offset; false if there was none.
pub(crate) fn delete_offset(topic: &mut Topic, consumer: &ConsumerRef, partition: u32) -> bool {
    match consumer {
        ConsumerRef::Consumer(key) => topic
            .consumer_offsets
            .remove(&(key.clone(), partition))
            .is_some(),
        ConsumerRef::Group(id) => topic
            .groups
            .get_mut(id)
            .is_some_and(|group| group.offsets.remove(&partition).is_some()),
    }
}

impl Topic {
    pub(crate) fn create_group(&mut self, name: &str) -> Result<u32, ErrorCode> {
        if self.groups.values().any(|group| group.name == name) {
            return Err(codes::CONSUMER_GROUP_NAME_EXISTS);
        }
        let id = self.next_group_id;
        self.next_group_id += 1;
        self.groups.insert(
            id,
            Group {
                id,
                name: name.to_owned(),
                members: Vec::new(),
                next_member_id: 0,
                generation: 0,
                offsets: HashMap::new(),
            },
        );
        Ok(id)
    }

    /// Adds `client` to a group (a no-op if it is a member already).
    pub(crate) fn join_group(&mut self, group: u32, client: u128) -> Result<(), ErrorCode> {
        let group = self
            .groups
            .get_mut(&group)
            .ok_or(codes::CONSUMER_GROUP_NOT_FOUND)?;
        if group.member_index(client).is_none() {
            let id = group.next_member_id;
            group.next_member_id += 1;
            group.members.push(Member { id, client });
            group.generation += 1;
        }
        Ok(())
    }

    /// Removes `client` from a group.
    pub(crate) fn leave_group(&mut self, group: u32, client: u128) -> Result<(), ErrorCode> {
        let group = self
            .groups
            .get_mut(&group)
            .ok_or(codes::CONSUMER_GROUP_NOT_FOUND)?;
        let index = group
            .member_index(client)
            .ok_or(codes::CONSUMER_GROUP_MEMBER_NOT_FOUND)?;
        group.members.remove(index);
        group.generation += 1;
        Ok(())
    }
}

impl State {
    /// Drops `clients` from every consumer group (their connection closed).
    pub(crate) fn remove_clients(&mut self, clients: &[u128]) {
        for stream in self.streams.values_mut() {
            for topic in stream.topics.values_mut() {
                for group in topic.groups.values_mut() {
                    let before = group.members.len();
                    group
                        .members
                        .retain(|member| !clients.contains(&member.client));
                    if group.members.len() != before {
                        group.generation += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_deal_partitions_round_robin_in_join_order() {
        let mut state = State::new("iggy", "iggy");
        let stream = WireIdentifier::numeric(state.create_stream("s").unwrap());
        let (_, topic) = state.create_topic(&stream, "t", 5).unwrap();
        let topic_id = WireIdentifier::numeric(topic);
        let topic = state.topic_mut(&stream, &topic_id).unwrap();
        let group = topic.create_group("g").unwrap();
        topic.join_group(group, 10).unwrap();
        topic.join_group(group, 20).unwrap();
        topic.join_group(group, 10).unwrap();
        let g = &topic.groups[&group];
        assert_eq!(g.generation, 2, "joining twice is one join");
        assert_eq!(g.assignment(0, 5), vec![0, 2, 4]);
        assert_eq!(g.assignment(1, 5), vec![1, 3]);
        state.remove_clients(&[10]);
        let topic = state.topic(&stream, &topic_id).unwrap();
        let g = &topic.groups[&group];
        assert_eq!(g.members, vec![Member { id: 1, client: 20 }]);
        assert_eq!(g.assignment(0, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(g.generation, 3);
    }

    #[test]
    fn names_and_ids_resolve_and_duplicates_are_refused() {
        let mut state = State::new("iggy", "iggy");
        let id = state.create_stream("orders").unwrap();
        assert_eq!(
            state.stream_id(&WireIdentifier::named("orders").unwrap()),
            Ok(id)
        );
        assert_eq!(
            state.create_stream("orders"),
            Err(codes::STREAM_NAME_EXISTS)
        );
        assert_eq!(
            state.stream_id(&WireIdentifier::numeric(99)),
            Err(codes::STREAM_NOT_FOUND)
        );
        let stream = WireIdentifier::numeric(id);
        state.create_topic(&stream, "t", 1).unwrap();
        assert_eq!(
            state.create_topic(&stream, "t", 1),
            Err(codes::TOPIC_NAME_EXISTS)
        );
        assert_eq!(state.login("iggy", "nope"), Err(codes::INVALID_CREDENTIALS));
        assert_eq!(state.login("iggy", "iggy"), Ok(0));
    }
}
