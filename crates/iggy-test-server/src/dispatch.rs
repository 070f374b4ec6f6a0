//! Decodes a request, applies it to the state and encodes the answer, with the
//! `iggy_binary_protocol` request and response types the client itself uses.
//!
//! The file is long because the protocol has many commands: one match routes them all
//! and each has a short function next to it, so which commands the test server speaks
//! (and how it answers the rest) is read in one place.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use iggy_binary_protocol::batch::{
    BATCH_HEADER_SIZE, BatchHeader, calculate_batch_checksum, decode_batch_slice,
};
use iggy_binary_protocol::codes::*;
use iggy_binary_protocol::requests::consumer_groups::{
    CreateConsumerGroupRequest, DeleteConsumerGroupRequest, GetConsumerGroupRequest,
    GetConsumerGroupsRequest, JoinConsumerGroupRequest, LeaveConsumerGroupRequest,
    SyncConsumerGroupRequest,
};
use iggy_binary_protocol::requests::consumer_offsets::{
    DeleteConsumerOffsetRequest, GetConsumerOffsetRequest, StoreConsumerOffsetRequest,
};
use iggy_binary_protocol::requests::messages::{PollMessagesRequest, SendMessagesHeader};
use iggy_binary_protocol::requests::personal_access_tokens::CreatePersonalAccessTokenRequest;
use iggy_binary_protocol::requests::streams::{
    CreateStreamRequest, DeleteStreamRequest, GetStreamRequest,
};
use iggy_binary_protocol::requests::topics::{
    CreateTopicRequest, DeleteTopicRequest, GetTopicRequest, GetTopicsRequest,
};
use iggy_binary_protocol::requests::users::{LoginRegisterRequest, LoginRegisterWithPatRequest};
use iggy_binary_protocol::responses::clients::client_response::ClientResponse;
use iggy_binary_protocol::responses::clients::get_client::ClientDetailsResponse;
use iggy_binary_protocol::responses::consumer_groups::SyncConsumerGroupResponse;
use iggy_binary_protocol::responses::consumer_groups::consumer_group_response::ConsumerGroupResponse;
use iggy_binary_protocol::responses::consumer_groups::get_consumer_group::{
    ConsumerGroupDetailsResponse, ConsumerGroupMemberResponse,
};
use iggy_binary_protocol::responses::consumer_groups::get_consumer_groups::GetConsumerGroupsResponse;
use iggy_binary_protocol::responses::consumer_offsets::get_consumer_offset::ConsumerOffsetResponse;
use iggy_binary_protocol::responses::messages::poll_messages::PollMessagesResponseHeader;
use iggy_binary_protocol::responses::messages::send_messages::{
    SendMessagesConfirmationResponse, SendMessagesResponse,
};
use iggy_binary_protocol::responses::personal_access_tokens::create_personal_access_token::RawPersonalAccessTokenResponse;
use iggy_binary_protocol::responses::streams::get_stream::{GetStreamResponse, TopicHeader};
use iggy_binary_protocol::responses::streams::{GetStreamsResponse, StreamResponse};
use iggy_binary_protocol::responses::system::get_cluster_metadata::{
    ClusterMetadataResponse, ClusterNodeResponse,
};
use iggy_binary_protocol::responses::topics::{
    GetTopicResponse, GetTopicsResponse, PartitionResponse,
};
use iggy_binary_protocol::responses::users::login_register::LoginRegisterResponse;
use iggy_binary_protocol::{
    IGGY_PROTOCOL_VERSION, KIND_CONSUMER_GROUP, WireConsumer, WireDecode, WireEncode,
    WireIdentifier, WireName, WireOptions, WirePartitioning, WirePollingStrategy,
};
use secrecy::ExposeSecret;

use crate::error::{ErrorCode, codes};
use crate::state::{self, ConsumerRef, Poll, State, StoredMessage, Strategy, Stream, Topic};
use crate::wire::{Code, ReplyBody, Request};

/// The version string the server reports at login.
const SERVER_VERSION: &str = concat!("iggy-test-server-", env!("CARGO_PKG_VERSION"));

/// The partition id of an empty poll that tells a group member to re-sync.
const RESYNC_REQUIRED_PARTITION: u32 = u32::MAX;

