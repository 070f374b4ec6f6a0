//! The `webhook` source (crate `iggy_connector_http_source`): webhooks into Iggy.
//!
//! The source listens on its own `address` (HTTPS with `tls_cert_file` and
//! `tls_key_file`) and takes `POST`s at its `paths`. A body becomes messages by its
//! `Content-Type`: `application/json` (or `...+json`) one JSON message;
//! `application/x-ndjson` (`application/ndjson`, `application/jsonl`) one JSON message
//! per non-empty line; anything else one raw message. Malformed JSON is answered 400.
//!
//! **A 2xx means stored.** A request waits in a bounded queue until `poll` hands it to
//! the runtime, then until the runtime settles its batch: `Accepted` (Iggy stored it)
//! answers `200 {"stored": n}`; `Rejected`, a connector closing, or no outcome within
//! `ack_timeout` answers 503 with `Retry-After`. A request the runtime does not take
//! within `queue_timeout` (the connector is paused, Iggy is slow) is withdrawn from the
//! queue and answered 503: nothing of it was stored. When the queued bodies would pass
//! `max_queued_bytes`, a request is answered 503 at once. A request is never split
//! between batches, so it is stored whole or not at all.
//!
//! Connections speak HTTP/1.1 or HTTP/2 (ALPN `h2` over TLS, or prior knowledge).
//!
//! Checks, before anything is queued: the method (405), the path (404), the body size
//! (413, from `Content-Length` before reading, else while reading), a bearer token or a
//! shared-secret header (401, before the body is read), an HMAC-SHA256 signature of the
//! body (401); secrets and signatures are compared in constant time. The value of the
//! `idempotency_header` becomes the message id (hashed; the n-th line of an NDJSON body
//! gets its own id from the key and n), so a client that retries a request it got no
//! 2xx for makes messages with the same ids. Headers in `forward_headers` are copied
//! onto each message.

mod auth;
mod config;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use connector_sdk::{
    BatchOutcome, ConnectorContext, Error, OwnedHeader, ProducedBatch, ProducedMessage, Schema,
    Source,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub use config::HttpSourceConfig;

/// How long a client may take to send a request's head (slow clients hold a task).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Receives webhooks; see the crate docs.
pub struct HttpSource {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    server: JoinHandle<()>,
    /// The replies of each batch handed to the runtime and not settled, oldest first.
    unsettled: VecDeque<Vec<oneshot::Sender<Outcome>>>,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("local_addr", &self.local_addr)
            .field("unsettled", &self.unsettled.len())
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// The address the source listens on (the port chosen when `address` asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whole requests from the queue, up to `max_batch_messages`, all of one schema.
    fn take(&mut self) -> Option<ProducedBatch> {
        let max = self.shared.config.max_batch_messages;
        let mut queue = self.shared.lock();
        let schema = queue.items.front()?.schema;
        let mut messages = Vec::new();
        let mut replies = Vec::new();
        while let Some(next) = queue.items.front() {
            let fits = messages.is_empty() || messages.len() + next.messages.len() <= max;
            if !fits || next.schema != schema {
                break;
            }
            let Some(item) = queue.items.pop_front() else {
                break;
            };
            queue.bytes -= item.bytes;
            messages.extend(item.messages);
            replies.push(item.reply);
        }
        drop(queue);
        self.unsettled.push_back(replies);
        Some(ProducedBatch {
            schema,
            messages,
            ..ProducedBatch::default()
        })
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        // Without this the listener would outlive the instance and hold the port.
        self.server.abort();
    }
}

impl Source for HttpSource {
    type Config = HttpSourceConfig;

    // Requests keep coming while a batch is sent: the next batch is taken meanwhile.
    const MAX_UNSETTLED_BATCHES: u32 = 16;

    fn check_config(config: &HttpSourceConfig) -> Vec<String> {
        config::check(config)
    }

