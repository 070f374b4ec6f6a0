//! Secrets: resolved from the environment and from files, redacted when shown.

use config_provider::{REDACTED, load_with_env};

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
