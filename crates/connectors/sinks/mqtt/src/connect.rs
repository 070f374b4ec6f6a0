//! What the MQTT sink and source share: the broker address, credentials, keep-alive and
//! TLS turned into the client's `MqttOptions`. The source includes this file by path
//! (`#[path]`): linking the sink's crate would also link its exported entry points.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, TlsConfiguration, Transport};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// Where the broker is, parsed from `mqtt://host:port` or `mqtts://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (1883 for `mqtt`, 8883 for `mqtts` unless given).
    pub port: u16,
    /// Whether the scheme asks for TLS.
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]`, `mqtts://host[:port]` (also `tcp://`, `ssl://`).
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("`{url}` has no scheme: expected mqtt://host:port"))?;
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "unknown scheme `{other}` in `{url}`: expected mqtt or mqtts"
                ));
            }
        };
        // Credentials go in their own fields, never in a URL that ends up in logs.
        if rest.contains('@') {
            return Err(format!(
                "`{url}` holds credentials: set username and password instead"
            ));
        }
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('?') {
            return Err(format!(
                "`{url}` has a path or query: expected mqtt://host:port"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        // `[::1]:1883`: the brackets keep the address's colons apart from the port's.
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed `[`"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(format!("`{url}`: expected `:port` after `]`")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse()
                .map_err(|_| format!("`{url}`: `{port}` is not a port"))?,
        };
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

/// TLS settings beyond the `mqtts` scheme.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles<'a> {
    /// PEM file of the certificate authorities to trust (else the web's roots).
    pub ca_file: Option<&'a Path>,
    /// PEM file of the client certificate chain, for mutual TLS.
    pub client_cert_file: Option<&'a Path>,
    /// PEM file of the client's private key, for mutual TLS.
    pub client_key_file: Option<&'a Path>,
}

/// All a connection needs.
#[derive(Debug, Clone)]
pub struct Connection<'a> {
    /// The broker.
    pub url: &'a BrokerUrl,
    /// The MQTT client id.
    pub client_id: &'a str,
    /// User name, if the broker wants one.
    pub username: Option<&'a str>,
    /// Password (with or without a user name).
    pub password: Option<&'a str>,
    /// Keep-alive interval (zero: none).
    pub keep_alive: Duration,
    /// How long to wait for the TCP/TLS connection and the CONNACK.
    pub connect_timeout: Duration,
    /// Whether the broker keeps the session (subscriptions, unacknowledged messages)
    /// across connections.
    pub clean_session: bool,
    /// Publishes in flight (unacknowledged) at once.
    pub max_inflight: u16,
    /// The largest packet accepted and sent.
    pub max_packet_size: usize,
    /// Extra TLS settings.
    pub tls: TlsFiles<'a>,
}

impl Connection<'_> {
    /// The client's options. Reads the TLS files, so it can fail.
    pub fn options(&self) -> Result<MqttOptions, String> {
        let mut options = MqttOptions::new(self.client_id, &self.url.host, self.url.port);
        // rumqttc refuses a keep-alive under 1 s other than zero (no pings).
        options.set_keep_alive(self.keep_alive);
        options.set_clean_session(self.clean_session);
        options.set_inflight(self.max_inflight.max(1));
        options.set_max_packet_size(self.max_packet_size, self.max_packet_size);
        if self.username.is_some() || self.password.is_some() {
            options.set_credentials(
                self.username.unwrap_or_default(),
                self.password.unwrap_or_default(),
            );
        }
        if let Some(transport) = self.transport()? {
            options.set_transport(transport);
        }
        Ok(options)
    }

    /// The TLS transport for `mqtts` URLs; `None` for plain TCP (the default).
    pub fn transport(&self) -> Result<Option<Transport>, String> {
        if !self.url.tls {
            return Ok(None);
        }
        Ok(Some(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(client_tls(&self.tls)?),
        ))))
    }

    /// The network options (the connection timeout is whole seconds in rumqttc).
    pub fn network_options(&self) -> rumqttc::NetworkOptions {
        let mut network = rumqttc::NetworkOptions::new();
        network.set_connection_timeout(self.connect_timeout.as_secs().max(1));
        // A batch waits for the acknowledgement of its last publish: Nagle would hold
        // that publish back until the broker's TCP ACK of the one before.
        network.set_tcp_nodelay(true);
        network
    }
}

/// A rustls client config with aws-lc-rs (the provider the workspace already builds),
/// named explicitly so that nothing depends on a process-wide default provider.
fn client_tls(files: &TlsFiles<'_>) -> Result<rustls::ClientConfig, String> {
    let provider = connector_tls::provider();
    let roots =
        connector_tls::roots(files.ca_file).map_err(|error| format!("tls_ca_file {error}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS setup: {error}"))?
        .with_root_certificates(roots);
    match (files.client_cert_file, files.client_key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = connector_tls::certificates(cert)
                .map_err(|error| format!("tls_client_cert_file {error}"))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|error| format!("tls_client_key_file {}: {error}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| format!("client certificate: {error}"))
        }
        _ => Err("tls_client_cert_file and tls_client_key_file go together".to_owned()),
    }
}