/// What the server knows about one connection.
#[derive(Debug, Default)]
pub(crate) struct Connection {
    /// The signed-in user.
    pub(crate) user: Option<u32>,
    /// The session handed out at login.
    pub(crate) session: u64,
    /// Every client id this connection used; group memberships are keyed by it.
    pub(crate) clients: Vec<u128>,
    /// The connection's number, reported by "get me".
    pub(crate) id: u32,
    /// The peer address.
    pub(crate) peer: Option<SocketAddr>,
}

/// What a handler needs besides the state and the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerInfo {
    /// The address clients reach the server at (reported in cluster metadata).
    pub(crate) address: SocketAddr,
}

type Reply = Result<ReplyBody, ErrorCode>;

fn decode<T: WireDecode>(body: &[u8]) -> Result<T, ErrorCode> {
    T::decode_from(body).map_err(|_| codes::INVALID_COMMAND)
}

fn raw(value: &impl WireEncode) -> Reply {
    Ok(ReplyBody::Raw(value.to_bytes()))
}

fn framed(value: &impl WireEncode) -> Reply {
    Ok(ReplyBody::ResultFramed(value.to_bytes()))
}

fn framed_empty() -> Reply {
    Ok(ReplyBody::ResultFramed(Bytes::new()))
}

fn not_found() -> Reply {
    Ok(ReplyBody::Raw(Bytes::new()))
}

/// A name for a reply. Stored names were valid wire names when they came in.
fn name(text: &str) -> Result<WireName, ErrorCode> {
    WireName::new(text).map_err(|_| codes::ERROR)
}

