//! The `iggy-connectors` binary. It only parses the command line and wires the library
//! crates together; everything it does is implemented in them.
//!
//! `run` (the default) loads and validates the config, reads the connector configs from
//! the configured provider, connects to Iggy and runs the connectors until SIGINT or
//! SIGTERM; `plugins` inspects plugin libraries.

/// `eprintln!` with secrets scrubbed ([`config_provider::scrub_secrets`]): what the
/// binary prints to stderr is errors, and an error may quote a config value that came
/// from `${env:...}` or `${file:...}`.
macro_rules! report {
    ($($arg:tt)*) => {
        eprintln!("{}", config_provider::scrub_secrets(&format!($($arg)*)))
    };
}

mod cli;
mod connectors;
mod demo;
mod health;
mod transform;
mod validate;

use std::io::IsTerminal;
use std::process::ExitCode;

use cli::{Command, Invocation};
use plugin_host::PluginLoader;

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os().skip(1)) {
        Ok(invocation) => invocation,
        Err(error) => {
            report!("error: {error}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match invocation.command {
        Command::Help => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!(
                "iggy-connectors {} (connector ABI {})",
                env!("CARGO_PKG_VERSION"),
                connector_sdk::abi::ABI_VERSION
            );
            ExitCode::SUCCESS
        }
        Command::Plugins(paths) => {
            init_logging(config_provider::LogFormat::Text);
            list_plugins(&paths)
        }
        Command::Connectors => connectors::list(invocation.config.as_ref()),
        Command::Describe(name) => connectors::describe(invocation.config.as_ref(), &name),
        Command::Transform { connector, input } => transform::run(&connector, &input),
        Command::Validate => validate::validate(invocation.config.as_ref()),
        Command::Demo => demo::demo(),
        Command::Healthcheck => health::healthcheck(invocation.config.as_ref()),
        Command::Run => run(&invocation),
    }
}

/// Logs to stderr as `[logging] format` says. `RUST_LOG` filters; without it, `info`
/// but for the `iggy` client's connection chatter (connecting, signing in, shutting
/// down: one line each per connection), which shows from `warn`. Colours only when
/// stderr is a terminal and `NO_COLOR` is unset.
fn init_logging(format: config_provider::LogFormat) {
    // `iggy::`, not `iggy`: a target matches by prefix, and `iggy` would also quiet
    // `iggy_connectors`, `iggy_test_server` and the bundled `iggy_connector_*`. Of the
    // client's crates only `iggy` logs at info (`iggy_common` from warn, and
    // `iggy_binary_protocol` not at all).
    const DEFAULT_FILTER: &str = "info,iggy::=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        // Scrubbed: a plugin's log line or an error may quote a secret config value.
        .with_writer(|| config_provider::ScrubbingWriter::new(std::io::stderr()))
        // A log line that cannot be written (stderr closed: a pipe whose reader went
        // away) is lost; by default the subscriber would report that with `eprintln!`,
        // which panics on the same closed stderr, in whatever task was logging.
        .log_internal_errors(false);
    match format {
        config_provider::LogFormat::Json => builder.json().flatten_event(true).init(),
        config_provider::LogFormat::Text => builder.init(),
    }
}

