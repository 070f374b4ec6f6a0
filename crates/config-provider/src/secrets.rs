//! Secrets: values written as `${env:NAME}` or `${file:/path}` are resolved at load
//! and remembered, so that logs and API output can redact them.
//!
//! A secret file should be readable by its owner alone. On Unix, one whose mode gives
//! its group or other users any access (`mode & 0o077 != 0`, on the file a symlink
//! leads to) is refused when `secrets.require_private_files` is true and warned about
//! otherwise; the mode is read from the opened file, so what is checked is what is
//! read. Other systems have no such check.

use std::collections::BTreeSet;
use std::fmt;

use figment::value::Value;

use crate::load::Problem;

/// Key paths whose values are secrets.
pub type SecretPaths = BTreeSet<String>;

/// Keys that are secrets whatever their value came from (a `*` matches any map key).
pub(crate) const ALWAYS_SECRET: &[&str] = &[
    "iggy.password",
    "iggy.token",
    "http.api_key",
    "connectors.request_headers.*",
];

/// What redacted values read as.
pub const REDACTED: &str = "******";

/// The runtime config key that makes secret files others may access an error.
pub(crate) const REQUIRE_PRIVATE_FILES_KEY: &str = "secrets.require_private_files";

/// A `${file:...}` secret whose file gives its group or other users some access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenSecretFile {
    /// The key (dot path) whose value named the file.
    pub(crate) key: String,
    /// The file, as the reference names it.
    pub(crate) file: String,
    /// Its permission bits (`0o644`).
    pub(crate) mode: u32,
}

impl OpenSecretFile {
    /// What is wrong and the fix, for a file that is refused.
    pub(crate) fn refusal(&self) -> String {
        format!("{self}; refused because {REQUIRE_PRIVATE_FILES_KEY} is true")
    }

    /// What is wrong and the fix, for a file that is only warned about.
    pub(crate) fn warning(&self) -> String {
        format!("{self}; with {REQUIRE_PRIVATE_FILES_KEY} = true this is refused")
    }

    /// Logs the file at warn level, with the connector (and version), key, file and
    /// mode as fields.
    pub(crate) fn log(&self, connector: &str, version: u64) {
        tracing::warn!(
            connector = %connector,
            version,
            key = %self.key,
            file = %self.file,
            mode = %format_args!("{:04o}", self.mode),
            "connector {connector}: `{}`: {}",
            self.key,
            self.warning()
        );
    }
}

impl fmt::Display for OpenSecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "secret file {} has mode {:04o}, which gives its group or other users access; \
             make it private to its owner: chmod 600 {}",
            self.file, self.mode, self.file
        )
    }
}

/// Secrets shorter than this are not scrubbed from text. References are used for plain
/// values too (`format = "${env:FORMAT}"`), and replacing every `json` or `text` in
/// every message would garble the logs and the API's errors, to hide what is no
/// secret or one an attacker could guess.
pub const MIN_SCRUBBED_CHARS: usize = 6;

/// The secret values this process has resolved or read from secret fields, in each
/// form a message may quote them in (as written, escaped as Rust's `{:?}` and JSON
/// escape them), longest first, so that [`scrub_secrets`] can take them out of any
/// text: an error a plugin or a parser wrote about a value does not know the value
/// was secret. Process-wide because logs, API answers and printed errors all need it
/// and a value once resolved may be quoted by any of them; it only grows, as a
/// replaced secret may still be quoted by a message about the old config.
static KNOWN_SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Remembers `value` as a secret, so that [`scrub_secrets`] replaces it from now on.
/// Values shorter than [`MIN_SCRUBBED_CHARS`] characters are ignored.
pub fn remember_secret(value: &str) {
    if value.chars().count() < MIN_SCRUBBED_CHARS {
        return;
    }
    let unquoted = |quoted: String| quoted[1..quoted.len() - 1].to_owned();
    let forms = [
        value.to_owned(),
        // As `{:?}` quotes it (which escapes `"` but not `'`).
        unquoted(format!("{value:?}")),
        serde_json::to_string(value)
            .map(unquoted)
            .unwrap_or_default(),
    ];
    let mut known = KNOWN_SECRETS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = known.len();
    for form in forms {
        if !form.is_empty() && !known.contains(&form) {
            known.push(form);
        }
    }
    if known.len() != before {
        // Longest first: a secret that contains another is replaced whole.
        known.sort_by_key(|form| std::cmp::Reverse(form.len()));
    }
}