/// Handles one request. `fail_send` is consulted for every send and says whether to
/// refuse it (fault injection).
pub(crate) fn handle(
    state: &mut State,
    connection: &mut Connection,
    server: ServerInfo,
    request: &Request,
    fail_send: impl FnOnce() -> bool,
) -> Reply {
    let client = request.header.client;
    if request.code == Code::Register {
        return login(state, connection, client, &request.body);
    }
    let Code::Command(code) = request.code else {
        return Err(codes::INVALID_COMMAND);
    };
    if code == PING_CODE {
        return Ok(ReplyBody::Raw(Bytes::new()));
    }
    let Some(user) = connection.user else {
        return Err(codes::UNAUTHENTICATED);
    };
    let body = &request.body;
    match code {
        LOGOUT_USER_CODE => {
            connection.user = None;
            state.remove_clients(&connection.clients);
            Ok(ReplyBody::Raw(Bytes::new()))
        }
        GET_CLUSTER_METADATA_CODE => raw(&ClusterMetadataResponse {
            name: "iggy-test-server".to_owned(),
            nodes: vec![ClusterNodeResponse {
                name: "iggy-test-server-0".to_owned(),
                ip: server.address.ip().to_string(),
                tcp_port: server.address.port(),
                quic_port: 0,
                http_port: 0,
                websocket_port: 0,
                role: 0,
                status: 0,
            }],
        }),
        GET_ME_CODE => raw(&ClientDetailsResponse {
            client: ClientResponse {
                client_id: connection.id,
                user_id: user,
                transport: 1,
                address: connection
                    .peer
                    .map(|peer| peer.to_string())
                    .unwrap_or_default(),
                consumer_groups_count: 0,
            },
            consumer_groups: Vec::new(),
        }),
        CREATE_PERSONAL_ACCESS_TOKEN_CODE => {
            let request: CreatePersonalAccessTokenRequest = decode(body)?;
            let token = state.create_token(user, request.name.as_str())?;
            framed(&RawPersonalAccessTokenResponse {
                token: WireName::new(token).map_err(|_| codes::ERROR)?,
            })
        }
        GET_STREAM_CODE => {
            let request: GetStreamRequest = decode(body)?;
            match state.stream(&request.stream_id) {
                Ok(stream) => raw(&stream_response(stream)?),
                Err(_) => not_found(),
            }
        }
        GET_STREAMS_CODE => raw(&GetStreamsResponse {
            streams: state
                .streams
                .values()
                .map(|stream| stream_response(stream).map(|details| details.stream))
                .collect::<Result<_, _>>()?,
        }),
        GET_TOPICS_CODE => {
            let request: GetTopicsRequest = decode(body)?;
            raw(&GetTopicsResponse {
                topics: state
                    .stream(&request.stream_id)?
                    .topics
                    .values()
                    .map(topic_header)
                    .collect::<Result<_, _>>()?,
            })
        }
        CREATE_STREAM_CODE => {
            let request: CreateStreamRequest = decode(body)?;
            let id = state.create_stream(request.name.as_str())?;
            framed(&stream_response(
                state.stream(&WireIdentifier::numeric(id))?,
            )?)
        }
        DELETE_STREAM_CODE => {
            let request: DeleteStreamRequest = decode(body)?;
            state.delete_stream(&request.stream_id)?;
            framed_empty()
        }
        GET_TOPIC_CODE => {
            let request: GetTopicRequest = decode(body)?;
            match state.topic(&request.stream_id, &request.topic_id) {
                Ok(topic) => raw(&topic_response(topic)?),
                Err(_) => not_found(),
            }
        }
        CREATE_TOPIC_CODE => {
            let request: CreateTopicRequest = decode(body)?;
            let (stream, topic) = state.create_topic(
                &request.stream_id,
                request.name.as_str(),
                request.partitions_count,
            )?;
            let topic = state.topic(
                &WireIdentifier::numeric(stream),
                &WireIdentifier::numeric(topic),
            )?;
            framed(&topic_response(topic)?)
        }
        DELETE_TOPIC_CODE => {
            let request: DeleteTopicRequest = decode(body)?;
            state.delete_topic(&request.stream_id, &request.topic_id)?;
            framed_empty()
        }
        SEND_MESSAGES_CODE => send(state, body, fail_send),
        POLL_MESSAGES_CODE => poll(state, client, body),
        GET_CONSUMER_OFFSET_CODE => {
            let request: GetConsumerOffsetRequest = decode(body)?;
            let partition = request.partition_id.unwrap_or(0);
            let topic = state.topic(&request.stream_id, &request.topic_id)?;
            let log = topic.partition(partition)?;
            let consumer = consumer_ref(topic, &request.consumer)?;
            match state::stored_offset(topic, &consumer, partition) {
                Some(stored_offset) => raw(&ConsumerOffsetResponse {
                    partition_id: partition,
                    current_offset: log.current_offset(),
                    stored_offset,
                }),
                None => not_found(),
            }
        }
        STORE_CONSUMER_OFFSET_CODE => {
            let request: StoreConsumerOffsetRequest = decode(body)?;
            let partition = request.partition_id.unwrap_or(0);
            let topic = state.topic_mut(&request.stream_id, &request.topic_id)?;
            topic.partition(partition)?;
            let consumer = consumer_ref(topic, &request.consumer)?;
            fence_group_offset(topic, &consumer, client, partition)?;
            state::store_offset(topic, &consumer, partition, request.offset);
            framed_empty()
        }
        DELETE_CONSUMER_OFFSET_CODE => {
            let request: DeleteConsumerOffsetRequest = decode(body)?;
            let partition = request.partition_id.unwrap_or(0);
            let topic = state.topic_mut(&request.stream_id, &request.topic_id)?;
            topic.partition(partition)?;
            let consumer = consumer_ref(topic, &request.consumer)?;
            fence_group_offset(topic, &consumer, client, partition)?;
            if !state::delete_offset(topic, &consumer, partition) {
                return Err(codes::CONSUMER_OFFSET_NOT_FOUND);
            }
            framed_empty()
        }
        GET_CONSUMER_GROUP_CODE => {
            let request: GetConsumerGroupRequest = decode(body)?;
            let topic = state.topic(&request.stream_id, &request.topic_id)?;
            match topic.group_id(&request.group_id) {
                Ok(id) => raw(&group_response(topic, id)?),
                Err(_) => not_found(),
            }
        }
        GET_CONSUMER_GROUPS_CODE => {
            let request: GetConsumerGroupsRequest = decode(body)?;
            let topic = state.topic(&request.stream_id, &request.topic_id)?;
            raw(&GetConsumerGroupsResponse {
                groups: topic
                    .groups
                    .keys()
                    .filter_map(|id| group_response(topic, *id).ok())
                    .map(|details| details.group)
                    .collect(),
            })
        }
        CREATE_CONSUMER_GROUP_CODE => {
            let request: CreateConsumerGroupRequest = decode(body)?;
            let topic = state.topic_mut(&request.stream_id, &request.topic_id)?;
            let id = topic.create_group(request.name.as_str())?;
            framed(&group_response(topic, id)?)
        }
        DELETE_CONSUMER_GROUP_CODE => {
            let request: DeleteConsumerGroupRequest = decode(body)?;
            let topic = state.topic_mut(&request.stream_id, &request.topic_id)?;
            let id = topic.group_id(&request.group_id)?;
            topic.groups.remove(&id);
            framed_empty()
        }
        JOIN_CONSUMER_GROUP_CODE => {
            let request: JoinConsumerGroupRequest = decode(body)?;
            let topic = state.topic_mut(&request.stream_id, &request.topic_id)?;
            let id = topic.group_id(&request.group_id)?;
            topic.join_group(id, client)?;
            if !connection.clients.contains(&client) {
                connection.clients.push(client);
            }
            framed_empty()
        }
        LEAVE_CONSUMER_GROUP_CODE => {
            let request: LeaveConsumerGroupRequest = decode(body)?;
            let topic = state.topic_mut(&request.stream_id, &request.topic_id)?;
            let id = topic.group_id(&request.group_id)?;
            topic.leave_group(id, client)?;
            framed_empty()
        }
        SYNC_CONSUMER_GROUP_CODE => {
            let request: SyncConsumerGroupRequest = decode(body)?;
            let topic = state.topic(&request.stream_id, &request.topic_id)?;
            let id = topic.group_id(&request.group_id)?;
            let group = &topic.groups[&id];
            match group.member_index(client) {
                Some(member) => raw(&SyncConsumerGroupResponse {
                    generation: group.generation,
                    partitions: group.assignment(member, topic.partitions.len() as u32),
                }),
                None => not_found(),
            }
        }
        _ => Err(codes::FEATURE_UNAVAILABLE),
    }
}

