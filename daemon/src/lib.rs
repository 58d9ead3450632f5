//! Tollbridge, the daemon: everything that knows all the other crates.
//!
//! It owns the ledger (bookings, call records, settlements), call control
//! (the B2BUA state machine) and routing of calls to bookings, the
//! registrar experts' softphones register with, the HTTP
//! API and the command line's client of it, metrics, systemd integration
//! and the daemon's life cycle. The binary's `main` only parses the
//! command line and calls in here.

pub mod bookings;
pub mod calls;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod ctl;
pub mod edge;
pub mod export;
pub mod http;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod registrar;
mod reload;
pub mod run;
pub mod settle;
pub mod shutdown;
pub mod state;
pub mod systemd;
pub mod tls;
