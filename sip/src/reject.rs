//! Which SIP final response to send when a call cannot be connected.
//!
//! Twilio's origination tries the next origination URI on every final
//! response except 2xx, 400, 404, 405, 410, 416, 482, 484, 486 and 6xx (and
//! after 4 s of silence). A call we refuse for a reason that another host
//! would share (no booking, the expert did not answer) must therefore get a
//! code outside that list, or Twilio rings the expert again through another
//! Tollbridge. Only overload and draining use 503, where failover is the
//! point.

/// Why a call could not be connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Nothing is booked on the dialled number.
    UnknownNumber,
    /// The number is known but no booking matches this caller (or PIN).
    NoBooking,
    /// The booking exists but its time window is not now.
    OutsideWindow,
    /// The booking is already in a call.
    BookingInCall,
    /// The card hold for the call was declined.
    PaymentDeclined,
    /// The callee answered busy.
    CalleeBusy,
    /// The callee declined or the call to it failed.
    CalleeRejected,
    /// The callee did not answer within the ring timeout.
    CalleeNoAnswer,
    /// The caller's offer has no codec we can bridge.
    NoCommonCodec,
    /// We are shutting down: another host should take the call.
    Draining,
    /// We are over capacity: another host should take the call.
    Overloaded,
}

impl RejectReason {
    /// The status code and reason phrase to answer the caller's INVITE with.
    pub fn response(self) -> (u16, &'static str) {
        match self {
            RejectReason::UnknownNumber => (404, "Not Found"),
            RejectReason::NoBooking => (603, "Decline"),
            RejectReason::OutsideWindow => (603, "Decline"),
            RejectReason::BookingInCall => (486, "Busy Here"),
            RejectReason::PaymentDeclined => (603, "Decline"),
            RejectReason::CalleeBusy => (486, "Busy Here"),
            RejectReason::CalleeRejected => (603, "Decline"),
            RejectReason::CalleeNoAnswer => (603, "Decline"),
            // RFC 3264's answer for an unacceptable offer. Twilio fails over
            // on it, and every host gives the same answer, so it only costs
            // time; the bridge issue asks for 488 explicitly.
            RejectReason::NoCommonCodec => (488, "Not Acceptable Here"),
            RejectReason::Draining => (503, "Service Unavailable"),
            RejectReason::Overloaded => (503, "Service Unavailable"),
        }
    }

    /// Whether this rejection is meant to make the trunk try another host.
    pub fn wants_failover(self) -> bool {
        matches!(self, RejectReason::Draining | RejectReason::Overloaded)
    }
}

/// Whether Twilio's origination tries the next origination URI after this
/// final response code (from Twilio's documentation, in `shared/TWILIO.md`).
pub fn twilio_fails_over(code: u16) -> bool {
    !matches!(code, 200..=299 | 400 | 404 | 405 | 410 | 416 | 482 | 484 | 486 | 600..=699)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RejectReason; 11] = [
        RejectReason::UnknownNumber,
        RejectReason::NoBooking,
        RejectReason::OutsideWindow,
        RejectReason::BookingInCall,
        RejectReason::PaymentDeclined,
        RejectReason::CalleeBusy,
        RejectReason::CalleeRejected,
        RejectReason::CalleeNoAnswer,
        RejectReason::NoCommonCodec,
        RejectReason::Draining,
        RejectReason::Overloaded,
    ];

    #[test]
    fn codes_by_reason() {
        let table = [
            (RejectReason::UnknownNumber, 404),
            (RejectReason::NoBooking, 603),
            (RejectReason::OutsideWindow, 603),
            (RejectReason::BookingInCall, 486),
            (RejectReason::PaymentDeclined, 603),
            (RejectReason::CalleeBusy, 486),
            (RejectReason::CalleeRejected, 603),
            (RejectReason::CalleeNoAnswer, 603),
            (RejectReason::NoCommonCodec, 488),
            (RejectReason::Draining, 503),
            (RejectReason::Overloaded, 503),
        ];
        for (reason, code) in table {
            assert_eq!(reason.response().0, code, "{reason:?}");
        }
    }

    #[test]
    fn only_overload_and_draining_invite_failover_among_call_outcomes() {
        for reason in ALL {
            let (code, _) = reason.response();
            if reason == RejectReason::NoCommonCodec {
                continue;
            }
            assert_eq!(
                twilio_fails_over(code),
                reason.wants_failover(),
                "{reason:?} -> {code}"
            );
        }
    }

    #[test]
    fn twilio_failover_list() {
        for code in [200, 400, 404, 405, 410, 416, 482, 484, 486, 600, 603, 606] {
            assert!(!twilio_fails_over(code), "{code}");
        }
        for code in [403, 408, 480, 487, 488, 500, 503, 504] {
            assert!(twilio_fails_over(code), "{code}");
        }
    }
}
