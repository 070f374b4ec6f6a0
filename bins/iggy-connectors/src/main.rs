//! The `iggy-connectors` binary. It only parses the command line and wires the library
//! crates together; everything it does is implemented in them.
//!
//! The runtime core is not built yet, so the binary can inspect plugin libraries but
//! refuses to pretend to run connectors.

mod cli;

use std::process::ExitCode;

use cli::{Command, Invocation};
use plugin_host::PluginLoader;

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os().skip(1)) {
        Ok(invocation) => invocation,
        Err(error) => {
            eprintln!("error: {error}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    init_logging();
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
        Command::Plugins(paths) => list_plugins(&paths),
        Command::Run => run(&invocation),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
                eprintln!("error: {error}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Running connectors needs the runtime core, which does not exist yet: say so plainly
/// rather than start and do nothing.
fn run(invocation: &Invocation) -> ExitCode {
    if let Some(config) = &invocation.config
        && !config.path.is_file()
    {
        eprintln!(
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
    match config_provider::load(file) {
        Ok(loaded) => tracing::info!(
            file = ?loaded.file,
            config = %loaded.redacted(),
            "configuration is valid"
        ),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!(
        "error: running connectors is not implemented yet: this build loads and validates \
         the configuration only. Use `iggy-connectors plugins PATH...` to inspect plugin \
         libraries."
    );
    ExitCode::FAILURE
}
