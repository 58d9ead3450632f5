//! What the benches read of a process from `/proc`: its resident memory
//! and the CPU time of a process or a thread.

use std::path::Path;

/// VmRSS of process `pid` in KiB; `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU ticks per second for /proc times (`getconf CLK_TCK`).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The name and user+sys CPU seconds in a `stat` file
/// (`/proc/PID/stat` or `/proc/PID/task/TID/stat`), with `ticks` clock
/// ticks a second; `None` when it cannot be read.
pub fn cpu_seconds(stat: &Path, ticks: f64) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(stat).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let mut fields = stat.get(close + 2..)?.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((stat[open + 1..close].to_string(), (user + system) / ticks))
}

/// CPU seconds the whole machine has been busy (user, nice, system, irq
/// and softirq over every CPU, from `/proc/stat`; steal, idle and iowait
/// left out), with `ticks` clock ticks a second. Work the kernel does for
/// a packet outside any process of its own (softirq) is counted here and
/// in no process.
pub fn machine_busy_seconds(ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let total = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<f64> = total
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0.0))
        .sum::<f64>();
    Some(busy / ticks)
}
