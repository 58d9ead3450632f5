//! Settlement decisions, sans-IO: what to hold before a call, what to do
//! with the hold after it, how to read a PaymentIntent found by the
//! reconciler, and when to look again.
//!
//! The keys are derived from what they settle (`tb:call:{call}:{operation}:v1`)
//! and the parameters stored with the row never change: a different amount
//! would be a new row with a new key.

pub mod blocks;
pub mod machine;

use std::time::Duration;

use crate::rating::{Currency, RatingError, Tariff};

pub use machine::SettlementState;

/// The Stripe operations a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A call's hold: the one placed before the bridge, or an extension
    /// block's.
    Authorize,
    /// An extension block raising the first hold's authorized amount
    /// (incremental authorization), where its charge allows it.
    Increment,
    /// Taking the rated amount.
    Capture,
    /// Releasing the whole hold (nothing owed).
    Cancel,
    /// A booking's cancellation-fee hold.
    CancellationFee,
    /// Giving back part or all of a captured call's charge.
    Refund,
}

impl Operation {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Authorize => "authorize",
            Operation::Increment => "increment",
            Operation::Capture => "capture",
            Operation::Cancel => "cancel",
            Operation::CancellationFee => "cancellation-fee",
            Operation::Refund => "refund",
        }
    }

    /// Reads the stored word.
    pub fn parse(word: &str) -> Option<Operation> {
        match word {
            "authorize" => Some(Operation::Authorize),
            "increment" => Some(Operation::Increment),
            "capture" => Some(Operation::Capture),
            "cancel" => Some(Operation::Cancel),
            "cancellation-fee" => Some(Operation::CancellationFee),
            "refund" => Some(Operation::Refund),
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

/// The idempotency key of refund `refund_id` (`rf_...`, the row's own id:
/// one key per refund asked for, never reused for another amount).
pub fn refund_key(refund_id: &str) -> String {
    format!("tb:refund:{refund_id}")
}

/// Stripe's refund reasons, the only values its API takes.
pub const REFUND_REASONS: [&str; 3] = ["requested_by_customer", "duplicate", "fraudulent"];

/// Why a refund cannot be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefundRefusal {
    /// The amount asked is zero or negative.
    #[error("the amount must be at least 1 minor unit")]
    NotPositive,
    /// Everything captured is refunded (or being refunded) already.
    #[error("the whole charge is refunded already")]
    NothingLeft,
    /// The amount asked is more than what is left to refund.
    #[error("at most {refundable} minor units are left to refund")]
    AboveRefundable {
        /// What is left.
        refundable: i64,
    },
    /// The call was captured in parts (extension blocks) and no one part
    /// has that much left: a Stripe refund gives back from one charge.
    #[error(
        "the call was charged in parts; one refund can give back at most {largest} minor units"
    )]
    SpansCaptures {
        /// The most one refund can give back now.
        largest: i64,
    },
}

/// The amount of a new refund of a charge that captured `captured`, of
/// which `refunded` is refunded or on its way: `asked`, or all that is
/// left when `None`. Never more than was captured, all refunds together.
pub fn refund_amount(
    captured: i64,
    refunded: i64,
    asked: Option<i64>,
) -> Result<i64, RefundRefusal> {
    let left = captured.saturating_sub(refunded).max(0);
    match asked {
        Some(amount) if amount <= 0 => Err(RefundRefusal::NotPositive),
        _ if left == 0 => Err(RefundRefusal::NothingLeft),
        Some(amount) if amount > left => Err(RefundRefusal::AboveRefundable { refundable: left }),
        Some(amount) => Ok(amount),
        None => Ok(left),
    }
}

/// Reads the `status` of a Refund Stripe created or found for a refund
/// row. `pending` counts as done: Stripe accepted it and the money is on
/// its way (card refunds are `succeeded` at once; a later failure comes
/// as `charge.refund.updated`). `requires_action` needs the customer's
/// bank details, which a card refund never does: failed, with the reason.
pub fn resolve_refund(status: &str) -> Resolution {
    match status {
        "succeeded" | "pending" => Resolution::Succeeded,
        "failed" | "canceled" | "requires_action" => {
            Resolution::Failed(format!("the refund is {status}"))
        }
        other => Resolution::Failed(format!("the refund has an unknown status {other:?}")),
    }
}

/// How long a merchant-initiated card hold is sure to live: Visa's
/// off-session holds last 4 days 18 hours, the shortest of the networks.
/// Assumed only where Stripe has not said (`capture_before`), and to plan
/// a hold not placed yet.
pub const HOLD_LIFETIME: Duration = Duration::from_secs((4 * 24 + 18) * 3600);

