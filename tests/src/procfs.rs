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
