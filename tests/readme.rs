//! The README's configuration reference ("### Every key") is generated from
//! `configs/config.toml`, the commented reference config, which names exactly the keys
//! the runtime reads; its table of bundled connectors ("## Bundled connectors") from
//! the bundled list (`bundled_connectors::BUNDLED`), each connector's package
//! description and its config schema.

use std::collections::BTreeSet;
use std::path::PathBuf;

const START: &str = "<!-- configuration reference: generated from configs/config.toml -->\n";
const END: &str = "<!-- end of configuration reference -->";
const REGENERATE: &str =
    "run `UPDATE_README=1 cargo test -p iggy-connectors-tests --test readme` to regenerate";

/// One key of `configs/config.toml`, as the README shows it.
struct Key {
    path: String,
    /// The Default cell: a TOML value in backticks, a word (`none`, `unset`) or empty.
    default: String,
    notes: String,
}

const BUNDLED_START: &str =
    "<!-- bundled connectors: generated from crates/connectors/bundled -->\n";
const BUNDLED_END: &str = "<!-- end of bundled connectors -->";

fn workspace_file(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

fn config_keys() -> Vec<Key> {
    let path = workspace_file("configs/config.toml");
    let config = std::fs::read_to_string(&path).expect("configs/config.toml");
    keys(&config)
}

/// The keys of the reference config, in file order. A key is a `key = value` line,
/// commented out or not (the http provider's keys are), or a table header whose comment
/// states a default (`[connectors.request_headers]  # default none`: a table of the
/// user's own keys, whose example entries are not keys). Its comment, with the indented
/// comment lines under it, gives its default and notes; other comments (the file's
/// header, a table's own) are not shown.
fn keys(config: &str) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::new();
    let mut table = String::new();
    let mut in_user_table = false;
    let mut continued = false;
    for line in config.lines() {
        let trimmed = line.trim_start();
        if line.starts_with(' ') && trimmed.starts_with('#') {
            if let Some(key) = keys.last_mut().filter(|_| continued) {
                key.notes = format!("{} {}", key.notes, trimmed.trim_start_matches(['#', ' ']));
            }
            continue;
        }
        let code = trimmed.strip_prefix('#').map_or(trimmed, str::trim_start);
        let (setting, comment) = code.split_once(" #").unwrap_or((code, ""));
        let (setting, comment) = (setting.trim(), comment.trim_start_matches(['#', ' ']));
        continued = false;
        if let Some(name) = setting.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            table = name.to_owned();
            in_user_table = stated_default(comment).is_some();
            if in_user_table {
                keys.push(key(name.to_owned(), None, comment));
                continued = true;
            }
        } else if !in_user_table
            && let Ok(entry) = toml::from_str::<toml::Table>(setting)
            && let Some((name, value)) = entry.into_iter().next()
        {
            keys.push(key(format!("{table}.{name}"), Some(value), comment));
            continued = true;
        }
    }
    keys
}

/// The default is the one the comment states, else none when the comment says the key
/// is required, else the value the line sets.
fn key(path: String, value: Option<toml::Value>, comment: &str) -> Key {
    let (default, notes) = match stated_default(comment) {
        Some(stated) => stated,
        None if comment.starts_with("required") => (String::new(), comment),
        None => (value.map(|v| format!("`{v}`")).unwrap_or_default(), comment),
    };
    Key {
        path,
        default,
        notes: notes.to_owned(),
    }
}

/// `default <value>[:;,] <notes>`: the value (the shortest prefix that reads as a TOML
/// value, or the word `none` or `unset`) as the README shows it, and the notes.
fn stated_default(comment: &str) -> Option<(String, &str)> {
    let rest = comment.strip_prefix("default ")?;
    let separators = [':', ';', ',', ' '];
    let ends = rest.match_indices(separators).map(|(end, _)| end);
    let (default, end) = ends.chain([rest.len()]).find_map(|end| {
        let text = &rest[..end];
        match toml::from_str::<toml::Table>(&format!("value = {text}")) {
            Ok(mut parsed) => Some((format!("`{}`", parsed.remove("value")?), end)),
            Err(_) if ["none", "unset"].contains(&text) => Some((text.to_owned(), end)),
            Err(_) => None,
        }
    })?;
    Some((default, rest[end..].trim_start_matches(separators)))
}

fn variable(key: &str) -> String {
    format!("IGGY_CONNECTORS_{}", key.to_uppercase().replace('.', "_"))
}

fn render(keys: &[Key]) -> String {
    let mut table =
        String::from("| Key | Default | Environment variable | Notes |\n|---|---|---|---|\n");
    for key in keys {
        let notes = key.notes.replace('|', "\\|").replace('<', "&lt;");
        let (path, default) = (&key.path, &key.default);
        let variable = variable(path);
        table += &format!("| `{path}` | {default} | `{variable}` | {notes} |\n");
    }
    table
}

