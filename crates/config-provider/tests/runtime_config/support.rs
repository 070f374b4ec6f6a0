//! Shared helpers: temporary config files, environment variables, failed loads.

use std::path::{Path, PathBuf};

use config_provider::load_with_env;

pub(crate) fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("config-provider-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

pub(crate) fn error_text(file: Option<&Path>, vars: Vec<(String, String)>) -> String {
    load_with_env(file, vars).unwrap_err().to_string()
}

/// The problems of a failed load, one string each (`source: \`key\`: message`).
pub(crate) fn problem_lines(file: Option<&Path>, vars: Vec<(String, String)>) -> Vec<String> {
    load_with_env(file, vars)
        .unwrap_err()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Sets the permission bits of `path` (on Unix), whatever the umask made them.
#[cfg(unix)]
pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