fn login(state: &mut State, connection: &mut Connection, client: u128, body: &Bytes) -> Reply {
    // Password and token logins share one operation and header: tell them apart by
    // the body, trying the password layout first, as the real server does.
    let user = match LoginRegisterRequest::decode_from(body) {
        Ok(request) => state.login(request.username.as_str(), request.password.expose_secret()),
        Err(_) => {
            let request: LoginRegisterWithPatRequest = decode(body)?;
            state.login_with_token(request.token.expose_secret())
        }
    };
    let user = match user {
        Ok(user) => user,
        Err(code) => {
            connection.user = None;
            return Err(code);
        }
    };
    let session = state.new_session();
    connection.user = Some(user);
    connection.session = session;
    if !connection.clients.contains(&client) {
        connection.clients.push(client);
    }
    framed(&LoginRegisterResponse {
        user_id: user,
        session,
        server_protocol_version: IGGY_PROTOCOL_VERSION,
        server_version: name(SERVER_VERSION)?,
    })
}

fn stream_response(stream: &Stream) -> Result<GetStreamResponse, ErrorCode> {
    let topics: Vec<TopicHeader> = stream
        .topics
        .values()
        .map(topic_header)
        .collect::<Result<_, _>>()?;
    Ok(GetStreamResponse {
        stream: StreamResponse {
            id: stream.id,
            created_at: stream.created_at,
            topics_count: topics.len() as u32,
            size_bytes: stream.topics.values().map(Topic::size_bytes).sum(),
            messages_count: stream.topics.values().map(Topic::messages_count).sum(),
            name: name(&stream.name)?,
            options: WireOptions::empty(),
        },
        topics,
    })
}

fn topic_header(topic: &Topic) -> Result<TopicHeader, ErrorCode> {
    Ok(TopicHeader {
        id: topic.id,
        created_at: topic.created_at,
        partitions_count: topic.partitions.len() as u32,
        message_expiry: 0,
        compression_algorithm: 1,
        max_topic_size: u64::MAX,
        size_bytes: topic.size_bytes(),
        messages_count: topic.messages_count(),
        name: name(&topic.name)?,
        options: WireOptions::empty(),
        derived_options: WireOptions::empty(),
    })
}

