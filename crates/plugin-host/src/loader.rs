//! Finding and loading plugin libraries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use connector_sdk::abi::{self, DescriptorFn};

use crate::error::LoadError;
use crate::plugin::{Plugin, PluginOrigin};

/// Extensions that mark a path as already naming a shared library.
const LIBRARY_EXTENSIONS: [&str; 3] = ["so", "dylib", "dll"];

/// Loads plugin libraries, each file once.
///
/// Path resolution for a configured `path`:
/// 1. If its file name has no shared-library extension, the platform's is appended
///    (`.so` on Linux).
/// 2. An absolute path is used as it is.
/// 3. A relative path is tried against the working directory, then against the
///    directory of the running executable, then against any extra search directories.
///
/// When nothing exists, the error lists every path tried.
///
/// A loader [confined](PluginLoader::confined_to) to some directories opens only files
/// that resolve, symlinks followed, to a path inside one of them: a config names code
/// the process will run, so where that code may come from is the host's decision, not
/// the config's.
#[derive(Debug)]
pub struct PluginLoader {
    search_dirs: Vec<PathBuf>,
    /// `None`: any file. `Some`: the directories as given, for messages, and
    /// canonicalized (those that exist), for the check.
    confined: Option<Confinement>,
    loaded: Mutex<HashMap<PathBuf, Plugin>>,
}

#[derive(Debug)]
struct Confinement {
    given: Vec<PathBuf>,
    canonical: Vec<PathBuf>,
}

impl Default for PluginLoader {
    fn default() -> Self {
        PluginLoader::new()
    }
}

