//! The listener, the connections, and the test-facing handle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use iggy_binary_protocol::WireIdentifier;

use crate::dispatch::{self, Connection, ServerInfo};
use crate::state::{self, ConsumerRef, State};
use crate::wire::{self, ReadError};

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port.
    pub address: SocketAddr,
    /// The one user's name.
    pub username: String,
    /// The one user's password.
    pub password: String,
    /// Serve TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "iggy".to_owned(),
            password: "iggy".to_owned(),
            tls: None,
        }
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Private key of the leaf certificate.
    pub key_file: PathBuf,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding the address failed.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS files could not be read or used.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// A message as the server stores it, for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessageInfo {
    /// The partition it is in.
    pub partition_id: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Its id.
    pub id: u128,
    /// The server's timestamp of its batch, microseconds.
    pub timestamp: u64,
    /// The producer's timestamp, microseconds.
    pub origin_timestamp: u64,
    /// The payload.
    pub payload: Bytes,
    /// The user headers in Iggy's binary encoding (empty when none).
    pub user_headers: Bytes,
}

/// Who consumes: whose stored offset or polls to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetOwner {
    /// A consumer, by name.
    Consumer(String),
    /// A consumer group, by name.
    Group(String),
}

impl OffsetOwner {
    /// The consumer as the topic's state knows it (`None` for an unknown group).
    fn consumer_in(&self, topic: &state::Topic) -> Option<ConsumerRef> {
        Some(match self {
            OffsetOwner::Consumer(name) => ConsumerRef::Consumer(name.clone()),
            OffsetOwner::Group(name) => ConsumerRef::Group(topic.group_id(&named(name)?).ok()?),
        })
    }
}

#[derive(Debug, Default)]
struct Faults {
    failing_sends: AtomicU32,
    delay_until: Mutex<Option<Instant>>,
}

struct Shared {
    state: Mutex<State>,
    faults: Faults,
    /// Bumped to make every open connection close.
    disconnect: watch::Sender<Disconnect>,
    next_connection: AtomicU32,
    open_connections: AtomicU32,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("open_connections", &self.open_connections)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as each
        // handler left it; carry on rather than poison every later test call.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An in-memory Iggy server on a TCP port, speaking the protocol of the `iggy` 0.11
/// client. For tests and demos only: nothing is persisted, there is one node and one
/// user, and only the commands a connectors runtime uses are implemented.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = iggy_test_server::TestServer::start().await?;
/// println!("iggy://iggy:iggy@{}", server.address());
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    accept_loop: Mutex<Option<JoinHandle<()>>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port and user iggy/iggy.
    pub async fn start() -> Result<TestServer, StartError> {
        TestServer::start_with(ServerConfig::default()).await
    }

