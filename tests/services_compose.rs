//! `tests/services.compose.yml` starts the services of
//! `iggy_connectors_tests::services` as our machines run them: this checks each one's
//! published port and credentials against the default URL, so that the two cannot
//! drift apart. (No container engine runs here; the file itself is what is checked.)
//!
//! The workspace has no YAML crate, so a small reader below takes the part of YAML the
//! file is written in (block mappings and sequences, plain and quoted scalars,
//! comments) and refuses anything else, rather than misreading it.

use std::path::Path;

use iggy_connectors_tests::services::{Service, ServiceAddress, default_port};

const COMPOSE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/services.compose.yml");

/// The compose service that stands for `service`, and its official image.
fn compose_name_and_image(service: Service) -> (&'static str, &'static str) {
    match service {
        Service::Postgres => ("postgres", "postgres"),
        Service::Mysql => ("mariadb", "mariadb"),
        Service::Redis => ("redis", "redis"),
        Service::Amqp => ("rabbitmq", "rabbitmq"),
        Service::Mqtt => ("mosquitto", "eclipse-mosquitto"),
        Service::Nats => ("nats", "nats"),
    }
}

#[test]
fn the_compose_file_starts_exactly_the_services_of_the_helper() {
    let compose = compose_file();
    let mut names: Vec<&str> = services(&compose)
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = Service::ALL
        .iter()
        .map(|service| compose_name_and_image(*service).0)
        .collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "the services of {COMPOSE_FILE}");
}

#[test]
fn each_compose_service_listens_at_its_default_url() {
    let compose = compose_file();
    for service in Service::ALL {
        let (name, image) = compose_name_and_image(service);
        let address = default_address(service);
        let entry = compose_service(&compose, name);
        let image_given = entry
            .get("image")
            .and_then(Yaml::as_str)
            .unwrap_or_default();
        assert!(
            image_given.starts_with(&format!("{image}:")),
            "{name}: image {image_given:?}, expected the official {image}:<version>"
        );
        let ports = entry
            .get("ports")
            .and_then(Yaml::as_seq)
            .unwrap_or_else(|| panic!("{name}: no ports"));
        let [port] = ports else {
            panic!("{name}: expected one published port, got {ports:?}");
        };
        let port = port.as_str().unwrap_or_default();
        let parts: Vec<&str> = port.split(':').collect();
        let [host_ip, host_port, container_port] = parts[..] else {
            panic!("{name}: ports entry {port:?} is not HOST_IP:HOST_PORT:CONTAINER_PORT");
        };
        assert_eq!(
            (host_ip, host_port),
            (address.host.as_str(), address.port.to_string().as_str()),
            "{name}: published at {host_ip}:{host_port}, but {} defaults to {}",
            service.variable(),
            service.default_url()
        );
        assert_eq!(
            container_port.parse::<u16>().ok(),
            default_port(&address.scheme),
            "{name}: the container's port is not the image's standard one"
        );
    }
}

