//! A booking changed (`PATCH /v1/bookings/{id}`): read and locked, the
//! change applied to it and the whole booking checked again by the API's
//! rules, then the rules that depend on its history (only an active
//! booking changes; its tariff only before its first call; its budget not
//! below what its calls used; no overlap with another booking), and
//! written, all in one transaction.

use super::bookings::{BookingWrite, ambiguous_with, get};
use super::db::Db;
use super::{BookingRecord, BookingState, Ledger, LedgerError};
use crate::args;
use crate::bookings::model::{BookingPatch, FieldError, NewBooking, ValidBooking, Window};
use crate::clock::rfc3339;

/// Why a change was refused, beyond [`BookingWrite`]'s reasons.
#[derive(Debug, thiserror::Error)]
pub enum ChangeRefused {
    /// No such booking.
    #[error("no such booking")]
    NotFound,
    /// The changed booking breaks the API's rules.
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    /// The booking is completed, canceled or a no-show.
    #[error("the booking is {0}")]
    Closed(BookingState),
    /// A call has used the booking: its tariff is what the calls were
    /// rated and held by.
    #[error("the tariff cannot change after the booking's first call")]
    TariffLocked,
    /// The new budget is below what the booking's calls were billed.
    #[error("cap_seconds cannot go below the {0} s already used")]
    BelowUsed(i64),
    /// In a call, overlapping, or the database failed.
    #[error(transparent)]
    Write(#[from] BookingWrite),
}

impl From<LedgerError> for ChangeRefused {
    fn from(error: LedgerError) -> ChangeRefused {
        ChangeRefused::Write(BookingWrite::Ledger(error))
    }
}

/// The booking as the API's body would state it, PIN included.
fn as_requested(record: &BookingRecord, pin: Option<String>) -> Option<NewBooking> {
    Some(NewBooking {
        id: Some(record.id.clone()),
        called: record.called.clone(),
        callers: record.callers.clone(),
        pin,
        callee: record.callee.clone()?,
        tariff: record.tariff.clone(),
        cap_seconds: record.cap_seconds,
        window: Window {
            start: rfc3339(record.window_start_ms),
            end: rfc3339(record.window_end_ms),
        },
        stripe: record.stripe.clone(),
        cancellation_fee: record.cancellation_fee,
        language: record.language.clone(),
        extension: record.extension.clone(),
        recording: record.recording.clone(),
    })
}

fn change(
    db: &mut dyn Db,
    id: &str,
    patch: BookingPatch,
    check: impl FnOnce(NewBooking) -> Result<ValidBooking, Vec<FieldError>>,
    now_ms: i64,
) -> Result<BookingRecord, ChangeRefused> {
    let lock = format!(
        "SELECT pin, EXISTS (SELECT 1 FROM calls WHERE booking_id = ?1) FROM bookings WHERE id = ?1{}",
        db.dialect().for_update()
    );
    let Some(row) = db.query_opt(&lock, args![id])? else {
        return Err(ChangeRefused::NotFound);
    };
    let (pin, called_before) = (row.opt_text(0)?, row.flag(1)?);
    let current = get(db, id)?.ok_or(ChangeRefused::NotFound)?;
    match current.state {
        BookingState::Active => {}
        BookingState::InCall => return Err(BookingWrite::InCall.into()),
        closed => return Err(ChangeRefused::Closed(closed)),
    }
    let before = as_requested(&current, pin)
        .ok_or_else(|| LedgerError::Decode(format!("booking {id}: its callee")))?;
    let changes_tariff = patch
        .tariff
        .as_ref()
        .is_some_and(|tariff| *tariff != current.tariff);
    let valid = check(patch.applied_to(before)).map_err(ChangeRefused::Invalid)?;
    if changes_tariff && called_before {
        return Err(ChangeRefused::TariffLocked);
    }
    let b = &valid.booking;
    if b.cap_seconds < current.used_seconds {
        return Err(ChangeRefused::BelowUsed(current.used_seconds));
    }
    if let Some(expert) = super::bookings::unknown_expert(db, &b.callee)? {
        return Err(BookingWrite::UnknownExpert(expert).into());
    }
    if b.pin.is_none()
        && let Some(other) = ambiguous_with(
            db,
            &b.called,
            &b.callers,
            valid.window_start_ms,
            valid.window_end_ms,
            Some(id),
        )?
    {
        return Err(BookingWrite::Overlaps(other).into());
    }
    let used_up = b.cap_seconds == current.used_seconds;
    db.execute(
        "UPDATE bookings SET callers = ?2, pin = ?3, callee = ?4, currency = ?5, price_per_minute = ?6,
             increment_seconds = ?7, minimum_seconds = ?8, under_minimum = ?9, cap_seconds = ?10,
             window_start_ms = ?11, window_end_ms = ?12, updated_ms = ?13,
             state = CASE WHEN ?14 = 1 THEN 'completed' ELSE state END, minimum_charge = ?15,
             language = ?16, extension_mode = ?17, extension_block_seconds = ?18,
             extension_max_seconds = ?19, recording_enabled = ?20, recording_announce = ?21,
             recording_price_per_minute = ?22
         WHERE id = ?1",
        args![
            id,
            serde_json::to_string(&b.callers).unwrap_or_else(|_| "[]".to_owned()),
            b.pin.clone(),
            super::bookings::stored_callee(&b.callee),
            b.tariff.currency.as_str(),
            b.tariff.price_per_minute,
            b.tariff.increment_seconds,
            b.tariff.minimum_seconds,
            b.tariff.under_minimum.as_str(),
            b.cap_seconds,
            valid.window_start_ms,
            valid.window_end_ms,
            now_ms,
            i64::from(used_up),
            valid.minimum_charge,
            b.language.clone(),
            b.extension.as_ref().map(|e| e.mode.clone()),
            b.extension.as_ref().map(|e| e.block_seconds),
            b.extension.as_ref().map(|e| e.max_seconds),
            i64::from(b.records()),
            i64::from(b.recording.as_ref().is_none_or(|r| r.announce)),
            b.tariff.recording_price_per_minute,
        ],
    )?;
    if valid.window_start_ms != current.window_start_ms {
        super::fees::replan_fee_hold(db, id, valid.window_start_ms, now_ms)?;
    }
    if used_up {
        let data = serde_json::json!({
            "state": "completed",
            "reason": "budget-used",
            "used_seconds": current.used_seconds,
        });
        super::events::emit(db, "booking.completed", id, None, data, now_ms)?;
    }
    get(db, id)?.ok_or(ChangeRefused::NotFound)
}

impl Ledger {
    /// Applies `patch` to booking `id` when `check` (the API's rules, on
    /// the booking as it would be) and the booking's history allow it.
    pub async fn change_booking<F>(
        &self,
        id: String,
        patch: BookingPatch,
        check: F,
        now_ms: i64,
    ) -> Result<BookingRecord, ChangeRefused>
    where
        F: FnOnce(NewBooking) -> Result<ValidBooking, Vec<FieldError>> + Send + 'static,
    {
        self.run(move |db| Ok(change(db, &id, patch, check, now_ms)))
            .await?
    }
}