/// `text` with every secret [`remember_secret`] was given replaced by [`REDACTED`]:
/// for errors, log lines and anything else built from config values. Only whole
/// occurrences are replaced, not ones inside a longer word (a letter, digit or `_`
/// right before or after): references hold plain values too (a topic `orders`), and
/// `orders_v2` or `reorders` elsewhere in a message is not that value.
pub fn scrub_secrets(text: &str) -> std::borrow::Cow<'_, str> {
    let known = KNOWN_SECRETS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut text = std::borrow::Cow::Borrowed(text);
    for secret in known.iter() {
        if text.contains(secret.as_str())
            && let Some(scrubbed) = replace_whole(&text, secret)
        {
            text = std::borrow::Cow::Owned(scrubbed);
        }
    }
    text
}

/// `text` with the whole occurrences of `secret` (see [`scrub_secrets`]) replaced;
/// `None` when there is none.
fn replace_whole(text: &str, secret: &str) -> Option<String> {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut replaced = false;
    for (at, _) in text.match_indices(secret) {
        if at < rest {
            continue;
        }
        let end = at + secret.len();
        let inside = word(text[..at].chars().next_back()) && word(secret.chars().next())
            || word(text[end..].chars().next()) && word(secret.chars().next_back());
        if inside {
            continue;
        }
        out.push_str(&text[rest..at]);
        out.push_str(REDACTED);
        rest = end;
        replaced = true;
    }
    replaced.then(|| {
        out.push_str(&text[rest..]);
        out
    })
}

/// A writer that scrubs secrets ([`scrub_secrets`]) from what passes through it: the
/// runtime's log writer, so that no log line quotes a secret, whoever wrote it (a
/// plugin's log included). Each `write` is scrubbed whole, and a log line is written
/// in one `write_all`; bytes that are not UTF-8 pass unchanged.
///
/// ```
/// use std::io::Write;
///
/// config_provider::remember_secret("hunter2-topsecret");
/// let mut out = config_provider::ScrubbingWriter::new(Vec::new());
/// out.write_all(b"invalid duration \"hunter2-topsecret\"\n").unwrap();
/// assert_eq!(out.into_inner(), b"invalid duration \"******\"\n");
/// ```
#[derive(Debug)]
pub struct ScrubbingWriter<W> {
    inner: W,
}

impl<W> ScrubbingWriter<W> {
    /// Scrubs what is written to `inner`.
    pub fn new(inner: W) -> Self {
        ScrubbingWriter { inner }
    }

    /// The writer written to.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: std::io::Write> std::io::Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                self.inner.write_all(scrub_secrets(text).as_bytes())?;
                Ok(buf.len())
            }
            Err(_) => self.inner.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Remembers the values of secret-named fields ([`is_secret_field`]) inside `value`,
/// at any depth.
pub(crate) fn remember_secret_fields(value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields {
                match field {
                    serde_json::Value::String(text) if is_secret_field(name) => {
                        remember_secret(text);
                    }
                    serde_json::Value::Number(number) if is_secret_field(name) => {
                        remember_secret(&number.to_string());
                    }
                    _ => remember_secret_fields(field),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(remember_secret_fields),
        _ => {}
    }
}

/// A reference resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The secret.
    pub(crate) value: String,
    /// The secret's file, if it came from one that others may access (and that was
    /// not refused).
    pub(crate) open_file: Option<OpenSecretFile>,
}

/// Resolves a `${env:NAME}` or `${file:/path}` reference, the value of `key`; `None`
/// for a plain value. A secret file its group or other users may access is an error
/// when `require_private_files`, and is returned in [`Resolved::open_file`] otherwise.
/// The value is remembered for [`scrub_secrets`].
pub(crate) fn resolve_reference(
    text: &str,
    key: &str,
    require_private_files: bool,
) -> Option<Result<Resolved, String>> {
    let resolved = read_reference(text, key, require_private_files);
    if let Some(Ok(resolved)) = &resolved {
        remember_secret(&resolved.value);
    }
    resolved
}

fn read_reference(
    text: &str,
    key: &str,
    require_private_files: bool,
) -> Option<Result<Resolved, String>> {
    let inner = text.trim().strip_prefix("${")?.strip_suffix('}')?;
    if let Some(name) = inner.strip_prefix("env:") {
        return Some(
            std::env::var(name)
                .map(|value| Resolved {
                    value,
                    open_file: None,
                })
                .map_err(|_| format!("environment variable {name} (from {text}) is not set")),
        );
    }
    if let Some(path) = inner.strip_prefix("file:") {
        return Some(read_secret_file(path, key, require_private_files));
    }
    None
}

