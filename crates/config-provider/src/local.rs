//! The local provider: a directory of connector config files.
//!
//! Every `*.toml` file (hidden files and `Cargo.toml` aside) is one version of one
//! connector; file names do not matter when reading. New versions are written as
//! `{sink|source}_{key}_{version}.toml`. The active version of each connector is kept in
//! `.active_versions.toml` (`[sinks] key = N`, `[sources] key = N`); a connector with no
//! entry there runs its highest version. Every write is atomic: a temporary file is
//! written, synced and renamed over the target, and the directory is synced.
//!
//! On Unix every file the provider writes (versions and `.active_versions.toml`) has
//! mode 0600 from the moment it is created, not only the files that hold a secret:
//! only the runtime reads them, a secret may sit in a plugin field under a name no
//! rule recognises (a connection string with its password), and one rule for every
//! file leaves nothing to get wrong.
//!
//! A `${file:...}` secret whose file its group or other users may access is refused
//! when the provider was opened with `secrets.require_private_files`
//! ([`LocalProvider::open_with_secrets`]), and is warned about otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use connector_sdk::ConnectorKind;
use tokio::sync::Mutex;

use crate::connector::{ConnectorConfig, from_toml_value};
use crate::load::{ConfigError, Problem};
use crate::overrides::{
    apply_env_overrides, is_connector_override, is_override_field, kind_prefix, override_prefix,
};
use crate::provider::{ActiveConfigs, BrokenConfig, ConfigProvider, ProviderError, check_request};
use crate::runtime::SecretsConfig;
use crate::secrets::OpenSecretFile;

/// The name of the file that records active versions.
pub const ACTIVE_VERSIONS_FILE: &str = ".active_versions.toml";

type Id = (ConnectorKind, String);

#[derive(Debug, Default)]
struct Store {
    versions: BTreeMap<Id, BTreeMap<u64, (ConnectorConfig, PathBuf)>>,
    active: BTreeMap<Id, u64>,
    /// Active versions `.active_versions.toml` names that no readable file defines
    /// (kept, and written back, until another version is activated).
    unresolved_active: BTreeMap<Id, (u64, Problem)>,
    /// The files that could not be read into a config.
    broken: Vec<BrokenConfig>,
}

/// Connector configs from a directory.
#[derive(Debug)]
pub struct LocalProvider {
    dir: PathBuf,
    store: Mutex<Store>,
    unmatched: Vec<Problem>,
    /// Refuse `${file:...}` secrets others may access, rather than warn.
    require_private_files: bool,
    /// The warnings about such files found when opening.
    open_secret_files: Vec<Problem>,
}

impl LocalProvider {
    /// Reads every config in `dir`, applying `IGGY_CONNECTORS_{SINK|SOURCE}_{KEY}_*`
    /// overrides from `env`. Every problem in every file is reported at once. An empty
    /// or missing directory means no connectors (and one log line).
    ///
    /// An override naming no connector of the directory is not an error (a deployment
    /// may keep variables for a connector it removed) but a warning, logged here and
    /// kept for [`LocalProvider::unmatched_overrides`].
    ///
    /// `${file:...}` secrets whose file others may access are only warned about: see
    /// [`LocalProvider::open_with_secrets`].
    pub fn open(
        dir: impl Into<PathBuf>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        Self::open_with_secrets(dir, env, &SecretsConfig::default())
    }

