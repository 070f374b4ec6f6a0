//! A validated connector descriptor, and opening instances from it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use connector_sdk::ConnectorKind;
use connector_sdk::abi::{self, ConnectorDescriptor, OpenArgs, RawSlice, SinkVTable, SourceVTable};

use crate::call::call_open;
use crate::error::{CallError, CallErrorKind, LoadError};
use crate::log::{forward_plugin_log, host_max_level};
use crate::{SinkInstance, SourceInstance};

/// Where a plugin's code lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOrigin {
    /// Linked into this program and registered by its descriptor.
    Static,
    /// Loaded from a shared library at this path.
    Library(PathBuf),
}

impl fmt::Display for PluginOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginOrigin::Static => f.write_str("statically linked connector"),
            PluginOrigin::Library(path) => write!(f, "plugin {}", path.display()),
        }
    }
}

#[derive(Debug)]
enum Functions {
    Sink(&'static SinkVTable),
    /// With how many batches may be unsettled at once.
    Source(&'static SourceVTable, u32),
}

#[derive(Debug)]
struct PluginInner {
    functions: Functions,
    name: String,
    version: String,
    sdk_version: String,
    origin: PluginOrigin,
    config_schema: String,
    validate_config: abi::ValidateConfigFn,
}

/// A connector plugin whose descriptor passed the ABI check. Cheap to clone.
///
/// The code behind a `Plugin` stays loaded for the life of the process (see the crate
/// documentation), so every handle made from it can call into it safely.
#[derive(Debug, Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

/// Per-instance options of `open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Worker threads of the instance's own executor (at least 1).
    pub worker_threads: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { worker_threads: 1 }
    }
}

impl Plugin {
    /// Registers a connector linked into this program, by the `descriptor()` function
    /// its `export_sink!` / `export_source!` generated.
    ///
    /// ```no_run
    /// # fn descriptor() -> &'static connector_sdk::abi::ConnectorDescriptor { unimplemented!() }
    /// let plugin = plugin_host::Plugin::from_static(descriptor())?;
    /// println!("{} {}", plugin.name(), plugin.version());
    /// # Ok::<(), plugin_host::LoadError>(())
    /// ```
    pub fn from_static(descriptor: &'static ConnectorDescriptor) -> Result<Plugin, LoadError> {
        // SAFETY: a &'static reference is valid for the whole program.
        unsafe { Plugin::from_descriptor(descriptor, PluginOrigin::Static) }
    }

