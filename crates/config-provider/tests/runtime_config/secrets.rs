//! Secrets: resolved from the environment and from files, redacted when shown; secret
//! files others may access refused or warned about (`secrets.require_private_files`).

#[cfg(unix)]
use std::path::PathBuf;

use config_provider::{REDACTED, load_with_env};

#[cfg(unix)]
use crate::support::{env, problem_lines, set_mode};
use crate::support::{error_text, no_env, temp_file};

#[test]
fn secrets_resolve_from_env_and_files_and_are_redacted() {
    let secret_file = temp_file("api-key", "file-secret\n");
    let token_file = temp_file("token", "  pat-from-file \n");
    // A variable cargo sets for every test process stands for the secret.
    let env_secret = std::env::var("CARGO_PKG_NAME").unwrap();
    let text = format!(
        "[iggy]\npassword = \"${{env:CARGO_PKG_NAME}}\"\ntoken = \"file:{}\"\n[http]\napi_key = \"${{file:{}}}\"\n[state]\npath = \"plain\"\n",
        token_file.display(),
        secret_file.display()
    );
    let file = temp_file("secrets.toml", &text);
    let loaded = load_with_env(Some(&file), no_env()).unwrap();
    assert_eq!(loaded.config.iggy.password, env_secret);
    assert_eq!(loaded.config.iggy.token, "pat-from-file");
    assert_eq!(loaded.config.http.api_key, "file-secret");
    let redacted = loaded.redacted();
    assert_eq!(redacted["iggy"]["password"], REDACTED);
    assert_eq!(redacted["iggy"]["token"], REDACTED);
    assert_eq!(redacted["http"]["api_key"], REDACTED);
    assert_eq!(redacted["state"]["path"], "plain");
    let shown = redacted.to_string();
    for secret in [env_secret.as_str(), "pat-from-file", "file-secret"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }

    let file = temp_file(
        "missing-secret.toml",
        "[iggy]\npassword = \"${env:CONFIG_PROVIDER_TEST_UNSET}\"\n",
    );
    let text = error_text(Some(&file), no_env());
    assert!(text.contains("`iggy.password`"), "{text}");
    assert!(text.contains("CONFIG_PROVIDER_TEST_UNSET"), "{text}");
}

/// A secret file with mode `mode`, and a config whose `http.api_key` is read from it
/// (`extra` added to the config).
#[cfg(unix)]
fn api_key_from_file(name: &str, mode: u32, extra: &str) -> (PathBuf, PathBuf) {
    let secret = temp_file(&format!("{name}-key"), "k3y\n");
    set_mode(&secret, mode);
    let config = temp_file(
        &format!("{name}.toml"),
        &format!(
            "{extra}\n[http]\napi_key = \"${{file:{}}}\"\n",
            secret.display()
        ),
    );
    (secret, config)
}

#[cfg(unix)]
#[test]
fn a_secret_file_others_can_read_is_refused_when_private_files_are_required() {
    let (secret, config) = api_key_from_file(
        "world-readable-required",
        0o644,
        "[secrets]\nrequire_private_files = true",
    );
    let lines = problem_lines(Some(&config), no_env());
    let [line] = lines.as_slice() else {
        panic!("one problem expected: {lines:?}");
    };
    let secret = secret.display().to_string();
    assert!(line.starts_with(&config.display().to_string()), "{line}");
    assert!(line.contains("`http.api_key`"), "{line}");
    assert!(
        line.contains(&format!("secret file {secret} has mode 0644")),
        "{line}"
    );
    assert!(line.contains(&format!("chmod 600 {secret}")), "{line}");
}

