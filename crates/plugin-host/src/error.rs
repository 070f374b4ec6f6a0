//! Errors of loading a plugin and of calling into one.

use std::fmt;
use std::path::PathBuf;

use connector_sdk::abi;

/// Why a plugin could not be loaded or registered.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No file exists at any of the candidate paths.
    #[error("plugin library {requested:?} not found; tried: {}", list_paths(tried))]
    NotFound {
        /// The path as configured.
        requested: String,
        /// Every path that was tried, in order.
        tried: Vec<PathBuf>,
    },
    /// The library resolves to a file outside the directories plugins may come from;
    /// it was not opened.
    #[error(
        "plugin library {requested:?} resolves to {}, which is outside the plugin directories \
         ({}); move it into one of them or add its directory to the allowed ones",
        resolved.display(),
        list_paths(allowed)
    )]
    NotAllowed {
        /// The path as configured.
        requested: String,
        /// The file it resolves to, symlinks followed.
        resolved: PathBuf,
        /// The directories plugins may come from.
        allowed: Vec<PathBuf>,
    },
    /// The library, or its directory, is writable by users other than its owner; it
    /// was not opened.
    #[error(
        "plugin library {} is not loaded: {} has mode {mode:04o}, so users other than its owner \
         can change it and put their code in it; remove their write access (chmod go-w {})",
        library.display(),
        path.display(),
        path.display()
    )]
    SharedWritable {
        /// The library file, symlinks followed.
        library: PathBuf,
        /// The file or directory that others may write.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The dynamic loader refused the file.
    #[error("cannot load plugin library {}: {reason}", path.display())]
    Open {
        /// The resolved path.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// The library has no descriptor symbol.
    #[error(
        "{} is not a connector plugin: it does not export the symbol `{symbol}` ({reason}). \
         Connector libraries export `{}<crate name>` through connector_sdk's export_sink! or \
         export_source! and keep the file name cargo gave them (lib<crate name>.so)",
        path.display(),
        abi::DESCRIPTOR_SYMBOL_PREFIX
    )]
    MissingSymbol {
        /// The resolved path.
        path: PathBuf,
        /// The symbol that was looked for.
        symbol: String,
        /// The loader's message.
        reason: String,
    },
    /// The plugin was built for another ABI version.
    #[error(
        "{origin} was built for connector ABI version {plugin_abi}, but this runtime speaks \
         version {host_abi}; rebuild the connector against a matching connector-sdk"
    )]
    AbiMismatch {
        /// Where the plugin came from.
        origin: String,
        /// The version the plugin declares.
        plugin_abi: u32,
        /// The version this host speaks.
        host_abi: u32,
    },
    /// The descriptor is malformed.
    #[error("{origin} has an invalid connector descriptor: {reason}")]
    InvalidDescriptor {
        /// Where the plugin came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What went wrong in a call into a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallErrorKind {
    /// The connector reported a failure worth retrying.
    Retryable,
    /// The connector reported a failure retrying will not fix.
    Permanent,
    /// The connector rejected its configuration.
    InvalidConfig,
    /// The connector panicked; the instance refuses further calls but `close`.
    Panic,
    /// The call broke the ABI's rules (a bug in the host or the plugin).
    InvalidCall,
    /// The call was abandoned because the instance was closing.
    Cancelled,
    /// The plugin answered with a status this host does not know.
    Unknown(i32),
}

impl CallErrorKind {
    /// The kind for an ABI status; `None` for success.
    pub fn from_status(status: i32) -> Option<CallErrorKind> {
        Some(match status {
            abi::STATUS_OK => return None,
            abi::STATUS_RETRYABLE => CallErrorKind::Retryable,
            abi::STATUS_PERMANENT => CallErrorKind::Permanent,
            abi::STATUS_INVALID_CONFIG => CallErrorKind::InvalidConfig,
            abi::STATUS_PANIC => CallErrorKind::Panic,
            abi::STATUS_INVALID_CALL => CallErrorKind::InvalidCall,
            abi::STATUS_CANCELLED => CallErrorKind::Cancelled,
            other => CallErrorKind::Unknown(other),
        })
    }
}

impl fmt::Display for CallErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallErrorKind::Retryable => f.write_str("connector error (retryable)"),
            CallErrorKind::Permanent => f.write_str("connector error (permanent)"),
            CallErrorKind::InvalidConfig => f.write_str("invalid connector config"),
            CallErrorKind::Panic => f.write_str("connector panicked"),
            CallErrorKind::InvalidCall => f.write_str("invalid call into the connector"),
            CallErrorKind::Cancelled => f.write_str("call cancelled"),
            CallErrorKind::Unknown(status) => write!(f, "unknown connector status {status}"),
        }
    }
}

/// A failed call into a connector: its kind and the connector's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CallError {
    /// What went wrong.
    pub kind: CallErrorKind,
    /// The connector's (or the SDK's) message.
    pub message: String,
}

impl CallError {
    pub(crate) fn new(kind: CallErrorKind, message: impl Into<String>) -> Self {
        CallError {
            kind,
            message: message.into(),
        }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, CallErrorKind::Retryable)
    }
}