    async fn open(
        config: HttpSourceConfig,
        context: ConnectorContext,
        _state: Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        if let Some(problem) = config::check(&config).into_iter().next() {
            return Err(Error::invalid_config(problem));
        }
        let tls = auth::tls_acceptor(&config).map_err(Error::invalid_config)?;
        // A port still held (by the instance before a restart, say) is worth retrying.
        let listener = TcpListener::bind(&config.address).await.map_err(|error| {
            Error::retryable(format!("cannot listen on {}: {error}", config.address))
        })?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            verifier: auth::Verifier::new(&config),
            config,
            key: context.key,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
        });
        tracing::info!(connector = %shared.key, address = %local_addr, tls = tls.is_some(), "http source listening");
        let server = tokio::spawn(serve(listener, tls, shared.clone()));
        Ok(HttpSource {
            shared,
            local_addr,
            server,
            unsettled: VecDeque::new(),
        })
    }

    async fn poll(&mut self) -> Result<ProducedBatch, Error> {
        loop {
            if let Some(batch) = self.take() {
                return Ok(batch);
            }
            // Cancel-safe: nothing is taken until the queue is looked at again, and a
            // request queued meanwhile left a permit.
            self.shared.ready.notified().await;
        }
    }

    async fn on_batch_result(&mut self, outcome: BatchOutcome) -> Result<(), Error> {
        match outcome {
            BatchOutcome::Accepted => {
                for reply in self.unsettled.pop_front().unwrap_or_default() {
                    // A client that hung up does not need the answer.
                    let _ = reply.send(Outcome::Stored);
                }
            }
            // The later unsettled batches are discarded with the rejected one: none of
            // them counts as stored, so each of their requests is answered 503.
            _ => {
                for reply in self.unsettled.drain(..).flatten() {
                    let _ = reply.send(Outcome::NotStored);
                }
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        self.server.abort();
        let queued = {
            let mut queue = self.shared.lock();
            queue.closed = true;
            queue.bytes = 0;
            std::mem::take(&mut queue.items)
        };
        // Dropped replies answer 503: nothing of these was stored.
        drop(queued);
        for reply in self.unsettled.drain(..).flatten() {
            let _ = reply.send(Outcome::NotStored);
        }
        tracing::info!(connector = %self.shared.key, "http source closed");
        Ok(())
    }
}

/// What a request's batch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stored,
    NotStored,
}

/// What the server's tasks and the source share.
struct Shared {
    config: HttpSourceConfig,
    verifier: auth::Verifier,
    key: String,
    queue: Mutex<Queue>,
    /// Signalled when a request is queued.
    ready: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (every change is
        // one push or pop), so a poisoned lock is still usable.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Queued>,
    /// Body bytes of `items`.
    bytes: usize,
    next_id: u64,
    closed: bool,
}

/// A request waiting for `poll`.
struct Queued {
    id: u64,
    schema: Schema,
    messages: Vec<ProducedMessage>,
    bytes: usize,
    reply: oneshot::Sender<Outcome>,
}

/// Accepts connections until the task is aborted.
async fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(connector = %shared.key, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (shared, tls) = (shared.clone(), tls.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&shared, request).await) }
            });
            // A connection that says nothing holds a task: it gets as long as a request
            // head would (HTTP/1.1's own timeout covers the rest of the head).
            let served = match tls {
                None => {
                    let peeked =
                        tokio::time::timeout(HEADER_READ_TIMEOUT, starts_with_h2_preface(&stream))
                            .await;
                    let Ok(h2) = peeked else {
                        tracing::debug!(%peer, "no request in time; closing");
                        return;
                    };
                    serve_connection(TokioIo::new(stream), service, h2).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_connection(TokioIo::new(stream), service, h2).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "no TLS handshake in time; closing");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

/// Serves one connection: HTTP/2 when `h2` (the client chose it), else HTTP/1.1 with
/// keep-alive and a deadline for each request head.
async fn serve_connection<I, S>(io: I, service: S, h2: bool) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service)
            .await
    } else {
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(io, service)
            .await
    }
}

