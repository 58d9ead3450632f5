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
    /// The language of the prompts its calls hear once routed (`en`,
    /// `ja`, or a language of `prompts.dir`); `prompts.language` when absent.
    #[serde(default)]
    pub language: Option<String>,
    /// Whether its calls' paid time grows past what the first card hold
    /// covers; off when absent.
    #[serde(default)]
    pub extension: Option<Extension>,
    /// Whether its calls are recorded (both parties, two channels);
    /// not when absent.
    #[serde(default)]
    pub recording: Option<Recording>,
}

/// Recording as a paid option: both parties on two channels of one file
/// per call, priced by `tariff.recording_price_per_minute`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    /// Whether its calls are recorded.
    pub enabled: bool,
    /// Both parties hear that the call is recorded before they hear each
    /// other (on unless turned off; the law where the parties are decides).
    #[serde(default = "yes")]
    pub announce: bool,
}

fn yes() -> bool {
    true
}

impl NewBooking {
    /// Whether its calls are recorded.
    pub fn records(&self) -> bool {
        self.recording.as_ref().is_some_and(|r| r.enabled)
    }

    /// What a minute of its calls costs: talk, and the recording when its
    /// calls are recorded. The card hold and the cap are priced by it.
    pub fn charged_per_minute(&self) -> i64 {
        let recording = if self.records() {
            self.tariff.recording_price_per_minute
        } else {
            0
        };
        self.tariff.price_per_minute.saturating_add(recording)
    }
}

/// How a call's paid time is extended past the booking's cap, a block at
/// a time, each block its own card hold placed shortly before the covered
/// time runs out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// `off` (the call ends at the cap), `auto` (the next block is held
    /// without asking; nobody hears a warning while it succeeds) or `ask`
    /// (the caller's warning offers the next block, `1` takes it).
    pub mode: String,
    /// The talk time one more block buys.
    pub block_seconds: i64,
    /// The most talk time one call may reach with its blocks.
    pub max_seconds: i64,
}