fn topic_response(topic: &Topic) -> Result<GetTopicResponse, ErrorCode> {
    Ok(GetTopicResponse {
        topic: topic_header(topic)?,
        partitions: topic
            .partitions
            .iter()
            .map(|partition| PartitionResponse {
                id: partition.id,
                created_at: partition.created_at,
                segments_count: 1,
                current_offset: partition.current_offset(),
                size_bytes: partition.size_bytes,
                messages_count: partition.messages.len() as u64,
            })
            .collect(),
    })
}

fn group_response(topic: &Topic, id: u32) -> Result<ConsumerGroupDetailsResponse, ErrorCode> {
    let group = topic
        .groups
        .get(&id)
        .ok_or(codes::CONSUMER_GROUP_NOT_FOUND)?;
    let partitions = topic.partitions.len() as u32;
    Ok(ConsumerGroupDetailsResponse {
        group: ConsumerGroupResponse {
            id: group.id,
            partitions_count: partitions,
            members_count: group.members.len() as u32,
            name: name(&group.name)?,
        },
        members: group
            .members
            .iter()
            .enumerate()
            .map(|(index, member)| {
                let assigned = group.assignment(index, partitions);
                ConsumerGroupMemberResponse {
                    id: member.id,
                    partitions_count: assigned.len() as u32,
                    partitions: assigned,
                }
            })
            .collect(),
    })
}

/// The offset owner a request names.
fn consumer_ref(topic: &Topic, consumer: &WireConsumer) -> Result<ConsumerRef, ErrorCode> {
    if consumer.kind == KIND_CONSUMER_GROUP {
        return topic.group_id(&consumer.id).map(ConsumerRef::Group);
    }
    Ok(ConsumerRef::Consumer(match &consumer.id {
        WireIdentifier::Numeric(id) => format!("#{id}"),
        WireIdentifier::String(name) => name.as_str().to_owned(),
    }))
}

fn send(state: &mut State, body: &Bytes, fail_send: impl FnOnce() -> bool) -> Reply {
    let metadata_len = body
        .get(..4)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(codes::INVALID_COMMAND)? as usize;
    let metadata = body
        .get(4..4 + metadata_len)
        .ok_or(codes::INVALID_COMMAND)?;
    let header: SendMessagesHeader = decode(metadata)?;
    let batch_start = 4 + metadata_len;
    let batch = decode_batch_slice(&body[batch_start..]).map_err(|_| codes::INVALID_FORMAT)?;
    if batch.message_count() != header.messages_count || batch.message_count() == 0 {
        return Err(codes::INVALID_MESSAGES_COUNT);
    }
    let topic = state.topic_mut(&header.stream_id, &header.topic_id)?;
    let partitions = topic.partitions.len() as u32;
    if partitions == 0 {
        return Err(codes::PARTITION_NOT_FOUND);
    }
    let partition = match &header.partitioning {
        WirePartitioning::PartitionId(id) => *id,
        WirePartitioning::Balanced => {
            let partition = topic.next_balanced % partitions;
            topic.next_balanced = topic.next_balanced.wrapping_add(1);
            partition
        }
        WirePartitioning::MessagesKey(key) => iggy_common::calculate_32(key) % partitions,
    };
    if partition >= partitions {
        // What a real server (0.9) answers for a send to a partition that does not exist
        // (checked with IGGY_TEST_ADDRESS); polls say PartitionNotFound instead.
        return Err(codes::RESOURCE_NOT_FOUND);
    }
    if fail_send() {
        return Err(codes::CANNOT_APPEND_MESSAGE);
    }
    let base_offset = state.append(
        &header.stream_id,
        &header.topic_id,
        partition,
        &batch,
        body,
        batch_start + BATCH_HEADER_SIZE,
    )?;
    let stream_id = state.stream_id(&header.stream_id)?;
    let topic_id = state
        .stream(&header.stream_id)?
        .topic_id(&header.topic_id)?;
    raw(&SendMessagesResponse {
        confirmations: vec![SendMessagesConfirmationResponse {
            stream_id,
            topic_id,
            partition_id: partition,
            base_offset,
        }],
    })
}

fn strategy(wire: WirePollingStrategy) -> Result<Strategy, ErrorCode> {
    Ok(match wire.kind {
        1 => Strategy::Offset(wire.value),
        2 => Strategy::Timestamp(wire.value),
        3 => Strategy::First,
        4 => Strategy::Last,
        5 => Strategy::Next,
        _ => return Err(codes::INVALID_COMMAND),
    })
}

