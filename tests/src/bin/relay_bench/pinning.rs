//! `PIN=1`: the relay's threads (and the C floor) on CPU 0, the load
//! generator (the bench's main thread) on CPU 1, so the generator never
//! takes the relay's core. Meant for one relay thread on a 2-core machine.

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

/// The CPU the relay (ours or the floor) runs on when pinned.
const RELAY_CPU: usize = 0;
/// The CPU the generator runs on when pinned.
const GENERATOR_CPU: usize = 1;

/// Whether `PIN=1` was given.
pub fn enabled() -> bool {
    std::env::var("PIN").is_ok_and(|v| v == "1")
}

fn pin(task: i32, cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("a CPU number within the set");
    sched_setaffinity(Pid::from_raw(task), &set).expect("pinning a thread");
}

/// Pins this process's `tb-media-N` threads and its main thread.
pub fn relay_and_generator() {
    if !enabled() {
        return;
    }
    let main = std::process::id() as i32;
    for entry in std::fs::read_dir("/proc/self/task")
        .expect("/proc")
        .flatten()
    {
        let Some(task) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if name.starts_with("tb-media") {
            pin(task, RELAY_CPU);
        } else if task == main {
            pin(task, GENERATOR_CPU);
        }
    }
}

/// Pins the C floor relay's process.
pub fn floor(pid: u32) {
    if enabled() {
        pin(pid as i32, RELAY_CPU);
    }
}

/// Pins every thread of process `pid` (the daemon) to the relay's CPU.
pub fn process(pid: u32) {
    if !enabled() {
        return;
    }
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc")
        .flatten()
    {
        if let Some(task) = entry.file_name().to_str().and_then(|t| t.parse().ok()) {
            pin(task, RELAY_CPU);
        }
    }
}