    /// Validates a descriptor: ABI version first, then kind, function table and strings.
    ///
    /// # Safety
    /// `descriptor` must be null or point to memory that stays valid for the rest of the
    /// program and starts with a `u32` ABI version; if that version is [`abi::ABI_VERSION`]
    /// it must be a valid [`ConnectorDescriptor`].
    pub(crate) unsafe fn from_descriptor(
        descriptor: *const ConnectorDescriptor,
        origin: PluginOrigin,
    ) -> Result<Plugin, LoadError> {
        let invalid = |reason: &str| LoadError::InvalidDescriptor {
            origin: origin.to_string(),
            reason: reason.to_owned(),
        };
        if descriptor.is_null() {
            return Err(invalid("the descriptor pointer is null"));
        }
        // Only the first field is read before the version is known to match.
        // SAFETY: non-null and starting with a u32 (caller's contract).
        let plugin_abi = unsafe { descriptor.cast::<u32>().read() };
        if plugin_abi != abi::ABI_VERSION {
            return Err(LoadError::AbiMismatch {
                origin: origin.to_string(),
                plugin_abi,
                host_abi: abi::ABI_VERSION,
            });
        }
        // SAFETY: the version matches, so this is a valid descriptor (caller's contract).
        let descriptor: &'static ConnectorDescriptor = unsafe { &*descriptor };
        let text = |slice: RawSlice, what: &str| {
            // SAFETY: descriptor strings are static data of the plugin.
            unsafe { slice.as_str(what) }
                .map(str::to_owned)
                .map_err(|reason| invalid(&reason))
        };
        let functions = match descriptor.kind {
            abi::KIND_SINK if !descriptor.sink.is_null() => {
                // SAFETY: non-null pointer to the plugin's static sink table.
                Functions::Sink(unsafe { &*descriptor.sink })
            }
            abi::KIND_SOURCE if !descriptor.source.is_null() => {
                // SAFETY: non-null pointer to the plugin's static source table.
                let vtable = unsafe { &*descriptor.source };
                if descriptor.max_unsettled_batches == 0 {
                    return Err(invalid("a source must allow at least one unsettled batch"));
                }
                Functions::Source(vtable, descriptor.max_unsettled_batches)
            }
            abi::KIND_SINK => return Err(invalid("a sink without a sink function table")),
            abi::KIND_SOURCE => return Err(invalid("a source without a source function table")),
            other => return Err(invalid(&format!("unknown connector kind {other}"))),
        };
        let name = text(descriptor.name, "connector name")?;
        if name.is_empty() {
            return Err(invalid("the connector name is empty"));
        }
        // SAFETY: a function of the validated descriptor; it returns static text of the
        // plugin (valid for the life of the process).
        let config_schema = text(unsafe { (descriptor.config_schema)() }, "config schema")?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                functions,
                version: text(descriptor.version, "connector version")?,
                sdk_version: text(descriptor.sdk_version, "sdk version")?,
                name,
                origin,
                config_schema,
                validate_config: descriptor.validate_config,
            }),
        })
    }

    /// Sink or source.
    pub fn kind(&self) -> ConnectorKind {
        match self.inner.functions {
            Functions::Sink(_) => ConnectorKind::Sink,
            Functions::Source(..) => ConnectorKind::Source,
        }
    }

    /// For a source, how many polled batches may be unsettled at once (1 for a sink).
    pub fn max_unsettled_batches(&self) -> u32 {
        match self.inner.functions {
            Functions::Source(_, max) => max,
            Functions::Sink(_) => 1,
        }
    }

    /// The connector's name, as its descriptor declares it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The connector crate's version.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// The connector-sdk version the plugin was built with.
    pub fn sdk_version(&self) -> &str {
        &self.inner.sdk_version
    }

    /// The JSON Schema of the connector's `plugin_config` (JSON text): fields, types,
    /// defaults, docs, and `"x-secret": true` on secret fields.
    pub fn config_schema(&self) -> &str {
        &self.inner.config_schema
    }

    /// Asks the connector whether `config_json` is a `plugin_config` it would open
    /// with, without opening anything: `Err` holds every problem it names (a config
    /// that does not deserialise names the first).
    pub fn validate_config(&self, config_json: &str) -> Result<(), Vec<String>> {
        struct Answer(Option<(i32, String)>);
        unsafe extern "C" fn done(ctx: *mut std::ffi::c_void, status: i32, message: RawSlice) {
            // SAFETY: `ctx` is the `Answer` below, alive for the whole synchronous call.
            let answer = unsafe { &mut *ctx.cast::<Answer>() };
            // SAFETY: the message is valid for this call (the ABI's memory rules).
            let text = unsafe { message.as_bytes() };
            answer.0 = Some((status, String::from_utf8_lossy(text).into_owned()));
        }
        let mut answer = Answer(None);
        // SAFETY: a function of the validated descriptor; the config and `answer`
        // outlive the call, which reports through `done` before it returns.
        unsafe {
            (self.inner.validate_config)(
                RawSlice::new(config_json.as_bytes()),
                done,
                (&mut answer as *mut Answer).cast(),
            );
        }
        match answer.0 {
            Some((abi::STATUS_OK, _)) => Ok(()),
            Some((abi::STATUS_INVALID_CONFIG, message)) => {
                Err(serde_json::from_str::<Vec<String>>(&message).unwrap_or_else(|_| vec![message]))
            }
            Some((status, message)) => Err(vec![format!(
                "{} failed to check the config (status {status}): {message}",
                self.inner.origin
            )]),
            None => Err(vec![format!(
                "{} did not answer the config check",
                self.inner.origin
            )]),
        }
    }

    /// Where the plugin's code lives.
    pub fn origin(&self) -> &PluginOrigin {
        &self.inner.origin
    }

    /// The library path, for a plugin loaded from a file.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.origin {
            PluginOrigin::Library(path) => Some(path),
            PluginOrigin::Static => None,
        }
    }

    fn wrong_kind(&self, wanted: ConnectorKind) -> CallError {
        CallError::new(
            CallErrorKind::InvalidCall,
            format!(
                "{} ({}) is a {}, not a {wanted}",
                self.inner.origin,
                self.name(),
                self.kind()
            ),
        )
    }

    /// Opens a sink instance with its `plugin_config` as JSON.
    pub async fn open_sink(
        &self,
        key: &str,
        config_json: &str,
        options: OpenOptions,
    ) -> Result<SinkInstance, CallError> {
        let Functions::Sink(vtable) = self.inner.functions else {
            return Err(self.wrong_kind(ConnectorKind::Sink));
        };
        let instance = self
            .open(vtable.open, key, config_json, None, options)
            .await?;
        Ok(SinkInstance::new(self.clone(), vtable, instance, key))
    }

    /// Opens a source instance with its `plugin_config` as JSON and its last state.
    pub async fn open_source(
        &self,
        key: &str,
        config_json: &str,
        state: Option<&[u8]>,
        options: OpenOptions,
    ) -> Result<SourceInstance, CallError> {
        let Functions::Source(vtable, _) = self.inner.functions else {
            return Err(self.wrong_kind(ConnectorKind::Source));
        };
        let instance = self
            .open(vtable.open, key, config_json, state, options)
            .await?;
        Ok(SourceInstance::new(self.clone(), vtable, instance, key))
    }

    async fn open(
        &self,
        open: abi::OpenFn,
        key: &str,
        config_json: &str,
        state: Option<&[u8]>,
        options: OpenOptions,
    ) -> Result<crate::call::InstancePtr, CallError> {
        let state = match state {
            // A non-null pointer marks "state present", even for empty state.
            Some([]) => RawSlice {
                ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
                len: 0,
            },
            Some(bytes) => RawSlice::new(bytes),
            None => RawSlice::EMPTY,
        };
        let args = OpenArgs {
            key: RawSlice::new(key.as_bytes()),
            config_json: RawSlice::new(config_json.as_bytes()),
            state,
            // A statically linked connector shares our `tracing`: nothing to forward.
            log: match self.inner.origin {
                PluginOrigin::Static => None,
                PluginOrigin::Library(_) => Some(forward_plugin_log),
            },
            max_log_level: host_max_level(),
            worker_threads: options.worker_threads,
        };
        call_open(|done, ctx| {
            // SAFETY: `open` comes from a validated descriptor; `args` and the strings
            // it points to outlive this call, which is all the ABI asks of them.
            unsafe { open(&args, done, ctx) }
        })
        .await
    }
}