#[cfg(unix)]
#[test]
fn a_secret_file_others_can_read_loads_with_a_warning_by_default() {
    let (secret, config) = api_key_from_file("world-readable", 0o644, "");
    let loaded = load_with_env(Some(&config), no_env()).unwrap();
    assert_eq!(loaded.config.http.api_key, "k3y");
    let [warning] = loaded.warnings.as_slice() else {
        panic!("one warning expected: {:?}", loaded.warnings);
    };
    assert_eq!(warning.source, config.display().to_string());
    assert_eq!(warning.key.as_deref(), Some("http.api_key"));
    let secret = secret.display().to_string();
    assert!(warning.message.contains(&secret), "{warning}");
    assert!(warning.message.contains("0644"), "{warning}");
    assert!(
        warning.message.contains(&format!("chmod 600 {secret}")),
        "{warning}"
    );
    // Any access for the group or others counts, not only reading.
    let (_, config) = api_key_from_file("group-writable", 0o620, "");
    assert_eq!(
        load_with_env(Some(&config), no_env())
            .unwrap()
            .warnings
            .len(),
        1
    );
}

#[cfg(unix)]
#[test]
fn a_private_secret_file_gives_neither_problem_nor_warning() {
    for (name, extra) in [
        (
            "private-required",
            "[secrets]\nrequire_private_files = true",
        ),
        ("private", ""),
    ] {
        let (_, config) = api_key_from_file(name, 0o600, extra);
        let loaded = load_with_env(Some(&config), no_env()).unwrap();
        assert_eq!(loaded.config.http.api_key, "k3y");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}

#[cfg(unix)]
#[test]
fn private_files_can_be_required_from_the_environment() {
    const FLAG: &str = "IGGY_CONNECTORS_SECRETS_REQUIRE_PRIVATE_FILES";
    // The flag from a variable refuses a file the config file names...
    let (secret, config) = api_key_from_file("env-flag", 0o640, "");
    let text = error_text(Some(&config), env(&[(FLAG, "true")]));
    assert!(text.contains("`http.api_key`"), "{text}");
    assert!(
        text.contains(&format!("{} has mode 0640", secret.display())),
        "{text}"
    );
    // ...and one a variable names, the problem named by that variable.
    let reference = format!("${{file:{}}}", secret.display());
    let lines = problem_lines(
        None,
        env(&[(FLAG, "1"), ("IGGY_CONNECTORS_HTTP_API_KEY", &reference)]),
    );
    let [line] = lines.as_slice() else {
        panic!("one problem expected: {lines:?}");
    };
    assert!(
        line.starts_with("IGGY_CONNECTORS_HTTP_API_KEY: `http.api_key`: "),
        "{line}"
    );
    assert!(
        line.contains(&format!("chmod 600 {}", secret.display())),
        "{line}"
    );
    // A variable turning the flag off overrides the file: a warning only.
    let (_, config) = api_key_from_file(
        "env-flag-off",
        0o644,
        "[secrets]\nrequire_private_files = true",
    );
    let loaded = load_with_env(Some(&config), env(&[(FLAG, "false")])).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(!loaded.config.secrets.require_private_files);
}

/// `iggy.token = "file:<path>"` (upstream's form of a token file) gets the same check
/// as `${file:...}`.
#[cfg(unix)]
#[test]
fn a_token_file_others_can_read_is_checked_like_any_secret_file() {
    let token = temp_file("open-token", "pat-1\n");
    set_mode(&token, 0o644);
    let body = format!("[iggy]\ntoken = \"file:{}\"\n", token.display());
    let warned = temp_file("token-warned.toml", &body);
    let loaded = load_with_env(Some(&warned), no_env()).unwrap();
    assert_eq!(loaded.config.iggy.token, "pat-1");
    let [warning] = loaded.warnings.as_slice() else {
        panic!("one warning expected: {:?}", loaded.warnings);
    };
    assert_eq!(warning.key.as_deref(), Some("iggy.token"));
    assert!(warning.message.contains("0644"), "{warning}");
    let refused = temp_file(
        "token-refused.toml",
        &format!("{body}[secrets]\nrequire_private_files = true\n"),
    );
    let text = error_text(Some(&refused), no_env());
    assert!(
        text.contains("`iggy.token`") && text.contains("chmod 600"),
        "{text}"
    );
}
