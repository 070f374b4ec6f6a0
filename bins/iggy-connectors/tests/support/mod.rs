//! What the binary's end-to-end tests share: a child process that cannot outlive its
//! test, its log lines, and plain HTTP requests to its API.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A child process that is killed if the test ends early (a failed assertion), so it
/// cannot outlive the test and keep what the next run needs (a consumer group's
/// partition on a real server, say).
pub(crate) struct Reaped(Option<std::process::Child>);

impl Reaped {
    pub(crate) fn spawn(command: &mut Command) -> Reaped {
        Reaped(Some(command.spawn().unwrap()))
    }

    /// The child, no longer killed on drop (to wait for it to exit by itself).
    pub(crate) fn take(mut self) -> std::process::Child {
        self.0
            .take()
            .expect("only `take` empties it, and it consumes the guard")
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("only `take` empties it, and it consumes the guard")
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
            .as_mut()
            .expect("only `take` empties it, and it consumes the guard")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // It may have exited already; either way it is gone after this.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary, to be run with the config file `config`.
pub(crate) fn runtime_command(config: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"));
    command.args(["--config", config.to_str().unwrap()]);
    command
}

/// The lines a child writes to a pipe, as they come.
pub(crate) fn lines_of(
    pipe: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    received
}

/// Where the runtime whose log is `received` serves its API, from its log line.
pub(crate) fn api_address(
    received: &std::sync::mpsc::Receiver<String>,
    deadline: Instant,
) -> String {
    loop {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the runtime logs where the API listens");
        if line.contains("HTTP API listening")
            && let Some(address) = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("address="))
        {
            return address.to_owned();
        }
    }
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub(crate) fn http_get(address: &str, path: &str) -> (u16, String) {
    http_request(address, "GET", path, &[], "")
}

/// One HTTP/1.1 request on a fresh connection (`host: localhost` unless `headers` name
/// another); returns the status code and the body. The connection is kept alive and
/// the answer read by its length: a server that answers before reading a body (a
/// refusal) would reset a connection asked to close, losing the answer.
pub(crate) fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str("host: localhost\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(stream, "{head}\r\n{body}").unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A runtime serving its API on a port the OS picks.
pub(crate) struct Served {
    /// The runtime, killed when this is dropped.
    pub(crate) child: Reaped,
    /// Where the API listens (`127.0.0.1:port`).
    pub(crate) address: String,
    /// Its log lines from the one naming the address on. Kept alive with the child:
    /// closing its stderr would make its next log line fail.
    pub(crate) log: std::sync::mpsc::Receiver<String>,
}

/// Runs the binary with `config` and `vars`, its API on `127.0.0.1:0`, and waits (up to
/// a minute) for the log line that says where the API listens.
pub(crate) fn serve_api(config: &std::path::Path, vars: &[(&str, &str)]) -> Served {
    let mut command = runtime_command(config);
    command
        .env("NO_COLOR", "1")
        .env("IGGY_CONNECTORS_HTTP_ENABLED", "true")
        .env("IGGY_CONNECTORS_HTTP_ADDRESS", "127.0.0.1:0")
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Reaped::spawn(&mut command);
    let log = lines_of(child.stderr.take().expect("stderr is piped"));
    let address = api_address(&log, Instant::now() + Duration::from_secs(60));
    Served {
        child,
        address,
        log,
    }
}

/// Writes `dir/config.toml`: Iggy at `iggy`, source state in `dir/state`, connector
/// configs from `dir/connectors` (made here), then `extra` (more TOML sections).
pub(crate) fn runtime_config(dir: &std::path::Path, iggy: &str, extra: &str) -> std::path::PathBuf {
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[iggy]\naddress = \"{iggy}\"\n[state]\npath = \"{}\"\n[connectors]\nconfig_dir = \"{}\"\n{extra}",
            dir.join("state").display(),
            connectors.display()
        ),
    )
    .unwrap();
    config
}

/// [`runtime_config`] without the API, and `connectors` (file name, TOML text) written
/// to `dir/connectors`.
pub(crate) fn runtime_with_connectors(
    dir: &std::path::Path,
    iggy: &str,
    connectors: &[(&str, String)],
) -> std::path::PathBuf {
    let config = runtime_config(dir, iggy, "[http]\nenabled = false\n");
    for (name, text) in connectors {
        std::fs::write(dir.join("connectors").join(name), text).unwrap();
    }
    config
}

/// What a finished child printed, stdout then stderr.
pub(crate) fn printed(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Every message Iggy holds in `stream`/`topic`, partition by partition, read by offset
/// up to where each partition ends, as a consumer that stores nothing.
pub(crate) async fn stored_messages(
    bus: &runtime_core::IggyBus,
    stream: &str,
    topic: &str,
) -> Vec<runtime_core::IncomingMessage> {
    use runtime_core::MessageBus;
    let from = runtime_core::Destination::new(stream, topic);
    let Ok(ends) = bus.partition_ends(&from).await else {
        // The topic is not there yet.
        return Vec::new();
    };
    let mut messages = Vec::new();
    for (partition, end) in ends.into_iter().enumerate() {
        let mut offset = 0;
        while offset < end {
            let polled = bus
                .read(&from, partition as u32, offset, 1_000)
                .await
                .unwrap()
                .expect("the Iggy bus reads by offset");
            let Some(last) = polled.messages.last() else {
                panic!("partition {partition} ends at {offset}, not {end}");
            };
            offset = last.offset + 1;
            messages.extend(polled.messages);
        }
    }
    messages
}