/// Whether a plain connection opens with HTTP/2's preface (`PRI * HTTP/2.0`, sent by a
/// client with prior knowledge): no HTTP/1.1 method starts with `PRI`, so three bytes
/// decide. Nothing is consumed; `false` also for a connection closed or failed.
async fn starts_with_h2_preface(stream: &tokio::net::TcpStream) -> bool {
    const PREFACE: &[u8; 3] = b"PRI";
    let mut head = [0; 3];
    loop {
        match stream.peek(&mut head).await {
            Ok(0) | Err(_) => return false,
            Ok(read) if read < head.len() && head[..read] == PREFACE[..read] => {
                // Fewer bytes than decide, all matching (a client writing its first
                // segment in pieces): peek would return the same at once, so pause
                // briefly before looking again; the caller's deadline bounds it.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(read) => return read == head.len() && &head == PREFACE,
        }
    }
}

/// Answers one request.
async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let config = &shared.config;
    if request.method() != Method::POST {
        let mut response = answer(StatusCode::METHOD_NOT_ALLOWED, "only POST is taken");
        response
            .headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if !config.paths.is_empty() && !config.paths.iter().any(|p| p == request.uri().path()) {
        return answer(StatusCode::NOT_FOUND, "no webhook at this path");
    }
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > config.max_body_bytes as u64) {
        return too_large(config.max_body_bytes);
    }
    if let Err(reason) = shared.verifier.check_headers(request.headers()) {
        tracing::warn!(connector = %shared.key, reason, "request refused");
        return answer(StatusCode::UNAUTHORIZED, reason);
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, config.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return too_large(config.max_body_bytes);
        }
        Err(error) => {
            return answer(
                StatusCode::BAD_REQUEST,
                &format!("the body could not be read: {error}"),
            );
        }
    };
    if let Err(reason) = shared.verifier.check_signature(&parts.headers, &body) {
        tracing::warn!(connector = %shared.key, reason, "request refused");
        return answer(StatusCode::UNAUTHORIZED, reason);
    }
    let (schema, messages) = match messages(config, &parts.headers, body.clone()) {
        Ok(parsed) => parsed,
        Err(reason) => return answer(StatusCode::BAD_REQUEST, &reason),
    };
    let count = messages.len();
    let (reply, mut outcome) = oneshot::channel();
    let id = {
        let mut queue = shared.lock();
        if queue.closed {
            return unavailable(config, "the connector is closing");
        }
        if queue.bytes + body.len() > config.max_queued_bytes {
            drop(queue);
            tracing::debug!(connector = %shared.key, "queue full; answering 503");
            return unavailable(config, "too many requests are waiting to be stored");
        }
        let id = queue.next_id;
        queue.next_id += 1;
        queue.bytes += body.len();
        queue.items.push_back(Queued {
            id,
            schema,
            messages,
            bytes: body.len(),
            reply,
        });
        id
    };
    shared.ready.notify_one();
    let settled = match tokio::time::timeout(config.queue_timeout, &mut outcome).await {
        Ok(settled) => settled,
        Err(_) => {
            let withdrawn = {
                let mut queue = shared.lock();
                match queue.items.iter().position(|item| item.id == id) {
                    Some(index) => {
                        let item = queue.items.remove(index);
                        queue.bytes -= item.map_or(0, |item| item.bytes);
                        true
                    }
                    None => false,
                }
            };
            if withdrawn {
                tracing::debug!(connector = %shared.key, "not taken in time; answering 503");
                return unavailable(config, "the connector is not taking messages now");
            }
            // Taken: the batch is on its way to Iggy; its outcome decides.
            match tokio::time::timeout(config.ack_timeout, outcome).await {
                Ok(settled) => settled,
                Err(_) => {
                    return unavailable(
                        config,
                        "not confirmed stored in time; retry with the same idempotency key",
                    );
                }
            }
        }
    };
    match settled {
        Ok(Outcome::Stored) => {
            let mut response =
                Response::new(Full::new(Bytes::from(format!("{{\"stored\":{count}}}"))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => unavailable(config, "not stored; retry"),
    }
}

/// The messages a body makes, by its content type.
fn messages(
    config: &HttpSourceConfig,
    headers: &hyper::HeaderMap,
    body: Bytes,
) -> Result<(Schema, Vec<ProducedMessage>), String> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (schema, payloads) = match content_type.as_str() {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => {
            let mut lines = Vec::new();
            let mut start = 0;
            for (number, line) in body.split(|byte| *byte == b'\n').enumerate() {
                let end = start + line.len();
                let trimmed = line.trim_ascii();
                if !trimmed.is_empty() {
                    if serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_err() {
                        return Err(format!("line {} is not JSON", number + 1));
                    }
                    let offset = start + (line.len() - line.trim_ascii_start().len());
                    lines.push(body.slice(offset..offset + trimmed.len()));
                }
                start = end + 1;
            }
            (Schema::Json, lines)
        }
        json if json == "application/json" || json.ends_with("+json") => {
            if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                return Err(format!("the body is not JSON: {error}"));
            }
            (Schema::Json, vec![body])
        }
        _ => (Schema::Raw, vec![body]),
    };
    if payloads.is_empty() {
        return Err("the body holds no message".to_owned());
    }
    let forwarded: Vec<OwnedHeader> = config
        .forward_headers
        .iter()
        .filter_map(|name| {
            let value = headers.get(name.as_str())?.to_str().ok()?;
            Some(OwnedHeader::string(name.to_ascii_lowercase(), value))
        })
        .collect();
    let idempotency = (!config.idempotency_header.is_empty())
        .then(|| headers.get(config.idempotency_header.as_str()))
        .flatten()
        .map(|value| value.as_bytes().to_vec());
    let many = payloads.len() > 1;
    let messages = payloads
        .into_iter()
        .enumerate()
        .map(|(index, payload)| {
            let mut message = ProducedMessage::new(payload);
            message.headers = forwarded.clone();
            message.id = idempotency
                .as_deref()
                .map(|key| message_id(key, many.then_some(index)));
            message
        })
        .collect();
    Ok((schema, messages))
}

