//! Settlement decisions, sans-IO: what to hold before a call, what to do
//! with the hold after it, how to read a PaymentIntent found by the
//! reconciler, and when to look again.
//!
//! The keys are derived from what they settle (`tb:call:{call}:{operation}:v1`)
//! and the parameters stored with the row never change: a different amount
//! would be a new row with a new key.

use std::time::Duration;

use crate::rating::{Currency, RatingError, Tariff};

/// The Stripe operations a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The hold placed before the bridge.
    Authorize,
    /// Taking the rated amount.
    Capture,
    /// Releasing the whole hold (nothing owed).
    Cancel,
    /// A booking's cancellation-fee hold.
    CancellationFee,
}

impl Operation {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Authorize => "authorize",
            Operation::Capture => "capture",
            Operation::Cancel => "cancel",
            Operation::CancellationFee => "cancellation-fee",
        }
    }

    /// Reads the stored word.
    pub fn parse(word: &str) -> Option<Operation> {
        match word {
            "authorize" => Some(Operation::Authorize),
            "capture" => Some(Operation::Capture),
            "cancel" => Some(Operation::Cancel),
            "cancellation-fee" => Some(Operation::CancellationFee),
            _ => None,
        }
    }
}

/// The idempotency key of a call's operation, attempt 1.
pub fn call_key(call_id: &str, operation: Operation) -> String {
    format!("tb:call:{call_id}:{}:v1", operation.as_str())
}

/// The idempotency key of a booking's cancellation-fee movement
/// (`fee-hold`, `fee-capture`, `fee-release`) for hold number `attempt`
/// (a hold renewed before it lapses is a new attempt with new keys).
pub fn booking_key(booking_id: &str, movement: &str, attempt: i64) -> String {
    format!("tb:booking:{booking_id}:{movement}:v{attempt}")
}

/// How long a merchant-initiated card hold is sure to live: Visa's
/// off-session holds last 4 days 18 hours, the shortest of the networks.
pub const HOLD_LIFETIME: Duration = Duration::from_secs((4 * 24 + 18) * 3600);

/// Margin kept before a hold's end.
pub const HOLD_MARGIN: Duration = Duration::from_secs(6 * 3600);

/// When to place a booking's cancellation-fee hold: now when the window
/// opens within a hold's lifetime (less the margin), else that long
/// before it opens.
pub fn fee_hold_at(now_ms: i64, window_start_ms: i64) -> i64 {
    let reach = (HOLD_LIFETIME - HOLD_MARGIN).as_millis() as i64;
    now_ms.max(window_start_ms - reach)
}

/// Whether a cancellation at `now_ms` is late (the fee is due): less than
/// `late` before the window opens, or after.
pub fn is_late_cancellation(now_ms: i64, window_start_ms: i64, late: Duration) -> bool {
    window_start_ms - now_ms <= late.as_millis() as i64
}

/// What a tariff does with a call cheaper than Stripe's minimum charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderMinimum {
    /// Charge nothing: release the hold.
    Cancel,
    /// Charge the minimum.
    ChargeMinimum,
}

impl UnderMinimum {
    /// Reads the stored word (`cancel`, `charge-minimum`).
    pub fn parse(word: &str) -> Option<UnderMinimum> {
        match word {
            "cancel" => Some(UnderMinimum::Cancel),
            "charge-minimum" => Some(UnderMinimum::ChargeMinimum),
            _ => None,
        }
    }
}

/// What to do with a hold once the call is rated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCall {
    /// Capture this amount (the rest of the hold is released).
    Capture(i64),
    /// Release the whole hold.
    Cancel,
}

/// The plan for a rated `amount` (0 when nothing is owed).
pub fn after_call(amount: i64, currency: Currency, policy: UnderMinimum) -> AfterCall {
    let minimum = currency.stripe_minimum();
    match (amount, policy) {
        (amount, _) if amount <= 0 => AfterCall::Cancel,
        (amount, _) if amount >= minimum => AfterCall::Capture(amount),
        (_, UnderMinimum::Cancel) => AfterCall::Cancel,
        (_, UnderMinimum::ChargeMinimum) => AfterCall::Capture(minimum),
    }
}

/// What to hold for a booking: the price of its cap, at least Stripe's
/// minimum charge.
pub fn hold_amount(tariff: &Tariff, cap_seconds: u64) -> Result<i64, RatingError> {
    let price = tariff.amount_for(tariff.billed_seconds(cap_seconds)?)?;
    Ok(price.minor.max(tariff.currency.stripe_minimum()))
}

/// The cap a hold of `held` covers: the booking's cap, or less when the
/// hold covers less.
pub fn cap_for_hold(tariff: &Tariff, held: i64, booking_cap: u64) -> Result<u64, RatingError> {
    let covered = tariff.max_seconds_for(u64::try_from(held).unwrap_or(0))?;
    Ok(covered.map_or(booking_cap, |c| c.min(booking_cap)))
}

/// What a PaymentIntent read back says about an operation sent earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// It took effect.
    Succeeded,
    /// It cannot take effect; the reason is stored.
    Failed(String),
    /// It has not taken effect and can be sent again with the same key.
    Resend,
}

