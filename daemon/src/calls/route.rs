//! Which booking an inbound call belongs to: pure decisions over the
//! bookings of the dialled number, so every rule is a table test.
//!
//! A call matches by caller ID (From or P-Asserted-Identity, E.164) among
//! the number's bookings whose window is open now. When the caller ID
//! matches none or several and a PIN could decide, the caller is asked for
//! one. Refusals use the codes in `tollbridge_sip::reject`: 404 when nothing
//! is booked on the number, 603 otherwise, 486 when the booking is already
//! in a call.

use tollbridge_sip::reject::RejectReason;

/// A booking on the dialled number, as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The booking id.
    pub id: String,
    /// Caller IDs allowed to use it.
    pub callers: Vec<String>,
    /// Its PIN, when it has one.
    pub pin: Option<String>,
    /// Window start, ms since the epoch.
    pub window_start_ms: i64,
    /// Window end (exclusive), ms since the epoch.
    pub window_end_ms: i64,
    /// Whether another call holds it now.
    pub in_call: bool,
}

impl Candidate {
    fn open_at(&self, now_ms: i64) -> bool {
        (self.window_start_ms..self.window_end_ms).contains(&now_ms)
    }

    fn called_by(&self, caller_ids: &[String]) -> bool {
        self.callers.iter().any(|c| caller_ids.contains(c))
    }
}

/// What routing decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This booking; the caller may be connected.
    Booking(String),
    /// Ask for a PIN; these bookings could match one.
    AskPin,
    /// Refuse the call.
    Refuse(RejectReason),
}

/// A booking that is otherwise a match: refused when in a call or outside
/// its window.
fn settle(candidate: &Candidate, now_ms: i64) -> Route {
    if !candidate.open_at(now_ms) {
        Route::Refuse(RejectReason::OutsideWindow)
    } else if candidate.in_call {
        Route::Refuse(RejectReason::BookingInCall)
    } else {
        Route::Booking(candidate.id.clone())
    }
}

/// Routes a new call from `caller_ids` to one of `bookings` (the dialled
/// number's active or in-call bookings).
pub fn route(bookings: &[Candidate], caller_ids: &[String], now_ms: i64) -> Route {
    if bookings.is_empty() {
        return Route::Refuse(RejectReason::UnknownNumber);
    }
    let by_caller: Vec<&Candidate> = bookings
        .iter()
        .filter(|b| b.called_by(caller_ids))
        .collect();
    let open: Vec<&&Candidate> = by_caller.iter().filter(|b| b.open_at(now_ms)).collect();
    match (open.as_slice(), by_caller.as_slice()) {
        ([one], _) => return settle(one, now_ms),
        // Matched by caller ID, but only outside their windows: say so,
        // unless a PIN booking is open for someone else's phone.
        ([], [_, ..]) if !pin_could_decide(bookings, now_ms) => {
            return Route::Refuse(RejectReason::OutsideWindow);
        }
        _ => {}
    }
    if pin_could_decide(bookings, now_ms) {
        Route::AskPin
    } else {
        Route::Refuse(RejectReason::NoBooking)
    }
}

fn pin_could_decide(bookings: &[Candidate], now_ms: i64) -> bool {
    bookings
        .iter()
        .any(|b| b.pin.is_some() && b.open_at(now_ms))
}

/// Routes by the PIN the caller entered.
pub fn route_by_pin(bookings: &[Candidate], pin: &str, now_ms: i64) -> Route {
    let matching: Vec<&Candidate> = bookings
        .iter()
        .filter(|b| b.pin.as_deref().is_some_and(|p| constant_time_eq(p, pin)))
        .collect();
    let open: Vec<&&Candidate> = matching.iter().filter(|b| b.open_at(now_ms)).collect();
    match (open.as_slice(), matching.as_slice()) {
        ([one], _) => settle(one, now_ms),
        // Two open bookings on one number with the same PIN: refuse rather
        // than guess whose call this is.
        ([_, _, ..], _) => Route::Refuse(RejectReason::NoBooking),
        ([], [_, ..]) => Route::Refuse(RejectReason::OutsideWindow),
        ([], []) => Route::AskPin,
    }
}

/// Compares without an early exit, so timing does not leak a PIN's prefix.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The E.164 form of a dialled number or caller ID as SIP carries it:
/// `+81312345678`, `81312345678`, `0081312345678`, `tel:+81-3-1234-5678`.
/// `None` for anything that is not a phone number (`anonymous`, a name).
pub fn e164(user: &str) -> Option<String> {
    let user = user.trim().trim_start_matches("tel:");
    let user = user.split(';').next().unwrap_or_default();
    let rest = match user.strip_prefix('+') {
        Some(rest) => rest,
        None => user.strip_prefix("00").unwrap_or(user),
    };
    let digits: String = rest
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | ' ' | '(' | ')'))
        .collect();
    let valid = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

#[cfg(test)]
mod tests;
