//! Connecting to PostgreSQL: the connection string as libpq reads it (URL or
//! `key=value` form), and TLS through rustls for its `sslmode`.
//!
//! Shared by the PostgreSQL sink and source (the source includes this file), so both
//! read `sslmode` alike:
//!
//! - `disable`: plain TCP;
//! - `allow`, `prefer` (the default, as in libpq): TLS when the server offers it, else
//!   plain; the certificate is not checked (libpq's meaning: encryption, not
//!   authentication);
//! - `require`: TLS or no connection; the certificate is not checked, unless
//!   `sslrootcert` names a file, which makes it `verify-ca` (as libpq does);
//! - `verify-ca`: TLS, the certificate chain checked against `sslrootcert` (a PEM file)
//!   or else the Mozilla roots (`webpki-roots`), whatever name it is for;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, so `sslmode` and
//! `sslrootcert` are taken out of the string here before it parses the rest.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// How long a connection attempt may take when the string does not say
/// (`connect_timeout`): a server that does not answer must not hold a batch forever.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `sslmode` asks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `disable`: no TLS.
    Disable,
    /// `allow`, `prefer`: TLS if offered, unchecked.
    Prefer,
    /// `require`: TLS, unchecked.
    Require,
    /// `verify-ca`: TLS, chain checked.
    VerifyCa,
    /// `verify-full`: TLS, chain and host name checked.
    VerifyFull,
}

/// A connection string read for connecting: tokio-postgres's config and the TLS
/// settings it cannot read itself.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Everything but the TLS settings.
    pub config: Config,
    /// From `sslmode`.
    pub tls: TlsMode,
    /// From `sslrootcert`: a PEM file of trusted certificates.
    pub root_cert: Option<String>,
}

impl ConnectOptions {
    /// Reads a connection string without any I/O (so `check_config` can use it). The
    /// error never quotes the string, which may hold a password.
    pub fn parse(connection_string: &str) -> Result<ConnectOptions, String> {
        let (rest, sslmode, root_cert) = take_tls_options(connection_string);
        let mut tls = match sslmode.as_deref() {
            None | Some("prefer") | Some("allow") => TlsMode::Prefer,
            Some("disable") => TlsMode::Disable,
            Some("require") => TlsMode::Require,
            Some("verify-ca") => TlsMode::VerifyCa,
            Some("verify-full") => TlsMode::VerifyFull,
            Some(other) => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, \
                     verify-ca, verify-full"
                ));
            }
        };
        if tls == TlsMode::Require && root_cert.is_some() {
            tls = TlsMode::VerifyCa;
        }
        let config: Config = rest
            .parse()
            .map_err(|error| format!("not a PostgreSQL connection string: {error}"))?;
        Ok(ConnectOptions {
            config,
            tls,
            root_cert,
        })
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a `key=value` string.
fn take_tls_options(text: &str) -> (String, Option<String>, Option<String>) {
    let mut sslmode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            sslmode = Some(value.to_owned());
            true
        }
        "sslrootcert" => {
            root_cert = Some(value.to_owned());
            true
        }
        _ => false,
    };
    let trimmed = text.trim();
    let rest = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        match trimmed.split_once('?') {
            None => trimmed.to_owned(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        !take(key, &percent_decode(value))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        // key=value pairs; a quoted value with spaces in one of these two keys is not
        // expected (a mode, a path), and others pass through untouched.
        trimmed
            .split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(key, value.trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, sslmode, root_cert)
}

/// `%XX` sequences decoded (a path in `sslrootcert` may carry them).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A failure to connect: retryable (the server is down, the network) or not (a
/// refused password, a bad `sslrootcert`).
#[derive(Debug)]
pub struct ConnectError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again later may help.
    pub transient: bool,
}

/// Connects with `options`, naming the session `application_name` unless the string
/// names it. The connection's task runs on the caller's tokio runtime and ends when the
/// returned client is dropped.
pub async fn connect(
    options: &ConnectOptions,
    application_name: &str,
) -> Result<Client, ConnectError> {
    let mut config = options.config.clone();
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    let failed = |error: tokio_postgres::Error| ConnectError {
        transient: transient(&error),
        message: format!("cannot connect to PostgreSQL: {}", with_causes(&error)),
    };
    match options.tls {
        TlsMode::Disable => {
            config.ssl_mode(SslMode::Disable);
            let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
            spawn_connection(connection, application_name);
            Ok(client)
        }
        mode => {
            config.ssl_mode(if mode == TlsMode::Prefer {
                SslMode::Prefer
            } else {
                SslMode::Require
            });
            let tls = RustlsConnect::new(mode, options.root_cert.as_deref())?;
            let (client, connection) = config.connect(tls).await.map_err(failed)?;
            spawn_connection(connection, application_name);
            Ok(client)
        }
    }
}

