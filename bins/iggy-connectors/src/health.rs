//! `iggy-connectors healthcheck`: asks the API this config serves for `/health`, over
//! TLS when the API serves TLS (the Dockerfile's HEALTHCHECK).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

use crate::cli::ConfigPath;

/// How long connecting, and each read and write, may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// GET /health on the API this config serves (a wildcard address is asked on
/// loopback); exit 0 on 200.
pub(crate) fn healthcheck(config: Option<&ConfigPath>) -> ExitCode {
    let loaded = match config_provider::load(config.map(|config| config.path.as_path())) {
        Ok(loaded) => loaded,
        Err(error) => {
            report!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let http = &loaded.config.http;
    if !http.enabled {
        report!("unhealthy: [http] enabled = false, nothing to ask");
        return ExitCode::FAILURE;
    }
    let address = http
        .address
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    let scheme = if http.tls.enabled { "https" } else { "http" };
    let answer = ask(&address, http.tls.enabled.then_some(&*http.tls.cert_file));
    match answer {
        Ok(response) if response.starts_with("HTTP/1.1 200") => {
            println!("healthy: {scheme}://{address}/health");
            ExitCode::SUCCESS
        }
        Ok(response) => {
            report!(
                "unhealthy: {scheme}://{address}/health answered {}",
                response.lines().next().unwrap_or("nothing")
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            report!("unhealthy: {scheme}://{address}/health: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The raw response to `GET /health`; over TLS when `cert_file` is given.
fn ask(address: &str, cert_file: Option<&str>) -> std::io::Result<String> {
    let target = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = format!("GET /health HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    let mut response = Vec::new();
    match cert_file {
        None => {
            stream.write_all(request.as_bytes())?;
            stream.read_to_end(&mut response)?;
        }
        Some(cert_file) => {
            let mut connection = tls_connection(target, cert_file)?;
            let mut tls = rustls::Stream::new(&mut connection, &mut stream);
            tls.write_all(request.as_bytes())?;
            match tls.read_to_end(&mut response) {
                Ok(_) => {}
                // A server may close without a TLS close_notify after `connection: close`;
                // what it sent before is the answer.
                Err(error)
                    if error.kind() == std::io::ErrorKind::UnexpectedEof
                        && !response.is_empty() => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// A TLS client that trusts exactly the API's own certificate (`[http.tls] cert_file`):
/// the healthcheck runs beside the runtime with its config, and a certificate made for
/// a host name need not name the address the check connects to.
fn tls_connection(
    target: SocketAddr,
    cert_file: &str,
) -> std::io::Result<rustls::ClientConnection> {
    let invalid = |error: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, error);
    let expected = CertificateDer::pem_file_iter(cert_file)
        .map_err(|error| invalid(format!("cannot read {cert_file}: {error}")))?
        .next()
        .ok_or_else(|| invalid(format!("{cert_file} holds no certificate")))?
        .map_err(|error| invalid(format!("cannot read {cert_file}: {error}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(ThisCertificate {
        expected,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    rustls::ClientConnection::new(Arc::new(config), ServerName::IpAddress(target.ip().into()))
        .map_err(std::io::Error::other)
}

/// Accepts the server's certificate only when it is `expected`, byte for byte, and
/// checks the handshake's signatures with it as any client would.
#[derive(Debug)]
struct ThisCertificate {
    expected: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ThisCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the API serves another certificate than [http.tls] cert_file".to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