    /// Starts a server with `config`.
    pub async fn start_with(config: ServerConfig) -> Result<TestServer, StartError> {
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener =
            TcpListener::bind(config.address)
                .await
                .map_err(|source| StartError::Bind {
                    address: config.address,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| StartError::Bind {
            address: config.address,
            source,
        })?;
        let (disconnect, _) = watch::channel(Disconnect::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(&config.username, &config.password)),
            faults: Faults::default(),
            disconnect,
            next_connection: AtomicU32::new(1),
            open_connections: AtomicU32::new(0),
            tls,
        });
        let accept_loop = tokio::spawn(accept(listener, shared.clone(), address));
        tracing::info!(%address, tls = shared.tls.is_some(), "iggy test server listening");
        Ok(TestServer {
            shared,
            address,
            accept_loop: Mutex::new(Some(accept_loop)),
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A connection string for the `iggy` client with the default user.
    pub fn connection_string(&self) -> String {
        format!("iggy://iggy:iggy@{}", self.address)
    }

    /// Number of connections open now.
    pub fn open_connections(&self) -> u32 {
        self.shared.open_connections.load(Ordering::SeqCst)
    }

    /// Every message of a topic, by partition then offset; `None` if the stream or
    /// topic does not exist.
    pub fn messages(&self, stream: &str, topic: &str) -> Option<Vec<StoredMessageInfo>> {
        let state = self.shared.state();
        let topic = state.topic(&named(stream)?, &named(topic)?).ok()?;
        Some(
            topic
                .partitions
                .iter()
                .flat_map(|partition| {
                    partition.messages.iter().map(|message| StoredMessageInfo {
                        partition_id: partition.id,
                        offset: message.offset(),
                        id: message.id(),
                        timestamp: message.timestamp,
                        origin_timestamp: message.origin_timestamp(),
                        payload: message.payload(),
                        user_headers: message.user_headers(),
                    })
                })
                .collect(),
        )
    }

    /// The offset stored for a consumer or group on a partition.
    pub fn stored_offset(
        &self,
        stream: &str,
        topic: &str,
        owner: &OffsetOwner,
        partition: u32,
    ) -> Option<u64> {
        let state = self.shared.state();
        let topic = state.topic(&named(stream)?, &named(topic)?).ok()?;
        let consumer = owner.consumer_in(topic)?;
        state::stored_offset(topic, &consumer, partition)
    }

    /// How many polls by a consumer or group on a topic returned messages, over all
    /// partitions (`None` for an unknown stream, topic or group).
    pub fn polls_with_messages(
        &self,
        stream: &str,
        topic: &str,
        owner: &OffsetOwner,
    ) -> Option<u64> {
        let state = self.shared.state();
        let topic = state.topic(&named(stream)?, &named(topic)?).ok()?;
        let consumer = owner.consumer_in(topic)?;
        Some(
            topic
                .polls_with_messages
                .get(&consumer)
                .copied()
                .unwrap_or(0),
        )
    }

    /// Closes every open connection (the server keeps listening).
    pub fn drop_connections(&self) {
        self.disconnect(false);
    }

    /// Closes every open connection; with `crash`, as a killed server loses them.
    fn disconnect(&self, crash: bool) {
        self.shared.disconnect.send_modify(|disconnect| {
            disconnect.epoch += 1;
            disconnect.crash = crash;
        });
    }

    /// Makes the next `count` sends fail with `CannotAppendMessage`.
    pub fn fail_next_sends(&self, count: u32) {
        self.shared
            .faults
            .failing_sends
            .store(count, Ordering::SeqCst);
    }

    /// Holds every reply back until `duration` from now has passed.
    pub fn delay_replies(&self, duration: Duration) {
        if let Ok(mut until) = self.shared.faults.delay_until.lock() {
            *until = Some(Instant::now() + duration);
        }
    }

    /// Stops listening and closes every connection, then listens again on the same
    /// address, keeping all data, as a restarted server with persistence would.
    pub async fn restart(&self) -> Result<(), StartError> {
        self.restart_after(Duration::ZERO).await
    }

    /// [`TestServer::restart`], down for `downtime` in between (connections are
    /// refused meanwhile). As when the real server (0.9.0-edge.5) is killed and
    /// started again, the consumer group members of the connections it lost stay in
    /// their groups, holding their partitions, with nobody behind them: a client
    /// that reconnects is a new member, and must join again.
    pub async fn restart_after(&self, downtime: Duration) -> Result<(), StartError> {
        self.stop_accepting().await;
        self.disconnect(true);
        tokio::time::sleep(downtime).await;
        let listener =
            TcpListener::bind(self.address)
                .await
                .map_err(|source| StartError::Bind {
                    address: self.address,
                    source,
                })?;
        let task = tokio::spawn(accept(listener, self.shared.clone(), self.address));
        if let Ok(mut accept_loop) = self.accept_loop.lock() {
            *accept_loop = Some(task);
        }
        tracing::info!(address = %self.address, "iggy test server restarted");
        Ok(())
    }

    async fn stop_accepting(&self) {
        let task = self
            .accept_loop
            .lock()
            .ok()
            .and_then(|mut task| task.take());
        if let Some(task) = task {
            task.abort();
            // Wait until the listener is dropped, so the port is free again.
            let _ = task.await;
        }
    }

    /// Stops the server and closes every connection.
    pub async fn shutdown(self) {
        self.stop_accepting().await;
        self.drop_connections();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(mut task) = self.accept_loop.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
        self.disconnect(false);
    }
}

fn named(name: &str) -> Option<WireIdentifier> {
    WireIdentifier::named(name).ok()
}

fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, StartError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|error| {
            StartError::Tls(format!(
                "cannot read certificates from {}: {error}",
                files.cert_file.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|error| {
        StartError::Tls(format!(
            "cannot read a private key from {}: {error}",
            files.key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| StartError::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| StartError::Tls(error.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, address: SocketAddr) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        // Small replies must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
            shared.open_connections.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(connection = id, %peer, "client connected");
            let connection = Connection {
                id,
                peer: Some(peer),
                ..Connection::default()
            };
            let ended = match shared.tls.clone() {
                None => serve(stream, &shared, connection, address).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve(stream, &shared, connection, address).await,
                    Err(error) => {
                        tracing::warn!(connection = id, %error, "TLS handshake failed");
                        Ended::default()
                    }
                },
            };
            // A closed connection leaves every consumer group it was in, unless the
            // server was killed (see `TestServer::restart_after`).
            if !ended.crash {
                shared.state().remove_clients(&ended.clients);
            }
            shared.open_connections.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!(connection = id, %peer, "client disconnected");
        });
    }
}

/// Why every connection is being closed.
#[derive(Debug, Default, Clone, Copy)]
struct Disconnect {
    /// Counts the requests to close every connection.
    epoch: u64,
    /// The server is being killed: its connections' group memberships stay.
    crash: bool,
}

/// How a connection ended.
#[derive(Debug, Default)]
struct Ended {
    /// The client ids it used.
    clients: Vec<u128>,
    /// It was lost in a crash (a restart).
    crash: bool,
}

/// Serves one connection until it closes.
async fn serve(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    shared: &Shared,
    mut connection: Connection,
    address: SocketAddr,
) -> Ended {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut disconnect = shared.disconnect.subscribe();
    disconnect.mark_unchanged();
    let server = ServerInfo { address };
    loop {
        let request = tokio::select! {
            request = wire::read_request(&mut reader) => request,
            _ = disconnect.changed() => return ended(connection, disconnect.borrow().crash),
        };
        let request = match request {
            Ok(request) => request,
            Err(ReadError::Closed) => break,
            Err(ReadError::Io(error)) => {
                tracing::debug!(connection = connection.id, %error, "read failed");
                break;
            }
            Err(ReadError::Malformed(reason)) => {
                tracing::warn!(connection = connection.id, %reason, "malformed request");
                break;
            }
        };
        let reply = {
            let mut state = shared.state();
            dispatch::handle(&mut state, &mut connection, server, &request, || {
                shared
                    .faults
                    .failing_sends
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok()
            })
        };
        let delay_until = shared
            .faults
            .delay_until
            .lock()
            .ok()
            .and_then(|until| *until);
        if let Some(until) = delay_until {
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                _ = disconnect.changed() => return ended(connection, disconnect.borrow().crash),
            }
        }
        if let Err(error) =
            wire::write_reply(&mut writer, &request.header, connection.session, reply).await
        {
            tracing::debug!(connection = connection.id, %error, "write failed");
            break;
        }
    }
    ended(connection, false)
}

fn ended(connection: Connection, crash: bool) -> Ended {
    Ended {
        clients: connection.clients,
        crash,
    }
}

/// The environment variable that points tests at a real Iggy server.
pub const TEST_ADDRESS_ENV: &str = "IGGY_TEST_ADDRESS";

/// The environment variable with a shell command that creates a topic (`{stream}`,
/// `{topic}` and `{partitions}` are replaced), for real-server builds that refuse the
/// 0.11 client's topic options: for example that build's CLI, `iggy -u iggy -p iggy
/// --tcp-server-address HOST:PORT topic create {stream} {topic} {partitions} none`.
pub const CREATE_TOPIC_COMMAND_ENV: &str = "IGGY_TEST_CREATE_TOPIC_COMMAND";

/// Says in one line that a test did not run against this server, and why:
/// `SKIPPED <test>: <why>` on standard error, which `.ci/run` counts (run the tests
/// with `--nocapture` to see it).
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// The environment variable with a shell command that restarts the real server
/// `IGGY_TEST_ADDRESS` names on the same data and address (SIGKILL, then start), down
/// for `{downtime_ms}` milliseconds in between, returning once it answers again: for
/// example `.ci/iggy-server restart {downtime_ms}`. Tests that restart the server run
/// against a real one only when it is set.
pub const RESTART_COMMAND_ENV: &str = "IGGY_TEST_RESTART_COMMAND";

fn restart_command() -> Option<String> {
    std::env::var(RESTART_COMMAND_ENV)
        .ok()
        .filter(|command| !command.is_empty())
}

/// The Iggy server a test or benchmark runs against: a fresh test server, or the real
/// server `IGGY_TEST_ADDRESS=host:port` names (user iggy/iggy).
#[derive(Debug)]
pub struct TestTarget {
    /// `host:port` to connect to.
    pub address: String,
    /// Our server, when no address was given (dropping it stops it).
    pub server: Option<TestServer>,
    /// A real server is shared by the tests of a process, and a test that restarts it
    /// must have it alone: held shared by [`TestTarget::from_env`], alone by
    /// [`TestTarget::restartable`].
    _turn: Option<RealServerTurn>,
}

/// A test's hold on the real server (see [`TestTarget::restartable`]).
#[derive(Debug)]
#[allow(dead_code)] // Held for its drop.
enum RealServerTurn {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

/// The tests of this process that use the real server.
static REAL_SERVER: RwLock<()> = RwLock::const_new(());

impl TestTarget {
    /// Starts a test server unless `IGGY_TEST_ADDRESS` is set.
    pub async fn from_env() -> Result<TestTarget, StartError> {
        TestTarget::open(false).await
    }

    /// [`TestTarget::from_env`] for a test that restarts the server: a real server is
    /// then this test's alone until the target is dropped (other tests of the process
    /// wait), since a restart would cut theirs off too. A test server is always the
    /// test's own.
    pub async fn restartable() -> Result<TestTarget, StartError> {
        TestTarget::open(true).await
    }

    async fn open(alone: bool) -> Result<TestTarget, StartError> {
        match std::env::var(TEST_ADDRESS_ENV) {
            Ok(address) if !address.is_empty() => Ok(TestTarget {
                address,
                server: None,
                _turn: Some(if alone {
                    RealServerTurn::Alone(REAL_SERVER.write().await)
                } else {
                    RealServerTurn::Shared(REAL_SERVER.read().await)
                }),
            }),
            _ => {
                let server = TestServer::start().await?;
                Ok(TestTarget {
                    address: server.address().to_string(),
                    server: Some(server),
                    _turn: None,
                })
            }
        }
    }

    /// Whether [`TestTarget::restart`] can restart this server: always for the test
    /// server, and for a real one when [`RESTART_COMMAND_ENV`] is set.
    pub fn can_restart(&self) -> bool {
        self.server.is_some() || restart_command().is_some()
    }

    /// Restarts the server on its data and address, down for `downtime` in between:
    /// the test server in-process, a real one with the command in
    /// [`RESTART_COMMAND_ENV`] (`{downtime_ms}` replaced), which must return once the
    /// server answers again.
    pub async fn restart(&self, downtime: Duration) -> Result<(), String> {
        if let Some(server) = &self.server {
            return server
                .restart_after(downtime)
                .await
                .map_err(|error| error.to_string());
        }
        let Some(command) = restart_command() else {
            return Err(format!(
                "{RESTART_COMMAND_ENV} is not set: no way to restart the server at {}",
                self.address
            ));
        };
        let command = command.replace("{downtime_ms}", &downtime.as_millis().to_string());
        let ran = tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new("sh")
                .args(["-c", &command])
                .stdout(std::process::Stdio::null())
                .output();
            match output {
                Ok(output) if output.status.success() => Ok(()),
                Ok(output) => Err(format!(
                    "{command} failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                )),
                Err(error) => Err(format!("{command}: {error}")),
            }
        })
        .await;
        ran.map_err(|error| error.to_string())?
    }

    /// Creates a topic (its stream exists) with the command in
    /// [`CREATE_TOPIC_COMMAND_ENV`]; `None` when that is unset, so the caller creates
    /// it with the client.
    pub fn create_topic_by_command(
        stream: &str,
        topic: &str,
        partitions: u32,
    ) -> Option<Result<(), String>> {
        let command = std::env::var(CREATE_TOPIC_COMMAND_ENV)
            .ok()?
            .replace("{stream}", stream)
            .replace("{topic}", topic)
            .replace("{partitions}", &partitions.to_string());
        let status = std::process::Command::new("sh")
            .args(["-c", &command])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        Some(match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("{command} failed: {status}")),
            Err(error) => Err(format!("{command}: {error}")),
        })
    }
}
