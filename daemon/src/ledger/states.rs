//! The states the ledger stores, as types: what a booking, a call and a
//! settlement row can be, with the one word each is written as (a
//! settlement's is billing's, whose machine moves it).

use std::fmt;

/// Declares a state enum stored as one of a fixed set of words.
macro_rules! stored_state {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored word.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The state a stored word names.
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_state! {
    /// Where a booking stands.
    BookingState {
        /// Callable within its window.
        Active = "active",
        /// A call is using it now (on one node; the claim is the row's).
        InCall = "in-call",
        /// Its budget was used up, or its window ended after a call.
        Completed = "completed",
        /// Canceled by the operator's application.
        Canceled = "canceled",
        /// Its window ended and nobody called.
        NoShow = "no-show",
    }
}

stored_state! {
    /// Twilio's call-status vocabulary, which call records use.
    CallStatus {
        /// The call arrived.
        Queued = "queued",
        /// We sent the INVITE to the callee.
        Initiated = "initiated",
        /// The callee's phone rings.
        Ringing = "ringing",
        /// The callee answered; talk time runs.
        InProgress = "in-progress",
        /// Both were connected and the call ended.
        Completed = "completed",
        /// The callee (or the booking) was busy.
        Busy = "busy",
        /// The call could not be connected.
        Failed = "failed",
        /// The callee did not answer in time.
        NoAnswer = "no-answer",
        /// The caller gave up before the callee answered.
        Canceled = "canceled",
    }
}

/// Where a settlement row (one money movement) stands: the settlement
/// machine's state, stored as its word.
pub use tollbridge_billing::settlement::SettlementState;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_word() {
        for state in BookingState::ALL {
            assert_eq!(BookingState::parse(state.as_str()), Some(*state));
        }
        for state in CallStatus::ALL {
            assert_eq!(CallStatus::parse(state.as_str()), Some(*state));
        }
        for state in SettlementState::ALL {
            assert_eq!(SettlementState::parse(state.as_str()), Some(*state));
        }
        assert_eq!(CallStatus::parse("answered"), None);
        assert_eq!(CallStatus::InProgress.to_string(), "in-progress");
    }
}
