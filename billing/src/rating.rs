//! Rating: what a call of so many seconds costs, and how long an amount
//! lasts. Pure integer arithmetic in the currency's minor unit; never a
//! float, never a silent overflow.

use std::fmt;

/// A currency we rate in, with its minor-unit exponent (JPY has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    /// Japanese yen, zero-decimal: `500` is ¥500.
    Jpy,
    /// US dollar: `500` is $5.00.
    Usd,
    /// Euro.
    Eur,
    /// Pound sterling.
    Gbp,
}

impl Currency {
    /// Parses the lower-case ISO 4217 code the API and Stripe use.
    pub fn from_code(code: &str) -> Option<Currency> {
        match code {
            "jpy" => Some(Currency::Jpy),
            "usd" => Some(Currency::Usd),
            "eur" => Some(Currency::Eur),
            "gbp" => Some(Currency::Gbp),
            _ => None,
        }
    }

    /// The lower-case ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Jpy => "jpy",
            Currency::Usd => "usd",
            Currency::Eur => "eur",
            Currency::Gbp => "gbp",
        }
    }

    /// Stripe's smallest charge in minor units (¥50, $0.50, €0.50,
    /// £0.30); below it Stripe answers `amount_too_small`.
    pub fn stripe_minimum(self) -> i64 {
        match self {
            Currency::Jpy | Currency::Usd | Currency::Eur => 50,
            Currency::Gbp => 30,
        }
    }

    /// Stripe's largest charge in minor units: eight digits (¥99,999,999,
    /// $999,999.99); above it Stripe answers `amount_too_large`.
    pub fn stripe_maximum(self) -> i64 {
        99_999_999
    }

    /// Decimal places of the minor unit.
    pub fn exponent(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            Currency::Usd | Currency::Eur | Currency::Gbp => 2,
        }
    }
}

/// An amount of money in a currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    /// Minor units (yen, cents).
    pub minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency.code())
    }
}

/// How talk time is priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tariff {
    /// The currency of `price_per_minute`.
    pub currency: Currency,
    /// Minor units per minute of billed time.
    pub price_per_minute: u64,
    /// Billed time is rounded up to a multiple of this (1 = per second,
    /// 6 = 6/6, 60 = 60/60). Never zero.
    pub increment_seconds: u32,
    /// Billed time is at least this.
    pub minimum_seconds: u32,
}

/// Why a tariff cannot rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    /// `increment_seconds` is zero.
    #[error("the billing increment must be at least one second")]
    ZeroIncrement,
    /// The amount does not fit the ledger's integer.
    #[error("the amount does not fit a 64-bit integer")]
    Overflow,
}

/// A rated call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rating {
    /// Seconds charged after rounding and the minimum.
    pub billed_seconds: u64,
    /// What they cost.
    pub amount: Money,
}

impl Tariff {
    /// Billed seconds for `talk_seconds` of talk: rounded up to the
    /// increment, at least the minimum. Rate only calls that were answered:
    /// an answered call of 0 s still bills the minimum.
    pub fn billed_seconds(&self, talk_seconds: u64) -> Result<u64, RatingError> {
        let increment = u64::from(self.increment_seconds);
        if increment == 0 {
            return Err(RatingError::ZeroIncrement);
        }
        let rounded = talk_seconds
            .div_ceil(increment)
            .checked_mul(increment)
            .ok_or(RatingError::Overflow)?;
        Ok(rounded.max(u64::from(self.minimum_seconds)))
    }

    /// The price of `billed_seconds`: `ceil(seconds × price_per_minute / 60)`.
    pub fn amount_for(&self, billed_seconds: u64) -> Result<Money, RatingError> {
        let cost = u128::from(billed_seconds) * u128::from(self.price_per_minute);
        let minor = i64::try_from(cost.div_ceil(60)).map_err(|_| RatingError::Overflow)?;
        Ok(Money {
            minor,
            currency: self.currency,
        })
    }

