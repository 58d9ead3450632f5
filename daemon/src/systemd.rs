//! systemd integration: readiness, status, watchdog and stopping
//! notifications over `$NOTIFY_SOCKET`.
//!
//! Every function is a no-op when the daemon is not run by systemd (no
//! `NOTIFY_SOCKET`), so the same binary runs from a shell.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::shutdown::Shutdown;
use crate::state::Shared;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `READY=1` with a first status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A `STATUS=` line for `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The interval at which to ping the watchdog (half of `WATCHDOG_USEC`), if
/// systemd asked for one for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec) / 2)
    } else {
        None
    }
}

/// Pings the watchdog every `interval`, but only while the daemon is really
/// alive: the database thread must answer within the interval. A stuck
/// database thread therefore gets the service restarted by systemd.
pub async fn run_watchdog(shared: Arc<Shared>, interval: Duration, mut shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.requested() => return,
        }
        match tokio::time::timeout(interval, shared.ledger.ping()).await {
            Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "watchdog: database is not answering; not pinging systemd")
            }
            Err(_) => {
                tracing::error!("watchdog: database did not answer in time; not pinging systemd")
            }
        }
    }
}

/// Keeps `STATUS=` in step with the number of calls in progress.
pub async fn report_status(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut calls = shared.watch_active_calls();
    loop {
        let active = *calls.borrow_and_update();
        let line = if shared.is_draining() {
            format!("draining; {active} active call(s)")
        } else {
            format!("ready; {active} active call(s)")
        };
        status(&line);
        tokio::select! {
            changed = calls.changed() => if changed.is_err() { return },
            () = shutdown.requested() => return,
        }
    }
}
