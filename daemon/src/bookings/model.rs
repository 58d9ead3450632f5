//! A booking as the API accepts it, and the rules it must meet. Pure: the
//! caller passes `now` and what the config knows (trunks, Stripe mode).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// The body of `POST /v1/bookings`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBooking {
    /// Our id (`bk_...`); generated when absent.
    pub id: Option<String>,
    /// The trunk number the caller dials, E.164.
    pub called: String,
    /// Caller IDs allowed to use the booking, E.164; may be empty when a PIN is set.
    #[serde(default)]
    pub callers: Vec<String>,
    /// Digits the caller enters when the caller ID does not identify the booking.
    pub pin: Option<String>,
    /// Who answers.
    pub callee: Callee,
    /// How the call is priced.
    pub tariff: Tariff,
    /// The most talk time the booking buys.
    pub cap_seconds: i64,
    /// When the booking may be used.
    pub window: Window,
    /// The saved card to hold and charge; optional in ledger-only mode.
    pub stripe: Option<StripeCard>,
    /// A fee captured on a late cancellation or no-show, minor units.
    pub cancellation_fee: Option<i64>,
}

/// The body of `PATCH /v1/bookings/{id}`: the fields to change, each
/// optional. `called`, `stripe` and `cancellation_fee` are fixed at
/// creation (the routing key and what was held); they are named here so a
/// request that sets them is told so, field by field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingPatch {
    /// New caller IDs (replacing the list).
    pub callers: Option<Vec<String>>,
    /// A new PIN; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub pin: Option<Option<String>>,
    /// A new callee.
    pub callee: Option<Callee>,
    /// A new tariff (only before the booking's first call).
    pub tariff: Option<Tariff>,
    /// A new budget (not below what its calls used).
    pub cap_seconds: Option<i64>,
    /// A new window.
    pub window: Option<Window>,
    /// Fixed: the id.
    #[schema(ignore)]
    id: Option<serde_json::Value>,
    /// Fixed: the dialled number.
    #[schema(ignore)]
    called: Option<serde_json::Value>,
    /// Fixed: the card.
    #[schema(ignore)]
    stripe: Option<serde_json::Value>,
    /// Fixed: the fee held with the booking.
    #[schema(ignore)]
    cancellation_fee: Option<serde_json::Value>,
}

/// A field that is present, `null` included: `Some(None)` for `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl BookingPatch {
    /// An error per fixed field the patch sets, and one when it changes
    /// nothing at all.
    pub fn refused_fields(&self) -> Vec<FieldError> {
        let fixed = [
            ("id", self.id.is_some()),
            ("called", self.called.is_some()),
            ("stripe", self.stripe.is_some()),
            ("cancellation_fee", self.cancellation_fee.is_some()),
        ];
        let mut errors: Vec<FieldError> = fixed
            .iter()
            .filter(|(_, set)| *set)
            .map(|(field, _)| FieldError {
                field: (*field).to_owned(),
                message: "cannot be changed; cancel the booking and create another".to_owned(),
            })
            .collect();
        let changes = self.callers.is_some()
            || self.pin.is_some()
            || self.callee.is_some()
            || self.tariff.is_some()
            || self.cap_seconds.is_some()
            || self.window.is_some();
        if errors.is_empty() && !changes {
            errors.push(FieldError {
                field: "body".to_owned(),
                message:
                    "names nothing to change (callers, pin, callee, tariff, cap_seconds, window)"
                        .to_owned(),
            });
        }
        errors
    }

    /// `booking` with this patch's fields in place of its own.
    pub fn applied_to(self, mut booking: NewBooking) -> NewBooking {
        if let Some(callers) = self.callers {
            booking.callers = callers;
        }
        if let Some(pin) = self.pin {
            booking.pin = pin;
        }
        if let Some(callee) = self.callee {
            booking.callee = callee;
        }
        if let Some(tariff) = self.tariff {
            booking.tariff = tariff;
        }
        if let Some(cap_seconds) = self.cap_seconds {
            booking.cap_seconds = cap_seconds;
        }
        if let Some(window) = self.window {
            booking.window = window;
        }
        booking
    }
}

/// Who answers a booked call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum Callee {
    /// A SIP URI (a softphone).
    Uri {
        /// `sip:...`
        uri: String,
    },
    /// A phone number through a trunk's termination.
    Number {
        /// E.164 number.
        number: String,
        /// The `[[trunk]]` name.
        trunk: String,
    },
}

