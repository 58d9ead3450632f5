//! Call control: routing inbound calls to bookings and bridging them to
//! the callee through the media relay.

pub mod journal;
pub mod live;
pub mod machine;
pub mod meter;
pub mod recording;
pub mod recovery;
pub mod route;
pub mod srtp;
pub mod task;