    /// [`LocalProvider::open`], with the runtime config's `[secrets]`: with
    /// `require_private_files`, a `${file:...}` secret whose file its group or other
    /// users may access (Unix mode `& 0o077 != 0`) is a problem of its config file,
    /// here and in every version created later; without it, a warning, logged and
    /// kept for [`LocalProvider::secret_file_warnings`].
    pub fn open_with_secrets(
        dir: impl Into<PathBuf>,
        env: &BTreeMap<String, String>,
        secrets: &SecretsConfig,
    ) -> Result<Self, ConfigError> {
        let (provider, problems) = Self::open_leniently(dir, env, secrets)?;
        if problems.is_empty() {
            Ok(provider)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// [`LocalProvider::open_with_secrets`] that keeps going: a provider of every
    /// config that reads well, and the problems of the others, so that a checker
    /// (`iggy-connectors validate`) can report a broken file and what is wrong with
    /// the good ones at once. An error only when the directory cannot be read.
    pub fn open_leniently(
        dir: impl Into<PathBuf>,
        env: &BTreeMap<String, String>,
        secrets: &SecretsConfig,
    ) -> Result<(Self, Vec<Problem>), ConfigError> {
        let require_private_files = secrets.require_private_files;
        let dir = dir.into();
        let mut store = Store::default();
        let mut problems = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error)
                if error.kind() == std::io::ErrorKind::NotFound || dir.as_os_str().is_empty() =>
            {
                tracing::info!(dir = %dir.display(), "no connector config directory: no connectors");
                let (_, unmatched) = assign_overrides(env, &[]);
                let unmatched = report_unmatched(&dir, unmatched, &[]);
                let provider = LocalProvider {
                    dir,
                    store: Mutex::new(store),
                    unmatched,
                    require_private_files,
                    open_secret_files: Vec::new(),
                };
                return Ok((provider, problems));
            }
            Err(error) => {
                return Err(ConfigError::one(
                    dir.display().to_string(),
                    None,
                    format!("cannot read the connector config directory: {error}"),
                ));
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| is_config_file(path))
            .collect();
        files.sort();
        // Every file is parsed before any override is applied: a variable goes to the
        // connector with the longest key it starts with (`..._SINK_A_B_ENABLED` is for
        // `a_b`, not for `a` with a field `B_ENABLED`), and one that goes to none is
        // reported, which needs every key first.
        let parsed: Vec<(PathBuf, Result<Parsed, Problem>)> = files
            .into_iter()
            .map(|file| {
                let parsed = parse_file(&file);
                (file, parsed)
            })
            .collect();
        let ids: Vec<Id> = parsed
            .iter()
            .filter_map(|(_, parsed)| parsed.as_ref().ok()?.id.clone())
            .collect();
        let (owned, unmatched) = assign_overrides(env, &ids);
        let no_overrides = BTreeMap::new();
        let mut open_secret_files = Vec::new();
        for (file, parsed) in parsed {
            let config = parsed.and_then(|parsed| {
                let overrides = parsed
                    .id
                    .as_ref()
                    .and_then(|id| owned.get(id))
                    .unwrap_or(&no_overrides);
                finish_config(&file, parsed, overrides, require_private_files)
            });
            match config {
                Ok((config, open_files)) => {
                    for open in open_files {
                        open.log(&config.common().key, config.common().version);
                        open_secret_files.push(Problem {
                            source: file.display().to_string(),
                            key: Some(open.key.clone()),
                            message: open.warning(),
                        });
                    }
                    let common = config.common();
                    let (key, version) = (common.key.clone(), common.version);
                    let versions = store
                        .versions
                        .entry((config.kind(), key.clone()))
                        .or_default();
                    if let Some((_, other)) = versions.get(&version) {
                        let problem = Problem {
                            source: file.display().to_string(),
                            key: Some("version".to_owned()),
                            message: format!(
                                "{} {key:?} version {version} is also defined in {}",
                                config.kind(),
                                other.display()
                            ),
                        };
                        // Which of the two is meant cannot be told: the connector
                        // does not run that version (see `broken_in_force`).
                        store.broken.push(BrokenConfig::from_fields(
                            raw_fields(&file).as_ref(),
                            &key,
                            problem.clone(),
                        ));
                        problems.push(problem);
                        continue;
                    }
                    versions.insert(version, (config, file));
                }
                Err(problem) => {
                    let fallback = file
                        .file_name()
                        .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
                    store.broken.push(BrokenConfig::from_fields(
                        raw_fields(&file).as_ref(),
                        &fallback,
                        problem.clone(),
                    ));
                    problems.push(problem);
                }
            }
        }
        match read_active_versions(&dir) {
            Ok(active) => {
                for ((kind, key), version) in active {
                    let exists = store
                        .versions
                        .get(&(kind, key.clone()))
                        .is_some_and(|versions| versions.contains_key(&version));
                    if exists {
                        store.active.insert((kind, key), version);
                    } else {
                        let problem = Problem {
                            source: dir.join(ACTIVE_VERSIONS_FILE).display().to_string(),
                            key: Some(format!("{}s.{key}", kind.as_str())),
                            message: format!(
                                "version {version} is active, but no readable file defines it"
                            ),
                        };
                        store
                            .unresolved_active
                            .insert((kind, key), (version, problem.clone()));
                        problems.push(problem);
                    }
                }
            }
            // Without it no connector's active version is known, and the next
            // activation would write it anew without the others': nothing runs.
            Err(problem) => {
                problems.push(problem);
                return Err(ConfigError { problems });
            }
        }
        if store.versions.is_empty() && problems.is_empty() {
            tracing::info!(dir = %dir.display(), "no connector configs found: no connectors");
        }
        let unmatched = report_unmatched(&dir, unmatched, &ids);
        let provider = LocalProvider {
            dir,
            store: Mutex::new(store),
            unmatched,
            require_private_files,
            open_secret_files,
        };
        Ok((provider, problems))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `IGGY_CONNECTORS_{SINK|SOURCE}_*` variables that matched no connector of the
    /// directory, each named with the keys that do exist (and the nearest variable, for
    /// a typo). [`LocalProvider::open`] logged them; this is for a caller that reports
    /// them too, such as `iggy-connectors validate`.
    pub fn unmatched_overrides(&self) -> &[Problem] {
        &self.unmatched
    }

    /// The `${file:...}` secrets of the directory's configs whose file its group or
    /// other users may access, each named by its config file and key, with the mode and
    /// the fix (`chmod 600`). Only without `require_private_files` (which refuses them);
    /// [`LocalProvider::open_with_secrets`] logged them; this is for a caller that
    /// reports them too, such as `iggy-connectors validate`.
    pub fn secret_file_warnings(&self) -> &[Problem] {
        &self.open_secret_files
    }
}

/// Splits the per-connector overrides in `env` by the connector they are for: each
/// goes to the connector(s) with the longest prefix it starts with (two keys that
/// differ only by `-` and `_` share a prefix, and both get it). Returns the overrides
/// by connector, and the override variables that match none.
fn assign_overrides(
    env: &BTreeMap<String, String>,
    ids: &[Id],
) -> (BTreeMap<Id, BTreeMap<String, String>>, Vec<String>) {
    let prefixes: Vec<(String, &Id)> = ids
        .iter()
        .map(|id| (override_prefix(id.0, &id.1), id))
        .collect();
    let mut owned: BTreeMap<Id, BTreeMap<String, String>> = BTreeMap::new();
    let mut unmatched = Vec::new();
    for (name, value) in env {
        if !is_connector_override(name) {
            continue;
        }
        let longest = prefixes
            .iter()
            .filter(|(prefix, _)| name.starts_with(prefix.as_str()))
            .map(|(prefix, _)| prefix.len())
            .max();
        let Some(longest) = longest else {
            unmatched.push(name.clone());
            continue;
        };
        for (_, id) in prefixes
            .iter()
            .filter(|(prefix, _)| prefix.len() == longest && name.starts_with(prefix.as_str()))
        {
            owned
                .entry((*id).clone())
                .or_default()
                .insert(name.clone(), value.clone());
        }
    }
    (owned, unmatched)
}

/// Turns each unmatched override into a warning that names the variable, the keys of
/// its kind that exist and, when the variable looks like a typo of one of them, the
/// variable meant; logs each one.
fn report_unmatched(dir: &Path, unmatched: Vec<String>, ids: &[Id]) -> Vec<Problem> {
    unmatched
        .into_iter()
        .map(|name| {
            let kind = if name.starts_with(&kind_prefix(ConnectorKind::Sink)) {
                ConnectorKind::Sink
            } else {
                ConnectorKind::Source
            };
            let mut keys: Vec<&str> = ids
                .iter()
                .filter(|(id_kind, _)| *id_kind == kind)
                .map(|(_, key)| key.as_str())
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let existing = if keys.is_empty() {
                format!("there are no {kind}s in {}", dir.display())
            } else {
                let listed: Vec<String> = keys
                    .iter()
                    .map(|key| format!("{key} ({}*)", override_prefix(kind, key)))
                    .collect();
                format!(
                    "the {kind}s in {} are: {}",
                    dir.display(),
                    listed.join(", ")
                )
            };
            let hint = nearest_override(&name, kind, &keys)
                .map(|near| format!("; did you mean {near}?"))
                .unwrap_or_default();
            let message = format!("matches no {kind}, so it is ignored: {existing}{hint}");
            tracing::warn!(
                variable = %name,
                kind = %kind,
                known = ?keys,
                dir = %dir.display(),
                "{name}: {message}"
            );
            Problem {
                source: name,
                key: None,
                message,
            }
        })
        .collect()
}

/// The override `name` was probably meant to be: the same field for the existing key
/// nearest to the key part of `name`. The key part ends where a known field starts,
/// which is tried at every `_`.
fn nearest_override(name: &str, kind: ConnectorKind, keys: &[&str]) -> Option<String> {
    let rest = name.strip_prefix(&kind_prefix(kind))?;
    let normalised: Vec<String> = keys
        .iter()
        .map(|key| key.to_uppercase().replace('-', "_"))
        .collect();
    rest.match_indices('_').find_map(|(at, _)| {
        let (key, field) = (&rest[..at], &rest[at + 1..]);
        if !is_override_field(kind, field) {
            return None;
        }
        let near = crate::suggest::nearest(key, normalised.iter().map(String::as_str))?;
        let index = normalised.iter().position(|candidate| candidate == near)?;
        Some(format!("{}{field}", override_prefix(kind, keys[index])))
    })
}

/// The fields of a config file that is valid TOML, as JSON, for listing a broken
/// config by what can be read of it.
fn raw_fields(file: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(file).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    serde_json::to_value(table).ok()
}

fn is_config_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    path.is_file() && name.ends_with(".toml") && !name.starts_with('.') && name != "Cargo.toml"
}

/// A connector file read and parsed, its overrides not yet applied.
struct Parsed {
    table: toml::Table,
    /// Kind and key, when the file names both and the key is valid.
    id: Option<Id>,
}

fn parse_file(file: &Path) -> Result<Parsed, Problem> {
    let problem = |message: String| Problem {
        source: file.display().to_string(),
        key: None,
        message,
    };
    let text =
        std::fs::read_to_string(file).map_err(|error| problem(format!("cannot read: {error}")))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|error| problem(format!("not valid TOML: {error}")))?;
    let kind = match table.get("type").and_then(toml::Value::as_str) {
        Some("sink") => Some(ConnectorKind::Sink),
        Some("source") => Some(ConnectorKind::Source),
        _ => None,
    };
    let key = table
        .get("key")
        .and_then(toml::Value::as_str)
        .map(str::to_owned);
    let id = match (kind, key) {
        (Some(kind), Some(key)) => {
            crate::connector::validate_key(&key).map_err(problem)?;
            Some((kind, key))
        }
        _ => None,
    };
    Ok(Parsed { table, id })
}