    /// Rates a call of `talk_seconds`.
    pub fn rate(&self, talk_seconds: u64) -> Result<Rating, RatingError> {
        let billed_seconds = self.billed_seconds(talk_seconds)?;
        Ok(Rating {
            billed_seconds,
            amount: self.amount_for(billed_seconds)?,
        })
    }

    /// The longest talk time that `amount` minor units pay for, or `None`
    /// when talk is free (price 0). Zero when the amount does not cover the
    /// minimum. Used to set a call's cap from what the card hold covers.
    pub fn max_seconds_for(&self, amount: u64) -> Result<Option<u64>, RatingError> {
        let increment = u64::from(self.increment_seconds);
        if increment == 0 {
            return Err(RatingError::ZeroIncrement);
        }
        if self.price_per_minute == 0 {
            return Ok(None);
        }
        // ceil(b × p / 60) ≤ amount  ⇔  b × p ≤ amount × 60.
        let affordable = u128::from(amount) * 60 / u128::from(self.price_per_minute);
        let affordable = u64::try_from(affordable).unwrap_or(u64::MAX);
        // Talk of t seconds bills t rounded up to the increment, so the
        // longest talk is the affordable time rounded down to it.
        let talk = affordable / increment * increment;
        if talk < u64::from(self.minimum_seconds) {
            return Ok(Some(0));
        }
        Ok(Some(talk))
    }
}

/// A recorded call's amount in its two parts; the capture is their sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedRating {
    /// Seconds of talk charged (increment and minimum applied).
    pub billed_seconds: u64,
    /// What the talk costs, at the talk price alone.
    pub talk: Money,
    /// What the recording adds.
    pub recording: Money,
}