/// Reads `status` (and what was received) of the PaymentIntent an
/// `operation` for `expected` minor units acted on.
pub fn resolve(
    operation: Operation,
    status: &str,
    amount_received: i64,
    expected: i64,
) -> Resolution {
    match (operation, status) {
        (Operation::Authorize | Operation::CancellationFee, "requires_capture") => {
            Resolution::Succeeded
        }
        (Operation::Authorize | Operation::CancellationFee, other) => {
            Resolution::Failed(format!("the hold is {other}"))
        }
        (Operation::Capture, "succeeded") if amount_received == expected => Resolution::Succeeded,
        (Operation::Capture, "succeeded") => {
            Resolution::Failed(format!("captured {amount_received}, expected {expected}"))
        }
        (Operation::Capture | Operation::Cancel, "requires_capture") => Resolution::Resend,
        (Operation::Cancel, "canceled") => Resolution::Succeeded,
        (Operation::Capture, "canceled") => {
            Resolution::Failed("the hold was canceled or expired before capture".into())
        }
        (_, other) => Resolution::Failed(format!("the PaymentIntent is {other}")),
    }
}

/// When the reconciler looks again at an operation whose outcome is still
/// unknown after `tries` looks: 5 minutes, 1 hour, then daily.
pub fn reconcile_after(tries: u32) -> Duration {
    match tries {
        0 | 1 => Duration::from_secs(5 * 60),
        2 => Duration::from_secs(60 * 60),
        _ => Duration::from_secs(24 * 60 * 60),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn yen(per_minute: u64) -> Tariff {
        Tariff {
            currency: Currency::Jpy,
            price_per_minute: per_minute,
            increment_seconds: 1,
            minimum_seconds: 0,
        }
    }

    #[test]
    fn after_call_table() {
        let table = [
            (0, UnderMinimum::Cancel, AfterCall::Cancel),
            (0, UnderMinimum::ChargeMinimum, AfterCall::Cancel),
            (10, UnderMinimum::Cancel, AfterCall::Cancel),
            (10, UnderMinimum::ChargeMinimum, AfterCall::Capture(50)),
            (49, UnderMinimum::ChargeMinimum, AfterCall::Capture(50)),
            (50, UnderMinimum::Cancel, AfterCall::Capture(50)),
            (6000, UnderMinimum::Cancel, AfterCall::Capture(6000)),
        ];
        for (amount, policy, expected) in table {
            assert_eq!(
                after_call(amount, Currency::Jpy, policy),
                expected,
                "{amount} {policy:?}"
            );
        }
        assert_eq!(
            after_call(29, Currency::Gbp, UnderMinimum::ChargeMinimum),
            AfterCall::Capture(30)
        );
    }

    #[test]
    fn the_hold_covers_the_cap_and_the_cap_follows_the_hold() {
        assert_eq!(hold_amount(&yen(100), 600).unwrap(), 1000);
        assert_eq!(
            hold_amount(&yen(100), 6).unwrap(),
            50,
            "at least the minimum"
        );
        assert_eq!(cap_for_hold(&yen(100), 1000, 600).unwrap(), 600);
        assert_eq!(
            cap_for_hold(&yen(100), 500, 600).unwrap(),
            300,
            "a smaller hold, a shorter cap"
        );
        assert_eq!(
            cap_for_hold(&yen(100), 50, 6).unwrap(),
            6,
            "never above the booking's cap"
        );
    }

    #[test]
    fn reading_back_a_payment_intent() {
        let table = [
            (
                Operation::Authorize,
                "requires_capture",
                0,
                0,
                Resolution::Succeeded,
            ),
            (
                Operation::Capture,
                "succeeded",
                300,
                300,
                Resolution::Succeeded,
            ),
            (
                Operation::Capture,
                "requires_capture",
                0,
                300,
                Resolution::Resend,
            ),
            (
                Operation::Cancel,
                "requires_capture",
                0,
                0,
                Resolution::Resend,
            ),
            (Operation::Cancel, "canceled", 0, 0, Resolution::Succeeded),
        ];
        for (operation, status, received, expected, resolution) in table {
            assert_eq!(
                resolve(operation, status, received, expected),
                resolution,
                "{operation:?} {status}"
            );
        }
        assert!(matches!(
            resolve(Operation::Capture, "succeeded", 200, 300),
            Resolution::Failed(_)
        ));
        assert!(matches!(
            resolve(Operation::Capture, "canceled", 0, 300),
            Resolution::Failed(_)
        ));
        assert!(matches!(
            resolve(Operation::Authorize, "requires_payment_method", 0, 0),
            Resolution::Failed(_)
        ));
        assert_eq!(
            call_key("call_1", Operation::Capture),
            "tb:call:call_1:capture:v1"
        );
        assert_eq!(reconcile_after(1), Duration::from_secs(300));
        assert_eq!(reconcile_after(2), Duration::from_secs(3600));
        assert_eq!(reconcile_after(9), Duration::from_secs(86400));
    }

    #[test]
    fn cancellation_fee_timing() {
        let hour = 3_600_000i64;
        let now = 1_000 * hour;
        // The window opens in 2 days: hold now. In 10 days: hold 4 d 12 h
        // before it opens.
        assert_eq!(fee_hold_at(now, now + 48 * hour), now);
        assert_eq!(
            fee_hold_at(now, now + 240 * hour),
            now + 240 * hour - 108 * hour
        );
        let day = Duration::from_secs(86_400);
        assert!(is_late_cancellation(now, now + 23 * hour, day));
        assert!(is_late_cancellation(now, now + 24 * hour, day));
        assert!(!is_late_cancellation(now, now + 25 * hour, day));
        assert!(
            is_late_cancellation(now, now - hour, day),
            "after the window opened"
        );
        assert_eq!(
            booking_key("bk_1", "fee-hold", 1),
            "tb:booking:bk_1:fee-hold:v1"
        );
    }
}
