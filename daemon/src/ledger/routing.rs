//! Routing a call to a booking: the bookings on the dialled number that
//! routing may consider, and the booking it picks claimed (active →
//! in-call) in the same transaction, with what the call needs of it (its
//! cap, card, prompt language, extension terms and recording option).

use tollbridge_sip::reject::RejectReason;

use super::db::Db;
use super::{Ledger, LedgerError};
use crate::args;
use crate::calls::route::{Candidate, Route};

/// What routing decided, and what a call routed to a booking needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The decision.
    pub route: Route,
    /// The talk time left on the routed booking (its budget less what
    /// earlier calls used): the call's cap.
    pub cap: Option<i64>,
    /// Whether the booking has a card to hold.
    pub card: bool,
    /// The booking's prompt language, when it names one.
    pub language: Option<String>,
    /// How the call's paid time grows past `cap`, when the booking
    /// extends it (and has a card to hold each block on).
    pub extension: Option<ExtensionTerms>,
    /// Whether the call is recorded, and announced as such.
    pub recording: Option<RecordingTerms>,
}

/// A routed call's recording option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingTerms {
    /// Both parties hear that the call is recorded before the bridge.
    pub announce: bool,
}

/// A routed call's extension policy, as the meter uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionTerms {
    /// The talk time one more card hold buys.
    pub block_seconds: u64,
    /// The most talk time the call may reach.
    pub max_seconds: u64,
    /// Each block is offered to the caller, who takes it with `1`
    /// (`ask`), rather than held without asking (`auto`).
    pub ask: bool,
}

impl Routed {
    /// A decision that routes to no booking.
    pub fn not_to_a_booking(route: Route) -> Routed {
        Routed {
            route,
            cap: None,
            card: false,
            language: None,
            extension: None,
            recording: None,
        }
    }
}

/// The bookings on a number that routing may consider.
fn candidates(db: &mut dyn Db, called: &str) -> Result<Vec<Candidate>, LedgerError> {
    db.query(
        "SELECT id, callers, pin, window_start_ms, window_end_ms, state FROM bookings
         WHERE called = ?1 AND state IN ('active', 'in-call') ORDER BY window_start_ms, id",
        args![called],
    )?
    .iter()
    .map(|row| {
        Ok(Candidate {
            id: row.text(0)?,
            callers: serde_json::from_str(&row.text(1)?).unwrap_or_default(),
            pin: row.opt_text(2)?,
            window_start_ms: row.int(3)?,
            window_end_ms: row.int(4)?,
            in_call: row.text(5)? == "in-call",
        })
    })
    .collect()
}

impl Ledger {
    /// Routes a call to the dialled number's bookings with `decide` (by
    /// caller ID or by PIN) and claims the booking it picks (active →
    /// in-call) in the same transaction, so two calls cannot both take it
    /// (on any node: the claim is the row's). A call that finds no booking
    /// keeps the ones it could have meant, for looking into later.
    pub async fn route_and_claim<F>(
        &self,
        call_id: String,
        called: Option<String>,
        now_ms: i64,
        decide: F,
    ) -> Result<Routed, LedgerError>
    where
        F: FnOnce(&[Candidate]) -> Route + Send + 'static,
    {
        self.run(move |db| {
            let Some(called) = called else {
                return Ok(Routed::not_to_a_booking(Route::Refuse(RejectReason::UnknownNumber)));
            };
            let found = candidates(db, &called)?;
            let route = decide(&found);
            if !matches!(route, Route::Booking(_)) {
                let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
                db.execute(
                    "UPDATE calls SET candidates = ?2 WHERE id = ?1",
                    args![call_id.as_str(), serde_json::to_string(&ids).unwrap_or_default()],
                )?;
            }
            let Route::Booking(id) = route else {
                return Ok(Routed::not_to_a_booking(route));
            };
            // A call closed meanwhile (the caller gave up; another node
            // took it over) claims nothing.
            let still_open = db.execute(
                "UPDATE calls SET booking_id = ?2 WHERE id = ?1 AND ended_ms IS NULL",
                args![call_id.as_str(), id.as_str()],
            )?;
            if still_open != 1 {
                return Ok(Routed::not_to_a_booking(Route::Refuse(RejectReason::Overloaded)));
            }
            let claimed = db.execute(
                "UPDATE bookings SET state = 'in-call', updated_ms = ?2 WHERE id = ?1 AND state = 'active'",
                args![id.as_str(), now_ms],
            )?;
            if claimed != 1 {
                db.execute(
                    "UPDATE calls SET booking_id = NULL WHERE id = ?1",
                    args![call_id.as_str()],
                )?;
                return Ok(Routed::not_to_a_booking(Route::Refuse(RejectReason::BookingInCall)));
            }
            let terms = db.query_one(
                "SELECT cap_seconds - used_seconds, CASE WHEN stripe_customer IS NOT NULL AND stripe_payment_method IS NOT NULL
                                          THEN 1 ELSE 0 END, language,
                        extension_mode, extension_block_seconds, extension_max_seconds,
                        recording_enabled, recording_announce
                 FROM bookings WHERE id = ?1",
                args![id.as_str()],
            )?;
            let cap = terms.int(0)?;
            db.execute(
                "UPDATE calls SET cap_seconds = ?2 WHERE id = ?1",
                args![call_id.as_str(), cap],
            )?;
            let card = terms.flag(1)?;
            let extension = match (terms.opt_text(3)?.as_deref(), terms.opt_int(4)?, terms.opt_int(5)?) {
                (Some(mode @ ("auto" | "ask")), Some(block), Some(max)) if card => Some(ExtensionTerms {
                    block_seconds: u64::try_from(block).unwrap_or(0),
                    max_seconds: u64::try_from(max).unwrap_or(0),
                    ask: mode == "ask",
                }),
                _ => None,
            };
            Ok(Routed {
                route: Route::Booking(id),
                cap: Some(cap),
                card,
                language: terms.opt_text(2)?,
                extension,
                recording: terms.flag(6)?.then_some(RecordingTerms {
                    announce: terms.flag(7)?,
                }),
            })
        })
        .await
    }
}