impl PluginLoader {
    /// A loader that resolves relative paths against the working directory and the
    /// executable's directory.
    pub fn new() -> Self {
        PluginLoader {
            search_dirs: Vec::new(),
            confined: None,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// Loads only libraries inside `directories` (subdirectories included). A
    /// directory that does not exist allows nothing but is still named in errors.
    /// Relative directories are taken from the working directory. The directories are
    /// also searched for a relative `path`, after the others.
    pub fn confined_to(mut self, directories: impl IntoIterator<Item = PathBuf>) -> Self {
        let given: Vec<PathBuf> = directories.into_iter().collect();
        let canonical = given
            .iter()
            .filter_map(|dir| dir.canonicalize().ok())
            .collect();
        for dir in &given {
            if !self.search_dirs.contains(dir) {
                self.search_dirs.push(dir.clone());
            }
        }
        self.confined = Some(Confinement { given, canonical });
        self
    }

    /// The directories this loader is confined to, as given; `None` when it is not.
    pub fn allowed_directories(&self) -> Option<&[PathBuf]> {
        self.confined
            .as_ref()
            .map(|confinement| confinement.given.as_slice())
    }

    /// Adds a directory to try after the working directory and the executable's.
    pub fn with_search_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.search_dirs.push(dir.into());
        self
    }

    /// The candidate paths for a configured `path`, in the order they are tried.
    pub fn candidates(&self, path: &str) -> Vec<PathBuf> {
        let path = with_library_extension(Path::new(path));
        if path.is_absolute() {
            return vec![path];
        }
        let mut dirs = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            dirs.push(cwd);
        }
        if let Some(exe_dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            dirs.push(exe_dir);
        }
        dirs.extend(self.search_dirs.iter().cloned());
        let mut candidates: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            let candidate = dir.join(&path);
            if !candidates.contains(&candidate) {
                candidates.push(candidate);
            }
        }
        candidates
    }

    /// The first candidate that exists.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, LoadError> {
        let tried = self.candidates(path);
        tried
            .iter()
            .find(|candidate| candidate.is_file())
            .cloned()
            .ok_or_else(|| LoadError::NotFound {
                requested: path.to_owned(),
                tried,
            })
    }

    /// The file `path` would be loaded from, symlinks followed, without opening it:
    /// [`LoadError::NotFound`] when nothing exists, [`LoadError::NotAllowed`] when it
    /// lies outside the directories this loader is confined to.
    ///
    /// A confined loader takes the first candidate inside its directories, so a file
    /// of the same name elsewhere (in the working directory, say) cannot shadow it, and
    /// refuses a library that users other than its owner may change (the file or its
    /// directory writable by group or others): any of them could put code there.
    pub fn check(&self, path: &str) -> Result<PathBuf, LoadError> {
        let tried = self.candidates(path);
        let existing: Vec<PathBuf> = tried
            .iter()
            .filter(|candidate| candidate.is_file())
            .cloned()
            .collect();
        let Some(first) = existing.first() else {
            return Err(LoadError::NotFound {
                requested: path.to_owned(),
                tried,
            });
        };
        let canonical = |candidate: &Path| {
            candidate.canonicalize().map_err(|error| LoadError::Open {
                path: candidate.to_path_buf(),
                reason: error.to_string(),
            })
        };
        let Some(confinement) = &self.confined else {
            return canonical(first);
        };
        let mut first_outside = None;
        for candidate in &existing {
            let file = canonical(candidate)?;
            if confinement
                .canonical
                .iter()
                .any(|dir| file.starts_with(dir))
            {
                refuse_shared_writes(&file)?;
                return Ok(file);
            }
            first_outside.get_or_insert(file);
        }
        Err(LoadError::NotAllowed {
            requested: path.to_owned(),
            resolved: first_outside.unwrap_or_default(),
            allowed: confinement.given.clone(),
        })
    }

    /// The plugin already loaded from the file `path` resolves to, without opening
    /// anything.
    pub fn loaded_at(&self, path: &str) -> Option<Plugin> {
        let canonical = self.check(path).ok()?;
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&canonical)
            .cloned()
    }

    /// The plugins loaded so far, in no particular order.
    pub fn loaded(&self) -> Vec<Plugin> {
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Loads the library at `path` (resolved and checked as [`PluginLoader::check`]
    /// does) and validates its descriptor. Loading the same file again returns the
    /// same plugin.
    pub fn load(&self, path: &str) -> Result<Plugin, LoadError> {
        let canonical = self.check(path)?;
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(plugin) = loaded.get(&canonical) {
            return Ok(plugin.clone());
        }
        let plugin = load_library(&canonical)?;
        loaded.insert(canonical, plugin.clone());
        Ok(plugin)
    }
}

/// Refuses a library that a user other than its owner could change: the file, or the
/// directory holding it, writable by group or others.
#[cfg(unix)]
fn refuse_shared_writes(file: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::PermissionsExt;
    let directory = file.parent().unwrap_or(file);
    for path in [file, directory] {
        let mode = std::fs::metadata(path)
            .map_err(|error| LoadError::Open {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            return Err(LoadError::SharedWritable {
                library: file.to_path_buf(),
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_shared_writes(_file: &Path) -> Result<(), LoadError> {
    Ok(())
}

/// Appends the platform's library extension unless the name already has one.
fn with_library_extension(path: &Path) -> PathBuf {
    let has_extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| LIBRARY_EXTENSIONS.contains(&extension));
    if has_extension {
        path.to_path_buf()
    } else {
        let mut name = path.as_os_str().to_owned();
        name.push(".");
        name.push(std::env::consts::DLL_EXTENSION);
        PathBuf::from(name)
    }
}

/// The crate name a library file was built from: `libfoo_bar.so` -> `foo_bar`.
fn crate_name_of(path: &Path) -> String {
    let stem = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or(stem);
    let stem = stem
        .strip_prefix(std::env::consts::DLL_PREFIX)
        .unwrap_or(stem);
    stem.replace('-', "_")
}

fn load_library(path: &Path) -> Result<Plugin, LoadError> {
    // SAFETY: loading a library runs its initialisers. Connector libraries are Rust
    // cdylibs built with connector-sdk, whose initialisers are the Rust runtime's own;
    // this is the trust the configuration places in the file it names.
    let library = unsafe { libloading::Library::new(path) }.map_err(|error| LoadError::Open {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    // Libraries are never unloaded: a plugin's executor threads may still run its code
    // after every handle is gone, and unloading under them would be undefined behaviour.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    let symbol = abi::descriptor_symbol(&crate_name_of(path));
    // SAFETY: the symbol is declared by connector-sdk's export macros with exactly the
    // `DescriptorFn` signature.
    let entry = unsafe { library.get::<DescriptorFn>(symbol.as_bytes()) }.map_err(|error| {
        LoadError::MissingSymbol {
            path: path.to_path_buf(),
            symbol: symbol.clone(),
            reason: error.to_string(),
        }
    })?;
    // SAFETY: calling the entry function only returns a pointer to static data.
    let descriptor = unsafe { entry() };
    // SAFETY: the library is never unloaded, so its static descriptor lives for the rest
    // of the program; `from_descriptor` reads only the version before checking it.
    unsafe { Plugin::from_descriptor(descriptor, PluginOrigin::Library(path.to_path_buf())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_the_platform_extension_only_when_missing() {
        let so = std::env::consts::DLL_EXTENSION;
        assert_eq!(
            with_library_extension(Path::new("target/release/libx")),
            PathBuf::from(format!("target/release/libx.{so}"))
        );
        assert_eq!(
            with_library_extension(Path::new("libx.so")),
            PathBuf::from("libx.so")
        );
        assert_eq!(
            with_library_extension(Path::new("my.plugin")),
            PathBuf::from(format!("my.plugin.{so}"))
        );
    }

    #[test]
    fn derives_the_crate_name_from_the_file_name() {
        let prefix = std::env::consts::DLL_PREFIX;
        let so = std::env::consts::DLL_EXTENSION;
        let path = PathBuf::from(format!("/x/{prefix}iggy_connector_stdout_sink.{so}"));
        assert_eq!(crate_name_of(&path), "iggy_connector_stdout_sink");
    }

    #[test]
    fn relative_paths_try_the_working_directory_then_the_executable_directory() {
        let loader = PluginLoader::new().with_search_dir("/opt/plugins");
        let candidates = loader.candidates("plugins/libx");
        let so = std::env::consts::DLL_EXTENSION;
        let cwd = std::env::current_dir().unwrap();
        let exe_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        assert_eq!(candidates[0], cwd.join(format!("plugins/libx.{so}")));
        assert_eq!(candidates[1], exe_dir.join(format!("plugins/libx.{so}")));
        assert_eq!(
            candidates.last().unwrap(),
            &PathBuf::from(format!("/opt/plugins/plugins/libx.{so}"))
        );
        assert_eq!(
            loader.candidates("/abs/libx.so"),
            vec![PathBuf::from("/abs/libx.so")]
        );
    }

    #[test]
    fn a_missing_library_lists_every_path_tried() {
        let loader = PluginLoader::new();
        let error = loader.load("no/such/libplugin").unwrap_err();
        let LoadError::NotFound { tried, .. } = &error else {
            panic!("expected NotFound, got {error}");
        };
        assert_eq!(tried.len(), 2);
        let message = error.to_string();
        for path in tried {
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    /// A fresh directory under the system's temp dir, with `inside/` and `outside/`.
    fn sandbox(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "plugin-host-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(dir.join("inside/nested")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        dir
    }

    #[test]
    fn a_confined_loader_refuses_files_outside_its_directories_without_opening_them() {
        let dir = sandbox("confined");
        // Not a library: opening it would fail with `Open`, so `NotAllowed` proves the
        // file was never handed to the dynamic loader.
        std::fs::write(dir.join("outside/libevil.so"), b"not a library").unwrap();
        std::fs::write(dir.join("inside/nested/libgood.so"), b"not a library").unwrap();
        let loader = PluginLoader::new().confined_to([dir.join("inside")]);
        let outside = dir.join("outside/libevil.so");
        let error = loader.load(outside.to_str().unwrap()).unwrap_err();
        let LoadError::NotAllowed {
            resolved, allowed, ..
        } = &error
        else {
            panic!("expected NotAllowed, got {error}");
        };
        assert_eq!(resolved, &outside.canonicalize().unwrap());
        assert_eq!(allowed, &[dir.join("inside")]);
        let message = error.to_string();
        assert!(
            message.contains(&dir.join("inside").display().to_string()),
            "{message}"
        );
        // A `..` that climbs out is resolved before the check.
        let climbing = dir.join("inside/../outside/libevil.so");
        assert!(matches!(
            loader.check(climbing.to_str().unwrap()),
            Err(LoadError::NotAllowed { .. })
        ));
        // Subdirectories of an allowed directory are inside it.
        let good = dir.join("inside/nested/libgood.so");
        assert_eq!(
            loader.check(good.to_str().unwrap()).unwrap(),
            good.canonicalize().unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_inside_an_allowed_directory_to_a_file_outside_is_refused() {
        let dir = sandbox("symlink");
        std::fs::write(dir.join("outside/libevil.so"), b"not a library").unwrap();
        std::os::unix::fs::symlink(dir.join("outside/libevil.so"), dir.join("inside/libx.so"))
            .unwrap();
        let loader = PluginLoader::new().confined_to([dir.join("inside")]);
        let error = loader
            .load(dir.join("inside/libx").to_str().unwrap())
            .unwrap_err();
        assert!(matches!(error, LoadError::NotAllowed { .. }), "{error}");
        // A directory that does not exist allows nothing.
        let loader = PluginLoader::new().confined_to([dir.join("missing")]);
        let error = loader
            .check(dir.join("outside/libevil.so").to_str().unwrap())
            .unwrap_err();
        assert!(matches!(error, LoadError::NotAllowed { .. }), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
