//! The money side of Tollbridge.
//!
//! This crate owns tariffs and rating (pure functions over integer minor
//! units: billed seconds and amount from talk time, and the longest talk time
//! an amount covers), the per-second meter's state machine, and the
//! settlement outbox state machine that turns a finished call into Stripe
//! operations (hold, capture, cancel) with idempotency keys derived from what
//! they settle.
//!
//! It knows nothing of sockets or of the database: it takes inputs and `now`
//! and returns what to record and what to send; the daemon carries that out.

pub mod rating;
pub mod settlement;
pub mod stripe;