/// Rates a call of `talk_seconds` whose recording ran `recorded_seconds`
/// of it, recording priced at `recording_per_minute` on top of `talk`'s
/// price and rated like talk (the same increment and minimum). Their sum
/// never exceeds what the two prices together rate the whole talk at,
/// which is what the card hold and the cap were priced by: a recording
/// that stopped early costs less, never more.
pub fn rate_recorded(
    talk: &Tariff,
    recording_per_minute: u64,
    talk_seconds: u64,
    recorded_seconds: u64,
) -> Result<RecordedRating, RatingError> {
    let rated = talk.rate(talk_seconds)?;
    let none = Money {
        minor: 0,
        currency: talk.currency,
    };
    let recorded = recorded_seconds.min(talk_seconds);
    if recording_per_minute == 0 || (recorded == 0 && talk_seconds > 0) {
        return Ok(RecordedRating {
            billed_seconds: rated.billed_seconds,
            talk: rated.amount,
            recording: none,
        });
    }
    let together = Tariff {
        price_per_minute: talk
            .price_per_minute
            .checked_add(recording_per_minute)
            .ok_or(RatingError::Overflow)?,
        ..*talk
    };
    let most = together.rate(talk_seconds)?.amount.minor - rated.amount.minor;
    let recording = if recorded == talk_seconds {
        most
    } else {
        let part = Tariff {
            price_per_minute: recording_per_minute,
            ..*talk
        };
        part.rate(recorded)?.amount.minor.min(most)
    };
    Ok(RecordedRating {
        billed_seconds: rated.billed_seconds,
        talk: rated.amount,
        recording: Money {
            minor: recording,
            currency: talk.currency,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (talk tariff, recording price, talk s, recorded s, billed s, talk
    /// amount, recording amount)
    #[test]
    fn recorded_rating_table() {
        let per_second = tariff(Currency::Jpy, 1_200, 1, 0);
        let per_minute = tariff(Currency::Jpy, 300, 60, 0);
        let with_minimum = tariff(Currency::Jpy, 100, 1, 60);
        let usd = tariff(Currency::Usd, 199, 6, 0);
        let cases: &[(Tariff, u64, u64, u64, u64, i64, i64)] = &[
            // ¥1,200 + ¥300 a minute, 30 s recorded whole: 600 + 150.
            (per_second, 300, 30, 30, 30, 600, 150),
            // Recording free: nothing added.
            (per_second, 0, 30, 30, 30, 600, 0),
            // The recording failed to start: nothing added.
            (per_second, 300, 30, 0, 30, 600, 0),
            // It stopped after 10 s: 10 s of recording.
            (per_second, 300, 30, 10, 30, 600, 50),
            // A file a little longer than the talk is the talk.
            (per_second, 300, 30, 31, 30, 600, 150),
            // 61 s at 60/60: two minutes of each.
            (per_minute, 100, 61, 61, 120, 600, 200),
            // 20 s recorded of 61 s at 60/60: one minute of recording.
            (per_minute, 100, 61, 20, 120, 600, 100),
            // The minimum applies to the recording as to the talk.
            (with_minimum, 60, 10, 10, 60, 100, 60),
            // 12 s at $1.99 is 39.8 cents, rounded up to 40: the rounding
            // already paid the recording's 0.2 cent, so it adds nothing.
            (usd, 1, 7, 7, 12, 40, 0),
            // At $0.50 a minute more it adds 10 cents.
            (usd, 50, 7, 7, 12, 40, 10),
            // A call answered and ended at once still bills the minimum.
            (with_minimum, 60, 0, 0, 60, 100, 60),
        ];
        for (i, (t, recording, talk, recorded, billed, talk_amount, recording_amount)) in
            cases.iter().enumerate()
        {
            let rated = rate_recorded(t, *recording, *talk, *recorded).unwrap();
            assert_eq!(
                (
                    rated.billed_seconds,
                    rated.talk.minor,
                    rated.recording.minor
                ),
                (*billed, *talk_amount, *recording_amount),
                "case {i}"
            );
            let together = Tariff {
                price_per_minute: t.price_per_minute + recording,
                ..*t
            };
            assert!(
                rated.talk.minor + rated.recording.minor
                    <= together.rate(*talk).unwrap().amount.minor,
                "case {i}: never above what the hold was priced by"
            );
        }
    }

    fn tariff(currency: Currency, price: u64, increment: u32, minimum: u32) -> Tariff {
        Tariff {
            currency,
            price_per_minute: price,
            increment_seconds: increment,
            minimum_seconds: minimum,
        }
    }

    /// (tariff, talk seconds, billed seconds, amount)
    #[test]
    fn rating_table() {
        let jpy_100 = tariff(Currency::Jpy, 100, 1, 0);
        let jpy_1000 = tariff(Currency::Jpy, 1000, 1, 0);
        let jpy_6_6 = tariff(Currency::Jpy, 300, 6, 0);
        let jpy_60_60 = tariff(Currency::Jpy, 300, 60, 0);
        let jpy_min = tariff(Currency::Jpy, 100, 1, 60);
        let usd = tariff(Currency::Usd, 199, 1, 0); // $1.99 a minute
        let usd_6_6_min = tariff(Currency::Usd, 50, 6, 30);
        let cases: &[(Tariff, u64, u64, i64)] = &[
            (jpy_100, 0, 0, 0),
            (jpy_100, 1, 1, 2),    // 100/60 = 1.67 → 2
            (jpy_100, 59, 59, 99), // 98.33 → 99
            (jpy_100, 60, 60, 100),
            (jpy_100, 61, 61, 102), // 101.67 → 102
            (jpy_100, 3600, 3600, 6000),
            (jpy_1000, 1, 1, 17),
            (jpy_1000, 86_400, 86_400, 1_440_000),
            (jpy_6_6, 1, 6, 30),
            (jpy_6_6, 6, 6, 30),
            (jpy_6_6, 7, 12, 60),
            (jpy_60_60, 1, 60, 300),
            (jpy_60_60, 60, 60, 300),
            (jpy_60_60, 61, 120, 600),
            (jpy_min, 0, 60, 100),
            (jpy_min, 59, 60, 100),
            (jpy_min, 61, 61, 102),
            (usd, 0, 0, 0),
            (usd, 1, 1, 4),     // 3.32 cents → 4
            (usd, 59, 59, 196), // 195.68 → 196
            (usd, 60, 60, 199),
            (usd, 61, 61, 203), // 202.32 → 203
            (usd_6_6_min, 1, 30, 25),
            (usd_6_6_min, 31, 36, 30),
        ];
        for (i, (t, talk, billed, amount)) in cases.iter().enumerate() {
            let rating = t.rate(*talk).unwrap();
            assert_eq!(
                (rating.billed_seconds, rating.amount.minor),
                (*billed, *amount),
                "case {i}: {talk} s on {t:?}"
            );
            assert_eq!(rating.amount.currency, t.currency);
        }
    }

    #[test]
    fn huge_values_do_not_overflow_or_wrap() {
        let t = tariff(Currency::Jpy, 1_000_000_000, 1, 0);
        assert_eq!(t.rate(86_400).unwrap().amount.minor, 1_440_000_000_000);
        assert_eq!(t.rate(u64::MAX), Err(RatingError::Overflow));
        let minute = tariff(Currency::Jpy, 1, 60, 0);
        assert_eq!(minute.billed_seconds(u64::MAX), Err(RatingError::Overflow));
        assert_eq!(
            tariff(Currency::Jpy, 1, 0, 0).rate(1),
            Err(RatingError::ZeroIncrement)
        );
    }

    /// (tariff, amount, longest talk)
    #[test]
    fn max_seconds_table() {
        let cases: &[(Tariff, u64, Option<u64>)] = &[
            (tariff(Currency::Jpy, 100, 1, 0), 0, Some(0)),
            (tariff(Currency::Jpy, 100, 1, 0), 100, Some(60)),
            (tariff(Currency::Jpy, 100, 1, 0), 3000, Some(1800)),
            (tariff(Currency::Jpy, 100, 1, 0), 101, Some(60)), // 60.6 s → 60
            (tariff(Currency::Jpy, 300, 6, 0), 100, Some(18)), // 20 s → 18
            (tariff(Currency::Jpy, 300, 60, 0), 299, Some(0)),
            (tariff(Currency::Jpy, 300, 60, 0), 900, Some(180)),
            (tariff(Currency::Jpy, 100, 1, 60), 99, Some(0)), // the minimum is not covered
            (tariff(Currency::Jpy, 100, 1, 60), 100, Some(60)),
            (tariff(Currency::Usd, 199, 1, 0), 1000, Some(301)), // $10 at $1.99/min
            (tariff(Currency::Jpy, 0, 1, 0), 0, None),
        ];
        for (i, (t, amount, talk)) in cases.iter().enumerate() {
            assert_eq!(
                t.max_seconds_for(*amount).unwrap(),
                *talk,
                "case {i}: {amount} on {t:?}"
            );
        }
    }

    /// The cap derived from an amount never costs more than the amount, and
    /// one more increment would.
    #[test]
    fn max_seconds_is_exactly_what_the_amount_covers() {
        for price in [1, 7, 100, 199, 300, 1000] {
            for increment in [1, 6, 60] {
                for minimum in [0, 30, 60] {
                    let t = tariff(Currency::Jpy, price, increment, minimum);
                    for amount in [0, 1, 49, 50, 99, 100, 101, 599, 600, 601, 5000, 29_999] {
                        let Some(talk) = t.max_seconds_for(amount).unwrap() else {
                            unreachable!()
                        };
                        if talk > 0 {
                            assert!(
                                t.rate(talk).unwrap().amount.minor <= amount as i64,
                                "{t:?} {amount}: {talk} s costs too much"
                            );
                        }
                        let next = talk.max(u64::from(minimum)) + u64::from(increment);
                        if talk > 0
                            || t.rate(u64::from(minimum)).unwrap().amount.minor > amount as i64
                        {
                            assert!(
                                t.rate(next).unwrap().amount.minor > amount as i64,
                                "{t:?} {amount}: {next} s would still be covered"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn currency_codes_round_trip() {
        for currency in [Currency::Jpy, Currency::Usd, Currency::Eur, Currency::Gbp] {
            assert_eq!(Currency::from_code(currency.code()), Some(currency));
        }
        assert_eq!(Currency::from_code("JPY"), None);
        assert_eq!(Currency::Jpy.exponent(), 0);
        assert_eq!(Currency::Usd.exponent(), 2);
    }
}