/// The price of talk time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tariff {
    /// ISO 4217, lower case (`jpy`).
    pub currency: String,
    /// Minor units per minute.
    pub price_per_minute: i64,
    /// Billing increment in seconds (1 = per second, 60 = per minute).
    #[serde(default = "one")]
    pub increment_seconds: i64,
    /// Billed seconds at least.
    #[serde(default)]
    pub minimum_seconds: i64,
    /// A call cheaper than the currency's minimum charge (¥50, $0.50):
    /// `cancel` (charge nothing) or `charge-minimum`.
    #[serde(default = "cancel")]
    pub under_minimum: String,
}

fn cancel() -> String {
    "cancel".to_owned()
}

fn one() -> i64 {
    1
}

/// When a booking may be used, RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// From.
    pub start: String,
    /// Until.
    pub end: String,
}

/// A saved card, set up with 3-D Secure by the operator's front end.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StripeCard {
    /// `cus_...`
    pub customer: String,
    /// `pm_...`
    pub payment_method: String,
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Dotted path in the request body (`tariff.currency`).
    pub field: String,
    /// Why.
    pub message: String,
}

/// What validation needs to know beyond the request.
pub struct Context<'a> {
    /// Now, UTC.
    pub now: OffsetDateTime,
    /// Trunks that have a termination URI (can reach phone numbers).
    pub trunks_with_termination: &'a [String],
    /// Whether Stripe is configured (then a card is required).
    pub charges: bool,
    /// The least charge the Stripe account takes in each currency.
    pub minimums: &'a tollbridge_billing::settlement::Minimums,
}

/// A booking that passed validation, with its window parsed.
#[derive(Debug, Clone)]
pub struct ValidBooking {
    /// The request.
    pub booking: NewBooking,
    /// Window start, Unix ms.
    pub window_start_ms: i64,
    /// Window end, Unix ms.
    pub window_end_ms: i64,
    /// The least charge Stripe takes in its currency from this account
    /// (see `Minimums`), minor units: what a call under it becomes.
    pub minimum_charge: i64,
}

