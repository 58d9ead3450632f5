//! The SIP edge of Tollbridge.
//!
//! This crate owns everything that speaks SIP: the UDP/TCP (later TLS)
//! listeners, parsing and checking messages before they are trusted, the
//! source-address ACL per trunk, the transaction and dialog layers (built on
//! `rsipstack`, hidden behind this crate's API), and digest authentication
//! towards a trunk's termination URI.
//!
//! It knows nothing of bookings, media or money. The daemon sees two kinds of
//! legs through it: *inbound legs* (an offer arrived; answer, ring, reject or
//! end it) and *outbound legs* (place an INVITE to a target; get provisional,
//! early-media, answer and failure events; cancel or end it).
//!
//! The rules it must keep for Twilio Elastic SIP Trunking are listed in
//! `shared/TWILIO.md`; the SIP edge issue implements them here.
