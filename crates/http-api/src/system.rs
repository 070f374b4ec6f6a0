//! The process's and the machine's CPU and memory figures for `GET /stats`, read from
//! `/proc` (and the cgroup's memory limit) on Linux; zeros elsewhere. Upstream's
//! clients expect them (`cpu_usage`, `total_cpu_usage`, `memory_usage`,
//! `total_memory`, `available_memory`), with sysinfo's meanings: CPU as percent (the
//! process's of one core, so up to 100 per core it uses; the machine's of all cores,
//! 0 to 100), memory in bytes.

use std::sync::Mutex;
use std::time::Instant;

/// `/proc`'s clock tick: USER_HZ is 100 on every Linux architecture (fixed by the
/// kernel ABI, whatever the kernel's own HZ), so no `sysconf` is needed.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU and memory, as `/stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SystemFigures {
    /// This process, percent of one core, since the previous reading.
    pub(crate) cpu_usage: f32,
    /// The machine, percent of all its cores, since the previous reading.
    pub(crate) total_cpu_usage: f32,
    /// This process's resident memory, bytes.
    pub(crate) memory_usage: u64,
    /// The machine's memory, or the cgroup's limit when lower, bytes.
    pub(crate) total_memory: u64,
    /// Memory still available within that, bytes.
    pub(crate) available_memory: u64,
}

/// CPU time counters at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    /// This process's user + system ticks.
    process: u64,
    /// The machine's busy and total ticks, all cores.
    busy: u64,
    total: u64,
}

/// Shortest span CPU is measured over: `/proc` counts in 10 ms ticks, so a span of a
/// few milliseconds (two clients asking at once) would read 0% or 200%.
const MIN_SPAN: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads the figures; CPU is measured between one reading and the next at least
/// [`MIN_SPAN`] later (the first reading measures since the process, or the machine,
/// started), and a reading sooner than that repeats the last CPU figures.
#[derive(Debug, Default)]
pub(crate) struct SystemMonitor {
    /// The sample the last figures were measured to, and those figures.
    last: Mutex<Option<(CpuSample, f32, f32)>>,
}

impl SystemMonitor {
    /// The figures now.
    pub(crate) fn read(&self) -> SystemFigures {
        let (total_memory, available_memory) = memory().unwrap_or_default();
        let mut figures = SystemFigures {
            memory_usage: resident_bytes().unwrap_or_default(),
            total_memory,
            available_memory,
            ..SystemFigures::default()
        };
        let Some(now) = cpu_sample() else {
            return figures;
        };
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((before, cpu, total_cpu)) = *last
            && now.at.duration_since(before.at) < MIN_SPAN
        {
            figures.cpu_usage = cpu;
            figures.total_cpu_usage = total_cpu;
            return figures;
        }
        let (process_ticks, wall_seconds, busy, total) = match last.map(|(sample, _, _)| sample) {
            Some(before) => (
                now.process.saturating_sub(before.process),
                now.at.duration_since(before.at).as_secs_f64(),
                now.busy.saturating_sub(before.busy),
                now.total.saturating_sub(before.total),
            ),
            None => (
                now.process,
                process_age_seconds().unwrap_or_default(),
                now.busy,
                now.total,
            ),
        };
        if wall_seconds > 0.0 {
            figures.cpu_usage =
                (process_ticks as f64 / TICKS_PER_SECOND / wall_seconds * 100.0) as f32;
        }
        if total > 0 {
            figures.total_cpu_usage = (busy as f64 / total as f64 * 100.0) as f32;
        }
        *last = Some((now, figures.cpu_usage, figures.total_cpu_usage));
        figures
    }
}

/// Resident memory of this process, from `/proc/self/statm` (in pages of 4 KiB).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The fields of `/proc/self/stat` after the command name (which may hold spaces):
/// index 0 is the state, field 3.
fn own_stat() -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    Some(
        after_name
            .split_whitespace()
            .map(|field| field.parse().unwrap_or_default())
            .collect(),
    )
}

fn cpu_sample() -> Option<CpuSample> {
    let at = Instant::now();
    let fields = own_stat()?;
    // utime and stime are fields 14 and 15: indices 11 and 12 after the name.
    let process = fields.get(11)? + fields.get(12)?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().unwrap_or_default())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3).copied().unwrap_or_default() + cpu.get(4).copied().unwrap_or_default();
    Some(CpuSample {
        at,
        process,
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Seconds since this process started: `/proc/uptime` less its start time (field
/// 22, in ticks since boot).
fn process_age_seconds() -> Option<f64> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let started = *own_stat()?.get(19)? as f64 / TICKS_PER_SECOND;
    Some(uptime - started)
}

/// Total and available memory in bytes: the machine's (`/proc/meminfo`), or the
/// cgroup's limit and what it leaves when the runtime runs under a lower one (a
/// container), as upstream reports them.
fn memory() -> Option<(u64, u64)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|line| line.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:").unwrap_or_default();
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    // cgroup v2: `max` (no limit) does not parse.
    match read("/sys/fs/cgroup/memory.max") {
        Some(limit) if limit < total => {
            let used = read("/sys/fs/cgroup/memory.current").unwrap_or_default();
            Some((limit, limit.saturating_sub(used).min(available)))
        }
        _ => Some((total, available)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_on_linux_and_cpu_is_measured_between_readings() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let monitor = SystemMonitor::default();
        let first = monitor.read();
        assert!(first.memory_usage > 0, "{first:?}");
        assert!(first.total_memory >= first.available_memory, "{first:?}");
        assert!(first.available_memory > 0, "{first:?}");
        // Busy until the process has used 0.2 s of CPU since the first reading.
        let start = cpu_sample().unwrap().process;
        let (began, deadline) = (
            Instant::now(),
            Instant::now() + std::time::Duration::from_secs(60),
        );
        let mut spins = 0u64;
        while cpu_sample().unwrap().process < start + 20 || began.elapsed() < MIN_SPAN {
            assert!(Instant::now() < deadline, "no CPU time counted");
            for _ in 0..10_000 {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        let second = monitor.read();
        assert!(second.cpu_usage > 0.0, "{second:?}");
        // Asked again at once: the same figures, not a span of a few microseconds.
        let third = monitor.read();
        assert_eq!(
            (third.cpu_usage, third.total_cpu_usage),
            (second.cpu_usage, second.total_cpu_usage)
        );
        assert!(
            (0.0..=100.0).contains(&second.total_cpu_usage) && second.total_cpu_usage > 0.0,
            "{second:?}"
        );
    }
}
