//! The API's JSON form of what the ledger returns. The field names are the
//! API's contract (docs/api.md); the ledger's types are free to change.

use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::ledger::{BookingRecord, CallLeg, CallRecord, SettlementView};

/// A booking. The PIN itself is never shown.
pub fn booking(b: &BookingRecord) -> Value {
    json!({
        "id": b.id,
        "called": b.called,
        "callers": b.callers,
        "has_pin": b.has_pin,
        "callee": b.callee,
        "tariff": b.tariff,
        "cap_seconds": b.cap_seconds,
        "used_seconds": b.used_seconds,
        "remaining_seconds": (b.cap_seconds - b.used_seconds).max(0),
        "window": {"start": rfc3339(b.window_start_ms), "end": rfc3339(b.window_end_ms)},
        "stripe": b.stripe,
        "cancellation_fee": b.cancellation_fee,
        "state": b.state.as_str(),
        "created_at": rfc3339(b.created_ms),
    })
}

fn leg(leg: &CallLeg) -> Value {
    json!({
        "sip_call_id": leg.sip_call_id,
        "relay_port": leg.relay_port,
        "media": leg.media.as_ref().map(|m| json!({
            "packets_received": m.packets_received,
            "bytes_received": m.bytes_received,
            "packets_sent": m.packets_sent,
            "bytes_sent": m.bytes_sent,
            "packets_lost": m.packets_lost,
            "jitter_ms": m.jitter_ms,
            "dropped_foreign": m.dropped_foreign,
            "dropped_malformed": m.dropped_malformed,
            "rtcp_received": m.rtcp_received,
        })),
    })
}

/// A call record with its legs, media statistics, ordered events and
/// settlement attempts.
pub fn call(c: &CallRecord) -> Value {
    json!({
        "id": c.id,
        "booking": c.booking,
        "node": c.node,
        "taken_over_by": c.taken_over_by,
        "legs": {"caller": leg(&c.caller_leg), "callee": leg(&c.callee_leg)},
        "twilio_call_sid": c.twilio_call_sid,
        "caller": c.caller,
        "called": c.called,
        "status": c.status.as_str(),
        "created_at": rfc3339(c.created_ms),
        "ringing_at": c.ringing_ms.map(rfc3339),
        "answered_at": c.answered_ms.map(rfc3339),
        "ended_at": c.ended_ms.map(rfc3339),
        "talk_ms": c.talk_ms,
        "billed_seconds": c.billed_seconds,
        "amount": c.amount,
        "currency": c.currency,
        "end_reason": c.end_reason,
        "refunded_amount": c.refunded_amount,
        "dispute": c.dispute.as_ref().map(|d| json!({
            "id": d.id,
            "status": d.status,
            "amount": d.amount,
        })),
        "rating": c.rating.as_ref().map(|r| json!({
            "currency": r.currency,
            "price_per_minute": r.price_per_minute,
            "increment_seconds": r.increment_seconds,
            "minimum_seconds": r.minimum_seconds,
            "cap_seconds": r.cap_seconds,
        })),
        "events": c.events.iter().map(|e| json!({
            "seq": e.seq,
            "at": rfc3339(e.at_ms),
            "status": e.status.as_str(),
            "sip_code": e.sip_code,
            "sip_reason": e.sip_reason,
            "detail": e.detail,
        })).collect::<Vec<_>>(),
        "payment_intent": c.payment_intent,
        "settlements": c.settlements.iter().map(settlement).collect::<Vec<_>>(),
        "candidates": c.candidates,
    })
}

/// A settlement attempt.
pub fn settlement(s: &SettlementView) -> Value {
    json!({
        "id": s.id,
        "call": s.call,
        "booking": s.booking,
        "operation": s.operation,
        "idempotency_key": s.idempotency_key,
        "amount": s.amount,
        "currency": s.currency,
        "state": s.state,
        "payment_intent": s.payment_intent,
        "tries": s.tries,
        "last_error": s.last_error,
        "created_at": rfc3339(s.created_ms),
        "updated_at": rfc3339(s.updated_ms),
        "next_attempt_at": s.next_attempt_ms.map(rfc3339),
        "capture_before": s.capture_before_ms.map(rfc3339),
        "reason": s.reason,
        "stripe_object": s.stripe_object,
    })
}
