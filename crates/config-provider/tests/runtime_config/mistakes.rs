//! Mistakes in the file or the environment: unknown keys, wrong types, missing values
//! and files.

use std::path::PathBuf;

use crate::support::{env, error_text, no_env, temp_file};

#[test]
fn unknown_keys_are_errors_with_the_nearest_valid_key() {
    let file = temp_file(
        "typo.toml",
        "[iggy]\nadress = \"x\"\n[http.cors]\nallowed_origin = []\n[nonsense]\n",
    );
    let text = error_text(Some(&file), no_env());
    assert!(text.contains("3 problems"), "{text}");
    assert!(
        text.contains(&format!(
            "{}: `iggy.adress`: unknown key; did you mean `iggy.address`?",
            file.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "`http.cors.allowed_origin`: unknown key; did you mean `http.cors.allowed_origins`?"
        ),
        "{text}"
    );
    assert!(text.contains("`nonsense`: unknown key"), "{text}");

    let text = error_text(None, env(&[("IGGY_CONNECTORS_IGGY_USRNAME", "x")]));
    assert!(text.contains("IGGY_CONNECTORS_IGGY_USRNAME: unknown variable; did you mean IGGY_CONNECTORS_IGGY_USERNAME?"), "{text}");
}

#[test]
fn wrong_types_name_the_file_key_and_expected_type() {
    let file = temp_file(
        "types.toml",
        "[http]\nenabled = \"yes\"\n[connectors]\nconfig_type = \"local\"\nconfig_dir = 5\n",
    );
    let text = error_text(Some(&file), no_env());
    let source = file.display().to_string();
    assert!(
        text.contains(&format!(
            "{source}: `http.enabled`: expected a boolean (true or false), found the string \"yes\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{source}: `connectors.config_dir`: expected a string, found the integer 5"
        )),
        "{text}"
    );

    let text = error_text(None, env(&[("IGGY_CONNECTORS_HTTP_CORS_ENABLED", "maybe")]));
    assert!(
        text.contains("IGGY_CONNECTORS_HTTP_CORS_ENABLED: `http.cors.enabled`: expected a boolean"),
        "{text}"
    );

    let file = temp_file(
        "duration.toml",
        "[connectors]\nconfig_type = \"http\"\nbase_url = \"http://x\"\ntimeout = \"soon\"\n",
    );
    let text = error_text(Some(&file), no_env());
    assert!(
        text.contains("`connectors.timeout`: invalid duration \"soon\""),
        "{text}"
    );
    let text = error_text(
        None,
        env(&[("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_BACKOFF", "forever")]),
    );
    assert!(text.contains("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_BACKOFF: `connectors.retry.max_backoff`: invalid duration"), "{text}");

    let text = error_text(
        None,
        env(&[("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS", "lots")]),
    );
    assert!(
        text.contains("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS"),
        "{text}"
    );
    assert!(text.contains("expected an integer"), "{text}");
}

#[test]
fn missing_required_values_and_files_are_named() {
    let file = temp_file("no-url.toml", "[connectors]\nconfig_type = \"http\"\n");
    let text = error_text(Some(&file), no_env());
    assert!(text.contains("base_url"), "{text}");

    let missing = PathBuf::from("/nonexistent/dir/config.toml");
    let text = error_text(Some(&missing), no_env());
    assert!(text.contains("/nonexistent/dir/config.toml"), "{text}");
    assert!(text.contains("cannot read"), "{text}");

    let file = temp_file("no-creds.toml", "[iggy]\nusername = \"\"\n");
    let text = error_text(Some(&file), no_env());
    assert!(text.contains("no credentials"), "{text}");

    let file = temp_file("telemetry.toml", "[telemetry]\nenabled = true\n");
    assert!(error_text(Some(&file), no_env()).contains("telemetry.enabled"));

    let file = temp_file(
        "bad-url.toml",
        "[connectors]\nconfig_type = \"http\"\nbase_url = \"configs.example\"\n",
    );
    assert!(error_text(Some(&file), no_env()).contains("http:// or https://"));
}

/// An API served off loopback with no api key would let anyone who reaches it load a
/// library: refused, naming the variable that moved it and both ways out, unless a key
/// is set or the risk is accepted; on loopback it is allowed.
#[test]
fn an_open_api_off_loopback_is_refused_unless_a_key_or_the_risk_is_set() {
    let open = [("IGGY_CONNECTORS_HTTP_ADDRESS", "0.0.0.0:8081")];
    let text = error_text(None, env(&open));
    assert!(
        text.contains("IGGY_CONNECTORS_HTTP_ADDRESS: `http.address`: serves the HTTP API on 0.0.0.0:8081 with no api key"),
        "{text}"
    );
    assert!(
        text.contains("http.api_key (IGGY_CONNECTORS_HTTP_API_KEY)")
            && text.contains(
                "http.allow_unauthenticated (IGGY_CONNECTORS_HTTP_ALLOW_UNAUTHENTICATED) = true"
            ),
        "{text}"
    );
    for fix in [
        ("IGGY_CONNECTORS_HTTP_API_KEY", "k"),
        ("IGGY_CONNECTORS_HTTP_ALLOW_UNAUTHENTICATED", "true"),
        ("IGGY_CONNECTORS_HTTP_ENABLED", "false"),
    ] {
        let loaded = config_provider::load_with_env(None, env(&[open[0], fix]));
        assert!(loaded.is_ok(), "{fix:?}: {:?}", loaded.err());
    }
    let loopback = [("IGGY_CONNECTORS_HTTP_ADDRESS", "127.0.0.1:9000")];
    assert!(config_provider::load_with_env(None, env(&loopback)).is_ok());
}

/// Connection limits of zero would refuse every request: each is named.
#[test]
fn zero_connection_limits_are_refused() {
    for (variable, value, key) in [
        (
            "IGGY_CONNECTORS_HTTP_MAX_CONNECTIONS",
            "0",
            "`http.max_connections`",
        ),
        (
            "IGGY_CONNECTORS_HTTP_HEADER_READ_TIMEOUT",
            "0s",
            "`http.header_read_timeout`",
        ),
        (
            "IGGY_CONNECTORS_HTTP_REQUEST_TIMEOUT",
            "0ms",
            "`http.request_timeout`",
        ),
    ] {
        let text = error_text(None, env(&[(variable, value)]));
        assert!(text.contains(&format!("{variable}: {key}")), "{text}");
    }
}

/// CORS for every origin on an API with no key would let any web page drive it.
#[test]
fn cors_for_every_origin_needs_a_key() {
    let open = [("IGGY_CONNECTORS_HTTP_CORS_ENABLED", "true")];
    let text = error_text(None, env(&open));
    assert!(
        text.contains("allows every origin with no api key")
            && text.contains("IGGY_CONNECTORS_HTTP_CORS_ALLOWED_ORIGINS"),
        "{text}"
    );
    for fix in [
        ("IGGY_CONNECTORS_HTTP_API_KEY", "k"),
        (
            "IGGY_CONNECTORS_HTTP_CORS_ALLOWED_ORIGINS",
            "https://ui.example",
        ),
    ] {
        let loaded = config_provider::load_with_env(None, env(&[open[0], fix]));
        assert!(loaded.is_ok(), "{fix:?}: {:?}", loaded.err());
    }
}
