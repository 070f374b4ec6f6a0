//! A private PostgreSQL cluster, for tests that need settings the shared server lacks:
//! CDC needs `wal_level = logical`, and the shared one runs with `replica`.
//!
//! [`PostgresCluster::start`] runs `initdb` and `postgres` from the machine's
//! PostgreSQL binaries (`/usr/lib/postgresql/<version>/bin`, the newest, or the
//! directory `IGGY_TEST_POSTGRES_BIN_DIR` names) in a fresh temp directory, on a free
//! loopback port, with trust authentication for the user `postgres`. As root, both run
//! as the `postgres` OS user (`initdb` refuses root). Dropping the guard stops the
//! server and removes the directory, also when the test panics.
//!
//! When the binaries are missing, under `CI` the test fails (CI must have them, as it
//! must have the services of [`crate::services`]); elsewhere it prints one `SKIPPED
//! <test>: ...` line and [`PostgresCluster::start`] returns `None`.
//!
//! ```no_run
//! use iggy_connectors_tests::postgres_cluster::PostgresCluster;
//!
//! let Some(cluster) = PostgresCluster::start("cdc", &[("wal_level", "logical")]) else {
//!     return; // no PostgreSQL binaries, and not under CI: skipped, and said so
//! };
//! // postgres://postgres@127.0.0.1:<port>/postgres
//! let url = cluster.url();
//! # drop(url);
//! ```

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable that names a directory of PostgreSQL binaries to use instead of the
/// newest `/usr/lib/postgresql/<version>/bin`.
pub const BIN_DIR_ENV: &str = "IGGY_TEST_POSTGRES_BIN_DIR";

/// How long [`PostgresCluster::start`] waits for the new server to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private PostgreSQL server; stopped, and its directory removed, on drop.
#[derive(Debug)]
pub struct PostgresCluster {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    /// The uid and gid the server runs as, when not the test's own (as root).
    owner: Option<(u32, u32)>,
    server: Option<Child>,
}

impl PostgresCluster {
    /// Makes and starts a cluster with `settings` (`postgresql.conf` names and values,
    /// e.g. `("wal_level", "logical")`) on top of the defaults kept for tests
    /// (`fsync = off`: a test never survives a machine crash, and it halves commit
    /// time). `label` names the temp directory.
    ///
    /// Returns `None` (after printing a `SKIPPED` line) when there are no PostgreSQL
    /// binaries and `CI` is not set.
    ///
    /// # Panics
    /// Under `CI` without binaries; and whenever `initdb` fails or the server does not
    /// accept connections within [`START_TIMEOUT`], with its log.
    pub fn start(label: &str, settings: &[(&str, &str)]) -> Option<PostgresCluster> {
        let bin = match binaries() {
            Ok(bin) => bin,
            Err(why) => {
                if std::env::var_os("CI").is_some() {
                    panic!("{why}: CI must have PostgreSQL's binaries (or set {BIN_DIR_ENV})");
                }
                let thread = std::thread::current();
                let test = thread.name().unwrap_or("<unnamed test>");
                // Past the harness's capture, in one write, as `services` does.
                let line = format!("SKIPPED {test}: {why} (set {BIN_DIR_ENV})\n");
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
                return None;
            }
        };
        let dir = crate::temp_dir(&format!("pg-{label}"));
        let data = dir.join("data");
        let owner = server_owner();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .unwrap_or_else(|error| panic!("chown {}: {error}", dir.display()));
        }
        let mut cluster = PostgresCluster {
            bin,
            port: free_port(),
            dir,
            data,
            owner,
            server: None,
        };
        let initdb = cluster
            .command("initdb")
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .arg("--pgdata")
            .arg(&cluster.data)
            .output()
            .unwrap_or_else(|error| panic!("cannot run initdb: {error}"));
        assert!(
            initdb.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        let log = std::fs::File::create(cluster.log_path())
            .unwrap_or_else(|error| panic!("cannot create the server log: {error}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|error| panic!("cannot share the server log: {error}"));
        let mut postgres = cluster.command("postgres");
        postgres.arg("-D").arg(&cluster.data);
        let port = cluster.port.to_string();
        let socket_dir = cluster.dir.display().to_string();
        let defaults = [
            ("listen_addresses", "127.0.0.1"),
            ("port", port.as_str()),
            ("unix_socket_directories", socket_dir.as_str()),
            ("fsync", "off"),
            ("full_page_writes", "off"),
        ];
        for (name, value) in defaults.iter().chain(settings) {
            postgres.arg("-c").arg(format!("{name}={value}"));
        }
        let server = postgres
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start postgres: {error}"));
        cluster.server = Some(server);
        cluster.wait_ready();
        Some(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `database` on this cluster.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// One of the cluster's binaries, as the server's owner.
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        command.stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        // A developer's PG* variables must not point the tools elsewhere.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                command.env_remove(name);
            }
        }
        command
    }

    /// Waits until `pg_isready` says the server takes connections (it answers "starting
    /// up" before that).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(server) = self.server.as_mut()
                && let Ok(Some(status)) = server.try_wait()
            {
                panic!("postgres exited ({status}) at start:\n{}", self.log());
            }
            let ready = self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-p"])
                .arg(self.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // `immediate`: nothing of a test cluster needs to survive, and it returns
            // at once; the kill is for a server pg_ctl could not reach.
            let stopped = self
                .command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"])
                .arg(&self.data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !stopped {
                let _ = server.kill();
            }
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of `initdb`, `postgres`, `pg_ctl` and `pg_isready`.
fn binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!("no initdb in {}", dir.display()))
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .map_err(|error| format!("no PostgreSQL binaries in {}: {error}", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    newest
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no /usr/lib/postgresql/<version>/bin/initdb".to_owned())
}

/// The `postgres` OS user's uid and gid when the tests run as root (initdb and the
/// server refuse root); `None` otherwise (they run as the test's user).
fn server_owner() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // Our own uid, without libc: the owner of a file we just made.
    let probe = crate::temp_dir("uid-probe");
    let uid = std::fs::metadata(&probe).map(|meta| meta.uid()).ok();
    let _ = std::fs::remove_dir_all(&probe);
    if uid != Some(0) {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let owner = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    });
    Some(owner.unwrap_or_else(|| {
        panic!("running as root, and there is no `postgres` user to run PostgreSQL as")
    }))
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|error| panic!("cannot bind a loopback port: {error}"));
    listener
        .local_addr()
        .unwrap_or_else(|error| panic!("no local address: {error}"))
        .port()
}
