//! Bookings: created (with their cancellation-fee hold planned in the
//! same transaction), read, listed, canceled (their fee captured or
//! released in the same transaction), and the terms calls are rated by.

use tollbridge_billing::rating::{Currency, Tariff as RatingTariff};

use super::db::{Db, Row};
use super::states::BookingState;
use super::{Ledger, LedgerError, fees};
use crate::args;
use crate::bookings::model::{Callee, Extension, Recording, StripeCard, Tariff, ValidBooking};

/// A booking as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BookingRecord {
    /// `bk_...`
    pub id: String,
    /// The dialled number, E.164.
    pub called: String,
    /// Caller IDs that select it, E.164.
    pub callers: Vec<String>,
    /// Whether it has a PIN (the PIN itself is never read back).
    pub has_pin: bool,
    /// Who answers.
    pub callee: Option<Callee>,
    /// How talk is priced.
    pub tariff: Tariff,
    /// The talk time it buys, for all its calls together.
    pub cap_seconds: i64,
    /// What its connected calls were billed so far, in seconds.
    pub used_seconds: i64,
    /// Window start, Unix ms.
    pub window_start_ms: i64,
    /// Window end, Unix ms.
    pub window_end_ms: i64,
    /// The card, when it has one.
    pub stripe: Option<StripeCard>,
    /// The cancellation fee, minor units.
    pub cancellation_fee: Option<i64>,
    /// Where it stands.
    pub state: BookingState,
    /// When it was created, Unix ms.
    pub created_ms: i64,
    /// Its calls' prompt language; `None`: `prompts.language`.
    pub language: Option<String>,
    /// How its calls' paid time is extended; `None`: it is not.
    pub extension: Option<Extension>,
    /// Whether its calls are recorded; `None`: they are not.
    pub recording: Option<Recording>,
}

const COLUMNS: &str = "id, called, callers, pin IS NOT NULL, callee, currency, price_per_minute, \
     increment_seconds, minimum_seconds, cap_seconds, window_start_ms, window_end_ms, stripe_customer, \
     stripe_payment_method, cancellation_fee, state, created_ms, under_minimum, used_seconds, language, \
     extension_mode, extension_block_seconds, extension_max_seconds, recording_enabled, \
     recording_announce, recording_price_per_minute";

fn record_from(row: &Row) -> Result<BookingRecord, LedgerError> {
    let state = row.text(15)?;
    Ok(BookingRecord {
        id: row.text(0)?,
        called: row.text(1)?,
        callers: serde_json::from_str(&row.text(2)?).unwrap_or_default(),
        has_pin: row.flag(3)?,
        callee: serde_json::from_str(&row.text(4)?).ok(),
        tariff: Tariff {
            currency: row.text(5)?,
            price_per_minute: row.int(6)?,
            increment_seconds: row.int(7)?,
            minimum_seconds: row.int(8)?,
            under_minimum: row.text(17)?,
            recording_price_per_minute: row.int(25)?,
        },
        cap_seconds: row.int(9)?,
        used_seconds: row.int(18)?,
        window_start_ms: row.int(10)?,
        window_end_ms: row.int(11)?,
        stripe: row
            .opt_text(12)?
            .zip(row.opt_text(13)?)
            .map(|(customer, payment_method)| StripeCard {
                customer,
                payment_method,
            }),
        cancellation_fee: row.opt_int(14)?,
        state: BookingState::parse(&state)
            .ok_or_else(|| LedgerError::Decode(format!("booking state {state:?}")))?,
        created_ms: row.int(16)?,
        language: row.opt_text(19)?,
        extension: match (row.opt_text(20)?, row.opt_int(21)?, row.opt_int(22)?) {
            (Some(mode), Some(block_seconds), Some(max_seconds)) => Some(Extension {
                mode,
                block_seconds,
                max_seconds,
            }),
            _ => None,
        },
        recording: row.flag(23)?.then_some(Recording {
            enabled: true,
            announce: row.flag(24)?,
        }),
    })
}

/// Why a booking could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BookingWrite {
    /// The id is taken.
    #[error("a booking with this id exists")]
    Exists,
    /// The booking is in a call and cannot be canceled now.
    #[error("the booking is in a call")]
    InCall,
    /// Another open booking on the same number shares a caller and part
    /// of the window, and neither has a PIN: a call could not tell which
    /// of the two it is for.
    #[error(
        "booking {0} on the same number shares a caller and overlaps this window, and neither has a PIN"
    )]
    Overlaps(String),
    /// The callee is an expert with no account.
    #[error("no expert is called {0}")]
    UnknownExpert(String),
    /// The database failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// An open booking without a PIN on `called` (other than `except`) whose