/// Applies the connector's overrides to a parsed file and builds its config, with the
/// secret files others may access that it names (refused if `require_private_files`).
fn finish_config(
    file: &Path,
    parsed: Parsed,
    overrides: &BTreeMap<String, String>,
    require_private_files: bool,
) -> Result<(ConnectorConfig, Vec<OpenSecretFile>), Problem> {
    let problem = |message: String| Problem {
        source: file.display().to_string(),
        key: None,
        message,
    };
    let Parsed { mut table, id } = parsed;
    if let Some((kind, key)) = &id {
        apply_env_overrides(&mut table, *kind, key, overrides).map_err(problem)?;
    }
    let (mut config, open_files) =
        from_toml_value(toml::Value::Table(table), require_private_files).map_err(problem)?;
    if let Some((kind, key)) = &id {
        config.common_mut().plugin_config_env =
            crate::overrides::plugin_config_texts(*kind, key, overrides);
    }
    Ok((config, open_files))
}

fn read_active_versions(dir: &Path) -> Result<BTreeMap<Id, u64>, Problem> {
    let file = dir.join(ACTIVE_VERSIONS_FILE);
    let source = file.display().to_string();
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => {
            return Err(Problem {
                source,
                key: None,
                message: format!("cannot read: {error}"),
            });
        }
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ActiveFile {
        #[serde(default)]
        sinks: BTreeMap<String, u64>,
        #[serde(default)]
        sources: BTreeMap<String, u64>,
    }
    let parsed: ActiveFile = toml::from_str(&text).map_err(|error| Problem {
        source,
        key: None,
        message: format!("not a valid active-versions file: {error}"),
    })?;
    let sinks = parsed
        .sinks
        .into_iter()
        .map(|(key, v)| ((ConnectorKind::Sink, key), v));
    let sources = parsed
        .sources
        .into_iter()
        .map(|(key, v)| ((ConnectorKind::Source, key), v));
    Ok(sinks.chain(sources).collect())
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync the
/// directory. On Unix the file has mode 0600 from its creation (see the module docs);
/// the rename keeps it, replacing whatever mode a file at `path` had.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("config");
    let temp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = create_private(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)
    });
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(error);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Creates the file at `path` for writing, with mode 0600 on Unix. It must be a new
/// file, since a mode applies only to a file the call creates: one left there (by a
/// crash of an earlier process with this id) is removed first. A new file is never a
/// symlink followed to somewhere else.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            options.open(path)
        }
        opened => opened,
    }
}

