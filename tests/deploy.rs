//! No Kubernetes or container engine runs on our machines, so the manifests under
//! `deploy/` are checked by what they rely on: their environment variables are real
//! config keys and load into a cluster member with the API off loopback behind the
//! image's api key file, the probes ask `/health` and `/ready` on the port the API
//! listens on, several replicas run, the pods get longer to stop than the runtime's
//! shutdown takes, and the connector configs they ship are valid and the same in both.
//!
//! The manifests are read as the plain YAML subset they are written in (block maps
//! and lists, no anchors or flow collections), line by line.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

fn deploy() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy().join(name)).unwrap()
}

/// A value without the quotes YAML allows around it.
fn unquoted(value: &str) -> String {
    value.trim().trim_matches('"').trim_matches('\'').to_owned()
}

/// The Kubernetes container's environment: `- name: X` with `value: v` (Some) or
/// `valueFrom:` (None, set from a secret or the pod).
fn kubernetes_env(manifest: &str) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    let mut lines = manifest.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("- name: IGGY_CONNECTORS_") else {
            continue;
        };
        let next = lines.peek().map(|line| line.trim()).unwrap_or_default();
        let value = next.strip_prefix("value:").map(unquoted);
        assert!(
            value.is_some() || next == "valueFrom:",
            "IGGY_CONNECTORS_{name} has neither value nor valueFrom"
        );
        env.insert(format!("IGGY_CONNECTORS_{name}"), value);
    }
    env
}

/// The number after `key:` on the first line that has it, anywhere in `text`.
fn number_after(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(key))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} with a number"))
}

/// Loads a runtime config from `env` (values set from secrets given stand-ins), the api
/// key read from a file where the image reads it, as a mounted secret would put it.
fn load(env: BTreeMap<String, String>, label: &str) -> config_provider::RuntimeConfig {
    let known = config_provider::environment_variables();
    for name in env.keys() {
        assert!(known.contains(name), "{name} is not a config variable");
    }
    let mut env = env;
    let mounted = iggy_connectors_tests::temp_dir(label).join("api_key");
    std::fs::write(&mounted, "k3y\n").unwrap();
    // The image's own: the address off loopback, and the key from the secret file.
    env.insert(
        "IGGY_CONNECTORS_HTTP_ADDRESS".to_owned(),
        "0.0.0.0:8081".to_owned(),
    );
    env.insert(
        "IGGY_CONNECTORS_HTTP_API_KEY".to_owned(),
        format!("${{file:{}}}", mounted.display()),
    );
    config_provider::load_with_env(None, env).unwrap().config
}

/// The API key path the image reads (its Dockerfile's ENV).
fn image_api_key_file() -> String {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile")).unwrap();
    dockerfile
        .split("IGGY_CONNECTORS_HTTP_API_KEY=\\${file:")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap()
        .to_owned()
}