/// The most kept in hand before a hold's end.
pub const HOLD_MARGIN: Duration = Duration::from_secs(6 * 3600);

/// The least time between two looks at an operation whose outcome is
/// unknown, however close its hold's end.
const LOOK_AGAIN_AT_LEAST: Duration = Duration::from_secs(5 * 60);

/// When a hold placed at `held_ms` must be acted on (captured, released or
/// renewed) at the latest: Stripe's `capture_before` less a quarter of the
/// hold's life, at most [`HOLD_MARGIN`]. When Stripe did not say, the
/// shortest documented lifetime ([`HOLD_LIFETIME`]) is assumed.
pub fn act_by(held_ms: i64, capture_before_ms: Option<i64>) -> i64 {
    let end = capture_before_ms.unwrap_or(held_ms + HOLD_LIFETIME.as_millis() as i64);
    let life = (end - held_ms).max(0);
    end - (life / 4).min(HOLD_MARGIN.as_millis() as i64)
}

/// When to look again at an operation whose outcome is unknown: at
/// `scheduled_ms` (the 5 min, 1 h, daily ladder), but no later than its
/// hold's `act_by_ms`, and from then on every few minutes until the hold
/// ends rather than a day later.
pub fn look_again_at(now_ms: i64, scheduled_ms: i64, act_by_ms: Option<i64>) -> i64 {
    match act_by_ms {
        Some(act_by) => {
            scheduled_ms.min(act_by.max(now_ms + LOOK_AGAIN_AT_LEAST.as_millis() as i64))
        }
        None => scheduled_ms,
    }
}

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

/// The least a Stripe account takes in each currency it charges in.
///
/// Stripe's minimum applies after conversion to the account's settlement
/// currency: ¥50 is enough for an account that settles in yen, not for one
/// that settles in dollars (it must convert to at least $0.50). Without
/// exchange rates the least amount in another currency is the operator's
/// to say (`stripe.minimum_charge`); a currency the account settles in
/// needs nothing said; any other is unknown, and bookings in it are
/// refused rather than failed at the first call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Minimums {
    /// `stripe.settlement_currency`; `None`: each charge settles in its
    /// own currency.
    pub settlement: Option<Currency>,
    /// `stripe.minimum_charge`: the least amount, per currency charged in.
    pub configured: Vec<(Currency, i64)>,
}

impl Minimums {
    /// The least charge in `currency`, minor units; `None` when it is not
    /// known (see [`Minimums`]). Never below Stripe's own minimum for it.
    pub fn for_currency(&self, currency: Currency) -> Option<i64> {
        let own = currency.stripe_minimum();
        if let Some((_, configured)) = self.configured.iter().find(|(c, _)| *c == currency) {
            return Some((*configured).max(own));
        }
        match self.settlement {
            None => Some(own),
            Some(settlement) if settlement == currency => Some(own),
            Some(_) => None,
        }
    }
}

/// The plan for a rated `amount` (0 when nothing is owed), Stripe's least
/// charge being `minimum` ([`Minimums::for_currency`]).
pub fn after_call(amount: i64, minimum: i64, policy: UnderMinimum) -> AfterCall {
    match (amount, policy) {
        (amount, _) if amount <= 0 => AfterCall::Cancel,
        (amount, _) if amount >= minimum => AfterCall::Capture(amount),
        (_, UnderMinimum::Cancel) => AfterCall::Cancel,
        (_, UnderMinimum::ChargeMinimum) => AfterCall::Capture(minimum),
    }
}

