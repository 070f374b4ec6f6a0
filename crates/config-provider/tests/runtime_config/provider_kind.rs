//! Keys and variables of the other config provider (local or http): warned about,
//! ignored or refused, and problems with the provider kind.

use config_provider::{ConnectorsConfig, load_with_env};

use crate::support::{env, no_env, problem_lines, temp_file};

#[test]
fn http_provider_variables_under_the_local_provider_are_accepted_with_a_warning() {
    // The README's example, pasted without choosing the http provider.
    let loaded = load_with_env(
        None,
        env(&[
            (
                "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS",
                r#"{ api-key = "k" }"#,
            ),
            ("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS", "7"),
            ("IGGY_CONNECTORS_IGGY_ADDRESS", "iggy:8090"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.config.connectors, ConnectorsConfig::default());
    assert_eq!(loaded.config.iggy.address, "iggy:8090");
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS: `connectors.request_headers`: only the http provider reads it, and connectors.config_type is \"local\" (the default), so it is ignored; set IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE=http to use it",
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS: `connectors.retry.max_attempts`: only the http provider reads it, and connectors.config_type is \"local\" (the default), so it is ignored; set IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE=http to use it",
        ]
    );

    // The same under a file that chose "local" itself: still only a warning, naming it.
    let file = temp_file(
        "local-kind.toml",
        "[connectors]\nconfig_type = \"local\"\nconfig_dir = \"c\"\n",
    );
    let loaded = load_with_env(
        Some(&file),
        env(&[("IGGY_CONNECTORS_CONNECTORS_TIMEOUT", "5s")]),
    )
    .unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(
        loaded.warnings[0].source,
        "IGGY_CONNECTORS_CONNECTORS_TIMEOUT"
    );
    assert!(
        loaded.warnings[0].message.contains(&format!(
            "{} sets connectors.config_type = \"local\"",
            file.display()
        )),
        "{}",
        loaded.warnings[0]
    );

    // And the other way round: the local provider's directory under the http provider.
    let loaded = load_with_env(
        None,
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "http://configs"),
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR", "connectors"),
        ]),
    )
    .unwrap();
    assert!(matches!(
        loaded.config.connectors,
        ConnectorsConfig::Http(_)
    ));
    assert_eq!(
        loaded.warnings[0].to_string(),
        "IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR: `connectors.config_dir`: only the local provider reads it, and IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE sets connectors.config_type to \"http\", so it is ignored; set IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE=local to use it"
    );
}

#[test]
fn a_file_key_of_the_other_provider_is_refused_unless_a_variable_switched_the_kind() {
    let file = temp_file(
        "headers-no-kind.toml",
        "[connectors]\nrequest_headers = { api-key = \"k\" }\n",
    );
    assert_eq!(
        problem_lines(Some(&file), no_env()),
        [format!(
            "{}: `connectors.request_headers`: only the http provider reads it, but connectors.config_type is \"local\" (the default): set config_type = \"http\" in [connectors] (or IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE=http), or remove the key",
            file.display()
        )]
    );

    let file = temp_file(
        "http-file.toml",
        "[connectors]\nconfig_type = \"http\"\nbase_url = \"http://configs\"\ntimeout = \"5s\"\n",
    );
    let loaded = load_with_env(
        Some(&file),
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "local"),
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR", "c"),
        ]),
    )
    .unwrap();
    let ConnectorsConfig::Local(local) = &loaded.config.connectors else {
        panic!("the variable chose local");
    };
    assert_eq!(local.config_dir, "c");
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            format!(
                "{}: `connectors.base_url`: only the http provider reads it, and IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE sets connectors.config_type to \"local\", so it is ignored",
                file.display()
            ),
            format!(
                "{}: `connectors.timeout`: only the http provider reads it, and IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE sets connectors.config_type to \"local\", so it is ignored",
                file.display()
            ),
        ]
    );
}

#[test]
fn per_connector_overrides_under_the_http_provider_are_warned_about() {
    let loaded = load_with_env(
        None,
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "http://configs"),
            ("IGGY_CONNECTORS_SINK_STDOUT_ENABLED", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(
        loaded
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "IGGY_CONNECTORS_SINK_STDOUT_ENABLED: per-connector overrides apply only to the local provider's connectors, and IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE sets connectors.config_type to \"http\", so it is ignored; change the connector's config in the configuration service instead"
        ]
    );
    // Under the local provider they are the provider's business: no warning here.
    let loaded = load_with_env(
        None,
        env(&[("IGGY_CONNECTORS_SINK_STDOUT_ENABLED", "false")]),
    )
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn a_problem_with_the_provider_kind_is_reported_with_every_other_one() {
    let lines = problem_lines(
        None,
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_IGGY_TLS_ENABLED", "true"),
            ("IGGY_CONNECTORS_LOGGING_FORMAT", "xml"),
        ]),
    );
    let sources: Vec<&str> = lines
        .iter()
        .map(|line| line.split(':').next().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            "IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE",
            "IGGY_CONNECTORS_LOGGING_FORMAT",
        ],
        "{lines:?}"
    );
    // Once the config extracts, the checks of the whole run too.
    let lines = problem_lines(
        None,
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_IGGY_TLS_ENABLED", "true"),
        ]),
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].starts_with("IGGY_CONNECTORS_IGGY_TLS_ENABLED: "),
        "{lines:?}"
    );
}