/// A message id from an idempotency key (and the message's index in a request of
/// several): FNV-1a, 128 bits, never 0 (which Iggy reads as "make one up").
fn message_id(key: &[u8], index: Option<usize>) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u128::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    feed(key);
    if let Some(index) = index {
        // A separator byte no header value holds: key "a" line 1 and key "a\x01"
        // cannot meet.
        feed(&[0xff]);
        feed(&(index as u64).to_le_bytes());
    }
    hash.max(1)
}

fn answer(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": reason }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn too_large(limit: usize) -> Response<Full<Bytes>> {
    answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is over {limit} bytes"),
    )
}

fn unavailable(config: &HttpSourceConfig, reason: &str) -> Response<Full<Bytes>> {
    let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, reason);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(config.retry_after_secs));
    response
}

// Named `webhook`: the name is unique among the bundled connectors, and the `http` sink has `http`.
connector_sdk::export_source!(HttpSource, "webhook");

#[cfg(test)]
mod tests {
    use super::message_id;

    #[test]
    fn message_ids_are_stable_and_distinct_per_line() {
        assert_eq!(message_id(b"abc", None), message_id(b"abc", None));
        assert_ne!(message_id(b"abc", None), message_id(b"abd", None));
        assert_ne!(message_id(b"abc", Some(0)), message_id(b"abc", Some(1)));
        assert_ne!(message_id(b"abc", Some(0)), message_id(b"abc", None));
    }
}
