//! The tutorial connector works through the plugin host, and the README shows its code.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use plugin_host::{OpenOptions, Plugin};

#[tokio::test]
async fn the_tutorial_sink_opens_consumes_and_refuses_bad_config() {
    let plugin = Plugin::from_static(print_sink::descriptor()).unwrap();
    assert_eq!(plugin.name(), "print");
    let sink = plugin
        .open_sink("tutorial", r#"{"prefix":">"}"#, OpenOptions::default())
        .await
        .unwrap();
    sink.consume(&iggy_connectors_tests::json_batch(0, 3))
        .await
        .unwrap();
    sink.close(std::time::Duration::from_secs(5)).await.unwrap();
    let refused = plugin
        .open_sink("tutorial", r#"{"prefx":">"}"#, OpenOptions::default())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("prefx"), "{refused}");
}

#[test]
fn the_readme_tutorial_is_this_crate() {
    let readme = include_str!("../../../README.md");
    let section = readme.split("## Writing a connector").nth(1).unwrap();
    let block = section
        .split("```rust\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let source = include_str!("../src/lib.rs");
    let code: String = source
        .lines()
        .skip_while(|line| line.starts_with("//!") || line.starts_with("#!"))
        .skip_while(|line| line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        block, code,
        "README's tutorial and examples/print-sink/src/lib.rs differ"
    );
}
