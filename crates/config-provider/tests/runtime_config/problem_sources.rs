//! Which file or variable a problem names: exactly the one that caused it, never one
//! nobody set.

use config_provider::load_with_env;

use crate::support::{env, no_env, problem_lines, temp_file};

#[test]
fn problems_caused_by_a_variable_name_exactly_that_variable() {
    // TLS enabled alone: the variable that enabled it, and what else to set.
    assert_eq!(
        problem_lines(None, env(&[("IGGY_CONNECTORS_IGGY_TLS_ENABLED", "true")])),
        [
            "IGGY_CONNECTORS_IGGY_TLS_ENABLED: `iggy.tls.enabled`: TLS to Iggy needs the CA certificate that signed the server's: set iggy.tls.ca_file (IGGY_CONNECTORS_IGGY_TLS_CA_FILE) to its PEM file"
        ]
    );
    let loaded = load_with_env(
        None,
        env(&[
            ("IGGY_CONNECTORS_IGGY_TLS_ENABLED", "true"),
            ("IGGY_CONNECTORS_IGGY_TLS_CA_FILE", "ca.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.config.iggy.tls.ca_file, "ca.pem");
    // Enabled in a file, the file is named.
    let file = temp_file("tls.toml", "[iggy.tls]\nenabled = true\n");
    let lines = problem_lines(Some(&file), no_env());
    assert!(
        lines[0].starts_with(&format!("{}: `iggy.tls.enabled`: ", file.display())),
        "{lines:?}"
    );

    // The http provider chosen without its URL: named by the variable that chose it.
    assert_eq!(
        problem_lines(
            None,
            env(&[("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http")])
        ),
        [
            "IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE: `connectors.base_url`: is required with the http provider: set IGGY_CONNECTORS_CONNECTORS_BASE_URL to the configuration service's URL (or base_url in [connectors])"
        ]
    );
    assert_eq!(
        problem_lines(
            None,
            env(&[("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "remote")])
        ),
        [
            "IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE: `connectors.config_type`: expected \"local\" or \"http\", got \"remote\""
        ]
    );

    // Values checked after the layers merge, and values serde refuses inside
    // `[connectors]` (a tagged enum, which used to lose the key).
    let http = [
        ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
        ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "http://configs"),
    ];
    for (name, value, expected) in [
        (
            "IGGY_CONNECTORS_CONNECTORS_BASE_URL",
            "configs.example",
            "IGGY_CONNECTORS_CONNECTORS_BASE_URL: `connectors.base_url`: expected an http:// or https:// URL",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS",
            "-1",
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS: `connectors.retry.max_attempts`: expected a whole number from 0 to 4294967295",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS",
            "0",
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS: `connectors.retry.max_attempts`: must be at least 1",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_RETRY_INITIAL_BACKOFF",
            "1m",
            "IGGY_CONNECTORS_CONNECTORS_RETRY_INITIAL_BACKOFF: `connectors.retry.initial_backoff`: initial_backoff (60s) is longer than max_backoff (30s)",
        ),
        (
            "IGGY_CONNECTORS_IGGY_USERNAME",
            "",
            "IGGY_CONNECTORS_IGGY_USERNAME: `iggy.username`: is empty and no token is set: no credentials; set iggy.username (IGGY_CONNECTORS_IGGY_USERNAME) and iggy.password (IGGY_CONNECTORS_IGGY_PASSWORD), or iggy.token (IGGY_CONNECTORS_IGGY_TOKEN)",
        ),
        (
            "IGGY_CONNECTORS_IGGY_ADDRESS",
            " ",
            "IGGY_CONNECTORS_IGGY_ADDRESS: `iggy.address`: is empty",
        ),
        (
            "IGGY_CONNECTORS_HTTP_TLS_ENABLED",
            "true",
            "IGGY_CONNECTORS_HTTP_TLS_ENABLED: `http.tls.enabled`: serving the API over TLS needs a certificate chain and its private key (PEM): set http.tls.cert_file (IGGY_CONNECTORS_HTTP_TLS_CERT_FILE) and http.tls.key_file (IGGY_CONNECTORS_HTTP_TLS_KEY_FILE)",
        ),
        (
            "IGGY_CONNECTORS_TELEMETRY_ENABLED",
            "true",
            "IGGY_CONNECTORS_TELEMETRY_ENABLED: `telemetry.enabled`: ",
        ),
        (
            "IGGY_CONNECTORS_LOGGING_FORMAT",
            "xml",
            "IGGY_CONNECTORS_LOGGING_FORMAT: `logging.format`: expected \"text\" or \"json\", got \"xml\"",
        ),
    ] {
        let mut vars = env(&http);
        vars.retain(|(set, _)| set != name);
        vars.push((name.to_owned(), value.to_owned()));
        let lines = problem_lines(None, vars);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(lines[0].starts_with(expected), "{name}: {lines:?}");
    }

    // A value of the file overridden by a variable is the variable's fault.
    let file = temp_file(
        "backoff.toml",
        "[connectors]\nconfig_type = \"http\"\nbase_url = \"http://configs\"\n[connectors.retry]\ninitial_backoff = \"5s\"\n",
    );
    let lines = problem_lines(
        Some(&file),
        env(&[("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_BACKOFF", "1s")]),
    );
    assert!(
        lines[0].starts_with(
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_BACKOFF: `connectors.retry.max_backoff`: "
        ),
        "{lines:?}"
    );
}

#[test]
fn no_problem_names_a_variable_nobody_set() {
    // Every problem a variable can cause is named by a variable from this list (or a
    // file); `IGGY_CONNECTORS_CONNECTORS`, a table's made-up name, never appears.
    let cases: &[&[(&str, &str)]] = &[
        &[("IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS", "nonsense")],
        &[("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http")],
        &[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "http://x"),
            ("IGGY_CONNECTORS_CONNECTORS_RETRY_BACKOFF_MULTIPLIER", "-3"),
        ],
        &[("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "HTTP")],
    ];
    for vars in cases {
        let error = load_with_env(None, env(vars)).unwrap_err();
        for problem in &error.problems {
            assert!(
                vars.iter().any(|(name, _)| problem.source == *name),
                "{problem} is not named by one of {vars:?}"
            );
        }
    }
}
