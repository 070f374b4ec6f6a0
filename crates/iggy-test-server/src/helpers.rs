//! Small aids for tests that run against a [`TestTarget`]: the target itself, names no
//! earlier run used, and waiting for a condition with a deadline. Here rather than in
//! the workspace's tests crate so that this crate's own tests can use them too (the
//! tests crate depends on this one).

use std::time::{Duration, Instant};

use crate::TestTarget;

/// How long [`eventually`] and [`eventually_showing`] wait before failing the test.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// How often [`eventually`] and [`eventually_showing`] look again.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// The server under test: a fresh test server, or the real one `IGGY_TEST_ADDRESS`
/// names ([`TestTarget::from_env`]).
///
/// # Panics
/// If the test server cannot start: the test cannot go on.
pub async fn target() -> TestTarget {
    TestTarget::from_env()
        .await
        .unwrap_or_else(|error| panic!("cannot start the test server: {error}"))
}

/// A name no earlier run used, `<label>-<process id>-<nanoseconds since the epoch>`,
/// for streams, topics and the like (a real server keeps what earlier runs made).
pub fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("{label}-{}-{nanos}", std::process::id())
}

/// Waits until `condition` holds, looking every 20 ms.
///
/// # Panics
/// After [`WAIT_LIMIT`], with `timed out waiting for: <what>`.
pub async fn eventually(what: &str, condition: impl FnMut() -> bool) {
    wait(what, condition, None::<fn() -> String>).await;
}

/// [`eventually`], adding `show()` (the state of what is being waited on, say) to the
/// message when it times out: `timed out waiting for: <what>; <show()>`.
///
/// # Panics
/// After [`WAIT_LIMIT`].
pub async fn eventually_showing(
    what: &str,
    condition: impl FnMut() -> bool,
    show: impl FnOnce() -> String,
) {
    wait(what, condition, Some(show)).await;
}

async fn wait(
    what: &str,
    mut condition: impl FnMut() -> bool,
    show: Option<impl FnOnce() -> String>,
) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while !condition() {
        if Instant::now() >= deadline {
            match show {
                Some(show) => panic!("timed out waiting for: {what}; {}", show()),
                None => panic!("timed out waiting for: {what}"),
            }
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}
