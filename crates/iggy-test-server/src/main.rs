//! `iggy-test-server`: runs the in-memory Iggy test server until SIGINT or SIGTERM.
//!
//! For tests, demos and trying connectors out. It is not an Iggy replacement: nothing is
//! persisted and there is no clustering.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use iggy_test_server::{ServerConfig, TestServer, TlsFiles};

const USAGE: &str = "\
iggy-test-server: an in-memory server speaking Apache Iggy 0.11's TCP protocol, for tests
and demos. Not an Iggy replacement: nothing is persisted, there is no clustering.

Usage:
  iggy-test-server [--address HOST:PORT] [--username U --password P]
                   [--tls-cert FILE --tls-key FILE]

Options:
  --address HOST:PORT   where to listen (default 127.0.0.1:8090)
  --username U          the user's name (default iggy)
  --password P          the user's password (default iggy)
  --tls-cert FILE       serve TLS with this PEM certificate chain (needs --tls-key)
  --tls-key FILE        the PEM private key of --tls-cert
  -h, --help            print this help
  -V, --version         print the version";

fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<ServerConfig>, String> {
    let mut config = ServerConfig {
        address: SocketAddr::from(([127, 0, 0, 1], 8090)),
        ..ServerConfig::default()
    };
    let (mut cert, mut key) = (None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("iggy-test-server {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--address" => {
                let text = value("--address")?;
                config.address = text
                    .parse()
                    .map_err(|error| format!("--address {text:?}: {error}"))?;
            }
            "--username" => config.username = value("--username")?,
            "--password" => config.password = value("--password")?,
            "--tls-cert" => cert = Some(PathBuf::from(value("--tls-cert")?)),
            "--tls-key" => key = Some(PathBuf::from(value("--tls-key")?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    config.tls = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(TlsFiles {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".to_owned()),
    };
    Ok(Some(config))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match parse(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Before the server serves: a SIGTERM that comes as soon as a client got an answer
    // must find the handler in place, not the default action (death by the signal).
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: cannot wait for signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    let server = match TestServer::start_with(config).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::warn!("this is a test server: data lives in memory only and is lost on exit");
    signals.received().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// The handlers of SIGINT and SIGTERM, installed (from then on neither kills the
/// process) and waited on.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM.
    async fn received(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn parses_every_option() {
        let config = parse(args(&[
            "--address",
            "0.0.0.0:9000",
            "--username",
            "u",
            "--password",
            "p",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(config.address, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.username, "u");
        assert_eq!(config.password, "p");
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("c.pem"));
        assert_eq!(tls.key_file, PathBuf::from("k.pem"));
        let defaults = parse(args(&[])).unwrap().unwrap();
        assert_eq!(defaults.address.port(), 8090);
        assert!(defaults.tls.is_none());
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(
            parse(args(&["--address", "nowhere"]))
                .unwrap_err()
                .contains("nowhere")
        );
        assert!(
            parse(args(&["--tls-cert", "c"]))
                .unwrap_err()
                .contains("go together")
        );
        assert!(parse(args(&["--bogus"])).unwrap_err().contains("--bogus"));
        assert!(
            parse(args(&["--username"]))
                .unwrap_err()
                .contains("needs a value")
        );
    }
}
