//! Start-up and idle memory of the release `iggy-connectors` binary, as a user runs it:
//! two connectors (the bundled random source and stdout sink, one message every 100 ms)
//! and the API on. Each of `BENCH_STARTS` (default 7) starts measures the time from
//! spawning the process to the first `/health` answered 200, then, after
//! `BENCH_IDLE` seconds (default 2) of idle running, its resident memory from
//! `/proc/<pid>/status`: `VmRSS`, and its two parts, `RssAnon` (heap and stacks) and
//! `RssFile` (pages of the binary and the libraries mapped in).
//!
//! Run: `cargo build --release -p iggy-connectors && cargo bench -p
//! iggy-connectors-benches --bench startup` (`IGGY_TEST_ADDRESS=host:port` for a real
//! server, which takes tens of milliseconds to sign a client in; without it the Iggy
//! test server runs in this process). `BENCH_BINARY` names another binary.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use iggy_connectors_benches::{env_or, runtime_binary, write_random_to_stdout};

type Failure = Box<dyn std::error::Error>;

/// What one start measured.
struct Start {
    ready: Duration,
    /// `VmRSS`, `RssAnon`, `RssFile`, in KiB.
    rss: [u64; 3],
}

/// Whether `/health` at `address` answers 200 now.
fn healthy(address: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let asked =
        stream.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    asked.is_ok() && stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

/// The resident memory of process `pid`: `VmRSS`, `RssAnon`, `RssFile` in KiB.
fn resident(pid: u32) -> Result<[u64; 3], Failure> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64, Failure> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib = line.split_whitespace().nth(1).ok_or("an empty field")?;
        Ok(kib.parse()?)
    };
    Ok([field("VmRSS:")?, field("RssAnon:")?, field("RssFile:")?])
}

/// A free port on loopback, for the API (the binary is asked at a known address from
/// its first instant, before any log line could name it).
fn free_port() -> Result<u16, Failure> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One start: spawn, wait for `/health`, idle, measure, stop.
fn start(
    binary: &std::path::Path,
    dir: &std::path::Path,
    idle: Duration,
) -> Result<Start, Failure> {
    let address = format!("127.0.0.1:{}", free_port()?);
    let spawned = Instant::now();
    let mut child = std::process::Command::new(binary)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("IGGY_CONNECTORS_HTTP_ADDRESS", &address)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = spawned + Duration::from_secs(10);
    let measured = loop {
        if healthy(&address) {
            break Ok(spawned.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            break Err(format!("the runtime exited before answering: {status}"));
        }
        if Instant::now() > deadline {
            break Err("no answer from /health within 10 s".to_owned());
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let outcome = measured.map_err(Failure::from).and_then(|ready| {
        std::thread::sleep(idle);
        Ok(Start {
            ready,
            rss: resident(child.id())?,
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

fn main() -> Result<(), Failure> {
    let binary = runtime_binary()?;
    let starts: usize = env_or("BENCH_STARTS", 7);
    let idle = Duration::from_secs(env_or("BENCH_IDLE", 2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The target (the test server, served by this runtime, or a real one) lives as long
    // as the measurements.
    let target = runtime.block_on(iggy_test_server::TestTarget::from_env())?;
    let dir = iggy_connectors_tests::temp_dir("startup-bench");
    let stream = iggy_test_server::unique("startup");
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors)?;
    write_random_to_stdout(
        &connectors,
        &stream,
        ("", "interval = \"100ms\"\nmessages_range = [1, 1]"),
        "",
    )?;
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[iggy]\naddress = \"{}\"\n[http]\nenabled = true\n[state]\npath = \"{}\"\n[connectors]\nconfig_dir = \"{}\"\n",
            target.address,
            dir.join("state").display(),
            connectors.display()
        ),
    )?;
    let server = if target.server.is_some() {
        "the test server (in this process)"
    } else {
        "a real server"
    };
    println!(
        "start-up of {} against {server} at {}, {starts} starts, RSS after {} s idle",
        binary.display(),
        target.address,
        idle.as_secs()
    );
    println!("  ready (/health 200)      VmRSS     RssAnon     RssFile");
    let mut ready = Vec::new();
    for _ in 0..starts {
        let start = start(&binary, &dir, idle)?;
        let [rss, anon, file] = start.rss;
        println!(
            "  {:>8.1} ms        {:>7.1} MiB {:>7.1} MiB {:>7.1} MiB",
            start.ready.as_secs_f64() * 1000.0,
            rss as f64 / 1024.0,
            anon as f64 / 1024.0,
            file as f64 / 1024.0
        );
        ready.push(start.ready);
    }
    ready.sort();
    if let Some(median) = ready.get(ready.len() / 2) {
        println!("  median ready {:.1} ms", median.as_secs_f64() * 1000.0);
    }
    drop(target);
    Ok(())
}
