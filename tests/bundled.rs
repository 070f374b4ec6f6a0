//! The list of bundled connectors (`crates/connectors/bundled/Cargo.toml`, read into
//! `bundled_connectors::BUNDLED`) and the workspace agree, so a new bundled connector
//! is its crate plus one line of that list, and nothing else:
//!
//! - every connector directory (`crates/connectors/{sinks,sources}/*`, members through
//!   the root's globs) is on the list, and the list names nothing else;
//! - every listed crate is named `iggy_connector_<dir>_<kind>`, builds a `cdylib` and
//!   an `rlib`, and exports a descriptor of its directory's kind, under a name no other
//!   bundled connector has;
//! - no other workspace package is named `iggy_connector_*` (the Dockerfile builds
//!   them all by that pattern);
//! - each one's library is built for the tests and loads, and says what it says linked.
//!
//! Everything else follows the list by itself: the binary (`demo`), the tests' build
//! of the libraries, the Dockerfile (`tests/dockerfile.rs`), the README's table
//! (`tests/readme.rs`) and `docs/connectors/` (`tests/connector_docs.rs`).

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bundled_connectors::BUNDLED;
use iggy_connectors_tests::{CONNECTOR_DIRS, connector_crates, plugin_library, workspace_packages};
use plugin_host::{Plugin, PluginLoader};

const LIST: &str = "crates/connectors/bundled/Cargo.toml";

fn listed() -> BTreeSet<&'static str> {
    BUNDLED
        .iter()
        .map(|connector| connector.crate_name)
        .collect()
}

#[test]
fn every_connector_directory_is_on_the_list_and_the_list_names_nothing_else() {
    let directories: BTreeMap<String, String> = connector_crates()
        .into_iter()
        .map(|(package, _)| (package.name, package.dir.display().to_string()))
        .collect();
    let listed = listed();
    let unlisted: Vec<String> = directories
        .iter()
        .filter(|(name, _)| !listed.contains(name.as_str()))
        .map(|(name, dir)| {
            let path = dir.trim_start_matches("crates/connectors/");
            format!("{name} = {{ path = \"../{path}\" }}")
        })
        .collect();
    assert!(
        unlisted.is_empty(),
        "connector crates missing from the list: add to [dependencies] of {LIST}:\n{}",
        unlisted.join("\n")
    );
    let strangers: Vec<&&str> = listed
        .iter()
        .filter(|name| !directories.contains_key(**name))
        .collect();
    assert!(
        strangers.is_empty(),
        "{LIST} lists crates that are not under {:?}: {strangers:?}",
        CONNECTOR_DIRS.map(|(dir, _)| dir)
    );
}

/// A new directory is a workspace member without touching the root Cargo.toml.
#[test]
fn the_connector_directories_are_members_by_glob() {
    let root: toml::Table = toml::from_str(
        &std::fs::read_to_string(iggy_connectors_tests::workspace_dir().join("Cargo.toml"))
            .unwrap(),
    )
    .unwrap();
    let members: Vec<&str> = root["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member.as_str().unwrap())
        .collect();
    for (dir, _) in CONNECTOR_DIRS {
        assert!(
            members.contains(&format!("{dir}/*").as_str()),
            "the root Cargo.toml's members lack \"{dir}/*\": {members:?}"
        );
    }
}

#[test]
fn every_bundled_connector_is_named_built_and_declared_as_its_directory_says() {
    let mut names: BTreeMap<String, &str> = BTreeMap::new();
    for (package, kind) in connector_crates() {
        let dir = package
            .dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('-', "_");
        let expected = format!("iggy_connector_{dir}_{kind}");
        assert_eq!(
            package.name,
            expected,
            "{}: a connector crate is named iggy_connector_<directory>_<kind>",
            package.dir.display()
        );
        let mut types = package.crate_types();
        types.sort_unstable();
        assert_eq!(
            types,
            ["cdylib", "rlib"],
            "{}: crate-type must be [\"cdylib\", \"rlib\"] (a library the runtime loads, and \
             one the binary links)",
            package.name
        );
        let Some(bundled) = BUNDLED.iter().find(|c| c.crate_name == package.name) else {
            continue; // reported by the test above
        };
        let plugin = bundled.plugin().unwrap();
        assert_eq!(
            plugin.kind(),
            kind,
            "{} is under {} but its descriptor is a {}",
            package.name,
            package.dir.display(),
            plugin.kind()
        );
        if let Some(other) = names.insert(plugin.name().to_owned(), bundled.crate_name) {
            panic!(
                "{} and {other} both call themselves {:?}: the demo and docs/connectors/ \
                 name connectors by it",
                bundled.crate_name,
                plugin.name()
            );
        }
    }
}

/// The Dockerfile builds `-p 'iggy_connector_*'`: that pattern must mean the list.
#[test]
fn only_bundled_connectors_are_named_iggy_connector() {
    let listed = listed();
    let strangers: Vec<String> = workspace_packages()
        .into_keys()
        .filter(|name| name.starts_with("iggy_connector_") && !listed.contains(name.as_str()))
        .collect();
    assert!(
        strangers.is_empty(),
        "workspace packages named iggy_connector_* that are not bundled: {strangers:?}"
    );
}

/// The tests crate depends on the list, so cargo built every bundled connector's
/// library before this test; each loads and is the connector linked in.
#[test]
fn every_bundled_library_is_built_and_matches_its_linked_descriptor() {
    for connector in BUNDLED {
        let path = plugin_library(connector.crate_name);
        assert_eq!(
            path.file_name().unwrap().to_string_lossy(),
            connector.library_file_name()
        );
        let loaded = PluginLoader::new()
            .load(&path.display().to_string())
            .unwrap();
        let linked: Plugin = connector.plugin().unwrap();
        assert_eq!(
            (
                loaded.name(),
                loaded.kind(),
                loaded.version(),
                loaded.config_schema()
            ),
            (
                linked.name(),
                linked.kind(),
                linked.version(),
                linked.config_schema()
            ),
            "{}",
            connector.crate_name
        );
    }
}

/// The template is compiled and tested with the workspace, and a copy of it is a
/// connector crate; it is not bundled.
#[test]
fn the_template_is_a_member_shaped_like_a_connector_but_not_bundled() {
    let packages = workspace_packages();
    let template = packages
        .values()
        .find(|package| package.dir.ends_with("crates/connectors/template"))
        .expect("crates/connectors/template is a workspace member");
    assert!(
        !template.name.starts_with("iggy_connector_"),
        "{}",
        template.name
    );
    assert!(!listed().contains(template.name.as_str()));
    let mut types = template.crate_types();
    types.sort_unstable();
    assert_eq!(types, ["cdylib", "rlib"]);
    assert!(
        !CONNECTOR_DIRS
            .iter()
            .any(|(dir, _)| template.dir.starts_with(dir))
    );
}