/// An error and its causes, `a: b: c` (tokio-postgres's own text leaves out why a TLS
/// handshake or a socket failed).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let next_text = next.to_string();
        if !text.contains(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        cause = next.source();
    }
    text
}

/// Runs a connection's protocol task; its end (the client dropped, the server gone) is
/// logged at debug level, since the next query reports the loss where it matters.
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>, name: &str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = name.to_owned();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(connection = %name, error = %error, "PostgreSQL connection ended");
        }
    });
}

/// Whether a failed call is worth trying again on a new connection: the connection
/// was lost (I/O, closed, a server shutting down), or the server gave up on this
/// transaction for a reason of the moment (serialization failure, deadlock, too many
/// connections, a lock not available, out of resources). Anything else (bad data, a
/// missing table, a refused password) fails again the same way.
pub fn transient(error: &tokio_postgres::Error) -> bool {
    let Some(db) = error.as_db_error() else {
        // No answer from the server at all: I/O, a closed connection, a timeout.
        return true;
    };
    let code = db.code().code();
    matches!(code, "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "57014")
        // connection exceptions; insufficient resources (53300: too many connections)
        || code.starts_with("08")
        || code.starts_with("53")
}

/// tokio-postgres's TLS hook, over rustls.
#[derive(Clone)]
struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
}

impl RustlsConnect {
    fn new(mode: TlsMode, root_cert: Option<&str>) -> Result<RustlsConnect, ConnectError> {
        let provider = connector_tls::provider();
        let refused = |message: String| ConnectError {
            message,
            transient: false,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| refused(format!("TLS setup: {error}")))?;
        let config = match mode {
            // Any certificate, as libpq does in these modes.
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(connector_tls::AcceptAnyCertificate::new(
                    provider,
                ))
                .with_no_client_auth(),
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let roots = connector_tls::roots(root_cert.map(Path::new))
                    .map_err(|error| refused(format!("sslrootcert {error}")))?;
                let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|error| refused(format!("TLS setup: {error}")))?;
                if mode == TlsMode::VerifyCa {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
                        .with_no_client_auth()
                } else {
                    builder.with_webpki_verifier(verifier).with_no_client_auth()
                }
            }
        };
        Ok(RustlsConnect {
            config: Arc::new(config),
        })
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsHandshake, io::Error> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        Ok(RustlsHandshake {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

/// One TLS handshake, for one host.
pub struct RustlsHandshake {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsHandshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS stream as tokio-postgres takes it.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // No SCRAM channel binding: the server then accepts plain SCRAM-SHA-256, as it
        // does from libpq without channel_binding=require.
        ChannelBinding::none()
    }
}

/// The verifier of `verify-ca`: the chain must be trusted, whatever host it names.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_both_forms() {
        let url = ConnectOptions::parse(
            "postgres://u:p@db:5433/app?sslmode=verify-full&sslrootcert=%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(url.tls, TlsMode::VerifyFull);
        assert_eq!(url.root_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(url.config.get_dbname(), Some("app"));
        assert_eq!(
            url.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );

        let pairs = ConnectOptions::parse("host=db sslmode=require dbname=app").unwrap();
        assert_eq!(pairs.tls, TlsMode::Require);
        assert_eq!(pairs.config.get_dbname(), Some("app"));

        let with_root = ConnectOptions::parse("host=db sslmode=require sslrootcert=/ca.pem");
        assert_eq!(with_root.unwrap().tls, TlsMode::VerifyCa);
        assert_eq!(
            ConnectOptions::parse("postgres://db/app").unwrap().tls,
            TlsMode::Prefer
        );
        let bad = ConnectOptions::parse("postgres://u:hunter22@db/app?sslmode=sometimes");
        assert!(bad.unwrap_err().contains("sometimes"));
        let not_a_string = ConnectOptions::parse("postgres://u:hunter22@db:notaport/app");
        assert!(!not_a_string.unwrap_err().contains("hunter22"));
    }
}
