//! The one list of the connectors bundled with iggy-connectors.
//!
//! The list is this crate's `Cargo.toml`: every dependency named `iggy_connector_*` is
//! a bundled connector, and `build.rs` generates [`BUNDLED`] from those lines.
//! Everything that names the bundled connectors follows it:
//!
//! - the binary links them in through this crate (`demo` registers [`plugins`]);
//! - the workspace builds every connector directory
//!   (`crates/connectors/{sinks,sources}/*`), and `tests/bundled.rs` fails when a
//!   directory is not on the list or the list names a crate that is not a connector
//!   directory of the right kind;
//! - the tests crate depends on this one, so `cargo test --workspace` builds every
//!   bundled connector's shared library before the tests load them;
//! - the Dockerfile builds `-p 'iggy_connector_*'` (every such workspace package is on
//!   the list, `tests/dockerfile.rs` checks it) and installs their libraries;
//! - the README's table of bundled connectors and their reference pages under
//!   `docs/connectors/` are generated from [`BUNDLED`] and each connector's config
//!   schema (`tests/readme.rs`, `tests/connector_docs.rs`).
//!
//! Adding a connector: its crate under `crates/connectors/sinks/<name>` or
//! `crates/connectors/sources/<name>` (copy `crates/connectors/template`), and one line
//! in this crate's `[dependencies]`. See `docs/writing-a-connector.md`.
//!
//! ```
//! let names: Vec<String> = bundled_connectors::plugins()?
//!     .into_iter()
//!     .map(|(name, _)| name)
//!     .collect();
//! assert!(names.contains(&"stdout".to_owned()));
//! # Ok::<(), plugin_host::LoadError>(())
//! ```

use connector_sdk::abi::ConnectorDescriptor;
use plugin_host::{LoadError, Plugin};

/// A connector on the list, linked into this crate.
#[derive(Debug, Clone, Copy)]
pub struct BundledConnector {
    /// Its crate (and Rust library) name, `iggy_connector_<name>_<kind>`: the shared
    /// library is [`library_file_name`] of it.
    pub crate_name: &'static str,
    /// Its descriptor, the `descriptor()` its `export_sink!`/`export_source!` made.
    pub descriptor: fn() -> &'static ConnectorDescriptor,
}

impl BundledConnector {
    /// The connector as a plugin linked into this program.
    pub fn plugin(&self) -> Result<Plugin, LoadError> {
        Plugin::from_static((self.descriptor)())
    }

    /// The file name of its shared library on this platform.
    pub fn library_file_name(&self) -> String {
        library_file_name(self.crate_name)
    }
}

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Every bundled connector as a linked-in plugin, under its descriptor's name
/// (`"stdout"`, `"random"`, ...), in the order of [`BUNDLED`].
pub fn plugins() -> Result<Vec<(String, Plugin)>, LoadError> {
    BUNDLED
        .iter()
        .map(|connector| {
            let plugin = connector.plugin()?;
            Ok((plugin.name().to_owned(), plugin))
        })
        .collect()
}

/// The file name of the shared library of the crate `crate_name` on this platform:
/// `libiggy_connector_stdout_sink.so` on Linux.
///
/// ```
/// let file = bundled_connectors::library_file_name("iggy_connector_stdout_sink");
/// assert!(file.contains("iggy_connector_stdout_sink."), "{file}");
/// ```
pub fn library_file_name(crate_name: &str) -> String {
    format!(
        "{}{crate_name}.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_connector_loads_under_a_name_of_its_own() {
        let plugins = plugins().expect("every bundled descriptor is valid");
        assert_eq!(plugins.len(), BUNDLED.len());
        let mut names: Vec<&str> = plugins.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            BUNDLED.len(),
            "a descriptor name is taken twice"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn library_file_names_are_the_platforms() {
        assert_eq!(
            library_file_name("iggy_connector_null_sink"),
            "libiggy_connector_null_sink.so"
        );
    }
}