/// Whether `client` owns `partition` in the group (always, for a plain consumer).
fn owns(topic: &Topic, consumer: &ConsumerRef, client: u128, partition: u32) -> bool {
    let ConsumerRef::Group(id) = consumer else {
        return true;
    };
    let group = &topic.groups[id];
    group.member_index(client).is_some_and(|member| {
        group
            .assignment(member, topic.partitions.len() as u32)
            .contains(&partition)
    })
}

/// As the real server fences a group's offset: only the member that owns the partition
/// may store or delete it, so a stale member cannot move the group's offset. That
/// server's client sees the refusal as `ResourceNotFound`.
fn fence_group_offset(
    topic: &Topic,
    consumer: &ConsumerRef,
    client: u128,
    partition: u32,
) -> Result<(), ErrorCode> {
    if owns(topic, consumer, client, partition) {
        Ok(())
    } else {
        Err(codes::RESOURCE_NOT_FOUND)
    }
}

fn poll(state: &mut State, client: u128, body: &Bytes) -> Reply {
    let request: PollMessagesRequest = decode(body)?;
    let topic = state.topic(&request.stream_id, &request.topic_id)?;
    let consumer = consumer_ref(topic, &request.consumer)?;
    let partition = match (&consumer, request.partition_id) {
        (ConsumerRef::Group(_), partition) => {
            let Some(partition) =
                partition.filter(|&partition| owns(topic, &consumer, client, partition))
            else {
                // Not this member's partition (any more): tell it to re-sync.
                return Ok(ReplyBody::Raw(empty_poll(RESYNC_REQUIRED_PARTITION)));
            };
            partition
        }
        (ConsumerRef::Consumer(_), partition) => partition.unwrap_or(0),
    };
    let poll = Poll {
        partition,
        consumer,
        strategy: strategy(request.strategy)?,
        count: request.count,
        auto_commit: request.auto_commit,
    };
    let (current_offset, messages) = state.poll(&request.stream_id, &request.topic_id, &poll)?;
    Ok(ReplyBody::Raw(poll_body(
        partition,
        current_offset,
        &messages,
    )))
}

fn empty_poll(partition: u32) -> Bytes {
    PollMessagesResponseHeader {
        partition_id: partition,
        current_offset: 0,
        messages_count: 0,
    }
    .to_bytes()
}