/// The largest secret file read; a key, a password or a certificate is far smaller.
const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// Reads the secret in the file at `path` (the value of `key`), its line ending
/// trimmed; its permissions are checked first (see [`resolve_reference`]), so a
/// refused file is never read.
pub(crate) fn read_secret_file(
    path: &str,
    key: &str,
    require_private_files: bool,
) -> Result<Resolved, String> {
    use std::io::Read;
    let cannot = |error: std::io::Error| format!("cannot read secret file {path}: {error}");
    // A device or a pipe (`/dev/zero`, a FIFO) would fill memory or block the loader;
    // a FIFO blocks even the open, so the path is looked at before opening it, and the
    // open file again (in case it was swapped in between).
    let not_regular =
        || format!("secret file {path} is not a regular file (a device, a pipe or a directory)");
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(not_regular());
    }
    let open_file = open_to_others(&file)
        .map_err(cannot)?
        .map(|mode| OpenSecretFile {
            key: key.to_owned(),
            file: path.to_owned(),
            mode,
        });
    if require_private_files && let Some(open) = &open_file {
        return Err(open.refusal());
    }
    let mut content = String::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut content)
        .map_err(cannot)?;
    if content.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "secret file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes: not a secret"
        ));
    }
    Ok(Resolved {
        value: content.trim_end_matches(['\n', '\r']).to_owned(),
        open_file,
    })
}

/// The permission bits of an open file that gives its group or other users any access;
/// `None` for a private one.
#[cfg(unix)]
fn open_to_others(file: &std::fs::File) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// Other systems have no mode to check.
#[cfg(not(unix))]
fn open_to_others(_file: &std::fs::File) -> std::io::Result<Option<u32>> {
    Ok(None)
}

/// Resolves the references in the layers of the runtime config, and keeps what that
/// found: which keys hold secrets, and warnings about secret files others may access.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    /// Refuse a secret file others may access, rather than warn.
    require_private_files: bool,
    /// Keys whose values came from references.
    pub(crate) secrets: SecretPaths,
    /// Secret files others may access (when not refused), each named by the file or
    /// variable and the key that referenced it.
    pub(crate) warnings: Vec<Problem>,
}

impl Resolver {
    /// A resolver that refuses secret files others may access when
    /// `require_private_files`, and warns about them otherwise.
    pub(crate) fn new(require_private_files: bool) -> Self {
        Resolver {
            require_private_files,
            ..Resolver::default()
        }
    }

    /// Resolves every reference inside `value` (at `path`, set by `source`), recording
    /// secret paths and warnings; problems go to `problems`.
    pub(crate) fn resolve(
        &mut self,
        value: &mut Value,
        path: &str,
        source: &str,
        problems: &mut Vec<Problem>,
    ) {
        match value {
            Value::String(_, text) => {
                match resolve_reference(text, path, self.require_private_files) {
                    Some(Ok(resolved)) => {
                        *text = resolved.value;
                        self.secrets.insert(path.to_owned());
                        if let Some(open) = resolved.open_file {
                            self.warnings.push(Problem {
                                source: source.to_owned(),
                                key: Some(path.to_owned()),
                                message: open.warning(),
                            });
                        }
                    }
                    Some(Err(message)) => problems.push(Problem {
                        source: source.to_owned(),
                        key: Some(path.to_owned()),
                        message,
                    }),
                    None => {}
                }
            }
            Value::Array(_, items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    self.resolve(item, &format!("{path}[{index}]"), source, problems);
                }
            }
            Value::Dict(_, dict) => {
                for (key, item) in dict.iter_mut() {
                    let inner = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.resolve(item, &inner, source, problems);
                }
            }
            _ => {}
        }
    }
}

/// Resolves every reference inside a TOML value (connector files), recording secret
/// paths and, unless `require_private_files` refuses them, secret files others may
/// access; returns the first problem.
pub(crate) fn resolve_toml(
    value: &mut toml::Value,
    path: &str,
    require_private_files: bool,
    secrets: &mut SecretPaths,
    open_files: &mut Vec<OpenSecretFile>,
) -> Result<(), String> {
    match value {
        toml::Value::String(text) => match resolve_reference(text, path, require_private_files) {
            Some(Ok(resolved)) => {
                *text = resolved.value;
                secrets.insert(path.to_owned());
                open_files.extend(resolved.open_file);
                Ok(())
            }
            Some(Err(message)) => Err(format!("`{path}`: {message}")),
            None => Ok(()),
        },
        toml::Value::Array(items) => items.iter_mut().enumerate().try_for_each(|(index, item)| {
            resolve_toml(
                item,
                &format!("{path}[{index}]"),
                require_private_files,
                secrets,
                open_files,
            )
        }),
        toml::Value::Table(table) => table.iter_mut().try_for_each(|(key, item)| {
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            resolve_toml(item, &inner, require_private_files, secrets, open_files)
        }),
        _ => Ok(()),
    }
}

