//! The accounting export's memory and speed: the same export of 1,000 and
//! of 100,000 calls from a SQLite ledger, in one run. The export reads a
//! page at a time, so its peak memory should not grow with the rows.
//!
//! `cargo bench -p tollbridge --bench export -- [SMALL] [LARGE]`
//! (defaults 1,000 and 100,000). Calls are written straight into the
//! ledger's tables in one transaction (the export reads what the daemon
//! writes; writing them call by call would take minutes). Peak memory is
//! the process's VmHWM, reset (`/proc/self/clear_refs`) before each
//! export, so it counts the export alone. Prints a Markdown table.

// A benchmark tool: a failed setup step aborts it with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use tollbridge_daemon::args;
use tollbridge_daemon::export::{Export, Format};
use tollbridge_daemon::ledger::Ledger;

const T0: i64 = 1_900_000_000_000;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse().ok())
        .unwrap_or(0)
}

async fn fill(ledger: &Ledger, first: usize, calls: usize) {
    ledger
        .run(move |db| {
            for n in first..first + calls {
                let at = T0 + n as i64 * 1_000;
                db.execute(
                    "INSERT INTO bookings (id, called, callers, callee, currency, price_per_minute,
                         cap_seconds, window_start_ms, window_end_ms, state, created_ms, updated_ms)
                     VALUES (?1, '+815000000001', ?2, '{\"uri\":\"sip:e@x\"}', 'jpy', 300, 1800, ?3, ?4,
                             'completed', ?3, ?3)",
                    args![format!("bk_{n:07}"), format!("[\"+8190{n:08}\"]"), at - 3_600_000, at + 3_600_000],
                )?;
                db.execute(
                    "INSERT INTO calls (id, booking_id, inbound_call_id, caller, called, status, created_ms,
                         answered_ms, ended_ms, talk_ms, billed_seconds, amount, currency, end_reason, node)
                     VALUES (?1, ?2, ?3, ?4, '+815000000001', 'completed', ?5, ?6, ?7, 65000, 66, 330,
                             'jpy', 'caller-hangup', 'tb1')",
                    args![
                        format!("call_{n:07}"),
                        format!("bk_{n:07}"),
                        format!("{n}@caller"),
                        format!("+8190{n:08}"),
                        at,
                        at + 2_000,
                        at + 67_000
                    ],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

/// Exports every call; returns (calls, bytes, seconds, peak KiB).
async fn export(ledger: &Ledger) -> (u64, u64, f64, u64) {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kb("VmRSS:");
    let export = Export::new(Format::Csv, "Asia/Tokyo", T0);
    let (pages, mut receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let started = Instant::now();
    let counting = async {
        let mut bytes = 0u64;
        while let Some(page) = receiver.recv().await {
            bytes += page.len() as u64;
        }
        bytes
    };
    let (calls, bytes) = tokio::join!(
        tollbridge_daemon::export::stream(ledger, &export, i64::MIN, i64::MAX, pages),
        counting
    );
    let seconds = started.elapsed().as_secs_f64();
    let peak = status_kb("VmHWM:");
    (calls.unwrap(), bytes, seconds, peak.saturating_sub(before))
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let small = args.first().copied().unwrap_or(1_000);
    let large = args.get(1).copied().unwrap_or(100_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_sqlite(&dir.path().join("export.db")).unwrap();
        println!("### Accounting export, SQLite, CSV\n");
        println!("| calls | MB written | seconds | calls/s | peak memory growth during the export (KiB) |");
        println!("|---|---|---|---|---|");
        fill(&ledger, 0, small).await;
        let mut filled = small;
        for target in [small, large] {
            if target > filled {
                fill(&ledger, filled, target - filled).await;
                filled = target;
            }
            let (calls, bytes, seconds, peak) = export(&ledger).await;
            println!(
                "| {calls} | {:.1} | {seconds:.2} | {:.0} | {peak} |",
                bytes as f64 / 1e6,
                calls as f64 / seconds
            );
        }
        ledger.close().await;
    });
}