impl Store {
    /// The connectors whose active config cannot be used: a broken file that is (or
    /// may be) the version that would run, and an active version no readable file
    /// defines. A broken file older than the version that runs is only a problem of
    /// that file, reported when the provider was opened.
    fn broken_in_force(&self) -> Vec<BrokenConfig> {
        let mut in_force: Vec<BrokenConfig> = Vec::new();
        for broken in &self.broken {
            let Some(kind) = broken.kind else {
                in_force.push(broken.clone());
                continue;
            };
            let id = (kind, broken.key.clone());
            let runs = match self.unresolved_active.get(&id) {
                Some((wanted, _)) => broken.version == Some(*wanted),
                None if self.active.contains_key(&id) => false,
                None => match (
                    self.versions.get(&id).and_then(|v| v.keys().next_back()),
                    broken.version,
                ) {
                    // The same version as a readable file (two files define it)
                    // or a newer one: the broken file may be the one meant.
                    (Some(highest), Some(version)) => version >= *highest,
                    // Nothing else to run, or no telling which version it was.
                    _ => true,
                },
            };
            let listed = in_force
                .iter()
                .any(|other| other.kind == broken.kind && other.key == broken.key);
            if runs && !listed {
                in_force.push(broken.clone());
            }
        }
        for ((kind, key), (version, problem)) in &self.unresolved_active {
            let listed = in_force
                .iter()
                .any(|other| other.kind == Some(*kind) && &other.key == key);
            if !listed {
                in_force.push(BrokenConfig {
                    kind: Some(*kind),
                    key: key.clone(),
                    version: Some(*version),
                    name: String::new(),
                    path: String::new(),
                    problem: problem.clone(),
                });
            }
        }
        in_force
    }