/// True for `+` followed by 2 to 15 digits.
pub fn is_e164(text: &str) -> bool {
    text.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

fn is_booking_id(text: &str) -> bool {
    text.strip_prefix("bk_").is_some_and(|rest| {
        (1..=64).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// What Stripe would refuse of a booking with a card, found now rather
/// than at the first call: a cancellation fee below its minimum charge or
/// above its maximum, a card hold (the price of the whole budget) above
/// its maximum. Nothing when the tariff is invalid (reported already).
fn stripe_limits(booking: &NewBooking, minimum: i64) -> Vec<(&'static str, String)> {
    use tollbridge_billing::rating::{Currency, Tariff as Rating};
    let tariff = &booking.tariff;
    let Some(currency) = Currency::from_code(&tariff.currency) else {
        return Vec::new();
    };
    let maximum = currency.stripe_maximum();
    let code = currency.code();
    let mut refused = Vec::new();
    if let Some(fee) = booking.cancellation_fee {
        if fee > 0 && fee < minimum {
            refused.push((
                "cancellation_fee",
                format!("{fee} is below Stripe's minimum charge of {minimum} {code} minor units"),
            ));
        } else if fee > maximum {
            refused.push((
                "cancellation_fee",
                format!("{fee} is above Stripe's maximum charge of {maximum} {code} minor units"),
            ));
        }
    }
    let rating = (|| {
        Some(Rating {
            currency,
            price_per_minute: u64::try_from(tariff.price_per_minute).ok()?,
            increment_seconds: u32::try_from(tariff.increment_seconds).ok()?,
            minimum_seconds: u32::try_from(tariff.minimum_seconds).ok()?,
        })
    })();
    let (Some(rating), Ok(cap)) = (rating, u64::try_from(booking.cap_seconds)) else {
        return refused;
    };
    match tollbridge_billing::settlement::hold_amount(&rating, cap, minimum) {
        Ok(hold) if hold <= maximum => {}
        Ok(hold) => refused.push((
            "cap_seconds",
            format!(
                "the card hold for it would be {hold} {code} minor units, above Stripe's maximum charge of {maximum}: lower the cap or the price"
            ),
        )),
        Err(_) => refused.push((
            "cap_seconds",
            format!("its price does not fit a card hold (Stripe's maximum is {maximum} {code} minor units)"),
        )),
    }
    refused
}

/// Checks every rule and lists every failure.
pub fn validate(booking: NewBooking, context: &Context) -> Result<ValidBooking, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: &str| {
        errors.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        })
    };
    if let Some(id) = &booking.id
        && !is_booking_id(id)
    {
        fail(
            "id",
            "must be bk_ followed by 1 to 64 letters, digits, '-' or '_'",
        );
    }
    if !is_e164(&booking.called) {
        fail("called", "must be an E.164 number like +81312345678");
    }
    for (i, caller) in booking.callers.iter().enumerate() {
        if !is_e164(caller) {
            fail(&format!("callers[{i}]"), "must be an E.164 number");
        } else if booking.callers[..i].contains(caller) {
            fail(&format!("callers[{i}]"), "listed twice");
        }
    }
    if let Some(pin) = &booking.pin
        && !((4..=12).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()))
    {
        fail("pin", "must be 4 to 12 digits");
    }
    if booking.callers.is_empty() && booking.pin.is_none() {
        fail(
            "callers",
            "give at least one caller ID or a pin, or anyone could use the booking",
        );
    }
    match &booking.callee {
        Callee::Uri { uri } => {
            let scheme_ok = uri.starts_with("sip:") || uri.starts_with("sips:");
            if !scheme_ok || uri.len() < 6 || uri.contains(char::is_whitespace) {
                fail("callee.uri", "must be a sip: or sips: URI");
            }
        }
        Callee::Number { number, trunk } => {
            if !is_e164(number) {
                fail("callee.number", "must be an E.164 number");
            }
            if !context.trunks_with_termination.iter().any(|t| t == trunk) {
                fail(
                    "callee.trunk",
                    "no [[trunk]] of that name with a termination URI",
                );
            }
        }
    }
    let tariff = &booking.tariff;
    if tollbridge_billing::rating::Currency::from_code(&tariff.currency).is_none() {
        fail("tariff.currency", "must be one of jpy, usd, eur, gbp");
    }
    if !(0..=1_000_000_000).contains(&tariff.price_per_minute) {
        fail(
            "tariff.price_per_minute",
            "must be 0 to 1000000000 minor units",
        );
    }
    if !(1..=3600).contains(&tariff.increment_seconds) {
        fail("tariff.increment_seconds", "must be 1 to 3600");
    }
    if !matches!(tariff.under_minimum.as_str(), "cancel" | "charge-minimum") {
        fail(
            "tariff.under_minimum",
            "must be \"cancel\" or \"charge-minimum\"",
        );
    }
    if !(0..=86_400).contains(&tariff.minimum_seconds) {
        fail("tariff.minimum_seconds", "must be 0 to 86400");
    }
    if !(1..=86_400).contains(&booking.cap_seconds) {
        fail("cap_seconds", "must be 1 to 86400");
    }
    let start = parse_time(&booking.window.start);
    let end = parse_time(&booking.window.end);
    if start.is_none() {
        fail(
            "window.start",
            "must be an RFC 3339 time like 2026-12-01T10:00:00+09:00",
        );
    }
    if end.is_none() {
        fail("window.end", "must be an RFC 3339 time");
    }
    if let (Some(start), Some(end)) = (start, end) {
        if end <= start {
            fail("window.end", "must be after window.start");
        } else if end <= context.now {
            fail("window.end", "is in the past");
        }
    }
    match &booking.stripe {
        None if context.charges => fail(
            "stripe",
            "required: Stripe is configured, so calls are charged",
        ),
        None => {}
        Some(card) => {
            if !card.customer.starts_with("cus_") {
                fail("stripe.customer", "must be a Stripe customer id (cus_...)");
            }
            if !card.payment_method.starts_with("pm_") {
                fail(
                    "stripe.payment_method",
                    "must be a Stripe payment method id (pm_...)",
                );
            }
        }
    }
    if let Some(fee) = booking.cancellation_fee {
        if !(0..=1_000_000_000).contains(&fee) {
            fail("cancellation_fee", "must be 0 to 1000000000 minor units");
        }
        if booking.stripe.is_none() {
            fail("cancellation_fee", "needs a stripe card to hold it on");
        }
    }
    let currency = tollbridge_billing::rating::Currency::from_code(&tariff.currency);
    let minimum_charge = currency.map(|c| {
        context
            .minimums
            .for_currency(c)
            .unwrap_or(c.stripe_minimum())
    });
    if booking.stripe.is_some()
        && let Some(currency) = currency
    {
        match context.minimums.for_currency(currency) {
            Some(minimum) => {
                for (field, message) in stripe_limits(&booking, minimum) {
                    fail(field, &message);
                }
            }
            None => fail(
                "tariff.currency",
                &format!(
                    "the Stripe account settles in another currency and stripe.minimum_charge.{} is not set: Stripe's least charge in it is not known",
                    currency.code()
                ),
            ),
        }
    }
    match (errors.is_empty(), start, end, minimum_charge) {
        (true, Some(start), Some(end), Some(minimum_charge)) => Ok(ValidBooking {
            window_start_ms: crate::clock::ms_of(start),
            window_end_ms: crate::clock::ms_of(end),
            minimum_charge,
            booking,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        parse_time("2026-11-25T00:00:00Z").unwrap()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "called": "+81312345678",
            "callers": ["+819012345678"],
            "callee": {"number": "+815011112222", "trunk": "twilio"},
            "tariff": {"currency": "jpy", "price_per_minute": 100},
            "cap_seconds": 1800,
            "window": {"start": "2026-12-01T10:00:00+09:00", "end": "2026-12-01T11:00:00+09:00"}
        })
    }

    /// Stripe's limits, with a card: each case's fee, price a minute and
    /// cap, and the field refused (none when it fits).
    #[test]
    fn stripe_limits_table() {
        // currency, fee, price a minute, cap, the field refused
        type Case = (&'static str, Option<i64>, i64, i64, Option<&'static str>);
        let cases: [Case; 9] = [
            ("jpy", Some(50), 100, 600, None),
            ("jpy", Some(49), 100, 600, Some("cancellation_fee")),
            ("jpy", Some(0), 100, 600, None),
            ("gbp", Some(30), 100, 600, None),
            ("gbp", Some(29), 100, 600, Some("cancellation_fee")),
            ("usd", Some(100_000_000), 100, 600, Some("cancellation_fee")),
            // ¥1,000,000,000 a minute for a day: far past ¥99,999,999.
            ("jpy", None, 1_000_000_000, 86_400, Some("cap_seconds")),
            // ¥1,157 a minute for a day: ¥1,666,080, fits.
            ("jpy", None, 1_157, 86_400, None),
            // $694.44 a minute for a day: 99,999,360 cents, just fits.
            ("usd", None, 69_444, 86_400, None),
        ];
        for (currency, fee, price, cap, refused) in cases {
            let mut body = good();
            body["tariff"]["currency"] = serde_json::json!(currency);
            body["tariff"]["price_per_minute"] = serde_json::json!(price);
            body["cap_seconds"] = serde_json::json!(cap);
            body["stripe"] = serde_json::json!({"customer": "cus_1", "payment_method": "pm_1"});
            body["cancellation_fee"] = serde_json::json!(fee);
            let fields: Vec<String> = check(body, true)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.field)
                .collect();
            let expected: Vec<String> = refused.iter().map(|f| (*f).to_owned()).collect();
            assert_eq!(
                fields, expected,
                "{currency} fee {fee:?}, {price}/min for {cap} s"
            );
        }
    }

    /// An account settling in dollars: yen bookings need the least yen
    /// charge said, and that is the minimum for the fee and for calls.
    #[test]
    fn another_settlement_currency_needs_its_minimum_said() {
        use tollbridge_billing::rating::Currency;
        use tollbridge_billing::settlement::Minimums;
        let with_card = |fee: Option<i64>| {
            let mut body = good();
            body["stripe"] = serde_json::json!({"customer": "cus_1", "payment_method": "pm_1"});
            body["cancellation_fee"] = serde_json::json!(fee);
            serde_json::from_value::<NewBooking>(body).unwrap()
        };
        let trunks = ["twilio".to_owned()];
        let validate_with = |booking: NewBooking, minimums: &Minimums| {
            let charges = booking.stripe.is_some();
            validate(
                booking,
                &Context {
                    now: now(),
                    trunks_with_termination: &trunks,
                    charges,
                    minimums,
                },
            )
        };
        let unknown = Minimums {
            settlement: Some(Currency::Usd),
            configured: vec![],
        };
        let errors = validate_with(with_card(None), &unknown).unwrap_err();
        assert_eq!(errors[0].field, "tariff.currency", "{errors:?}");
        assert!(
            errors[0].message.contains("stripe.minimum_charge.jpy"),
            "{errors:?}"
        );
        let said = Minimums {
            settlement: Some(Currency::Usd),
            configured: vec![(Currency::Jpy, 80)],
        };
        let errors = validate_with(with_card(Some(60)), &said).unwrap_err();
        assert_eq!(errors[0].field, "cancellation_fee", "{errors:?}");
        let valid = validate_with(with_card(Some(80)), &said).unwrap();
        assert_eq!(valid.minimum_charge, 80);
        // Without a card (ledger-only) nothing is charged: the currency's own.
        let mut no_card = good();
        no_card["cancellation_fee"] = serde_json::Value::Null;
        let booking: NewBooking = serde_json::from_value(no_card).unwrap();
        assert_eq!(validate_with(booking, &unknown).unwrap().minimum_charge, 50);
    }

    fn check(body: serde_json::Value, charges: bool) -> Result<ValidBooking, Vec<FieldError>> {
        let booking: NewBooking = serde_json::from_value(body).unwrap();
        let trunks = ["twilio".to_owned()];
        validate(
            booking,
            &Context {
                now: now(),
                trunks_with_termination: &trunks,
                charges,
                minimums: &tollbridge_billing::settlement::Minimums::default(),
            },
        )
    }

    #[test]
    fn a_good_booking_passes_with_defaults() {
        let valid = check(good(), false).unwrap();
        assert_eq!(valid.booking.tariff.increment_seconds, 1);
        assert_eq!(valid.booking.tariff.minimum_seconds, 0);
        assert_eq!(valid.window_end_ms - valid.window_start_ms, 3_600_000);
        assert_eq!(
            crate::clock::rfc3339(valid.window_start_ms),
            "2026-12-01T01:00:00Z"
        );
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("/id", serde_json::json!("booking-1"), "id"),
            ("/called", serde_json::json!("0312345678"), "called"),
            ("/callers", serde_json::json!(["+1", "x"]), "callers[0]"),
            (
                "/callers",
                serde_json::json!(["+8190", "+8190"]),
                "callers[1]",
            ),
            ("/pin", serde_json::json!("12a4"), "pin"),
            (
                "/tariff/under_minimum",
                serde_json::json!("sometimes"),
                "tariff.under_minimum",
            ),
            ("/callers", serde_json::json!([]), "callers"),
            (
                "/callee",
                serde_json::json!({"uri": "http://x"}),
                "callee.uri",
            ),
            (
                "/callee",
                serde_json::json!({"number": "+815011112222", "trunk": "nope"}),
                "callee.trunk",
            ),
            (
                "/tariff/currency",
                serde_json::json!("JPY"),
                "tariff.currency",
            ),
            (
                "/tariff/price_per_minute",
                serde_json::json!(-1),
                "tariff.price_per_minute",
            ),
            (
                "/tariff/increment_seconds",
                serde_json::json!(0),
                "tariff.increment_seconds",
            ),
            (
                "/tariff/minimum_seconds",
                serde_json::json!(100_000),
                "tariff.minimum_seconds",
            ),
            ("/cap_seconds", serde_json::json!(0), "cap_seconds"),
            (
                "/window/start",
                serde_json::json!("tomorrow"),
                "window.start",
            ),
            (
                "/window/end",
                serde_json::json!("2026-12-01T09:00:00+09:00"),
                "window.end",
            ),
            (
                "/window/end",
                serde_json::json!("2026-12-01T11:00:00"),
                "window.end",
            ),
            (
                "/stripe",
                serde_json::json!({"customer": "x", "payment_method": "pm_1"}),
                "stripe.customer",
            ),
            (
                "/cancellation_fee",
                serde_json::json!(500),
                "cancellation_fee",
            ),
        ];
        for (pointer, value, field) in cases {
            let mut body = good();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut body
            } else {
                body.pointer_mut(parent).unwrap()
            };
            target[key] = value;
            let errors = check(body, false).unwrap_err();
            assert!(
                errors.iter().any(|e| e.field == field),
                "{pointer}: expected {field} in {errors:?}"
            );
        }
    }

    #[test]
    fn a_past_window_and_a_missing_card_when_charging_are_refused() {
        let mut body = good();
        body["window"] =
            serde_json::json!({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"});
        let errors = check(body, true).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["window.end", "stripe"]);
    }
}
