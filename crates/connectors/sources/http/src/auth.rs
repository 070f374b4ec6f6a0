//! Who may post: a bearer token, a shared-secret header and an HMAC-SHA256 signature
//! of the body, each compared in constant time; and the TLS identity the source serves.

use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::HttpSourceConfig;

/// The checks a config asks for.
pub(crate) struct Verifier {
    bearer: Option<Vec<u8>>,
    shared: Option<(String, Vec<u8>)>,
    hmac: Option<(hmac::Key, String, String)>,
}

impl Verifier {
    pub(crate) fn new(config: &HttpSourceConfig) -> Self {
        Verifier {
            bearer: config
                .auth_token
                .as_ref()
                .map(|token| format!("Bearer {token}").into_bytes()),
            shared: config
                .shared_secret_header
                .clone()
                .zip(config.shared_secret.as_ref().map(|s| s.as_bytes().to_vec())),
            hmac: config.hmac_secret.as_ref().map(|secret| {
                (
                    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
                    config.hmac_header.clone(),
                    config.hmac_prefix.clone(),
                )
            }),
        }
    }

    /// The checks that need only the headers (made before the body is read).
    pub(crate) fn check_headers(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        if let Some(expected) = &self.bearer
            && !matches(headers.get(AUTHORIZATION), expected)
        {
            return Err("missing or wrong bearer token");
        }
        if let Some((name, expected)) = &self.shared
            && !matches(headers.get(name.as_str()), expected)
        {
            return Err("missing or wrong shared secret");
        }
        Ok(())
    }

    /// The body's signature, when one is required.
    pub(crate) fn check_signature(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), &'static str> {
        let Some((key, header, prefix)) = &self.hmac else {
            return Ok(());
        };
        let given = headers
            .get(header.as_str())
            .and_then(|value| value.to_str().ok())
            .ok_or("missing signature")?;
        let hex = given
            .trim()
            .strip_prefix(prefix.as_str())
            .ok_or("malformed signature")?;
        let tag = decode_hex(hex).ok_or("malformed signature")?;
        // hmac::verify compares in constant time.
        hmac::verify(key, body, &tag).map_err(|_| "wrong signature")
    }
}

/// Whether the header was sent with exactly `expected`, compared in constant time
/// (only the length can show).
fn matches(given: Option<&hyper::header::HeaderValue>, expected: &[u8]) -> bool {
    given.is_some_and(|given| verify_slices_are_equal(given.as_bytes(), expected).is_ok())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// The TLS acceptor of `tls_cert_file` and `tls_key_file`, if set.
pub(crate) fn tls_acceptor(
    config: &HttpSourceConfig,
) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    let (Some(cert_file), Some(key_file)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| {
            format!(
                "plugin_config.tls_cert_file: {}: {error}",
                cert_file.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| {
        format!(
            "plugin_config.tls_key_file: {}: {error}",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| format!("plugin_config.tls_cert_file: {error}"))?;
    // Offered in the client's order of preference: HTTP/2 to a client that asks for it,
    // HTTP/1.1 to the others (the server serves whichever the connection speaks).
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}
