//! The README's configuration reference names every key the runtime reads, with its
//! environment variable.

#[test]
fn the_configuration_reference_lists_every_key_and_variable() {
    let readme = include_str!("../README.md");
    let reference = readme
        .split("<!-- configuration reference: generated from configs/config.toml -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- end of configuration reference -->").next())
        .expect("the README has a configuration reference");
    let missing: Vec<String> = config_provider::environment_variables()
        .into_iter()
        .filter(|variable| !reference.contains(&format!("`{variable}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the README's reference: {missing:?}"
    );
    let missing: Vec<String> = config_provider::config_keys()
        .into_iter()
        .filter(|key| !reference.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys not in the README's reference: {missing:?}"
    );
}
