//! Shared measuring helpers for the bench binaries in this directory.

use std::time::{Duration, Instant};

/// The environment variable `name` parsed, or `default` when it is unset or does not
/// parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Runs `iteration` repeatedly for about `budget` (after a warm-up of a tenth of it) and
/// returns the mean time per iteration.
pub fn measure(budget: Duration, mut iteration: impl FnMut()) -> Duration {
    let warm_up = Instant::now();
    while warm_up.elapsed() < budget / 10 {
        iteration();
    }
    let start = Instant::now();
    let mut count: u32 = 0;
    while start.elapsed() < budget {
        iteration();
        count += 1;
    }
    start.elapsed() / count.max(1)
}

/// Nanoseconds per item of a per-iteration time.
pub fn nanos_per(per_iteration: Duration, items: usize) -> f64 {
    per_iteration.as_nanos() as f64 / items.max(1) as f64
}

/// CPU time the current thread has used, where the OS tells it (Linux:
/// `/proc/thread-self/schedstat`, in nanoseconds).
pub fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// CPU time (user and system) this process has used, threads that already ended
/// included, where the OS tells it (Linux: `/proc/self/stat`, in ticks of 10 ms);
/// zero elsewhere.
pub fn process_cpu_time() -> Duration {
    // USER_HZ, the unit of /proc's times, is 100 on every Linux architecture.
    const TICK: Duration = Duration::from_millis(10);
    let Ok(text) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The command name (field 2) may hold spaces; fields after it are plain numbers.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, so 11 and 12 after the name and state.
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<u32>().ok())
            .unwrap_or(0)
    };
    TICK * (ticks(11) + ticks(12))
}

/// The machine's CPU time so far, as (stolen, all) in ticks of `/proc/stat`'s first
/// line (Linux; `None` elsewhere). Stolen time is when the hypervisor ran something
/// else on this VM's CPUs: a case that ran while much was stolen measured the host's
/// other guests as much as itself.
pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest times are within user).
    let all = ticks.iter().take(8).sum();
    Some((*ticks.get(7)?, all))
}

/// The share of the machine's CPU time stolen between two readings of
/// [`machine_cpu_ticks`], in percent.
pub fn stolen_percent(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((steal0, all0), (steal1, all1)) = before.zip(after)?;
    let all = all1.checked_sub(all0).filter(|all| *all > 0)?;
    Some(steal1.saturating_sub(steal0) as f64 * 100.0 / all as f64)
}

/// The release `iggy-connectors` binary a bench runs: `BENCH_BINARY`, or where `cargo
/// build --release -p iggy-connectors` leaves it (benches run from
/// `target/release/deps`).
pub fn runtime_binary() -> Result<std::path::PathBuf, String> {
    if let Ok(path) = std::env::var("BENCH_BINARY") {
        return Ok(path.into());
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("iggy-connectors")))
        .ok_or("cannot tell where the release binary is; set BENCH_BINARY")?;
    if !binary.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p iggy-connectors (or set BENCH_BINARY)",
            binary.display()
        ));
    }
    Ok(binary)
}

/// Writes the bundled random source and stdout sink on `stream` to `dir` as a user
/// writes them (`random.toml`, `stdout.toml`), each table completed by the TOML lines
/// given: the source's stream entry and `plugin_config`, the sink's stream entry.
pub fn write_random_to_stdout(
    dir: &std::path::Path,
    stream: &str,
    (source_stream, source_plugin): (&str, &str),
    sink_stream: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("random.toml"),
        format!(
            "type = \"source\"\nkey = \"random\"\nenabled = true\nversion = 0\nname = \"Random\"\npath = \"random\"\n\
             [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\n{source_stream}\n\
             [plugin_config]\n{source_plugin}\n"
        ),
    )?;
    std::fs::write(
        dir.join("stdout.toml"),
        format!(
            "type = \"sink\"\nkey = \"stdout\"\nenabled = true\nversion = 0\nname = \"Stdout\"\npath = \"stdout\"\n\
             [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\n{sink_stream}\n\
             [plugin_config]\nprint_payload = false\n"
        ),
    )
}