    fn active_version(&self, id: &Id) -> Option<u64> {
        self.active
            .get(id)
            .copied()
            .or_else(|| self.versions.get(id)?.keys().next_back().copied())
    }

    fn versions_of(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<&BTreeMap<u64, (ConnectorConfig, PathBuf)>, ProviderError> {
        self.versions
            .get(&(kind, key.to_owned()))
            .filter(|versions| !versions.is_empty())
            .ok_or_else(|| ProviderError::NotFound {
                kind,
                key: key.to_owned(),
                version: None,
            })
    }

    fn active_file(&self) -> String {
        let mut sinks = toml::Table::new();
        let mut sources = toml::Table::new();
        let unresolved = self
            .unresolved_active
            .iter()
            .map(|(id, (version, _))| (id, version));
        for ((kind, key), version) in self.active.iter().chain(unresolved) {
            let table = match kind {
                ConnectorKind::Sink => &mut sinks,
                ConnectorKind::Source => &mut sources,
            };
            table.insert(
                key.clone(),
                toml::Value::Integer(i64::try_from(*version).unwrap_or(i64::MAX)),
            );
        }
        let mut root = toml::Table::new();
        root.insert("sinks".to_owned(), toml::Value::Table(sinks));
        root.insert("sources".to_owned(), toml::Value::Table(sources));
        toml::to_string(&root).unwrap_or_default()
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ProviderError::Storage(format!("storage task failed: {error}")))?
        .map_err(|error| ProviderError::Storage(error.to_string()))
}

#[async_trait]
impl ConfigProvider for LocalProvider {
    async fn active_configs(&self) -> Result<ActiveConfigs, ProviderError> {
        let store = self.store.lock().await;
        let mut active = ActiveConfigs {
            broken: store.broken_in_force(),
            ..ActiveConfigs::default()
        };
        for (id, versions) in &store.versions {
            let broken = active
                .broken
                .iter()
                .any(|broken| broken.kind == Some(id.0) && broken.key == id.1);
            if broken {
                continue;
            }
            let Some(config) = store
                .active_version(id)
                .and_then(|version| versions.get(&version))
            else {
                continue;
            };
            let map = match id.0 {
                ConnectorKind::Sink => &mut active.sinks,
                ConnectorKind::Source => &mut active.sources,
            };
            map.insert(id.1.clone(), config.0.clone());
        }
        Ok(active)
    }