/// window overlaps `start..end` and whose callers share one with
/// `callers`: a call from that caller in the overlap could be for either.
///
/// Takes the dialled number's lock first, held until the transaction
/// ends: two bookings written at once on one number (on any node) are
/// checked against each other in turn, not both against the rows before
/// them.
pub(super) fn ambiguous_with(
    db: &mut dyn Db,
    called: &str,
    callers: &[String],
    start_ms: i64,
    end_ms: i64,
    except: Option<&str>,
) -> Result<Option<String>, LedgerError> {
    if let Some(lock) = db.dialect().lock_name() {
        db.query(lock, args![format!("tollbridge:bookings:{called}")])?;
    }
    let candidates = db.query(
        "SELECT id, callers FROM bookings
         WHERE called = ?1 AND state IN ('active', 'in-call') AND pin IS NULL
           AND window_start_ms < ?3 AND window_end_ms > ?2 AND id <> ?4
         ORDER BY created_ms, id",
        args![called, start_ms, end_ms, except.unwrap_or("")],
    )?;
    for row in &candidates {
        let theirs: Vec<String> = serde_json::from_str(&row.text(1)?).unwrap_or_default();
        if theirs.iter().any(|caller| callers.contains(caller)) {
            return Ok(Some(row.text(0)?));
        }
    }
    Ok(None)
}

/// A callee as the `callee` column keeps it.
pub(super) fn stored_callee(callee: &Callee) -> String {
    match callee {
        Callee::Uri { uri } => serde_json::json!({"uri": uri}),
        Callee::Number { number, trunk } => serde_json::json!({"number": number, "trunk": trunk}),
        Callee::Expert { expert } => serde_json::json!({"expert": expert}),
    }
    .to_string()
}

/// A booking whose callee is an expert with no account: refused.
pub(super) fn unknown_expert(
    db: &mut dyn Db,
    callee: &Callee,
) -> Result<Option<String>, LedgerError> {
    let Callee::Expert { expert } = callee else {
        return Ok(None);
    };
    let found = db.query_opt(
        "SELECT 1 FROM experts WHERE name = ?1",
        args![expert.as_str()],
    )?;
    Ok(found.is_none().then(|| expert.clone()))
}

/// One booking by id.
pub(super) fn get(db: &mut dyn Db, id: &str) -> Result<Option<BookingRecord>, LedgerError> {
    let sql = format!("SELECT {COLUMNS} FROM bookings WHERE id = ?1");
    db.query_opt(&sql, args![id])?
        .map(|row| record_from(&row))
        .transpose()
}

/// What rating and settlement read of a booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// How a minute of its calls is priced: talk, and the recording when
    /// its calls are recorded (holds and caps are priced by it).
    pub tariff: RatingTariff,
    /// The part of `tariff.price_per_minute` that pays for the recording
    /// (zero when its calls are not recorded).
    pub recording_per_minute: u64,
    /// The talk time its next call may use: the budget less what its
    /// earlier calls were billed.
    pub remaining_seconds: u64,
    /// Stripe's least charge in its currency from this account.
    pub minimum_charge: i64,
    /// The Stripe customer and card, when it has them.
    pub card: Option<(String, String)>,
}

/// A booking's terms; `None` when there is no such booking (or its stored
/// tariff is one this build cannot rate).
pub(super) fn terms(db: &mut dyn Db, id: &str) -> Result<Option<Terms>, LedgerError> {
    let Some(row) = db.query_opt(
        "SELECT currency, price_per_minute, increment_seconds, minimum_seconds,
                cap_seconds - used_seconds, stripe_customer, stripe_payment_method, minimum_charge,
                CASE WHEN recording_enabled = 1 THEN recording_price_per_minute ELSE 0 END
         FROM bookings WHERE id = ?1",
        args![id],
    )?
    else {
        return Ok(None);
    };
    let (currency, price, increment, minimum, cap) = (
        row.text(0)?,
        row.int(1)?,
        row.int(2)?,
        row.int(3)?,
        row.int(4)?,
    );
    let card = row.opt_text(5)?.zip(row.opt_text(6)?);
    let minimum_charge = row.opt_int(7)?;
    let recording = row.int(8)?;
    Ok((|| {
        let currency = Currency::from_code(&currency)?;
        let recording_per_minute = u64::try_from(recording).ok()?;
        Some(Terms {
            minimum_charge: minimum_charge.unwrap_or(currency.stripe_minimum()),
            recording_per_minute,
            tariff: RatingTariff {
                currency,
                price_per_minute: u64::try_from(price)
                    .ok()?
                    .checked_add(recording_per_minute)?,
                increment_seconds: u32::try_from(increment).ok()?,
                minimum_seconds: u32::try_from(minimum).ok()?,
            },
            remaining_seconds: u64::try_from(cap).ok()?,
            card,
        })
    })())
}

