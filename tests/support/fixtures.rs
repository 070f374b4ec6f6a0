//! Where upstream's config files are: the steering repository's shared fixtures, beside
//! the workspace. Included with `#[path]` by the tests that read them (the tests crate,
//! which re-exports [`upstream_connectors_dir`], and `config-provider`'s tests, which
//! cannot depend on it: it depends on them).
//!
//! A missing directory fails the test, naming the path, in every run: a test that
//! returned early without its fixtures would pass having checked nothing.

// Each includer uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `shared/fixtures/upstream-configs`: upstream's runtime configs, and its connector
/// configs in `connectors/`.
///
/// # Panics
/// If the directory is not there.
pub fn upstream_configs_dir() -> PathBuf {
    // The including crate's manifest: the workspace is the first directory above it
    // with the lock file, whichever crate includes this.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or_else(|| panic!("no Cargo.lock above {}", manifest.display()));
    let dir = workspace
        .parent()
        .unwrap_or(workspace)
        .join("shared/fixtures/upstream-configs");
    assert!(
        dir.is_dir(),
        "upstream config fixtures missing at {} (the steering repository's shared \
         fixtures, beside the workspace)",
        dir.display()
    );
    dir
}

/// `upstream-configs/connectors`: upstream's connector configs.
///
/// # Panics
/// If the directory is not there.
pub fn upstream_connectors_dir() -> PathBuf {
    let dir = upstream_configs_dir().join("connectors");
    assert!(
        dir.is_dir(),
        "upstream connector config fixtures missing at {}",
        dir.display()
    );
    dir
}
