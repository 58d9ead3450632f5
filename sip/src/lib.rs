//! The SIP edge of Tollbridge.
//!
//! This crate owns everything that speaks SIP: the UDP/TCP (later TLS)
//! listeners, checking messages before any parser trusts them ([`wire`]),
//! the source-address ACL per trunk ([`acl`]), the response codes we give
//! the trunk when a call cannot be connected ([`reject`]), the transaction
//! and dialog layers (built on `rsipstack`, hidden behind this crate's API),
//! digest authentication towards a trunk's termination URI, and of the
//! REGISTERs experts' softphones send us ([`digest`]).
//!
//! It knows nothing of bookings, media or money. The daemon sees two kinds of
//! legs through it: *inbound legs* (an offer arrived; answer, ring, reject or
//! end it) and *outbound legs* (place an INVITE to a target; get provisional,
//! early-media, answer and failure events; cancel or end it).
//!
//! The rules it must keep for Twilio Elastic SIP Trunking are listed in
//! `shared/TWILIO.md`.

pub mod acl;
pub mod digest;
pub mod edge;
pub mod gate;
pub mod reject;
pub mod wire;
