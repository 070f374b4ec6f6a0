//! The listener: TCP or TLS, HTTP/1.1 connections served by hyper, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use config_provider::HttpConfig;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ApiContext;

/// How long shutdown waits for requests in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// `[http] address`.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// A TLS file is missing or unusable.
    #[error("http.tls: {0}")]
    Tls(String),
}

/// The running API. Dropping it leaves the server running; call
/// [`ApiServer::shutdown`] to stop it.
#[derive(Debug)]
pub struct ApiServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in progress finish (a few seconds at most).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(DRAIN_TIMEOUT * 2, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

fn tls_acceptor(http: &HttpConfig) -> Result<TlsAcceptor, ServeError> {
    let tls = &http.tls;
    if tls.cert_file.is_empty() || tls.key_file.is_empty() {
        return Err(ServeError::Tls(
            "enabled, but cert_file or key_file is empty".to_owned(),
        ));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|error| ServeError::Tls(format!("cert_file {}: {error}", tls.cert_file)))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "cert_file {}: no certificate in it",
            tls.cert_file
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|error| ServeError::Tls(format!("key_file {}: {error}", tls.key_file)))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ServeError::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| {
            ServeError::Tls(format!(
                "{} and {} do not make a usable pair: {error}",
                tls.cert_file, tls.key_file
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds `[http] address` (with TLS when `[http.tls]` says so) and serves the API in
/// the background.
pub async fn serve(http: &HttpConfig, context: ApiContext) -> Result<ApiServer, ServeError> {
    let tls = if http.tls.enabled {
        Some(tls_acceptor(http)?)
    } else {
        None
    };
    let listener = TcpListener::bind(&http.address)
        .await
        .map_err(|source| ServeError::Bind {
            address: http.address.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        address: http.address.clone(),
        source,
    })?;
    let (stop, stopped) = watch::channel(false);
    let limits = Limits {
        max_connections: usize::try_from(http.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: http.header_read_timeout.get(),
    };
    let context = Arc::new(context);
    let task = tokio::spawn(accept_loop(listener, tls, context, limits, stopped));
    tracing::info!(address = %local_addr, tls = http.tls.enabled, "HTTP API listening");
    Ok(ApiServer {
        local_addr,
        stop,
        task,
    })
}

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once (`http.max_connections`).
    max_connections: usize,
    /// How long a connection may take to send a request head, the TLS handshake
    /// included (`http.header_read_timeout`).
    header_read_timeout: Duration,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    context: Arc<ApiContext>,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    // Whether the limit was reached, so that a flood logs one warning when it starts
    // and one line when it ends, not one per connection.
    let mut saturated = false;
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= limits.max_connections {
            if !saturated {
                saturated = true;
                tracing::warn!(
                    limit = limits.max_connections,
                    "HTTP connection limit reached (http.max_connections): new connections wait until some end"
                );
            }
            // New connections wait in the listen backlog (not dropped): each held one
            // ends within the header read timeout unless it is being served.
            tokio::select! {
                _ = stopped.changed() => break,
                _ = connections.join_next() => continue,
            }
        }
        if saturated {
            saturated = false;
            tracing::info!(
                limit = limits.max_connections,
                "HTTP connections below the limit again"
            );
        }
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let context = context.clone();
        let tls = tls.clone();
        let stopped = stopped.clone();
        connections.spawn(async move {
            match tls {
                None => {
                    let io = StalledWrites::new(stream, limits.header_read_timeout);
                    serve_connection(TokioIo::new(io), context, limits, stopped).await;
                }
                Some(acceptor) => {
                    let handshake = limits.header_read_timeout;
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let io = StalledWrites::new(stream, limits.header_read_timeout);
                            serve_connection(TokioIo::new(io), context, limits, stopped).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn serve_connection<I>(
    io: I,
    context: Arc<ApiContext>,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let context = context.clone();
        async move {
            Ok::<_, std::convert::Infallible>(crate::handlers::handle(&context, request).await)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        }
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A connection whose writes fail once one has made no progress for `limit`: a client
/// that sends requests but never reads the answers would otherwise hold its connection
/// (and a place under the connection limit) for ever, since hyper's header timer only
/// runs while it waits for a request.
struct StalledWrites<I> {
    io: I,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> StalledWrites<I> {
    fn new(io: I, limit: Duration) -> Self {
        StalledWrites {
            io,
            limit,
            stalled: None,
        }
    }

    /// After a write that could not proceed: an error once the stall outlasts the
    /// limit, else pending (the timer wakes the task if nothing else does).
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing for the header read timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for StalledWrites<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for StalledWrites<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