/// Bookings closed per transaction by [`end_windows`]; the rest wait for
/// the next scan.
const WINDOWS_PER_SCAN: i64 = 200;

/// Closes the active bookings whose window has ended: `completed` when a
/// call was routed to them (connected or not: the caller came; a fee hold
/// is released), `no-show` when none was (its fee is captured by
/// `settlements::fee_no_shows`, once its hold has been placed). Each
/// change is told to the platform in the same transaction. Returns how
/// many were closed.
pub(super) fn end_windows(db: &mut dyn Db, now_ms: i64) -> Result<usize, LedgerError> {
    let ended = db.query(
        "SELECT b.id, b.used_seconds, EXISTS (SELECT 1 FROM calls c WHERE c.booking_id = b.id)
         FROM bookings b WHERE b.state = 'active' AND b.window_end_ms <= ?1
         ORDER BY b.window_end_ms, b.id LIMIT ?2",
        args![now_ms, WINDOWS_PER_SCAN],
    )?;
    let mut closed = 0;
    for row in &ended {
        let (id, used_seconds, called) = (row.text(0)?, row.int(1)?, row.flag(2)?);
        let state = if called {
            BookingState::Completed
        } else {
            BookingState::NoShow
        };
        let changed = db.execute(
            "UPDATE bookings SET state = ?2, updated_ms = ?3 WHERE id = ?1 AND state = 'active'",
            args![id.as_str(), state.as_str(), now_ms],
        )?;
        if changed != 1 {
            continue;
        }
        closed += 1;
        let data = serde_json::json!({
            "state": state.as_str(),
            "reason": "window-ended",
            "used_seconds": used_seconds,
        });
        if called {
            fees::decide_fee(
                db,
                &id,
                fees::FeeMove::Release,
                "the caller called in the window",
                now_ms,
            )?;
            super::events::emit(db, "booking.completed", &id, None, data, now_ms)?;
        } else {
            super::events::emit(db, "booking.no_show", &id, None, data, now_ms)?;
        }
    }
    Ok(closed)
}