/// Replaces the value at `path` (dot path, `*` for every key, `[i]` ignored) with
/// [`REDACTED`], if it is there and not empty.
pub fn redact_path(value: &mut serde_json::Value, path: &str) {
    visit_path(value, path, &mut |child| {
        let empty = child.as_str().is_some_and(str::is_empty);
        if !empty && !child.is_null() {
            *child = serde_json::Value::String(REDACTED.to_owned());
        }
    });
}

/// Calls `visit` with each value at `path` (dot path, `*` for every key, `[i]`
/// ignored), if there is one.
pub fn visit_path(
    value: &mut serde_json::Value,
    path: &str,
    visit: &mut dyn FnMut(&mut serde_json::Value),
) {
    let path = path.split('[').next().unwrap_or(path);
    let mut parts = path.splitn(2, '.');
    let Some(head) = parts.next() else {
        return;
    };
    let rest = parts.next();
    let Some(object) = value.as_object_mut() else {
        return;
    };
    let keys: Vec<String> = if head == "*" {
        object.keys().cloned().collect()
    } else {
        vec![head.to_owned()]
    };
    for key in keys {
        let Some(child) = object.get_mut(&key) else {
            continue;
        };
        match rest {
            Some(rest) => visit_path(child, rest, visit),
            None => visit(child),
        }
    }
}

/// Remembers ([`remember_secret`]) the values at the keys that are always secret
/// ([`ALWAYS_SECRET`]) in `config` (a runtime config as JSON), except where they equal
/// the value in `defaults`: the default password `iggy` is no secret, and scrubbing
/// it would garble every message that names Iggy.
pub(crate) fn remember_always_secret(
    config: &mut serde_json::Value,
    defaults: &mut serde_json::Value,
) {
    for path in ALWAYS_SECRET {
        let mut default_values = Vec::new();
        visit_path(defaults, path, &mut |value| {
            default_values.push(value.clone());
        });
        visit_path(config, path, &mut |value| {
            if let Some(text) = value.as_str()
                && !default_values.contains(value)
            {
                remember_secret(text);
            }
        });
    }
}

/// Whether a plugin config field holds a secret, by its name: it contains `password`,
/// `passwd`, `secret`, `token`, `api_key`, `apikey`, `private_key`, `credential` or
/// `authorization` (case-insensitive, `-` read as `_`). Connector authors name fields so.
pub fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "credential",
        "authorization",
    ]
    .iter()
    .any(|marker| name.contains(marker))
}

