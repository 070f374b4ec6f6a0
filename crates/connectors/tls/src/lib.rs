//! The TLS client pieces the bundled connectors share, on rustls with aws-lc-rs: the
//! trust roots (a CA file, or the web's public roots), certificate files, and the
//! verifier behind options such as the HTTP sink's `tls_danger_accept_invalid_certs`
//! and PostgreSQL's `sslmode=require`, which accepts any certificate but still checks
//! the handshake's signatures.
//!
//! A connector builds its own `rustls::ClientConfig` from these (ALPN, client
//! certificates, its protocol's way of naming the server differ); errors are text
//! naming the file, for the connector to put its option's name in front.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::DigitallySignedStruct;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{RootCertStore, SignatureScheme};

/// The crypto provider every connector's TLS uses (aws-lc-rs, the one rustls builds
/// here).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of a PEM file; an error naming the file when it cannot be read,
/// does not parse or holds none.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("{}: {error}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certificates)
}

/// The roots a server's certificate must chain to: those of `ca_file`, or the web's
/// public roots when there is none.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for certificate in certificates(path)? {
                roots
                    .add(certificate)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// Accepts any server certificate, for the options that ask for it; the handshake's
/// signatures are still checked, so the connection is at least encrypted to whoever
/// holds the key the certificate names.
#[derive(Debug)]
pub struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl AcceptAnyCertificate {
    /// The verifier, checking signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(AcceptAnyCertificate(provider))
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
// In tests an unwrap is an assertion.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_file_is_an_error_naming_it() {
        let missing = Path::new("/no/such/ca.pem");
        assert!(
            roots(Some(missing))
                .unwrap_err()
                .contains("/no/such/ca.pem")
        );
        let empty =
            std::env::temp_dir().join(format!("connector-tls-empty-{}", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = certificates(&empty).unwrap_err();
        std::fs::remove_file(&empty).unwrap();
        assert!(error.contains("no certificate"), "{error}");
    }

    #[test]
    fn without_a_file_the_webs_roots_are_trusted() {
        assert!(!roots(None).unwrap().is_empty());
    }
}
