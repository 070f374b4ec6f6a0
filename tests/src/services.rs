//! The real services that connector tests talk to: PostgreSQL, MySQL (MariaDB), Redis,
//! RabbitMQ (AMQP), an MQTT broker (Mosquitto) and NATS.
//!
//! Each has a variable that gives its URL (`IGGY_TEST_POSTGRES_URL`, ...) and a default:
//! the service as our machines run it on loopback, and as `tests/services.compose.yml`
//! starts it (`docker compose -f tests/services.compose.yml up -d`; a test checks that
//! file against the defaults here). [`service_url`] resolves the URL and checks that
//! something listens there; a service that cannot be reached fails the test under `CI`
//! (naming the variable) and skips it elsewhere, with one `SKIPPED <test>: ...` line,
//! the line `.ci/run` counts.
//!
//! ```
//! use iggy_connectors_tests::services::{Service, service_url};
//!
//! // In a test:
//! let Some(url) = service_url(Service::Postgres) else {
//!     return; // not reachable, and not under CI: skipped, and said so
//! };
//! // Connect to `url`: postgres://postgres@127.0.0.1:5432/test unless
//! // IGGY_TEST_POSTGRES_URL says otherwise.
//! # drop(url);
//! ```

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long [`service_url`] waits for a TCP connection to a service's address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A service that tests talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// PostgreSQL: trust authentication, user `postgres`, database `test`.
    Postgres,
    /// MySQL or MariaDB: user `root` with an empty password, database `test`.
    Mysql,
    /// Redis: no password, database 0.
    Redis,
    /// RabbitMQ over AMQP 0-9-1: user `guest`, password `guest`, virtual host `/`.
    Amqp,
    /// An MQTT broker (Mosquitto) that lets anonymous clients in.
    Mqtt,
    /// NATS, with JetStream, no authentication.
    Nats,
}

impl Service {
    /// Every service, in the order of the variables in the README.
    pub const ALL: [Service; 6] = [
        Service::Postgres,
        Service::Mysql,
        Service::Redis,
        Service::Amqp,
        Service::Mqtt,
        Service::Nats,
    ];

    /// What the service is called in messages.
    pub const fn name(self) -> &'static str {
        match self {
            Service::Postgres => "PostgreSQL",
            Service::Mysql => "MySQL",
            Service::Redis => "Redis",
            Service::Amqp => "RabbitMQ (AMQP)",
            Service::Mqtt => "MQTT",
            Service::Nats => "NATS",
        }
    }

    /// The environment variable that gives the service's URL.
    pub const fn variable(self) -> &'static str {
        match self {
            Service::Postgres => "IGGY_TEST_POSTGRES_URL",
            Service::Mysql => "IGGY_TEST_MYSQL_URL",
            Service::Redis => "IGGY_TEST_REDIS_URL",
            Service::Amqp => "IGGY_TEST_AMQP_URL",
            Service::Mqtt => "IGGY_TEST_MQTT_URL",
            Service::Nats => "IGGY_TEST_NATS_URL",
        }
    }

    /// The URL when the variable is unset: the service as it runs on loopback on our
    /// machines and as `tests/services.compose.yml` starts it.
    pub const fn default_url(self) -> &'static str {
        match self {
            Service::Postgres => "postgres://postgres@127.0.0.1:5432/test",
            Service::Mysql => "mysql://root@127.0.0.1:3306/test",
            Service::Redis => "redis://127.0.0.1:6379/0",
            Service::Amqp => "amqp://guest:guest@127.0.0.1:5672/%2f",
            Service::Mqtt => "mqtt://127.0.0.1:1883",
            Service::Nats => "nats://127.0.0.1:4222",
        }
    }

    /// The URL to use, unchecked: the variable's value, or [`Service::default_url`]
    /// when it is unset or empty.
    ///
    /// # Panics
    /// If the variable is not valid Unicode.
    pub fn url(self) -> String {
        match std::env::var(self.variable()) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
            Ok(_) | Err(std::env::VarError::NotPresent) => self.default_url().to_owned(),
            Err(std::env::VarError::NotUnicode(value)) => {
                panic!("{} is not valid Unicode: {value:?}", self.variable())
            }
        }
    }
}

