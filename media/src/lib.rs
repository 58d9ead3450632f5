//! The media path of Tollbridge.
//!
//! This crate owns the RTP relay: per call two legs, each an even RTP port
//! and the RTCP port above it from the configured range; SDP offer/answer
//! rewriting so both parties send to the relay; latching to the signalled
//! peer; G.711 (PCMU/PCMA) encoding of prompts and their injection into a
//! leg's outgoing stream with continuous SSRC, sequence numbers and
//! timestamps; and RFC 4733 DTMF events.
//!
//! It knows nothing of SIP or money: the daemon hands it SDP bodies and
//! socket ranges and gets back rewritten SDP, media statistics and events
//! (DTMF digits, inactivity).