#[test]
fn each_compose_service_takes_the_credentials_of_its_default_url() {
    let compose = compose_file();
    for service in Service::ALL {
        let (name, _) = compose_name_and_image(service);
        let address = default_address(service);
        let entry = compose_service(&compose, name);
        let env = |key: &str| {
            entry
                .get("environment")
                .and_then(|environment| environment.get(key))
                .and_then(Yaml::as_str)
        };
        let command: Vec<&str> = entry
            .get("command")
            .and_then(Yaml::as_seq)
            .map(|command| command.iter().filter_map(Yaml::as_str).collect())
            .unwrap_or_default();
        let user = address.user.as_deref();
        let password = address.password.as_deref();
        let path = percent_decoded(&address.path);
        let context = format!("{name} against {}", service.default_url());
        match service {
            Service::Postgres => {
                assert_eq!(env("POSTGRES_USER"), user, "{context}: user");
                assert_eq!(
                    env("POSTGRES_DB"),
                    Some(path.as_str()),
                    "{context}: database"
                );
                match password {
                    None => assert_eq!(
                        env("POSTGRES_HOST_AUTH_METHOD"),
                        Some("trust"),
                        "{context}: no password in the URL, so trust authentication"
                    ),
                    Some(password) => {
                        assert_eq!(env("POSTGRES_PASSWORD"), Some(password), "{context}")
                    }
                }
            }
            Service::Mysql => {
                assert_eq!(user, Some("root"), "{context}: the image's user is root");
                assert_eq!(
                    env("MARIADB_DATABASE"),
                    Some(path.as_str()),
                    "{context}: database"
                );
                match password {
                    None => assert!(
                        matches!(
                            env("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD"),
                            Some("1" | "yes" | "true")
                        ),
                        "{context}: no password in the URL, so an empty root password"
                    ),
                    Some(password) => {
                        assert_eq!(env("MARIADB_ROOT_PASSWORD"), Some(password), "{context}")
                    }
                }
            }
            Service::Redis => {
                assert_eq!(password, None, "{context}: set requirepass for a password");
                assert!(
                    !command.contains(&"--requirepass"),
                    "{context}: the URL gives no password"
                );
            }
            Service::Amqp => {
                assert_eq!(env("RABBITMQ_DEFAULT_USER"), user, "{context}: user");
                assert_eq!(
                    env("RABBITMQ_DEFAULT_PASS"),
                    password,
                    "{context}: password"
                );
                assert_eq!(
                    env("RABBITMQ_DEFAULT_VHOST"),
                    Some(path.as_str()),
                    "{context}: virtual host"
                );
            }
            Service::Mqtt => {
                assert_eq!((user, password), (None, None), "{context}: anonymous");
                assert_eq!(
                    command,
                    ["mosquitto", "-c", "/mosquitto-no-auth.conf"],
                    "{context}: the image's configuration for anonymous clients on 1883"
                );
            }
            Service::Nats => {
                assert_eq!((user, password), (None, None), "{context}: anonymous");
                assert!(
                    command.contains(&"-js"),
                    "{context}: JetStream, as on our machines"
                );
                for flag in ["--user", "--pass", "--auth", "-c", "--config"] {
                    assert!(!command.contains(&flag), "{context}: {flag} in {command:?}");
                }
            }
        }
    }
}

#[test]
fn the_readme_gives_each_variable_with_its_default_url() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    for service in Service::ALL {
        let (variable, url) = (service.variable(), service.default_url());
        assert!(
            readme
                .lines()
                .any(|line| line.contains(&format!("`{variable}`"))
                    && line.contains(&format!("`{url}`"))),
            "README.md has no line with `{variable}` and its default `{url}`"
        );
    }
    assert!(readme.contains("docker compose -f tests/services.compose.yml up -d"));
}

#[test]
fn the_yaml_reader_reads_the_subset_and_refuses_the_rest() {
    let read = Yaml::parse(
        "# a comment\nroot:\n  key: \"quoted # not a comment\" # a comment\n  \
         plain: a:b\n  single: 'it''s'\n  empty: \"\"\n  list:\n    - \"one\"\n    - two\n  \
         same_indent:\n  - x\n",
    )
    .expect("the subset");
    let root = read.get("root").expect("root");
    assert_eq!(
        root.get("key").and_then(Yaml::as_str),
        Some("quoted # not a comment")
    );
    assert_eq!(root.get("plain").and_then(Yaml::as_str), Some("a:b"));
    assert_eq!(root.get("single").and_then(Yaml::as_str), Some("it's"));
    assert_eq!(root.get("empty").and_then(Yaml::as_str), Some(""));
    let list: Vec<&str> = root
        .get("list")
        .and_then(Yaml::as_seq)
        .expect("a list")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(list, ["one", "two"]);
    assert!(root.get("same_indent").and_then(Yaml::as_seq).is_some());
    for refused in [
        "a: [1, 2]\n",
        "a: {b: 1}\n",
        "a: &anchor 1\n",
        "a: |\n  text\n",
        "a:\n\t- 1\n",
        "a: 1\n  b: 2\n",
        "a: 1\na: 2\n",
        "- a: 1\n",
        "a: \"open\n",
    ] {
        assert!(Yaml::parse(refused).is_err(), "read {refused:?}");
    }
}

