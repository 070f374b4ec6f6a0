//! What the property tests share: how many cases they run and a deadline on one
//! input. Included with `#[path]` by each crate's property tests (`config-provider`,
//! `transforms`, `http-api`), which depend on proptest themselves; not a module of the
//! tests crate.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use proptest::test_runner::Config;

/// The config of every property: `PROPTEST_CASES` or `cases_in_ci` (proptest lets an
/// explicit count win over the variable, so it is read here), and no regression files
/// written into the source tree (a failure found becomes a plain `#[test]`).
pub fn config(cases_in_ci: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(cases_in_ci);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `work` on its own thread and returns what it returns; a panic there is a panic
/// here (so proptest shrinks it), and no answer within `deadline` is a hang.
pub fn within<T: Send + 'static>(
    what: &str,
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    match receiver.recv_timeout(deadline) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: no answer within {deadline:?}"),
        Err(RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("{what}: the thread ended without an answer"),
        },
    }
}
