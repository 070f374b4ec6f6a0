//! `iggy-connectors connectors [describe NAME]`: which connectors there are, and what
//! each one's `plugin_config` takes, from the plugins' own descriptions. Nothing is
//! started; a configured connector's library is opened (from the plugin directories
//! only) to read its description.

use std::process::ExitCode;

use plugin_host::Plugin;
use runtime_core::ConfigDescription;

use crate::cli::ConfigPath;

/// The bundled connectors, linked into this binary, by name.
fn bundled() -> Result<Vec<(String, Plugin)>, String> {
    bundled_connectors::plugins().map_err(|error| error.to_string())
}

/// The runtime config and its connector configs (read leniently: a broken file is
/// skipped here, `validate` reports it).
fn configured(
    config: Option<&ConfigPath>,
) -> Result<
    (
        config_provider::RuntimeConfig,
        Vec<config_provider::ConnectorConfig>,
    ),
    String,
> {
    let loaded = config_provider::load(config.map(|config| config.path.as_path()))
        .map_err(|error| error.to_string())?;
    let (provider, _, _) =
        crate::open_provider(&loaded.config.connectors, &loaded.config.secrets, true)?;
    let configs = crate::block_on_value(provider.active_configs())
        .map_err(|error| format!("cannot read the connector configs: {error}"))?;
    let all = configs
        .sources
        .into_values()
        .chain(configs.sinks.into_values())
        .collect();
    Ok((loaded.config, all))
}

/// `connectors`: the bundled connectors, then the configured ones with the plugin
/// each names (or why it cannot be had).
pub(crate) fn list(config: Option<&ConfigPath>) -> ExitCode {
    let bundled = match bundled() {
        Ok(bundled) => bundled,
        Err(error) => {
            report!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("bundled (linked into this binary; `connectors describe NAME` for a reference):");
    for (name, plugin) in &bundled {
        println!("  {name}\t{}\t{}", plugin.kind(), plugin.version());
    }
    let (runtime, configs) = match configured(config) {
        Ok(configured) => configured,
        Err(error) => {
            report!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if configs.is_empty() {
        println!("configured: none");
        return ExitCode::SUCCESS;
    }
    println!("configured:");
    let plugins = match crate::plugin_registry(&runtime.plugins) {
        Ok(plugins) => plugins,
        Err(error) => {
            report!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for config in &configs {
        let common = config.common();
        let plugin = match plugins.resolve(&common.path) {
            Ok(plugin) => format!("{} {} {}", plugin.name(), plugin.kind(), plugin.version()),
            Err(error) => {
                failed = true;
                format!("cannot be loaded: {}", crate::plugin_problem(&error))
            }
        };
        println!(
            "  {} {}\t{}\t{plugin}",
            config.kind(),
            common.key,
            common.path
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The plugin `name` stands for: a bundled connector, a configured connector's key, or
/// a library path (from the plugin directories).
fn find(config: Option<&ConfigPath>, name: &str) -> Result<Plugin, String> {
    if let Some((_, plugin)) = bundled()?.into_iter().find(|(bundled, _)| bundled == name) {
        return Ok(plugin);
    }
    let (runtime, configs) = configured(config)?;
    let plugins = crate::plugin_registry(&runtime.plugins)?;
    let path = configs
        .iter()
        .find(|config| config.common().key == name)
        .map_or(name, |config| config.common().path.as_str());
    plugins.resolve(path).map_err(|error| {
        format!(
            "{name:?} is no bundled connector, no configured connector's key, and as a library: {}",
            crate::plugin_problem(&error)
        )
    })
}

/// `connectors describe NAME`: the plugin's `plugin_config` reference, as Markdown.
pub(crate) fn describe(config: Option<&ConfigPath>, name: &str) -> ExitCode {
    let described = find(config, name).and_then(|plugin| {
        let description = ConfigDescription::of(&plugin)?;
        Ok(description.markdown(plugin.name(), plugin.kind().as_str()))
    });
    match described {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            report!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
