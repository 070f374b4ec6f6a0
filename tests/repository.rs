//! What the repository ships: no state a run of the runtime leaves behind, so that a
//! clone starts from nothing.

use std::path::Path;
use std::process::Command;

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Runs git in the workspace; `None` when this is not a git checkout (a source
/// archive), where there is nothing tracked to check.
fn git(args: &[&str]) -> Option<std::process::Output> {
    let output = Command::new("git")
        .args(args)
        .current_dir(workspace())
        .output()
        .ok()?;
    let checkout = Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(workspace())
        .output()
        .ok()?;
    checkout.status.success().then_some(output)
}

/// A source's state file in the repository would make every clone's first run resume
/// where someone else's stopped (it did: the random source started at seq 1128).
#[test]
fn no_source_state_is_tracked_and_the_default_state_directory_is_ignored() {
    let Some(tracked) = git(&["ls-files"]) else {
        eprintln!("skipped: {} is not a git checkout", workspace().display());
        return;
    };
    let tracked = String::from_utf8_lossy(&tracked.stdout).into_owned();
    let state: Vec<&str> = tracked
        .lines()
        .filter(|path| path.starts_with("local_state/") || path.ends_with(".state"))
        .collect();
    assert!(state.is_empty(), "tracked source state: {state:?}");
    // Where configs/config.toml (and the default) put the state, git ignores it.
    let config = std::fs::read_to_string(workspace().join("configs/config.toml"))
        .expect("configs/config.toml");
    assert!(
        config.contains("path = \"local_state\""),
        "configs/config.toml no longer puts the state in local_state: update this test"
    );
    let ignored =
        git(&["check-ignore", "-q", "local_state/source_random.state"]).expect("a git checkout");
    assert!(
        ignored.status.success(),
        "local_state/ is not in .gitignore"
    );
}