#[test]
fn the_kubernetes_deployment_runs_cluster_members_the_runtime_accepts() {
    let manifest = read("kubernetes.yaml");
    let env = kubernetes_env(&manifest);
    for from_pod in [
        "IGGY_CONNECTORS_IGGY_USERNAME",
        "IGGY_CONNECTORS_IGGY_PASSWORD",
        "IGGY_CONNECTORS_CLUSTER_MEMBER_NAME",
    ] {
        assert_eq!(
            env.get(from_pod),
            Some(&None),
            "{from_pod} comes from a secret or the pod"
        );
    }
    let values: BTreeMap<String, String> = env
        .into_iter()
        .map(|(name, value)| (name, value.unwrap_or_else(|| "from-the-pod".to_owned())))
        .collect();
    let config = load(values, "deploy-kubernetes");
    assert!(config.cluster.enabled, "the pods are cluster members");
    assert!(config.http.read_only, "the configs come from the ConfigMap");

    assert!(
        number_after(&manifest, "replicas:") >= 2,
        "a cluster of one"
    );
    let port = config.http.address.rsplit(':').next().unwrap().to_owned();
    assert_eq!(number_after(&manifest, "containerPort:").to_string(), port);
    for (probe, path) in [("livenessProbe:", "/health"), ("readinessProbe:", "/ready")] {
        let block: Vec<&str> = manifest
            .split(probe)
            .nth(1)
            .unwrap_or_else(|| panic!("no {probe}"))
            .lines()
            .take(4)
            .collect();
        let block = block.join("\n");
        assert!(block.contains(&format!("path: {path}")), "{probe} {block}");
        assert!(block.contains(&format!("port: {port}")), "{probe} {block}");
    }
    let grace = number_after(&manifest, "terminationGracePeriodSeconds:");
    assert!(
        grace > config.runtime.shutdown_timeout.get().as_secs(),
        "pods are killed after {grace} s, before the runtime's {} shutdown is over",
        config.runtime.shutdown_timeout
    );
    // The api key secret lands where the image reads it.
    let key_file = image_api_key_file();
    let (directory, file) = key_file.rsplit_once('/').unwrap();
    assert!(
        manifest.contains(&format!("mountPath: {directory}\n")),
        "{key_file}"
    );
    assert!(manifest.contains(&format!("path: {file}\n")), "{key_file}");
    assert!(
        manifest.contains("mountPath: /etc/iggy-connectors/connectors"),
        "the configs are where the image reads them"
    );
}

#[test]
fn the_compose_file_runs_cluster_members_the_runtime_accepts() {
    let compose = read("compose.yaml");
    let env: BTreeMap<String, String> = compose
        .lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            name.starts_with("IGGY_CONNECTORS_")
                .then(|| (name.to_owned(), unquoted(value)))
        })
        .collect();
    assert!(!env.is_empty(), "no IGGY_CONNECTORS_ variables");
    let config = load(env, "deploy-compose");
    assert!(config.cluster.enabled, "the replicas are cluster members");
    assert!(number_after(&compose, "replicas:") >= 2, "a cluster of one");
    let key_file = image_api_key_file();
    let secret = key_file.rsplit('/').next().unwrap();
    assert!(
        compose.contains(&format!("- {secret}\n")) && compose.contains(&format!("  {secret}:\n")),
        "the api key secret {secret} is declared and given to the replicas"
    );
    assert!(
        compose.contains("./connectors:/etc/iggy-connectors/connectors"),
        "the configs are where the image reads them"
    );
}

/// The connector configs both manifests ship are one set: the ConfigMap's entries are
/// the files of `deploy/connectors`, and each is a valid connector config.
#[test]
fn the_shipped_connector_configs_agree_and_are_valid() {
    let manifest = read("kubernetes.yaml");
    let mut config_map = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in manifest.lines() {
        if let Some((_, text)) = &mut current {
            if let Some(content) = line.strip_prefix("    ") {
                text.push_str(content);
                text.push('\n');
                continue;
            }
            let (name, text) = current.take().unwrap();
            config_map.insert(name, text);
        }
        if let Some(name) = line
            .strip_prefix("  ")
            .and_then(|rest| rest.strip_suffix(".toml: |"))
        {
            current = Some((format!("{name}.toml"), String::new()));
        }
    }
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(deploy().join("connectors")).unwrap() {
        let path = entry.unwrap().path();
        files.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read_to_string(&path).unwrap(),
        );
    }
    assert!(!files.is_empty());
    assert_eq!(
        config_map, files,
        "the ConfigMap and deploy/connectors differ"
    );
    let provider =
        config_provider::LocalProvider::open(deploy().join("connectors"), &BTreeMap::new())
            .unwrap();
    let configs = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(config_provider::ConfigProvider::active_configs(&provider))
        .unwrap();
    assert!(configs.broken.is_empty(), "{:?}", configs.broken);
    assert_eq!(configs.sources.len() + configs.sinks.len(), files.len());
}
