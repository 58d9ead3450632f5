//! Closes bookings whose window has ended (`completed` after a call,
//! `no-show` without one; `ledger::Ledger::end_windows`), every second on
//! one node at a time (under a lease), whether or not Stripe is set up:
//! the booking platform is told either way. Charging a no-show's fee is
//! the settlement worker's.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// How often the ended windows are looked for: a booking closes within
/// this of its window's end.
const POLL: Duration = Duration::from_secs(1);

/// The lease the scan runs under.
const LEASE: &str = "booking-windows";

/// How long a node holds the lease unless it renews it: a node that stops
/// hands the scan over within this.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// The scan, until the daemon stops.
pub async fn close_loop(shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        if !shared.ledger_up() {
            continue;
        }
        match shared.ledger.hold_lease(LEASE, LEASE_TTL).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the booking-windows lease");
                continue;
            }
        }
        match shared.ledger.end_windows(now_ms()).await {
            Ok(0) => {}
            Ok(closed) => tracing::info!(bookings = closed, "bookings closed: their window ended"),
            Err(e) => tracing::warn!(error = %e, "cannot close the bookings whose window ended"),
        }
    }
}