/// What to hold for a booking: the price of its cap, at least Stripe's
/// least charge `minimum` ([`Minimums::for_currency`]).
pub fn hold_amount(tariff: &Tariff, cap_seconds: u64, minimum: i64) -> Result<i64, RatingError> {
    let price = tariff.amount_for(tariff.billed_seconds(cap_seconds)?)?;
    Ok(price.minor.max(minimum))
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
        // An increment is read from the amount authorized, not received.
        (Operation::Increment, _) => Resolution::Resend,
        (Operation::Refund, _) => {
            Resolution::Failed("a refund is read from its Refund, not the PaymentIntent".into())
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
    fn refund_amount_table() {
        use RefundRefusal::*;
        // captured, refunded, asked, the answer
        type Case = (i64, i64, Option<i64>, Result<i64, RefundRefusal>);
        let cases: [Case; 9] = [
            (1000, 0, None, Ok(1000)),
            (1000, 0, Some(400), Ok(400)),
            (1000, 400, None, Ok(600)),
            (1000, 400, Some(600), Ok(600)),
            (
                1000,
                400,
                Some(601),
                Err(AboveRefundable { refundable: 600 }),
            ),
            (1000, 1000, None, Err(NothingLeft)),
            (1000, 1000, Some(1), Err(NothingLeft)),
            (1000, 0, Some(0), Err(NotPositive)),
            (1000, 0, Some(-5), Err(NotPositive)),
        ];
        for (captured, refunded, asked, expected) in cases {
            assert_eq!(
                refund_amount(captured, refunded, asked),
                expected,
                "{captured} captured, {refunded} refunded, {asked:?} asked"
            );
        }
    }

    #[test]
    fn refund_status_table() {
        for (status, done) in [
            ("succeeded", true),
            ("pending", true),
            ("failed", false),
            ("canceled", false),
            ("requires_action", false),
            ("weird", false),
        ] {
            assert_eq!(
                resolve_refund(status) == Resolution::Succeeded,
                done,
                "{status}"
            );
        }
        assert_eq!(refund_key("rf_1"), "tb:refund:rf_1");
        assert_eq!(Operation::parse("refund"), Some(Operation::Refund));
        assert_eq!(Operation::Refund.as_str(), "refund");
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
                after_call(amount, 50, policy),
                expected,
                "{amount} {policy:?}"
            );
        }
        assert_eq!(
            after_call(
                29,
                Currency::Gbp.stripe_minimum(),
                UnderMinimum::ChargeMinimum
            ),
            AfterCall::Capture(30)
        );
        // An account settling in dollars, taking yen from ¥80.
        assert_eq!(after_call(60, 80, UnderMinimum::Cancel), AfterCall::Cancel);
        assert_eq!(
            after_call(60, 80, UnderMinimum::ChargeMinimum),
            AfterCall::Capture(80)
        );
    }

    #[test]
    fn minimums_table() {
        use Currency::*;
        let same = Minimums::default();
        let usd_account = Minimums {
            settlement: Some(Usd),
            configured: vec![(Jpy, 80), (Gbp, 10)],
        };
        let cases = [
            (&same, Jpy, Some(50)),
            (&same, Gbp, Some(30)),
            (&usd_account, Usd, Some(50)),
            (&usd_account, Jpy, Some(80)),
            // Never below Stripe's own minimum for the currency.
            (&usd_account, Gbp, Some(30)),
            (&usd_account, Eur, None),
        ];
        for (minimums, currency, expected) in cases {
            assert_eq!(
                minimums.for_currency(currency),
                expected,
                "{minimums:?} {currency:?}"
            );
        }
    }

    #[test]
    fn the_hold_covers_the_cap_and_the_cap_follows_the_hold() {
        assert_eq!(hold_amount(&yen(100), 600, 50).unwrap(), 1000);
        assert_eq!(
            hold_amount(&yen(100), 6, 50).unwrap(),
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
    fn a_hold_is_acted_on_before_stripe_says_it_ends() {
        let hour = 3_600_000i64;
        let day = 24 * hour;
        let held = 1_000 * day;
        // (capture_before after the hold, act by after the hold)
        let table = [
            // Visa off-session, as Stripe says: 4 d 18 h, 6 h in hand.
            (Some(held + 114 * hour), held + 108 * hour),
            // A 7-day hold: still 6 h in hand.
            (Some(held + 7 * day), held + 7 * day - 6 * hour),
            // Not said: the shortest documented lifetime is assumed.
            (None, held + 108 * hour),
            // A short hold keeps a quarter of its life in hand.
            (Some(held + 8 * hour), held + 6 * hour),
            (Some(held + 8_000), held + 6_000),
            // Already over when read: act at once.
            (Some(held - 1), held - 1),
        ];
        for (capture_before, expected) in table {
            assert_eq!(act_by(held, capture_before), expected, "{capture_before:?}");
        }
        let minute = 60_000i64;
        let now = held;
        // (scheduled, act by, expected)
        let table = [
            (now + day, None, now + day),
            (now + day, Some(now + 2 * hour), now + 2 * hour),
            (now + 5 * minute, Some(now + 2 * hour), now + 5 * minute),
            // Past the act-by time: every 5 minutes, not every poll.
            (now + day, Some(now - hour), now + 5 * minute),
            (now + minute, Some(now - hour), now + minute),
        ];
        for (scheduled, act_by_ms, expected) in table {
            assert_eq!(
                look_again_at(now, scheduled, act_by_ms),
                expected,
                "{scheduled} {act_by_ms:?}"
            );
        }
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