/// The poll reply: the 16-byte head, then one batch record per run of messages that
/// arrived in the same batch, holding their frames exactly as they were sent.
pub(crate) fn poll_body(partition: u32, current_offset: u64, messages: &[StoredMessage]) -> Bytes {
    let frames: usize = messages.iter().map(|message| message.frame.len()).sum();
    let mut body = BytesMut::with_capacity(16 + frames + BATCH_HEADER_SIZE * 4);
    PollMessagesResponseHeader {
        partition_id: partition,
        current_offset,
        messages_count: messages.len() as u32,
    }
    .encode(&mut body);
    for run in messages
        .chunk_by(|a, b| a.batch_base_offset == b.batch_base_offset && a.timestamp == b.timestamp)
    {
        let header_at = body.len();
        body.resize(header_at + BATCH_HEADER_SIZE, 0);
        for message in run {
            body.extend_from_slice(&message.frame);
        }
        let first = &run[0];
        let mut header = BatchHeader::new(
            u64::from(partition),
            first.batch_origin_timestamp,
            (body.len() - header_at) as u64,
            run.len() as u32,
        );
        header.base_offset = first.batch_base_offset;
        header.base_timestamp = first.timestamp;
        header.batch_checksum =
            calculate_batch_checksum(&header, &body[header_at + BATCH_HEADER_SIZE..]);
        header.encode_into(&mut body[header_at..header_at + BATCH_HEADER_SIZE]);
    }
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iggy_binary_protocol::batch::{BATCH_MESSAGE_HEADER_SIZE, decode_batch_slice};
    use iggy_binary_protocol::requests::messages::{RawMessage, SendMessagesEncoder};
    use iggy_binary_protocol::{Operation, RequestHeader};

    fn request(code: u32, body: Bytes) -> Request {
        Request {
            header: RequestHeader {
                operation: Operation::NonReplicated,
                client: 1,
                ..RequestHeader::default()
            },
            code: Code::Command(code),
            body,
        }
    }

    fn server() -> ServerInfo {
        ServerInfo {
            address: SocketAddr::from(([127, 0, 0, 1], 8090)),
        }
    }

    #[test]
    fn only_ping_works_before_login() {
        let mut state = State::new("iggy", "iggy");
        let mut connection = Connection::default();
        let ping = handle(
            &mut state,
            &mut connection,
            server(),
            &request(PING_CODE, Bytes::new()),
            || false,
        );
        assert!(matches!(ping, Ok(ReplyBody::Raw(body)) if body.is_empty()));
        for code in [
            GET_STREAMS_CODE,
            GET_CLUSTER_METADATA_CODE,
            SEND_MESSAGES_CODE,
        ] {
            let reply = handle(
                &mut state,
                &mut connection,
                server(),
                &request(code, Bytes::new()),
                || false,
            );
            assert_eq!(reply.err(), Some(codes::UNAUTHENTICATED), "code {code}");
        }
        connection.user = Some(0);
        let reply = handle(
            &mut state,
            &mut connection,
            server(),
            &request(9999, Bytes::new()),
            || false,
        );
        assert_eq!(reply.err(), Some(codes::FEATURE_UNAVAILABLE));
    }

    /// Sends two batches the way the client encodes them, then checks the poll reply:
    /// one batch record per sent batch, frames byte for byte, checksums that verify.
    #[test]
    fn polls_return_the_sent_frames_in_batches_that_verify() {
        let mut state = State::new("iggy", "iggy");
        let stream = WireIdentifier::numeric(state.create_stream("s").unwrap());
        let topic = WireIdentifier::numeric(state.create_topic(&stream, "t", 1).unwrap().1);
        let partitioning = WirePartitioning::PartitionId(0);
        let mut sent_frames = Vec::new();
        for (round, count) in [(0u128, 3usize), (1, 2)] {
            let payloads: Vec<Vec<u8>> = (0..count)
                .map(|n| format!("r{round}m{n}").into_bytes())
                .collect();
            let messages: Vec<RawMessage<'_>> = payloads
                .iter()
                .enumerate()
                .map(|(n, payload)| RawMessage {
                    id: round * 100 + n as u128 + 1,
                    origin_timestamp: 1_000 + n as u64,
                    headers: None,
                    payload,
                })
                .collect();
            let mut body = BytesMut::new();
            SendMessagesEncoder::encode(&mut body, &stream, &topic, &partitioning, &messages)
                .unwrap();
            let body = body.freeze();
            let reply = send(&mut state, &body, || false).unwrap();
            assert!(matches!(reply, ReplyBody::Raw(_)));
            let blob_start = 4
                + 4
                + stream.encoded_size()
                + topic.encoded_size()
                + partitioning.encoded_size()
                + BATCH_HEADER_SIZE;
            sent_frames.push(body.slice(blob_start..));
        }
        let poll = Poll {
            partition: 0,
            consumer: ConsumerRef::Consumer("c".to_owned()),
            strategy: Strategy::Offset(1),
            count: 10,
            auto_commit: false,
        };
        let (current, messages) = state.poll(&stream, &topic, &poll).unwrap();
        assert_eq!(current, 4);
        let body = poll_body(0, current, &messages);
        let mut at = 16;
        let mut offsets = Vec::new();
        let mut records = 0;
        while at < body.len() {
            let batch = decode_batch_slice(&body[at..]).expect("a batch record that verifies");
            for message in batch.iter() {
                offsets.push(batch.header.base_offset + u64::from(message.header.offset_delta));
            }
            at += batch.header.total_size();
            records += 1;
        }
        assert_eq!(records, 2, "one record per sent batch");
        assert_eq!(offsets, vec![1, 2, 3, 4]);
        // The second record holds the second batch's frames exactly as sent.
        let second = decode_batch_slice(
            &body[16 + BATCH_HEADER_SIZE + 2 * (BATCH_MESSAGE_HEADER_SIZE + 4)..],
        )
        .unwrap();
        assert_eq!(second.blob(), &sent_frames[1][..]);
    }
}