/// The URL of `service` ([`Service::url`]) when something accepts TCP connections at
/// its host and port (within [`CONNECT_TIMEOUT`]).
///
/// When nothing does, under `CI` (the variable set to anything) it panics, naming the
/// variable and the URL tried: CI must provide the service. Elsewhere it prints
/// `SKIPPED <test>: <service> not reachable at <url> (set <variable>)` on standard
/// error, past the test harness's capture, and returns `None`: the test returns.
///
/// # Panics
/// Under `CI` when the service cannot be reached, and always when the URL cannot be
/// read (a variable set to something that is not a URL is a mistake to fix).
pub fn service_url(service: Service) -> Option<String> {
    let url = service.url();
    let address = ServiceAddress::parse(&url).unwrap_or_else(|error| {
        panic!(
            "{}: cannot read {url:?} as a URL: {error}",
            service.variable()
        )
    });
    let why = match address.reachable(CONNECT_TIMEOUT) {
        Ok(()) => return Some(url),
        Err(why) => why,
    };
    let variable = service.variable();
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} not reachable at {url} ({why}): CI must provide it, at the default \
             address or the one {variable} gives",
            service.name()
        );
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    // Written to the process's standard error itself, past the harness's capture, so
    // that the skip shows without `--nocapture`; one write, so it stays one line.
    let line = format!(
        "SKIPPED {test}: {} not reachable at {url} (set {variable}): {why}\n",
        service.name()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    None
}

/// The parts of a service URL `scheme://[user[:password]@]host[:port][/path][?query]`
/// that tests need. User, password and path are as written (percent-encoding kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddress {
    /// The scheme, lowercased: `postgres`, `mysql`, `redis`, `amqp`, `mqtt`, `nats`, ...
    pub scheme: String,
    /// The user before the `@`, if any.
    pub user: Option<String>,
    /// The password after the user's `:`, if any.
    pub password: Option<String>,
    /// The host, without the brackets of an IPv6 address (`::1`).
    pub host: String,
    /// The port given, or the scheme's ([`default_port`]).
    pub port: u16,
    /// What follows the `/` after the address, up to a `?` or `#`: a database, a
    /// virtual host, ... (empty when there is none).
    pub path: String,
}

/// The port a scheme's clients use when a URL gives none.
pub fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => 5432,
        "mysql" | "mariadb" => 3306,
        "redis" | "rediss" => 6379,
        "amqp" => 5672,
        "amqps" => 5671,
        "mqtt" | "tcp" => 1883,
        "mqtts" | "ssl" => 8883,
        "nats" | "tls" => 4222,
        _ => return None,
    })
}