fn compose_file() -> Yaml {
    let text = std::fs::read_to_string(Path::new(COMPOSE_FILE))
        .unwrap_or_else(|error| panic!("{COMPOSE_FILE}: {error}"));
    Yaml::parse(&text).unwrap_or_else(|error| panic!("{COMPOSE_FILE}: {error}"))
}

fn services(compose: &Yaml) -> &[(String, Yaml)] {
    compose
        .get("services")
        .and_then(Yaml::as_map)
        .unwrap_or_else(|| panic!("{COMPOSE_FILE}: no services"))
}

fn compose_service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    compose
        .get("services")
        .and_then(|services| services.get(name))
        .unwrap_or_else(|| panic!("{COMPOSE_FILE}: no service {name}"))
}

fn default_address(service: Service) -> ServiceAddress {
    ServiceAddress::parse(service.default_url())
        .unwrap_or_else(|error| panic!("{}: {error}", service.default_url()))
}

fn percent_decoded(text: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let hex: Vec<u8> = bytes.by_ref().take(2).collect();
            let decoded = std::str::from_utf8(&hex)
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            match decoded {
                Some(decoded) => out.push(decoded),
                None => panic!("bad percent-encoding in {text:?}"),
            }
        } else {
            out.push(byte);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A YAML document of block mappings, block sequences and scalars (plain, or quoted
/// with `"` or `'`), which is all the compose file is written in.
#[derive(Debug)]
enum Yaml {
    Scalar(String),
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
}

/// One line with content: its number (from 1), indentation and text without comment.
struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

impl Yaml {
    fn get(&self, key: &str) -> Option<&Yaml> {
        self.as_map()?
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    fn as_map(&self) -> Option<&[(String, Yaml)]> {
        match self {
            Yaml::Map(entries) => Some(entries),
            _ => None,
        }
    }

    fn as_seq(&self) -> Option<&[Yaml]> {
        match self {
            Yaml::Seq(items) => Some(items),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Scalar(text) => Some(text),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Yaml, String> {
        let mut lines = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let content = without_comment(raw).trim_end();
            let text = content.trim_start_matches(' ');
            if text.is_empty() {
                continue;
            }
            if text.starts_with('\t') {
                return Err(format!("line {number}: a tab in the indentation"));
            }
            lines.push(Line {
                number,
                indent: content.len() - text.len(),
                text,
            });
        }
        let mut at = 0;
        let document = match lines.first() {
            None => return Err("an empty document".to_owned()),
            Some(first) if first.indent != 0 => {
                return Err(format!("line {}: indented document", first.number));
            }
            Some(_) => block(&lines, &mut at, 0)?,
        };
        match lines.get(at) {
            Some(line) => Err(format!("line {}: unexpected indentation", line.number)),
            None => Ok(document),
        }
    }
}

/// The mapping or sequence whose lines start at `lines[*at]`, indented by `indent`.
fn block(lines: &[Line<'_>], at: &mut usize, indent: usize) -> Result<Yaml, String> {
    let is_item = |line: &Line<'_>| line.text == "-" || line.text.starts_with("- ");
    let Some(first) = lines.get(*at) else {
        return Err("a block expected at the end".to_owned());
    };
    if is_item(first) {
        let mut items = Vec::new();
        while let Some(line) = lines.get(*at).filter(|l| l.indent == indent && is_item(l)) {
            *at += 1;
            let rest = line.text[1..].trim_start();
            if rest.is_empty() {
                items.push(nested(lines, at, indent, line.number)?);
            } else if key_and_value(rest).is_some() {
                return Err(format!(
                    "line {}: a mapping in a sequence item",
                    line.number
                ));
            } else {
                items.push(Yaml::Scalar(scalar(rest, line.number)?));
            }
        }
        return Ok(Yaml::Seq(items));
    }
    let mut entries: Vec<(String, Yaml)> = Vec::new();
    while let Some(line) = lines.get(*at).filter(|l| l.indent == indent && !is_item(l)) {
        *at += 1;
        let (key, value) = key_and_value(line.text)
            .ok_or_else(|| format!("line {}: expected `key: value`", line.number))?;
        let key = scalar(key, line.number)?;
        if entries.iter().any(|(name, _)| *name == key) {
            return Err(format!("line {}: {key:?} again", line.number));
        }
        let value = if value.is_empty() {
            // A nested block, or a sequence at the key's own indentation.
            match lines.get(*at) {
                Some(next) if next.indent == indent && is_item(next) => block(lines, at, indent)?,
                _ => nested(lines, at, indent, line.number)?,
            }
        } else {
            Yaml::Scalar(scalar(value, line.number)?)
        };
        entries.push((key, value));
    }
    Ok(Yaml::Map(entries))
}

/// The block under the line `number`, more indented than `indent`.
fn nested(
    lines: &[Line<'_>],
    at: &mut usize,
    indent: usize,
    number: usize,
) -> Result<Yaml, String> {
    match lines.get(*at) {
        Some(next) if next.indent > indent => block(lines, at, next.indent),
        _ => Err(format!("line {number}: nothing under it")),
    }
}

/// `key: value` split at the first `: ` (or a final `:`) outside quotes.
fn key_and_value(text: &str) -> Option<(&str, &str)> {
    let mut quote = None;
    let mut previous = ' ';
    for (index, c) in text.char_indices() {
        match (quote, c) {
            // A quote opens a scalar only at its start.
            (None, '"' | '\'') if previous == ' ' || index == 0 => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, ':') => {
                let rest = &text[index + 1..];
                if rest.is_empty() || rest.starts_with(' ') {
                    return Some((text[..index].trim_end(), rest.trim_start()));
                }
            }
            _ => {}
        }
        previous = c;
    }
    None
}

/// A line without its comment: a `#` outside quotes, at the start or after a space.
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') if previous == ' ' => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, '#') if previous == ' ' => return &line[..index],
            _ => {}
        }
        previous = c;
    }
    line
}

/// A scalar's value: quoted (`"` with `\` escapes, `'` with `''`) or plain.
fn scalar(text: &str, number: usize) -> Result<String, String> {
    let refuse = |what: &str| Err(format!("line {number}: {what} ({text:?}) is not read here"));
    let mut chars = text.chars();
    match chars.next() {
        Some('"') => {
            let mut out = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' if chars.as_str().is_empty() => return Ok(out),
                    '"' => return refuse("text after a quoted scalar"),
                    '\\' => match chars.next() {
                        Some('"') => out.push('"'),
                        Some('\\') => out.push('\\'),
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        _ => return refuse("an escape"),
                    },
                    c => out.push(c),
                }
            }
            refuse("an unclosed quote")
        }
        Some('\'') => {
            let body = &text[1..];
            let mut out = String::new();
            let mut rest = body;
            loop {
                let Some(quote) = rest.find('\'') else {
                    return refuse("an unclosed quote");
                };
                out.push_str(&rest[..quote]);
                rest = &rest[quote + 1..];
                match rest.strip_prefix('\'') {
                    Some(after) => {
                        out.push('\'');
                        rest = after;
                    }
                    None if rest.is_empty() => return Ok(out),
                    None => return refuse("text after a quoted scalar"),
                }
            }
        }
        Some('[' | '{') => refuse("flow style"),
        Some('&' | '*' | '!') => refuse("an anchor, alias or tag"),
        Some('|' | '>') => refuse("a block scalar"),
        Some('@' | '`' | '%') => refuse("a reserved indicator"),
        _ => Ok(text.to_owned()),
    }
}