/// Loads each library and prints what it is; exits 1 if any fails to load.
fn list_plugins(paths: &[String]) -> ExitCode {
    let loader = PluginLoader::new();
    let mut failed = false;
    for path in paths {
        match loader.load(path) {
            Ok(plugin) => println!(
                "{}\t{}\t{}\tsdk {}\tabi {}\t{}",
                plugin.name(),
                plugin.kind(),
                plugin.version(),
                plugin.sdk_version(),
                connector_sdk::abi::ABI_VERSION,
                plugin.origin()
            ),
            Err(error) => {
                failed = true;
                report!("error: {error}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs the connectors of the config until SIGINT or SIGTERM (a second signal exits at
/// once); `--strict` refuses to start when a connector config cannot run.
fn run(invocation: &Invocation) -> ExitCode {
    if let Some(config) = &invocation.config
        && !config.path.is_file()
    {
        report!(
            "error: config file {} (from {}) does not exist",
            config.path.display(),
            config.origin
        );
        return ExitCode::FAILURE;
    }
    let file = invocation
        .config
        .as_ref()
        .map(|config| config.path.as_path());
    let loaded = match config_provider::load(file) {
        Ok(loaded) => loaded,
        Err(error) => {
            report!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(loaded.config.logging.format);
    loaded.log_warnings();
    tracing::info!(file = ?loaded.file, config = %loaded.redacted(), "configuration is valid");
    let plugins = match plugin_registry(&loaded.config.plugins) {
        Ok(plugins) => plugins,
        Err(error) => {
            report!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = loaded.config;
    if invocation.strict {
        config.connectors.set_strict(true);
    }
    block_on(serve(config, plugins, |_| {}))
}

/// Every bundled connector, linked in, under its descriptor's name (a config's `path`
/// may be `stdout`, `file`, ...; the demo's configs are); any other `path` is a
/// library, loaded only from the plugin directories.
pub(crate) fn plugin_registry(
    config: &config_provider::PluginsConfig,
) -> Result<runtime_core::PluginRegistry, String> {
    let mut plugins = runtime_core::PluginRegistry::new(plugin_loader(config));
    for (name, plugin) in bundled_connectors::plugins().map_err(|error| error.to_string())? {
        plugins.register(name, plugin);
    }
    Ok(plugins)
}

/// A loader confined to `[plugins] directories`: when that is empty, the directory of
/// this binary and the standard install directory.
pub(crate) fn plugin_loader(plugins: &config_provider::PluginsConfig) -> PluginLoader {
    let directories: Vec<std::path::PathBuf> = if plugins.directories.is_empty() {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
            .into_iter()
            .chain([std::path::PathBuf::from(
                config_provider::STANDARD_PLUGIN_DIRECTORY,
            )])
            .collect()
    } else {
        plugins
            .directories
            .iter()
            .map(std::path::PathBuf::from)
            .collect()
    };
    PluginLoader::new().confined_to(directories)
}

/// A plugin load error as a user reads it: a refused directory names the setting that
/// allows it.
pub(crate) fn plugin_problem(error: &plugin_host::LoadError) -> String {
    match error {
        plugin_host::LoadError::NotAllowed { .. } => {
            format!("{error} (plugins.directories, IGGY_CONNECTORS_PLUGINS_DIRECTORIES)")
        }
        _ => error.to_string(),
    }
}

/// Under `[connectors] strict`: refuses to start when any connector of `configs`
/// could not run, with every reason: what `validate` checks of each (its library is
/// opened, its kind, its `plugin_config`, transforms and stream schemas) and the
/// configs the provider could not use.
fn unrunnable(
    configs: &config_provider::ActiveConfigs,
    plugins: &runtime_core::PluginRegistry,
) -> Result<(), String> {
    let mut problems: Vec<String> = configs
        .broken
        .iter()
        .map(|broken| broken.problem.to_string())
        .collect();
    for config in configs.sources.values().chain(configs.sinks.values()) {
        for problem in validate::check_connector(plugins, config) {
            problems.push(format!(
                "{} {}: {problem}",
                config.kind(),
                config.common().key
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "refusing to start ([connectors] strict): {}",
            problems.join("; ")
        ))
    }
}

/// Runs `work` to its result on a tokio runtime of its own (for a command that needs
/// one answer from async code, such as a provider's configs).
pub(crate) fn block_on_value<T, E: std::fmt::Display>(
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?
        .block_on(work)
        .map_err(|error| error.to_string())
}

/// Runs `work` on a multi-thread tokio runtime; an error is printed and exits 1.
pub(crate) fn block_on(work: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))
        .and_then(|runtime| runtime.block_on(work));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Where a local provider reads its connector configs.
pub(crate) struct ConnectorDir {
    /// `connectors.config_dir` as configured.
    pub(crate) configured: String,
    /// That directory, absolute: a relative one is read from the working directory, as
    /// upstream's runtime reads it.
    pub(crate) path: std::path::PathBuf,
    /// `IGGY_CONNECTORS_{SINK|SOURCE}_*` variables that match no connector there.
    pub(crate) unmatched: Vec<config_provider::Problem>,
    /// `${file:...}` secrets of its configs that other users may read.
    pub(crate) secret_files: Vec<config_provider::Problem>,
}

impl ConnectorDir {
    /// What a user should know when the directory gave `count` connectors and that is
    /// probably not what they meant; `None` when all is as configured.
    pub(crate) fn trouble(&self, count: usize) -> Option<String> {
        if self.configured.is_empty() {
            return Some("no connectors.config_dir is set: no connectors run".to_owned());
        }
        let relative = if std::path::Path::new(&self.configured).is_relative() {
            " (a relative connectors.config_dir is read from the working directory)"
        } else {
            ""
        };
        if !self.path.is_dir() {
            return Some(format!(
                "the connector config directory {} does not exist{relative}: no connectors run",
                self.path.display()
            ));
        }
        (count == 0).then(|| {
            format!(
                "the connector config directory {} holds no connector files (*.toml){relative}",
                self.path.display()
            )
        })
    }
}

/// The provider of the connector configs, for a local one the directory it reads, and
/// (`leniently`, for `validate`) the problems of the configs it left out; otherwise any
/// problem is an error.
pub(crate) type OpenedProvider = (
    std::sync::Arc<dyn config_provider::ConfigProvider>,
    Option<ConnectorDir>,
    Vec<config_provider::Problem>,
);

/// Opens the provider of the connector configs (see [`OpenedProvider`]).
pub(crate) fn open_provider(
    connectors: &config_provider::ConnectorsConfig,
    secrets: &config_provider::SecretsConfig,
    leniently: bool,
) -> Result<OpenedProvider, String> {
    use config_provider::ConnectorsConfig;
    match connectors {
        ConnectorsConfig::Local(local) => {
            let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let (provider, problems) =
                config_provider::LocalProvider::open_leniently(&local.config_dir, &env, secrets)
                    .map_err(|error| error.to_string())?;
            if !leniently && !problems.is_empty() {
                return Err(config_provider::ConfigError { problems }.to_string());
            }
            let path = std::path::absolute(&local.config_dir)
                .unwrap_or_else(|_| std::path::PathBuf::from(&local.config_dir));
            let dir = ConnectorDir {
                configured: local.config_dir.clone(),
                path,
                unmatched: provider.unmatched_overrides().to_vec(),
                secret_files: provider.secret_file_warnings().to_vec(),
            };
            Ok((std::sync::Arc::new(provider), Some(dir), problems))
        }
        ConnectorsConfig::Http(http) => Ok((
            std::sync::Arc::new(config_provider::HttpProvider::new((**http).clone())),
            None,
            Vec::new(),
        )),
    }
}

/// Runs the connectors of `config` with `plugins` until SIGINT or SIGTERM; `started`
/// is told where the HTTP API listens once everything runs.
pub(crate) async fn serve(
    config: config_provider::RuntimeConfig,
    plugins: runtime_core::PluginRegistry,
    started: impl FnOnce(Option<std::net::SocketAddr>),
) -> Result<(), String> {
    let mut signals =
        Signals::new().map_err(|error| format!("cannot listen for signals: {error}"))?;
    // One connector's config that cannot run is that connector's problem (it is listed
    // as `error`), unless [connectors] strict asks to refuse to start instead.
    let strict = config.connectors.strict();
    let (provider, dir, problems) = open_provider(&config.connectors, &config.secrets, !strict)?;
    for problem in &problems {
        tracing::warn!(source = %problem.source, key = problem.key.as_deref().unwrap_or_default(), "{problem}");
    }
    let configs = provider
        .active_configs()
        .await
        .map_err(|error| format!("cannot read the connector configs: {error}"))?;
    if strict {
        unrunnable(&configs, &plugins)?;
    }
    if let Some(dir) = dir {
        // A broken file is a connector file too: the directory is not empty.
        let count = configs.sources.len() + configs.sinks.len() + configs.broken.len();
        match dir.trouble(count) {
            Some(trouble) => tracing::warn!(dir = %dir.path.display(), "{trouble}"),
            None => {
                tracing::info!(dir = %dir.path.display(), connectors = count, "read the connector configs")
            }
        }
    }
    let tls = config.iggy.tls.enabled.then(|| {
        (
            config.iggy.tls.ca_file.clone(),
            config.iggy.tls.domain.clone(),
        )
    });
    let settings = runtime_core::IggySettings {
        username: config.iggy.username.clone(),
        password: config.iggy.password.clone(),
        token: config.iggy.token.clone(),
        tls,
        ..runtime_core::IggySettings::new(config.iggy.address.clone())
    };
    // Signing in takes a real server tens of milliseconds (a password hash): the
    // connectors and the API start meanwhile, `/ready` answering 503 until it is done.
    let address = settings.address.clone();
    let (bus, connecting) = runtime_core::ConnectingBus::spawn(async move {
        let bus = runtime_core::IggyBus::connect(&settings).await?;
        Ok(std::sync::Arc::new(bus) as std::sync::Arc<dyn runtime_core::MessageBus>)
    });
    let mut context = runtime_core::RuntimeContext::new(
        std::sync::Arc::new(bus),
        runtime_core::StateStore::new(&config.state.path),
        &config.runtime,
    );
    if let Some(cluster) = runtime_core::cluster::ClusterSettings::from_config(&config.cluster) {
        tracing::info!(
            cluster = %cluster.name,
            member = %cluster.member_name,
            topic = %cluster.coordination,
            state = %cluster.state,
            "cluster mode: sources run on the member the cluster places them on"
        );
        context = context.in_cluster(cluster);
    }
    let running = runtime_core::Runtime::start(configs, plugins, context).await;
    let api = if config.http.enabled {
        let context = http_api::ApiContext::new(running.clone(), provider, config.http.clone());
        match http_api::serve(&config.http, context).await {
            Ok(server) => Some(server),
            Err(error) => {
                running
                    .shutdown(config.runtime.shutdown_timeout.get())
                    .await;
                return Err(error.to_string());
            }
        }
    } else {
        None
    };
    // The first connection decides whether the runtime can run at all.
    let timeout = config.runtime.shutdown_timeout.get();
    let connected = tokio::select! {
        connected = connecting => match connected {
            Ok(connected) => connected.map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        },
        () = signals.next() => {
            tracing::info!("shutting down while connecting to Iggy");
            stop(api, &running, timeout).await;
            tracing::info!("stopped");
            return Ok(());
        }
    };
    if let Err(error) = connected {
        stop(api, &running, timeout).await;
        return Err(format!("cannot connect to Iggy at {address}: {error}"));
    }
    // Report each connector once it has left `starting` (reached Iggy, or failed).
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < settled
        && running
            .statuses()
            .iter()
            .any(|status| status.state == runtime_core::ConnectorState::Starting)
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for status in running.statuses() {
        tracing::info!(
            connector = %status.key,
            kind = %status.kind,
            version = status.version,
            state = %status.state,
            error = status.last_error.as_deref().unwrap_or(""),
            "connector"
        );
    }
    let not_started: Vec<String> = running
        .statuses()
        .iter()
        .filter(|status| status.state == runtime_core::ConnectorState::Error)
        .map(|status| format!("{} {}", status.kind, status.key))
        .chain(running.kindless_configs().iter().cloned())
        .collect();
    if !not_started.is_empty() {
        tracing::warn!(
            connectors = ?not_started,
            "{} connector(s) did not start (state error, see their last_error); the others run",
            not_started.len()
        );
    }
    if running.statuses().is_empty() {
        tracing::info!("no connectors configured");
    }
    started(api.as_ref().map(http_api::ApiServer::local_addr));
    let summary = config.logging.summary_interval.get();
    let summaries =
        (!summary.is_zero()).then(|| tokio::spawn(log_summaries(running.clone(), summary)));
    signals.next().await;
    tracing::info!("shutting down; a second signal exits at once");
    if let Some(summaries) = summaries {
        summaries.abort();
    }
    tokio::select! {
        () = stop(api, &running, timeout) => {}
        () = signals.next() => {
            tracing::warn!("second signal: exiting without waiting");
            std::process::exit(130);
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Stops serving the API, then the connectors (batches in flight finish, up to
/// `timeout`).
async fn stop(
    api: Option<http_api::ApiServer>,
    running: &runtime_core::Runtime,
    timeout: std::time::Duration,
) {
    if let Some(api) = api {
        api.shutdown().await;
    }
    running.shutdown(timeout).await;
}

/// Logs one line per connector every `interval`: state, throughput, errors, lag.
async fn log_summaries(running: runtime_core::Runtime, interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Some(view) = running.cluster_view() {
            let here = view.members.iter().find(|member| member.this_member);
            tracing::info!(
                cluster = %view.cluster,
                member = here.map_or("", |member| member.name.as_str()),
                members = view.members.len(),
                sources_here = here.map_or(0, |member| member.sources.len()),
                "summary: cluster"
            );
        }
        for status in running.statuses() {
            let metrics = &status.metrics;
            tracing::info!(
                connector = %status.key,
                kind = %status.kind,
                state = %status.state,
                messages_per_second = metrics.messages_per_second,
                messages = metrics.messages_out,
                errors = metrics.errors,
                lag = metrics.lag,
                group_resets = metrics.group_resets,
                error = if status.state == runtime_core::ConnectorState::Error {
                    status.last_error.as_deref().unwrap_or_default()
                } else {
                    ""
                },
                "summary"
            );
        }
        for problem in running.kindless_configs() {
            tracing::warn!(error = %problem, "summary: a connector config that names no kind does not run");
        }
    }
}

/// SIGINT and SIGTERM, listened to from startup on: one listener for the whole run,
/// so that a second signal is seen as a second one (a listener created after the first
/// would report that one again).
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
