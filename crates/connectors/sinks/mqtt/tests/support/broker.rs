//! A private Mosquitto broker for tests (started from the machine's binary, killed when
//! dropped). The MQTT connectors' tests and the binary's include this file by path; it
//! needs only std and `iggy_connectors_tests`.

// Each includer uses its own subset.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Mosquitto of the test's own on a free loopback port, with persistence in a temp
/// directory so that a graceful restart keeps sessions and queued messages, as a
/// production broker does. Killed (SIGKILL) when dropped.
pub struct Broker {
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker, or `None` (with a `SKIPPED` line) when the machine has no
    /// `mosquitto` binary and the test does not run under `CI`.
    pub fn start(test: &str) -> Option<Broker> {
        Broker::start_with(test, "allow_anonymous true\n")
    }

    /// [`Broker::start`] with `extra` lines in its config.
    pub fn start_with(test: &str, extra: &str) -> Option<Broker> {
        let binary = [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists());
        let Some(_) = binary else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no mosquitto binary under CI"
            );
            println!("SKIPPED {test}: no mosquitto binary");
            return None;
        };
        let dir = iggy_connectors_tests::temp_dir("mosquitto");
        // Started as root, mosquitto drops to the `mosquitto` user, which must be able
        // to write its database here.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\n{extra}persistence true\npersistence_location {}/\nmax_queued_messages 0\nlog_dest none\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut broker = Broker {
            port,
            config,
            child: None,
        };
        broker.run();
        Some(broker)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits (with a deadline) until it accepts connections.
    pub fn run(&mut self) {
        let binary = [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the broker gracefully (SIGTERM: it saves its sessions) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(status.success());
            child.wait().unwrap();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
