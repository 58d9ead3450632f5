//! The media path of Tollbridge.
//!
//! This crate owns the RTP relay: per call two legs, each an even RTP port
//! and the RTCP port above it from the configured range ([`ports`]); SDP
//! offer/answer so both parties send to the relay ([`sdp`]); latching to
//! the signalled peer, forwarding, payload-type rewriting and statistics
//! ([`leg`] and [`bridge`], sans-IO) run by the relay's own thread ([`relay`]); RFC 4733
//! DTMF events ([`dtmf`]); both parties recorded to a two-channel file by
//! a writer thread the relay never waits on ([`recording`]).
//!
//! It knows nothing of SIP or money: the daemon hands it SDP bodies and
//! port ranges and gets back rewritten SDP, media statistics and events
//! (DTMF digits, inactivity).

pub mod bridge;
pub mod dtmf;
pub mod g711;
pub mod leg;
pub mod ports;
pub mod prompt;
pub mod recording;
pub mod relay;
pub mod sdp;
pub mod srtp;
pub mod stream;
