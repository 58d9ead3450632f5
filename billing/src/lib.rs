//! The money side of Tollbridge.
//!
//! This crate owns tariffs and rating (pure functions over integer minor
//! units: billed seconds and amount from talk time, and the longest talk time
//! an amount covers), the settlement decisions (hold amounts, after-call
//! plans, idempotency keys derived from what they settle), and the
//! settlement machine that moves each row (hold, capture, release, fee hold,
//! refund) to its outcome with Stripe.
//!
//! It knows nothing of sockets or of the database: it takes inputs and `now`
//! and returns what to record and what to send; the daemon carries that out.

pub mod rating;
pub mod settlement;
pub mod stripe;