impl ServiceAddress {
    /// Reads `url`. The authority ends at the first `/`, `?` or `#`, and the user
    /// information at the last `@` before that, so a password may hold `@` and `:`
    /// (but `/`, `?` and `#` only percent-encoded).
    pub fn parse(url: &str) -> Result<ServiceAddress, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "no scheme (expected scheme://host[:port])".to_owned())?;
        let valid_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return Err(format!("{scheme:?} is not a scheme"));
        }
        let scheme = scheme.to_ascii_lowercase();
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => match userinfo.split_once(':') {
                Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
                None => (Some(userinfo.to_owned()), None),
            },
        };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{host_port:?}: an IPv6 address without its `]`"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    format!("{host_port:?}: expected `:port` after the IPv6 address")
                })?),
            };
            (host, port)
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err("no host".to_owned());
        }
        let port = match port {
            Some(port) if !port.is_empty() => port
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("{port:?} is not a port"))?,
            _ => default_port(&scheme).ok_or_else(|| {
                format!("no port, and no default port known for scheme {scheme:?}")
            })?,
        };
        let path = tail.strip_prefix('/').unwrap_or("");
        let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
        Ok(ServiceAddress {
            scheme,
            user,
            password,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// `host:port`, with an IPv6 host in brackets, as `connect` takes it.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether something accepts a TCP connection at the address (at any of the
    /// host's addresses), each try within `timeout`; the connection is closed at once.
    pub fn reachable(&self, timeout: Duration) -> Result<(), String> {
        let addresses: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| format!("cannot resolve {}: {error}", self.host))?
            .collect();
        let mut failures = Vec::new();
        for address in &addresses {
            match TcpStream::connect_timeout(address, timeout) {
                Ok(_) => return Ok(()),
                Err(error) => failures.push(format!("{address}: {error}")),
            }
        }
        if failures.is_empty() {
            return Err(format!("{} resolves to no address", self.host));
        }
        Err(failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn parse(url: &str) -> ServiceAddress {
        ServiceAddress::parse(url).unwrap_or_else(|error| panic!("{url}: {error}"))
    }

    fn parts(url: &str) -> (Option<String>, Option<String>, String, u16, String) {
        let address = parse(url);
        (
            address.user,
            address.password,
            address.host,
            address.port,
            address.path,
        )
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    #[test]
    fn host_port_user_password_and_path_are_read() {
        let address = parse("postgres://user:pass@db.example:6543/app?sslmode=disable");
        assert_eq!(
            address,
            ServiceAddress {
                scheme: "postgres".to_owned(),
                user: some("user"),
                password: some("pass"),
                host: "db.example".to_owned(),
                port: 6543,
                path: "app".to_owned(),
            }
        );
        assert_eq!(address.host_port(), "db.example:6543");
        assert_eq!(
            parts("redis://localhost"),
            (None, None, "localhost".to_owned(), 6379, String::new())
        );
        assert_eq!(parse("NATS://h:1/#frag").scheme, "nats");
        assert_eq!(parse("nats://h:1/#frag").path, "");
        assert_eq!(parse("amqp://h?heartbeat=5").path, "");
        assert_eq!(parse("amqp://h/%2f?heartbeat=5").path, "%2f");
    }

    #[test]
    fn each_scheme_without_a_port_gets_its_default() {
        for (url, port) in [
            ("postgres://h/db", 5432),
            ("postgresql://h", 5432),
            ("mysql://h/db", 3306),
            ("redis://h", 6379),
            ("amqp://h", 5672),
            ("mqtt://h", 1883),
            ("nats://h", 4222),
            ("nats://h:", 4222),
        ] {
            assert_eq!(parse(url).port, port, "{url}");
        }
        let unknown = ServiceAddress::parse("gopher://h").expect_err("no default port");
        assert!(unknown.contains("gopher"), "{unknown}");
        assert_eq!(parse("gopher://h:70").port, 70);
    }

    #[test]
    fn a_password_may_hold_at_signs_and_colons() {
        assert_eq!(
            parts("mysql://root:p@ss:w@rd@127.0.0.1:3307/test"),
            (
                some("root"),
                some("p@ss:w@rd"),
                "127.0.0.1".to_owned(),
                3307,
                "test".to_owned()
            )
        );
        assert_eq!(
            parts("amqp://guest@h"),
            (some("guest"), None, "h".to_owned(), 5672, String::new())
        );
        assert_eq!(
            parts("redis://:secret@h:6380"),
            (
                some(""),
                some("secret"),
                "h".to_owned(),
                6380,
                String::new()
            )
        );
        // An `@` after the address belongs to the path, not to the user information.
        assert_eq!(parse("nats://h:4222/a@b").host, "h");
    }

    #[test]
    fn ipv6_addresses_are_read_in_brackets() {
        let address = parse("redis://[::1]:6380/0");
        assert_eq!((address.host.as_str(), address.port), ("::1", 6380));
        assert_eq!(address.host_port(), "[::1]:6380");
        assert_eq!(parse("mqtt://[::1]").port, 1883);
        assert_eq!(
            parts("postgres://u:p@[fe80::1]:5433/db"),
            (
                some("u"),
                some("p"),
                "fe80::1".to_owned(),
                5433,
                "db".to_owned()
            )
        );
    }

    #[test]
    fn what_is_not_a_service_url_is_refused_with_the_reason() {
        for (url, reason) in [
            ("127.0.0.1:5432", "no scheme"),
            ("://h:1", "is not a scheme"),
            ("postgres://:5432/db", "no host"),
            ("postgres://u@/db", "no host"),
            ("redis://h:port", "is not a port"),
            ("redis://h:70000", "is not a port"),
            ("redis://h:0", "is not a port"),
            ("redis://[::1", "without its `]`"),
            ("redis://[::1]6379", "expected `:port`"),
        ] {
            let error = ServiceAddress::parse(url).expect_err(url);
            assert!(error.contains(reason), "{url}: {error}");
        }
    }

    #[test]
    fn every_default_url_is_read_with_its_services_port() {
        for service in Service::ALL {
            let address = parse(service.default_url());
            assert_eq!(address.host, "127.0.0.1", "{service:?}");
            assert_eq!(
                Some(address.port),
                default_port(&address.scheme),
                "{service:?}: the default URL's port is its scheme's"
            );
            assert!(service.variable().starts_with("IGGY_TEST_"));
            assert!(service.variable().ends_with("_URL"));
        }
    }

    #[test]
    fn an_unreachable_address_says_where_it_tried() {
        // A port just released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let address = parse(&format!("redis://127.0.0.1:{port}"));
        let error = address
            .reachable(CONNECT_TIMEOUT)
            .expect_err("nothing listens");
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    }

    // The services on this machine: each is reached through the helper (so under CI a
    // missing one fails here, naming its variable), then greeted in its own protocol
    // with the URL's credentials, so that a default that names the wrong port, user,
    // password or database fails too.

    fn connect(url: &str) -> (ServiceAddress, TcpStream) {
        let address = parse(url);
        let stream = TcpStream::connect(address.host_port()).expect("connected");
        let timeout = Some(Duration::from_secs(10));
        stream.set_read_timeout(timeout).expect("read timeout set");
        stream
            .set_write_timeout(timeout)
            .expect("write timeout set");
        (address, stream)
    }

    fn read_exact(stream: &mut TcpStream, len: usize, what: &str) -> Vec<u8> {
        let mut buffer = vec![0; len];
        stream
            .read_exact(&mut buffer)
            .unwrap_or_else(|error| panic!("reading {what}: {error}"));
        buffer
    }

    /// Reads up to `\r\n` (the line-based protocols: Redis, NATS).
    fn read_line(stream: &mut TcpStream) -> String {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            line.extend(read_exact(stream, 1, "a line"));
            assert!(line.len() < 64 * 1024, "no line end in {line:?}");
        }
        String::from_utf8_lossy(&line).trim_end().to_owned()
    }

    fn percent_decoded(text: &str) -> String {
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

    #[test]
    fn postgres_is_reachable_and_lets_the_default_user_into_its_database() {
        let Some(url) = service_url(Service::Postgres) else {
            return;
        };
        let (address, mut stream) = connect(&url);
        let user = address
            .user
            .clone()
            .unwrap_or_else(|| "postgres".to_owned());
        let database = match address.path.as_str() {
            "" => user.clone(),
            path => percent_decoded(path),
        };
        // StartupMessage, protocol 3.0.
        let mut body = 196_608_i32.to_be_bytes().to_vec();
        for text in ["user", &user, "database", &database, ""] {
            body.extend(text.as_bytes());
            body.push(0);
        }
        let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        message.extend(body);
        stream.write_all(&message).expect("startup sent");
        // Until ReadyForQuery: after AuthenticationOk the server still checks the
        // database, and an error then ends the session.
        loop {
            let header = read_exact(&mut stream, 5, "a message header");
            let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let len = usize::try_from(len).unwrap_or(0).saturating_sub(4);
            let body = read_exact(&mut stream, len, "a message");
            match header[0] {
                b'Z' => break,
                // AuthenticationOk (0); another code asks for a password.
                b'R' if body.starts_with(&[0, 0, 0, 0]) => {}
                b'R' if address.password.is_some() => return, // not sent here
                b'R' => panic!("{url}: PostgreSQL asks for a password the URL does not give"),
                b'E' => panic!(
                    "{url}: PostgreSQL refused {user} into {database:?}: {}",
                    String::from_utf8_lossy(&body).replace('\0', " ")
                ),
                _ => {} // parameters, the key for cancelling, notices
            }
        }
        let _ = stream.write_all(&[b'X', 0, 0, 0, 4]); // Terminate
    }

    /// One MySQL packet: its sequence number and payload.
    fn mysql_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
        let header = read_exact(stream, 4, "a packet header");
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        (header[3], read_exact(stream, len, "a packet"))
    }

    fn send_mysql_packet(stream: &mut TcpStream, sequence: u8, payload: &[u8]) {
        let len = payload.len().to_le_bytes();
        let mut packet = vec![len[0], len[1], len[2], sequence];
        packet.extend(payload);
        stream.write_all(&packet).expect("packet sent");
    }

    #[test]
    fn mysql_is_reachable_and_lets_the_default_user_into_its_database() {
        let Some(url) = service_url(Service::Mysql) else {
            return;
        };
        let (address, mut stream) = connect(&url);
        let (_, greeting) = mysql_packet(&mut stream);
        assert_eq!(greeting.first(), Some(&10), "{url}: not a MySQL greeting");
        if address.password.is_some() {
            return; // Passwords are not computed here: the greeting is what is checked.
        }
        let user = address.user.clone().unwrap_or_else(|| "root".to_owned());
        let database = percent_decoded(&address.path);
        // CLIENT_LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | SECURE_CONNECTION
        // | PLUGIN_AUTH, with an empty auth response (the empty password).
        let capabilities: u32 = 0x1 | 0x8 | 0x200 | 0x8000 | 0x8_0000;
        let mut response = capabilities.to_le_bytes().to_vec();
        response.extend(16_777_216_u32.to_le_bytes());
        response.push(45); // utf8mb4
        response.extend([0; 23]);
        response.extend(user.as_bytes());
        response.extend([0, 0]); // the user's end, an auth response of length 0
        response.extend(database.as_bytes());
        response.push(0);
        response.extend(b"mysql_native_password\0");
        send_mysql_packet(&mut stream, 1, &response);
        let (sequence, mut reply) = mysql_packet(&mut stream);
        if reply.first() == Some(&0xfe) {
            // Another authentication method: the empty password again.
            send_mysql_packet(&mut stream, sequence.wrapping_add(1), &[]);
            reply = mysql_packet(&mut stream).1;
        }
        assert_eq!(
            reply.first(),
            Some(&0),
            "{url}: MySQL refused {user} into {database:?}: {}",
            String::from_utf8_lossy(reply.get(9..).unwrap_or_default())
        );
    }

    #[test]
    fn redis_is_reachable_and_answers_ping() {
        let Some(url) = service_url(Service::Redis) else {
            return;
        };
        let (address, mut stream) = connect(&url);
        stream.write_all(b"PING\r\n").expect("PING sent");
        let reply = read_line(&mut stream);
        let needs_password = address.password.is_some() && reply.starts_with("-NOAUTH");
        assert!(reply == "+PONG" || needs_password, "{url}: {reply}");
    }

    /// One AMQP frame: its type and payload.
    fn amqp_frame(stream: &mut TcpStream, answering: &str) -> (u8, Vec<u8>) {
        let header = read_exact(stream, 7, &format!("the answer to {answering}"));
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
        let payload = read_exact(stream, size as usize, "a frame");
        assert_eq!(
            read_exact(stream, 1, "a frame end"),
            [0xce],
            "bad frame end"
        );
        (header[0], payload)
    }

    /// The class and method of a method frame's payload.
    fn amqp_method(payload: &[u8]) -> (u16, u16) {
        assert!(payload.len() >= 4, "short method frame {payload:?}");
        (
            u16::from_be_bytes([payload[0], payload[1]]),
            u16::from_be_bytes([payload[2], payload[3]]),
        )
    }

    /// What a Connection.Close says (its reply code and text), or the payload.
    fn amqp_reason(payload: &[u8]) -> String {
        let text = payload
            .get(6)
            .and_then(|len| payload.get(7..7 + usize::from(*len)));
        match (payload.get(4..6), text) {
            (Some(code), Some(text)) => format!(
                "{} {}",
                u16::from_be_bytes([code[0], code[1]]),
                String::from_utf8_lossy(text)
            ),
            _ => format!("{payload:?}"),
        }
    }

    fn send_amqp_method(stream: &mut TcpStream, class: u16, method: u16, arguments: &[u8]) {
        let mut payload = class.to_be_bytes().to_vec();
        payload.extend(method.to_be_bytes());
        payload.extend(arguments);
        let mut frame = vec![1, 0, 0];
        frame.extend((payload.len() as u32).to_be_bytes());
        frame.extend(payload);
        frame.push(0xce);
        stream.write_all(&frame).expect("frame sent");
    }

    fn short_string(text: &str) -> Vec<u8> {
        let mut bytes = vec![text.len() as u8];
        bytes.extend(text.as_bytes());
        bytes
    }

    #[test]
    fn rabbitmq_is_reachable_and_opens_the_default_virtual_host_for_the_default_user() {
        let Some(url) = service_url(Service::Amqp) else {
            return;
        };
        let (address, mut stream) = connect(&url);
        let user = percent_decoded(address.user.as_deref().unwrap_or("guest"));
        let password = percent_decoded(address.password.as_deref().unwrap_or("guest"));
        let vhost = match address.path.as_str() {
            "" => "/".to_owned(),
            path => percent_decoded(path),
        };
        stream
            .write_all(b"AMQP\x00\x00\x09\x01")
            .expect("header sent");
        let (_, start) = amqp_frame(&mut stream, "the protocol header");
        assert_eq!(amqp_method(&start), (10, 10), "{url}: no Connection.Start");
        // Connection.Start-Ok: no client properties, PLAIN, the credentials, a locale.
        let mut start_ok = 0_u32.to_be_bytes().to_vec();
        start_ok.extend(short_string("PLAIN"));
        let response = format!("\0{user}\0{password}");
        start_ok.extend((response.len() as u32).to_be_bytes());
        start_ok.extend(response.as_bytes());
        start_ok.extend(short_string("en_US"));
        send_amqp_method(&mut stream, 10, 11, &start_ok);
        // RabbitMQ closes the connection on credentials it refuses.
        let (_, tune) = amqp_frame(&mut stream, &format!("{user}'s login"));
        assert_eq!(
            amqp_method(&tune),
            (10, 30),
            "{url}: RabbitMQ refused {user}: {}",
            amqp_reason(&tune)
        );
        // Connection.Tune-Ok with the server's figures, then Connection.Open.
        send_amqp_method(&mut stream, 10, 31, &tune[4..12]);
        let mut open = short_string(&vhost);
        open.extend([0, 0]); // reserved short string, reserved bit
        send_amqp_method(&mut stream, 10, 40, &open);
        let (_, opened) = amqp_frame(&mut stream, &format!("opening {vhost:?}"));
        assert_eq!(
            amqp_method(&opened),
            (10, 41),
            "{url}: RabbitMQ refused virtual host {vhost:?} to {user}: {}",
            amqp_reason(&opened)
        );
        // Connection.Close: reply code 200, no text, no failing method.
        send_amqp_method(&mut stream, 10, 50, &[0, 200, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn mqtt_is_reachable_and_accepts_the_default_client() {
        let Some(url) = service_url(Service::Mqtt) else {
            return;
        };
        let (address, mut stream) = connect(&url);
        // CONNECT, MQTT 3.1.1, clean session, keep-alive 10 s, with the URL's user.
        let mut flags = 0x02;
        let mut payload = Vec::new();
        let mut field = |text: &str| {
            payload.extend((text.len() as u16).to_be_bytes());
            payload.extend(text.as_bytes());
        };
        field(&format!("iggy-connectors-tests-{}", std::process::id()));
        if let Some(user) = &address.user {
            flags |= 0x80;
            field(&percent_decoded(user));
        }
        if let Some(password) = &address.password {
            flags |= 0x40;
            field(&percent_decoded(password));
        }
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 10];
        body.extend(payload);
        assert!(body.len() < 128, "one byte of remaining length");
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend(body);
        stream.write_all(&packet).expect("CONNECT sent");
        let connack = read_exact(&mut stream, 4, "CONNACK");
        assert_eq!(
            connack,
            [0x20, 2, 0, 0],
            "{url}: not accepted (the last byte is the broker's return code)"
        );
        let _ = stream.write_all(&[0xe0, 0]); // DISCONNECT
    }

    #[test]
    fn nats_is_reachable_and_answers_ping_with_jetstream() {
        let Some(url) = service_url(Service::Nats) else {
            return;
        };
        let (address, mut stream) = connect(&url);
        let info = read_line(&mut stream);
        assert!(info.starts_with("INFO "), "{url}: not NATS: {info}");
        let info: serde_json::Value =
            serde_json::from_str(&info["INFO ".len()..]).expect("INFO is JSON");
        assert_eq!(
            info["jetstream"],
            serde_json::Value::Bool(true),
            "{url}: JetStream is off ({info})"
        );
        let mut connect = serde_json::json!({ "verbose": false, "pedantic": false });
        if let (Some(user), Some(password)) = (&address.user, &address.password) {
            connect["user"] = percent_decoded(user).into();
            connect["pass"] = percent_decoded(password).into();
        }
        stream
            .write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
            .expect("CONNECT sent");
        assert_eq!(read_line(&mut stream), "PONG", "{url}");
    }
}
