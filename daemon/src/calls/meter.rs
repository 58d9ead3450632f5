//! The running meters: which calls are talking now, saved together.
//!
//! A call's talk time is measured by its own state machine on the
//! monotonic clock; what survives a crash is the last checkpoint, written
//! every `billing.checkpoint_interval` for every talking call in one
//! transaction. At start-up a call left open ends at its checkpoint
//! (`Ledger::recover_open_calls`): under-billed by at most one interval,
//! never over-billed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::journal::CallWrite;
use crate::clock::now_ms;
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// The calls whose meter runs.
#[derive(Debug, Default)]
pub struct Meters {
    talking: Mutex<HashSet<String>>,
}

impl Meters {
    /// The call's parties are connected: checkpoint it from now on.
    pub fn start(&self, call_id: &str) {
        if let Ok(mut talking) = self.talking.lock() {
            talking.insert(call_id.to_owned());
        }
    }

    /// The call's record is closed: stop checkpointing it.
    pub fn stop(&self, call_id: &str) {
        if let Ok(mut talking) = self.talking.lock() {
            talking.remove(call_id);
        }
    }

    /// The calls talking now.
    pub fn talking(&self) -> Vec<String> {
        self.talking
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Saves every talking call's checkpoint, every interval, until the
/// daemon stops.
pub async fn checkpoint_loop(shared: Arc<Shared>, meters: Arc<Meters>, mut shutdown: Shutdown) {
    loop {
        let interval = shared.config.load().billing.checkpoint_interval;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.requested() => return,
        }
        let talking = meters.talking();
        if talking.is_empty() {
            continue;
        }
        // Kept in memory, the latest per call, while the ledger is away.
        shared
            .journal
            .write(CallWrite::Checkpoint {
                call_ids: talking,
                at_ms: now_ms(),
            })
            .await;
    }
}