/// Replaces the values of secret-named fields ([`is_secret_field`]) inside `value`, at
/// any depth; empty values stay empty, so that "not set" still shows.
pub(crate) fn redact_secret_fields(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if is_secret_field(name) && !field.is_object() && !field.is_array() {
                    if !field.is_null() && field.as_str() != Some("") {
                        *field = serde_json::Value::String(REDACTED.to_owned());
                    }
                } else {
                    redact_secret_fields(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_secret_fields),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_nested_and_wildcard_paths() {
        let mut value = serde_json::json!({
            "iggy": { "password": "p", "token": "" },
            "connectors": { "request_headers": { "api-key": "k", "x": "y" } }
        });
        for path in ALWAYS_SECRET {
            redact_path(&mut value, path);
        }
        assert_eq!(value["iggy"]["password"], REDACTED);
        assert_eq!(value["iggy"]["token"], "", "empty values stay empty");
        assert_eq!(value["connectors"]["request_headers"]["api-key"], REDACTED);
        assert_eq!(value["connectors"]["request_headers"]["x"], REDACTED);
    }

    #[test]
    fn remembered_secrets_are_scrubbed_as_written_and_as_quoted() {
        remember_secret("scrub-\"quoted\"-secret");
        remember_secret("scrub-secret");
        remember_secret("scrub-secret-longer");
        remember_secret("json");
        assert_eq!(
            scrub_secrets("a scrub-secret-longer and a scrub-secret"),
            "a ****** and a ******",
            "the longer secret is replaced whole"
        );
        assert_eq!(
            scrub_secrets(r#"{:?} gives "scrub-\"quoted\"-secret", raw scrub-"quoted"-secret"#),
            r#"{:?} gives "******", raw ******"#
        );
        assert_eq!(scrub_secrets("json"), "json", "too short to scrub");
        remember_secret("orders");
        assert_eq!(
            scrub_secrets("topic orders, not orders_v2 or reorders; \"orders\""),
            "topic ******, not orders_v2 or reorders; \"******\"",
            "whole occurrences only"
        );
        remember_secret("it's \"quoted\" secret");
        assert_eq!(
            scrub_secrets(&format!("{:?}", "it's \"quoted\" secret")),
            "\"******\""
        );
        assert!(matches!(
            scrub_secrets("nothing secret"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn resolved_references_and_secret_fields_are_remembered() {
        let dir = std::env::temp_dir().join(format!("scrub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "resolved-scrub-value\n").unwrap();
        let resolved = resolve_reference(&format!("${{file:{}}}", file.display()), "k", false);
        assert!(matches!(resolved, Some(Ok(_))));
        assert_eq!(scrub_secrets("got resolved-scrub-value"), "got ******");
        remember_secret_fields(&serde_json::json!({
            "nested": [{ "api_token": "field-scrub-value", "plain": "plain-value" }]
        }));
        assert_eq!(
            scrub_secrets("field-scrub-value plain-value"),
            "****** plain-value"
        );
        let mut config = serde_json::json!({ "iggy": { "password": "iggy" }, "http": { "api_key": "key-scrub-value" } });
        let mut defaults =
            serde_json::json!({ "iggy": { "password": "iggy" }, "http": { "api_key": "" } });
        remember_always_secret(&mut config, &mut defaults);
        assert_eq!(
            scrub_secrets("iggy key-scrub-value"),
            "iggy ******",
            "a default is no secret"
        );
    }

    #[test]
    fn references_resolve_from_files_and_complain_when_missing() {
        let dir = std::env::temp_dir().join(format!("secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        set_mode(&file, 0o600);
        let reference = format!("${{file:{}}}", file.display());
        let resolved = resolve_reference(&reference, "k", true).unwrap().unwrap();
        assert_eq!(resolved.value, "s3cret");
        assert_eq!(resolved.open_file, None);
        assert_eq!(resolve_reference("plain", "k", true), None);
        let missing = resolve_reference("${env:SURELY_NOT_SET_ANYWHERE_42}", "k", false).unwrap();
        assert!(missing.unwrap_err().contains("SURELY_NOT_SET_ANYWHERE_42"));
    }

    #[test]
    fn devices_directories_and_huge_files_are_not_read_as_secrets() {
        for path in ["/dev/zero", "/dev/null"] {
            if std::path::Path::new(path).exists() {
                let error = read_secret_file(path, "k", false).unwrap_err();
                assert!(error.contains("not a regular file"), "{error}");
            }
        }
        let dir = std::env::temp_dir().join(format!("secret-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let error = read_secret_file(dir.to_str().unwrap(), "k", false).unwrap_err();
        assert!(error.contains("not a regular file"), "{error}");
        let huge = dir.join("huge");
        std::fs::write(&huge, vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        set_mode(&huge, 0o600);
        let error = read_secret_file(huge.to_str().unwrap(), "k", false).unwrap_err();
        assert!(error.contains("larger than"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    fn set_mode(path: &std::path::Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(not(unix))]
    fn set_mode(_path: &std::path::Path, _mode: u32) {}

    #[cfg(unix)]
    #[test]
    fn files_others_may_access_are_refused_or_warned_about_through_symlinks() {
        let dir = std::env::temp_dir().join(format!("secret-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("group-writable");
        std::fs::write(&file, "s3cret\n").unwrap();
        set_mode(&file, 0o620);
        // The link's own mode (0777) does not matter: the file it leads to is checked.
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let reference = format!("${{file:{}}}", link.display());

        let refused = resolve_reference(&reference, "a.b", true)
            .unwrap()
            .unwrap_err();
        let shown = link.display().to_string();
        assert!(refused.contains(&shown), "{refused}");
        assert!(refused.contains("0620"), "{refused}");
        assert!(refused.contains(&format!("chmod 600 {shown}")), "{refused}");
        assert!(refused.contains(REQUIRE_PRIVATE_FILES_KEY), "{refused}");

        let warned = resolve_reference(&reference, "a.b", false)
            .unwrap()
            .unwrap();
        assert_eq!(warned.value, "s3cret");
        let open = warned.open_file.unwrap();
        assert_eq!((open.key.as_str(), open.mode), ("a.b", 0o620));

        set_mode(&file, 0o400);
        let private = resolve_reference(&reference, "a.b", true).unwrap().unwrap();
        assert_eq!(private.open_file, None);
    }
}