    async fn versions(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<Vec<ConnectorConfig>, ProviderError> {
        check_request(kind, key, None)?;
        let store = self.store.lock().await;
        Ok(store
            .versions_of(kind, key)?
            .values()
            .map(|(config, _)| config.clone())
            .collect())
    }

    async fn version(
        &self,
        kind: ConnectorKind,
        key: &str,
        version: u64,
    ) -> Result<ConnectorConfig, ProviderError> {
        check_request(kind, key, None)?;
        let store = self.store.lock().await;
        store
            .versions_of(kind, key)?
            .get(&version)
            .map(|(config, _)| config.clone())
            .ok_or_else(|| ProviderError::NotFound {
                kind,
                key: key.to_owned(),
                version: Some(version),
            })
    }

    async fn active(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<ConnectorConfig, ProviderError> {
        check_request(kind, key, None)?;
        let store = self.store.lock().await;
        let versions = store.versions_of(kind, key)?;
        store
            .active_version(&(kind, key.to_owned()))
            .and_then(|version| versions.get(&version))
            .map(|(config, _)| config.clone())
            .ok_or_else(|| ProviderError::NotFound {
                kind,
                key: key.to_owned(),
                version: None,
            })
    }

    async fn create(
        &self,
        kind: ConnectorKind,
        key: &str,
        mut config: ConnectorConfig,
    ) -> Result<ConnectorConfig, ProviderError> {
        check_request(kind, key, Some(&config))?;
        let mut store = self.store.lock().await;
        let id = (kind, key.to_owned());
        // Above every version a file has, a broken one included: its file stays, and
        // two files of one version leave the connector unable to run it.
        let broken = store
            .broken
            .iter()
            .filter(|broken| broken.kind == Some(kind) && broken.key == key)
            .filter_map(|broken| broken.version);
        let version = store
            .versions
            .get(&id)
            .and_then(|versions| versions.keys().next_back().copied())
            .into_iter()
            .chain(broken)
            .max()
            .map_or(0, |last| last + 1);
        let common = config.common_mut();
        common.key = key.to_owned();
        common.version = version;
        config.validate().map_err(ProviderError::Invalid)?;
        // The file keeps `${env:...}` references as given; memory holds them resolved.
        let text = toml::to_string(&config).map_err(|error| {
            ProviderError::Invalid(format!("the config cannot be written as TOML: {error}"))
        })?;
        let (config, open_files) = toml::Value::try_from(&config)
            .map_err(|error| ProviderError::Invalid(error.to_string()))
            .and_then(|value| {
                from_toml_value(value, self.require_private_files).map_err(ProviderError::Invalid)
            })?;
        for open in &open_files {
            open.log(key, version);
        }
        let path = self
            .dir
            .join(format!("{}_{key}_{version}.toml", kind.as_str()));
        let target = path.clone();
        blocking(move || write_atomically(&target, text.as_bytes())).await?;
        store
            .versions
            .entry(id)
            .or_default()
            .insert(version, (config.clone(), path));
        Ok(config)
    }

    async fn set_active(
        &self,
        kind: ConnectorKind,
        key: &str,
        version: u64,
    ) -> Result<(), ProviderError> {
        check_request(kind, key, None)?;
        let mut store = self.store.lock().await;
        if !store.versions_of(kind, key)?.contains_key(&version) {
            return Err(ProviderError::NotFound {
                kind,
                key: key.to_owned(),
                version: Some(version),
            });
        }
        let previous = store.active.insert((kind, key.to_owned()), version);
        let unresolved = store.unresolved_active.remove(&(kind, key.to_owned()));
        let text = store.active_file();
        let path = self.dir.join(ACTIVE_VERSIONS_FILE);
        if let Err(error) = blocking(move || write_atomically(&path, text.as_bytes())).await {
            // Keep memory and disk in step.
            match previous {
                Some(previous) => store.active.insert((kind, key.to_owned()), previous),
                None => store.active.remove(&(kind, key.to_owned())),
            };
            if let Some(unresolved) = unresolved {
                store
                    .unresolved_active
                    .insert((kind, key.to_owned()), unresolved);
            }
            return Err(error);
        }
        Ok(())
    }

    async fn delete(
        &self,
        kind: ConnectorKind,
        key: &str,
        version: Option<u64>,
    ) -> Result<(), ProviderError> {
        check_request(kind, key, None)?;
        let mut store = self.store.lock().await;
        let id = (kind, key.to_owned());
        let active = store.active_version(&id);
        let version = version.or(active).ok_or_else(|| ProviderError::NotFound {
            kind,
            key: key.to_owned(),
            version: None,
        })?;
        let path = store
            .versions_of(kind, key)?
            .get(&version)
            .map(|(_, path)| path.clone())
            .ok_or_else(|| ProviderError::NotFound {
                kind,
                key: key.to_owned(),
                version: Some(version),
            })?;
        blocking(move || std::fs::remove_file(&path)).await?;
        if let Some(versions) = store.versions.get_mut(&id) {
            versions.remove(&version);
            if versions.is_empty() {
                store.versions.remove(&id);
            }
        }
        if store.active.get(&id) == Some(&version) {
            // The highest remaining version becomes active (by having no entry).
            store.active.remove(&id);
        }
        let text = store.active_file();
        let active_path = self.dir.join(ACTIVE_VERSIONS_FILE);
        blocking(move || write_atomically(&active_path, text.as_bytes())).await
    }
}