/// Whether a connection error is the broker refusing these credentials or this client
/// id: retrying the same CONNECT cannot help.
pub fn is_refusal(error: &ConnectionError) -> bool {
    matches!(
        error,
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
                | ConnectReturnCode::BadClientId
                | ConnectReturnCode::RefusedProtocolVersion
        )
    )
}

/// Problems with the connection fields, without I/O (`check_config`).
pub fn check(
    url: &str,
    tls: &TlsFiles<'_>,
    keep_alive: Duration,
    max_inflight: u16,
) -> Vec<String> {
    let mut problems = Vec::new();
    match BrokerUrl::parse(url) {
        Ok(parsed) => {
            let files = tls.ca_file.is_some()
                || tls.client_cert_file.is_some()
                || tls.client_key_file.is_some();
            if files && !parsed.tls {
                problems.push(
                    "plugin_config.url: TLS files are set but the scheme is mqtt://; use mqtts://"
                        .to_owned(),
                );
            }
        }
        Err(problem) => problems.push(format!("plugin_config.url: {problem}")),
    }
    if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
        problems.push(
            "plugin_config.tls_client_cert_file: set together with tls_client_key_file".to_owned(),
        );
    }
    if !keep_alive.is_zero() && keep_alive < Duration::from_secs(1) {
        problems.push("plugin_config.keep_alive: at least 1s, or 0s for none".to_owned());
    }
    if max_inflight == 0 {
        problems.push("plugin_config.max_inflight: at least 1".to_owned());
    }
    problems
}

/// The MQTT version spoken to the broker.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5: user properties, reason codes, session expiry, receive maximum.
    #[serde(rename = "5")]
    V5,
}

impl Connection<'_> {
    /// The client options for MQTT 5: what [`Connection::options`] sets for 3.1.1
    /// (`clean_session` as clean start, `max_inflight` as the outgoing limit).
    pub fn options_v5(&self) -> Result<rumqttc::v5::MqttOptions, String> {
        let mut options =
            rumqttc::v5::MqttOptions::new(self.client_id, &self.url.host, self.url.port);
        options.set_keep_alive(self.keep_alive);
        options.set_clean_start(self.clean_session);
        options.set_outgoing_inflight_upper_limit(self.max_inflight.max(1));
        options.set_max_packet_size(u32::try_from(self.max_packet_size).ok());
        if self.username.is_some() || self.password.is_some() {
            options.set_credentials(
                self.username.unwrap_or_default(),
                self.password.unwrap_or_default(),
            );
        }
        if let Some(transport) = self.transport()? {
            options.set_transport(transport);
        }
        options.set_network_options(self.network_options());
        Ok(options)
    }
}

/// A QoS as MQTT 5's client takes it.
pub fn v5_qos(qos: rumqttc::QoS) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    match qos {
        rumqttc::QoS::AtMostOnce => Q5::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => Q5::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => Q5::ExactlyOnce,
    }
}

/// Whether an MQTT 5 broker refused the login in a way a retry cannot mend.
pub fn is_v5_refusal(error: &rumqttc::v5::ConnectionError) -> bool {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code;
    matches!(
        error,
        rumqttc::v5::ConnectionError::ConnectionRefused(
            Code::BadUserNamePassword
                | Code::NotAuthorized
                | Code::ClientIdentifierNotValid
                | Code::UnsupportedProtocolVersion
                | Code::Banned
                | Code::BadAuthenticationMethod
        )
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_refuse_what_does_not_belong() {
        let plain = BrokerUrl::parse("mqtt://127.0.0.1:1884").expect("parses");
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.tls),
            ("127.0.0.1", 1884, false)
        );
        let secure = BrokerUrl::parse("mqtts://broker.example").expect("parses");
        assert_eq!(
            (secure.host.as_str(), secure.port, secure.tls),
            ("broker.example", 8883, true)
        );
        let v6 = BrokerUrl::parse("mqtt://[::1]:1999/").expect("parses");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1999));
        assert_eq!(BrokerUrl::parse("tcp://h").map(|u| u.port), Ok(1883));
        for bad in [
            "127.0.0.1:1883",
            "http://h",
            "mqtt://user:pw@h",
            "mqtt://h/topic",
            "mqtt://h:x",
            "mqtt://:1883",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn check_finds_tls_files_without_tls_and_half_client_auth() {
        let cert = PathBuf::from("/c.pem");
        let files = TlsFiles {
            client_cert_file: Some(&cert),
            ..TlsFiles::default()
        };
        let problems = check("mqtt://h", &files, Duration::from_secs(30), 10);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(check("mqtts://h", &TlsFiles::default(), Duration::ZERO, 1).is_empty());
        assert_eq!(
            check(
                "mqtt://h",
                &TlsFiles::default(),
                Duration::from_millis(10),
                0
            )
            .len(),
            2
        );
    }
}