#[test]
fn the_readmes_configuration_reference_is_generated_from_the_reference_config() {
    check_generated(
        START,
        END,
        &render(&config_keys()),
        "README.md's configuration reference is not what configs/config.toml says",
        "configs/config.toml",
    );
}

/// The README's table of bundled connectors: one row per connector of the list, with
/// its package description and its `plugin_config` keys (the reference pages in
/// `docs/connectors/` hold the rest).
#[test]
fn the_readmes_bundled_connectors_are_the_list() {
    let packages = iggy_connectors_tests::connector_crates();
    let mut table =
        String::from("| connector | kind | what it does | `plugin_config` |\n|---|---|---|---|\n");
    for connector in bundled_connectors::BUNDLED {
        let plugin = connector.plugin().expect("a bundled connector loads");
        let (package, _) = packages
            .iter()
            .find(|(package, _)| package.name == connector.crate_name)
            .unwrap_or_else(|| panic!("{} has no connector directory", connector.crate_name));
        let config = runtime_core::ConfigDescription::from_schema(plugin.config_schema())
            .expect("a bundled connector's schema reads");
        let keys: Vec<String> = config
            .fields()
            .iter()
            .map(|field| {
                let mut notes = Vec::new();
                match (&field.default, field.required) {
                    (_, true) => notes.push("required".to_owned()),
                    (Some(serde_json::Value::Null) | None, false) => {}
                    (Some(value), false) => notes.push(format!("`{value}`")),
                }
                if field.secret {
                    notes.push("secret".to_owned());
                }
                match notes.is_empty() {
                    true => format!("`{}`", field.key),
                    false => format!("`{}` ({})", field.key, notes.join(", ")),
                }
            })
            .collect();
        let keys = match keys.is_empty() {
            true => "none".to_owned(),
            false => keys.join(", "),
        };
        let name = plugin.name();
        table += &format!(
            "| [`{name}`](docs/connectors/{name}.md) | {} | {} | {} |\n",
            plugin.kind(),
            package.description().replace('|', "\\|"),
            keys.replace('|', "\\|"),
        );
    }
    check_generated(
        BUNDLED_START,
        BUNDLED_END,
        &table,
        "README.md's table of bundled connectors is not what the bundled list says",
        "the bundled list",
    );
}

/// Compares the README's text between `start` and `end` with `expected`; rewrites it
/// with `UPDATE_README=1`, else fails showing the first line that differs.
fn check_generated(start: &str, end: &str, expected: &str, problem: &str, source: &str) {
    let path = workspace_file("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let (before, rest) = readme
        .split_once(start)
        .unwrap_or_else(|| panic!("the README lacks the marker {start:?}"));
    let (shown, after) = rest
        .split_once(end)
        .unwrap_or_else(|| panic!("the README lacks the marker {end:?}"));
    if shown == expected {
        return;
    }
    if std::env::var_os("UPDATE_README").is_some_and(|value| value == "1") {
        std::fs::write(&path, format!("{before}{start}{expected}{end}{after}")).expect("write");
        return;
    }
    let (shown, expected): (Vec<&str>, Vec<&str>) =
        (shown.lines().collect(), expected.lines().collect());
    let line = (0..shown.len().max(expected.len()))
        .find(|&line| shown.get(line) != expected.get(line))
        .unwrap_or(0);
    panic!(
        "{problem}; {REGENERATE}\nat line {} of the table:\n  README.md: {}\n  {source}: {}",
        line + 1,
        shown.get(line).unwrap_or(&"(nothing)"),
        expected.get(line).unwrap_or(&"(nothing)"),
    );
}

#[test]
fn the_reference_config_names_exactly_the_keys_and_variables_the_runtime_reads() {
    let keys: Vec<String> = config_keys().into_iter().map(|key| key.path).collect();
    let unique: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(unique.len(), keys.len(), "a key is listed twice: {keys:?}");
    same(&unique, &config_provider::config_keys(), "keys");
    let variables = keys.iter().map(|key| variable(key)).collect();
    same(
        &variables,
        &config_provider::environment_variables(),
        "variables",
    );
}

fn same(documented: &BTreeSet<String>, read: &BTreeSet<String>, what: &str) {
    let unknown: Vec<&String> = documented.difference(read).collect();
    let missing: Vec<&String> = read.difference(documented).collect();
    assert!(
        unknown.is_empty() && missing.is_empty(),
        "configs/config.toml, as tests/readme.rs reads it, names {what} the runtime does not \
         read: {unknown:?}, and lacks {what} it reads: {missing:?}"
    );
}
