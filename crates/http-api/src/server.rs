//! The listener: TCP or TLS, HTTP/1.1 connections served by hyper, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config_provider::HttpConfig;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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
    // Whether the last connection was turned away, so that a flood logs one warning
    // when it starts and one line when it ends, not one per connection.
    let mut saturated = false;
    loop {
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
        // Finished connections are reaped one per loop turn above; reap them all before
        // judging the count, so a burst that has ended does not turn anyone away.
        while connections.try_join_next().is_some() {}
        if connections.len() >= limits.max_connections {
            if !saturated {
                saturated = true;
                tracing::warn!(limit = limits.max_connections, %peer, "HTTP connection limit reached (http.max_connections): closing new connections until some end");
            }
            drop(stream);
            continue;
        }
        if saturated {
            saturated = false;
            tracing::info!(
                limit = limits.max_connections,
                "HTTP connections below the limit again"
            );
        }
        let _ = stream.set_nodelay(true);
        let context = context.clone();
        let tls = tls.clone();
        let stopped = stopped.clone();
        connections.spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(stream), context, limits, stopped).await,
                Some(acceptor) => {
                    let handshake = limits.header_read_timeout;
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(TokioIo::new(stream), context, limits, stopped).await;
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