impl Ledger {
    /// Stores a validated booking under `id`, with its cancellation-fee
    /// hold (if it has a fee and a card) planned in the same transaction.
    pub async fn create_booking(
        &self,
        id: String,
        valid: ValidBooking,
        now_ms: i64,
    ) -> Result<BookingRecord, BookingWrite> {
        self.run(move |db| {
                let b = &valid.booking;
                if let Some(expert) = unknown_expert(db, &b.callee)? {
                    return Ok(Err(BookingWrite::UnknownExpert(expert)));
                }
                if b.pin.is_none()
                    && let Some(other) = ambiguous_with(db, &b.called, &b.callers, valid.window_start_ms, valid.window_end_ms, None)?
                {
                    return Ok(Err(BookingWrite::Overlaps(other)));
                }
                let inserted = db.execute(
                    "INSERT INTO bookings (id, called, callers, pin, callee, currency, price_per_minute,
                         increment_seconds, minimum_seconds, cap_seconds, window_start_ms, window_end_ms,
                         stripe_customer, stripe_payment_method, cancellation_fee, state, created_ms,
                         updated_ms, under_minimum, minimum_charge, language, extension_mode,
                         extension_block_seconds, extension_max_seconds, recording_enabled,
                         recording_announce, recording_price_per_minute)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 'active',
                             ?16, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
                    args![
                        id.as_str(),
                        b.called.as_str(),
                        serde_json::to_string(&b.callers).unwrap_or_else(|_| "[]".to_owned()),
                        b.pin.clone(),
                        stored_callee(&b.callee),
                        b.tariff.currency.as_str(),
                        b.tariff.price_per_minute,
                        b.tariff.increment_seconds,
                        b.tariff.minimum_seconds,
                        b.cap_seconds,
                        valid.window_start_ms,
                        valid.window_end_ms,
                        b.stripe.as_ref().map(|s| s.customer.clone()),
                        b.stripe.as_ref().map(|s| s.payment_method.clone()),
                        b.cancellation_fee,
                        now_ms,
                        b.tariff.under_minimum.as_str(),
                        valid.minimum_charge,
                        b.language.clone(),
                        b.extension.as_ref().map(|e| e.mode.clone()),
                        b.extension.as_ref().map(|e| e.block_seconds),
                        b.extension.as_ref().map(|e| e.max_seconds),
                        i64::from(b.records()),
                        i64::from(b.recording.as_ref().is_none_or(|r| r.announce)),
                        b.tariff.recording_price_per_minute,
                    ],
                );
                match inserted {
                    Ok(_) => {}
                    Err(LedgerError::UniqueViolation(_)) => return Ok(Err(BookingWrite::Exists)),
                    Err(e) => return Err(e),
                }
                fees::plan_fee_hold(db, &id, now_ms)?;
                get(db, &id).map(|record| record.ok_or(BookingWrite::Exists))
            })
            .await?
    }

    /// One booking by id.
    pub async fn booking(&self, id: String) -> Result<Option<BookingRecord>, LedgerError> {
        self.run(move |db| get(db, &id)).await
    }

    /// Bookings, newest first, optionally for one dialled number and
    /// state, before `before` (the cursor: the creation time and id of the
    /// last booking of the page before).
    pub async fn bookings(
        &self,
        called: Option<String>,
        state: Option<BookingState>,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<BookingRecord>, LedgerError> {
        self.run(move |db| {
            let (before_ms, before_id) = before.unwrap_or((i64::MAX, "~".to_owned()));
            let sql = format!(
                "SELECT {COLUMNS} FROM bookings
                 WHERE (CAST(?1 AS TEXT) IS NULL OR called = ?1) AND (CAST(?2 AS TEXT) IS NULL OR state = ?2)
                   AND (created_ms < ?3 OR (created_ms = ?3 AND id < ?4))
                 ORDER BY created_ms DESC, id DESC LIMIT ?5"
            );
            db.query(
                &sql,
                args![called, state.map(BookingState::as_str), before_ms, before_id, limit],
            )?
                .iter()
                .map(record_from)
                .collect()
        })
        .await
    }

    /// Cancels an active booking (a no-op for one already canceled); its
    /// cancellation fee is captured when `late` says the cancellation is
    /// late at `now_ms`, released otherwise, in the same transaction.
    pub async fn cancel_booking(
        &self,
        id: String,
        now_ms: i64,
        late_cancellation: std::time::Duration,
    ) -> Result<Option<BookingRecord>, BookingWrite> {
        self.run(move |db| {
            let Some(booking) = get(db, &id)? else {
                return Ok(Ok(None));
            };
            match booking.state {
                BookingState::InCall => return Ok(Err(BookingWrite::InCall)),
                BookingState::Active => {}
                _ => return Ok(Ok(Some(booking))),
            }
            db.execute(
                "UPDATE bookings SET state = 'canceled', updated_ms = ?2
                     WHERE id = ?1 AND state = 'active'",
                args![id.as_str(), now_ms],
            )?;
            // Late (within billing.late_cancellation of the window):
            // the fee is captured; earlier: released.
            let late = tollbridge_billing::settlement::is_late_cancellation(
                now_ms,
                booking.window_start_ms,
                late_cancellation,
            );
            let reason = if late {
                "late cancellation"
            } else {
                "canceled in time"
            };
            let fee = if late {
                fees::FeeMove::Capture
            } else {
                fees::FeeMove::ReleaseAsCanceled
            };
            fees::decide_fee(db, &id, fee, reason, now_ms)?;
            Ok(Ok(get(db, &id)?))
        })
        .await?
    }

    /// Closes the bookings whose window ended (see [`end_windows`]);
    /// returns how many.
    pub async fn end_windows(&self, now_ms: i64) -> Result<usize, LedgerError> {
        self.run(move |db| end_windows(db, now_ms)).await
    }

    /// Who answers a booking's calls.
    pub async fn callee_of(&self, id: String) -> Result<Option<Callee>, LedgerError> {
        self.run(move |db| {
            Ok(db
                .query_opt("SELECT callee FROM bookings WHERE id = ?1", args![id])?
                .map(|row| row.text(0))
                .transpose()?
                .and_then(|text| serde_json::from_str(&text).ok()))
        })
        .await
    }

    /// A booking's terms (see [`Terms`]).
    pub async fn terms(&self, id: String) -> Result<Option<Terms>, LedgerError> {
        self.run(move |db| terms(db, &id)).await
    }
}
