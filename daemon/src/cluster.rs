//! This node among the nodes sharing the ledger.
//!
//! Every node heartbeats in the ledger (about ten times per
//! `cluster.node_timeout`). The heartbeat is also how a node knows its
//! ledger answers: when it does not, the node refuses new calls with 503
//! (Twilio and Kamailio then send them to another node) and readiness
//! fails, while its calls in progress go on and their writes wait in the
//! [`Journal`](crate::calls::journal::Journal).
//!
//! A node whose heartbeat is older than `cluster.node_timeout` is taken
//! for dead, and a live node takes over its open calls: closed at their
//! last checkpoint (`recovered`), BYE to both parties from the dialogs it
//! stored, settled by this node's worker. The ledger makes that happen
//! once (see `ledger::nodes`). A node only takes others over once its own
//! heartbeats have succeeded for a whole `node_timeout`: after an outage
//! of the ledger every node's heartbeat is old, and they must all have
//! had the chance to beat again first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::calls::recovery::{self, Hangups};
use crate::clock::now_ms;
use crate::settle::Settler;
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// How often a node heartbeats for a given `cluster.node_timeout`.
pub fn heartbeat_interval(node_timeout: Duration) -> Duration {
    (node_timeout / 10).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// The longest one heartbeat may take before the ledger counts as out of
/// reach (a server that stopped answering, not one that refuses).
fn heartbeat_wait(node_timeout: Duration) -> Duration {
    (node_timeout / 3).min(Duration::from_secs(3))
}

/// Heartbeats, follows whether the ledger answers, and takes over the
/// calls of silent nodes, until the daemon stops.
pub async fn watch(
    shared: Arc<Shared>,
    hangups: Arc<Hangups>,
    settler: Option<Arc<Settler>>,
    started_ms: i64,
    mut shutdown: Shutdown,
) {
    // Registered at start, so healthy from then.
    let mut healthy_since = Some(Instant::now());
    loop {
        let timeout = shared.config.load().cluster.node_timeout;
        tokio::select! {
            () = tokio::time::sleep(heartbeat_interval(timeout)) => {}
            () = shutdown.requested() => return,
        }
        let beat = tokio::time::timeout(
            heartbeat_wait(timeout),
            shared.ledger.heartbeat(started_ms, shared.is_draining()),
        )
        .await;
        let error = match beat {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no answer within {} ms",
                heartbeat_wait(timeout).as_millis()
            )),
        };
        if let Some(error) = error {
            healthy_since = None;
            if shared.set_ledger_up(false) {
                tracing::error!(%error, "ledger unreachable: new calls get 503, calls in progress go on and their writes wait in memory");
            }
            continue;
        }
        if shared.set_ledger_up(true) {
            tracing::info!(
                waiting_writes = shared.journal.waiting(),
                "ledger reachable again: taking new calls"
            );
        }
        let since = *healthy_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= timeout {
            take_over(&shared, &hangups, settler.as_deref(), timeout).await;
        }
    }
}

/// Takes over the calls of every node silent for longer than `timeout`.
async fn take_over(
    shared: &Arc<Shared>,
    hangups: &Arc<Hangups>,
    settler: Option<&Settler>,
    timeout: Duration,
) {
    let taken = match shared
        .ledger
        .take_over_silent_nodes(timeout, now_ms())
        .await
    {
        Ok(taken) => taken,
        Err(e) => {
            tracing::error!(error = %e, "cannot look for silent nodes");
            return;
        }
    };
    for silent in taken {
        tracing::warn!(
            silent_node = %silent.node,
            silent_ms = silent.silent_ms,
            calls = silent.closed,
            to_hang_up = silent.calls.len(),
            "took over the calls of a silent node: closed at their last checkpoint (recovered), hanging up both parties, settling"
        );
        shared.metrics.calls_taken_over(silent.closed);
        let span = tracing::info_span!("takeover", silent_node = %silent.node);
        let context = format!(
            "taken over by node {} (node {} silent for {} ms)",
            shared.ledger.node(),
            silent.node,
            silent.silent_ms
        );
        tokio::spawn(recovery::hang_up(hangups.clone(), silent.calls, context).instrument(span));
        if let Some(settler) = settler {
            settler.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_come_about_ten_times_per_timeout_within_bounds() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(600)),
            Duration::from_secs(2)
        );
        assert_eq!(
            heartbeat_wait(Duration::from_secs(10)),
            Duration::from_secs(3)
        );
        assert_eq!(
            heartbeat_wait(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
    }
}