impl Extension {
    /// Whether calls extend at all.
    pub fn is_on(&self) -> bool {
        self.mode != "off"
    }
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
    /// A new prompt language; `null` returns to `prompts.language`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub language: Option<Option<String>>,
    /// A new extension policy; `null` turns extension off.
    #[serde(default, deserialize_with = "present_extension")]
    #[schema(value_type = Option<Extension>)]
    pub extension: Option<Option<Extension>>,
    /// A new recording option; `null` turns recording off.
    #[serde(default, deserialize_with = "present_recording")]
    #[schema(value_type = Option<Recording>)]
    pub recording: Option<Option<Recording>>,
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

/// [`present`] for the extension policy.
fn present_extension<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Extension>>, D::Error> {
    Option::<Extension>::deserialize(d).map(Some)
}

/// [`present`] for the recording option.
fn present_recording<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Recording>>, D::Error> {
    Option::<Recording>::deserialize(d).map(Some)
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
            || self.window.is_some()
            || self.language.is_some()
            || self.extension.is_some()
            || self.recording.is_some();
        if errors.is_empty() && !changes {
            errors.push(FieldError {
                field: "body".to_owned(),
                message:
                    "names nothing to change (callers, pin, callee, tariff, cap_seconds, window, language, extension, recording)"
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
        if let Some(language) = self.language {
            booking.language = language;
        }
        if let Some(extension) = self.extension {
            booking.extension = extension;
        }
        if let Some(recording) = self.recording {
            booking.recording = recording;
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
    /// An expert's registered softphones (`POST /v1/experts`): every
    /// device it has registered rings, the first to answer takes the call.
    Expert {
        /// The expert's name.
        expert: String,
    },
}

/// True for an expert's name: 1 to 64 of letters, digits, `.`, `-`, `_`.
pub fn is_expert_name(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
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
    /// Minor units per minute of recorded talk, on top of
    /// `price_per_minute`, when the booking records its calls; rated like
    /// talk time and shown apart.
    #[serde(default)]
    pub recording_price_per_minute: i64,
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
    /// The languages with prompts.
    pub languages: &'a [String],
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
            price_per_minute: u64::try_from(booking.charged_per_minute()).ok()?,
            increment_seconds: u32::try_from(tariff.increment_seconds).ok()?,
            minimum_seconds: u32::try_from(tariff.minimum_seconds).ok()?,
        })
    })();
    let (Some(rating), Ok(cap)) = (rating, u64::try_from(booking.cap_seconds)) else {
        return refused;
    };
    if let Some(extension) = booking.extension.as_ref().filter(|e| e.is_on())
        && let Ok(block) = u64::try_from(extension.block_seconds)
        && tollbridge_billing::settlement::hold_amount(&rating, block, minimum)
            .is_ok_and(|hold| hold > maximum)
    {
        refused.push((
            "extension.block_seconds",
            format!(
                "the card hold for one block would be above Stripe's maximum charge of {maximum} {code} minor units"
            ),
        ));
    }
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

/// What is wrong with an extension policy: an unknown mode, a block too
/// short to be worth a card hold or longer than an hour, a maximum not
/// beyond the cap, and extension without a card to hold.
fn extension_mistakes(extension: &Extension, booking: &NewBooking) -> Vec<(&'static str, String)> {
    let mut mistakes = Vec::new();
    if !matches!(extension.mode.as_str(), "off" | "auto" | "ask") {
        mistakes.push((
            "extension.mode",
            "must be \"off\", \"auto\" or \"ask\"".to_owned(),
        ));
    }
    if !(10..=3_600).contains(&extension.block_seconds) {
        mistakes.push(("extension.block_seconds", "must be 10 to 3600".to_owned()));
    } else if extension.mode == "ask" && !offered(extension.block_seconds) {
        let minutes: Vec<String> = tollbridge_media::prompt::OFFERED_MINUTES
            .iter()
            .map(u32::to_string)
            .collect();
        mistakes.push((
            "extension.block_seconds",
            format!(
                "in ask mode the offer says the block's length: it must be {} minutes",
                minutes.join(", ")
            ),
        ));
    }
    if !(1..=86_400).contains(&extension.max_seconds) {
        mistakes.push(("extension.max_seconds", "must be 1 to 86400".to_owned()));
    } else if extension.is_on() && extension.max_seconds <= booking.cap_seconds {
        mistakes.push((
            "extension.max_seconds",
            format!(
                "must be above cap_seconds ({}), or nothing is left to extend",
                booking.cap_seconds
            ),
        ));
    }
    if extension.is_on() && booking.stripe.is_none() {
        mistakes.push((
            "extension",
            "needs a stripe card: each block is a card hold".to_owned(),
        ));
    }
    mistakes
}

/// Whether an offer can say a block of `seconds`: whole minutes the
/// prompts have a word for.
fn offered(seconds: i64) -> bool {
    seconds % 60 == 0
        && u32::try_from(seconds / 60)
            .is_ok_and(|minutes| tollbridge_media::prompt::OFFERED_MINUTES.contains(&minutes))
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
    if let Some(language) = &booking.language {
        if !tollbridge_media::prompt::is_language_tag(language) {
            fail("language", "must be a language tag such as en, ja or pt-BR");
        } else if !context.languages.contains(language) {
            let known = context.languages.join(", ");
            fail(
                "language",
                &format!(
                    "has no prompts here (these do: {known}); add a directory of them to prompts.dir"
                ),
            );
        }
    }
    if let Some(extension) = &booking.extension {
        for (field, message) in extension_mistakes(extension, &booking) {
            fail(field, &message);
        }
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
        Callee::Expert { expert } => {
            if !is_expert_name(expert) {
                fail(
                    "callee.expert",
                    "must be an expert's name: 1 to 64 letters, digits, '.', '-' or '_'",
                );
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
    if !(0..=1_000_000_000).contains(&tariff.recording_price_per_minute) {
        fail(
            "tariff.recording_price_per_minute",
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
mod tests;
