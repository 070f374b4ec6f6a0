//! The pooled HTTP client: hyper-util's legacy `Client` (keep-alive, a pool of idle
//! connections per host) over a connector that opens TCP and, for `https`, wraps it
//! with tokio-rustls.
//!
//! Over TLS the handshake offers `h2` and `http/1.1` by ALPN: a server that picks `h2`
//! gets HTTP/2 (one connection per host, requests multiplexed on it), any other
//! HTTP/1.1 with keep-alive. `http2_prior_knowledge` speaks HTTP/2 without asking
//! (h2c for `http://`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::config::HttpSinkConfig;

/// The ALPN name of HTTP/2 over TLS.
const ALPN_H2: &[u8] = b"h2";

/// The client type the sink uses.
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// How long an unused pooled connection is kept (upstream's figure: long enough for
/// bursty traffic, short enough that load balancers have not dropped it silently).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the client for `config`: its TLS trust and its pool size.
pub fn build(config: &HttpSinkConfig) -> Result<HttpClient, String> {
    let provider = connector_tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))?;
    let mut tls = if config.tls_danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(connector_tls::AcceptAnyCertificate::new(provider))
            .with_no_client_auth()
    } else {
        let roots = connector_tls::roots(config.tls_ca_file.as_deref())
            .map_err(|error| format!("plugin_config.tls_ca_file: {error}"))?;
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // Preferred first: the server chooses, and one that knows only HTTP/1.1 (or no
    // ALPN at all) is served as before.
    tls.alpn_protocols = vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()];
    let connector = Connector {
        tls: TlsConnector::from(Arc::new(tls)),
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(config.max_connections)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .http2_only(config.http2_prior_knowledge)
        .build(connector))
}

/// Opens connections for the pooled client: plain TCP, or TLS for `https` URLs.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
}

/// A connection the client can use.
pub enum Stream {
    /// `http`.
    Plain(TokioIo<TcpStream>),
    /// `https`.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri.host().ok_or("the URL has no host")?;
            // An IPv6 literal comes bracketed in a URL, not in a socket address.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|error| format!("cannot connect to {host}:{port}: {error}"))?;
            // Requests are small and answered one at a time per connection: Nagle's
            // delay would only add latency.
            let _ = tcp.set_nodelay(true);
            if !https {
                return Ok(Stream::Plain(TokioIo::new(tcp)));
            }
            let name = ServerName::try_from(host.clone())
                .map_err(|error| format!("invalid TLS server name {host}: {error}"))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|error| format!("TLS handshake with {host}:{port} failed: {error}"))?;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(_) => Connected::new(),
            // What the server chose in the handshake decides the protocol: the pool
            // then shares this one connection among requests instead of opening more.
            Stream::Tls(io) if io.inner().get_ref().1.alpn_protocol() == Some(ALPN_H2) => {
                Connected::new().negotiated_h2()
            }
            Stream::Tls(_) => Connected::new(),
        }
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Stream::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Stream::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_flush(cx),
            Stream::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Stream::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
