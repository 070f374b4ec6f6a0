//! `iggy-connectors validate`: everything `run` would check before starting, and what
//! would only fail later (plugins, transforms, Avro and Protobuf schemas), reported at
//! once, without Iggy.

use std::process::ExitCode;

use config_provider::ConnectorConfig;
use runtime_core::PluginRegistry;

use crate::cli::ConfigPath;

/// The problems of one connector config: plugin, kind, `plugin_config` (checked by the
/// plugin's own description and check, nothing opened), transforms, stream schemas.
pub(crate) fn check_connector(plugins: &PluginRegistry, config: &ConnectorConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let path = &config.common().path;
    match plugins.resolve(path) {
        Ok(plugin) if plugin.kind() != config.kind() => problems.push(format!(
            "`path`: {path} is a {} plugin ({}), but this is a {} config",
            plugin.kind(),
            plugin.name(),
            config.kind()
        )),
        Ok(plugin) => {
            runtime_core::remember_plugin_secrets(&plugin, config);
            let plugin_config = runtime_core::typed_plugin_config(&plugin, config);
            problems.extend(runtime_core::check_plugin_config(&plugin, &plugin_config));
        }
        Err(error) => problems.push(format!("`path`: {}", crate::plugin_problem(&error))),
    }
    if let Err(error) =
        transforms::TransformChain::new(config.kind(), &config.common().transforms.0)
    {
        problems.push(error);
    }
    if let Err(error) = runtime_core::check_stream_schemas(config) {
        problems.push(error);
    }
    problems
}

async fn check(config: Option<&ConfigPath>) -> Result<String, Vec<String>> {
    if let Some(config) = config
        && !config.path.is_file()
    {
        return Err(vec![format!(
            "config file {} (from {}) does not exist",
            config.path.display(),
            config.origin
        )]);
    }
    let loaded = config_provider::load(config.map(|config| config.path.as_path()))
        .map_err(|error| vec![error.to_string()])?;
    // Leniently: a broken file is reported with what is wrong with the others.
    let (provider, dir, unreadable) =
        crate::open_provider(&loaded.config.connectors, &loaded.config.secrets, true)
            .map_err(|error| vec![error])?;
    let configs = provider
        .active_configs()
        .await
        .map_err(|error| vec![format!("cannot read the connector configs: {error}")])?;
    let plugins = crate::plugin_registry(&loaded.config.plugins).map_err(|error| vec![error])?;
    // A variable that matches no connector does nothing: a typo to fix before it ships.
    let mut problems: Vec<String> = unreadable.iter().map(ToString::to_string).collect();
    problems.extend(
        dir.iter()
            .flat_map(|dir| dir.unmatched.iter().map(ToString::to_string)),
    );
    let all = configs.sources.values().chain(configs.sinks.values());
    for config in all.clone() {
        for problem in check_connector(&plugins, config) {
            problems.push(format!(
                "{} {} (version {}): {problem}",
                config.kind(),
                config.common().key,
                config.common().version
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let file = loaded
        .file
        .map_or_else(|| "defaults".to_owned(), |file| file.display().to_string());
    let mut summary = format!(
        "configuration is valid: {file}, {} sources, {} sinks (plugins load and accept their plugin_config, transforms build, stream schemas read)",
        configs.sources.len(),
        configs.sinks.len()
    );
    for warning in &loaded.warnings {
        summary.push_str(&format!("\n  warning: {warning}"));
    }
    if let Some(dir) = dir {
        for warning in &dir.secret_files {
            summary.push_str(&format!("\n  warning: {warning}"));
        }
        match dir.trouble(configs.sources.len() + configs.sinks.len() + configs.broken.len()) {
            Some(trouble) => summary.push_str(&format!("\n  warning: {trouble}")),
            None => summary.push_str(&format!(
                "\n  connector configs read from {}",
                dir.path.display()
            )),
        }
    }
    Ok(summary)
}

pub(crate) fn validate(config: Option<&ConfigPath>) -> ExitCode {
    crate::block_on(async {
        let summary = check(config).await.map_err(|problems| {
            let count = problems.len();
            let mut report = format!(
                "invalid: {count} problem{}",
                if count == 1 { "" } else { "s" }
            );
            for problem in problems {
                report.push_str(&format!("\n  - {problem}"));
            }
            report
        })?;
        println!("{}", config_provider::scrub_secrets(&summary));
        Ok(())
    })
}
