//! The API's form of what the ledger returns: the `schemas` types,
//! filled from the ledger's records. Their field names are the API's
//! contract (docs/api.md, the OpenAPI document); the ledger's types are
//! free to change.

use serde_json::Value;

use super::schemas;
use crate::clock::rfc3339;
use crate::ledger::{BookingRecord, CallLeg, CallRecord, EventView, Settlement, SettlementView};

/// As JSON (the schema types always serialize).
fn json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A booking. The PIN itself is never shown.
pub fn booking(b: &BookingRecord) -> Value {
    json(schemas::Booking {
        id: b.id.clone(),
        called: b.called.clone(),
        callers: b.callers.clone(),
        has_pin: b.has_pin,
        callee: b.callee.clone(),
        tariff: b.tariff.clone(),
        cap_seconds: b.cap_seconds,
        used_seconds: b.used_seconds,
        remaining_seconds: (b.cap_seconds - b.used_seconds).max(0),
        window: crate::bookings::model::Window {
            start: rfc3339(b.window_start_ms),
            end: rfc3339(b.window_end_ms),
        },
        stripe: b.stripe.clone(),
        cancellation_fee: b.cancellation_fee,
        language: b.language.clone(),
        extension: b.extension.clone(),
        recording: b.recording.clone(),
        state: b.state.as_str(),
        created_at: rfc3339(b.created_ms),
    })
}

fn leg(leg: &CallLeg) -> schemas::CallLeg {
    schemas::CallLeg {
        sip_call_id: leg.sip_call_id.clone(),
        relay_port: leg.relay_port,
        media: leg.media.as_ref().map(|m| schemas::LegMedia {
            packets_received: m.packets_received,
            bytes_received: m.bytes_received,
            packets_sent: m.packets_sent,
            bytes_sent: m.bytes_sent,
            packets_lost: m.packets_lost,
            jitter_ms: m.jitter_ms,
            dropped_foreign: m.dropped_foreign,
            dropped_malformed: m.dropped_malformed,
            rtcp_received: m.rtcp_received,
            srtp_refused: m.srtp_refused,
        }),
    }
}

/// A call record with its legs, media statistics, ordered events and
/// settlement attempts (`live` is the handler's to add).
pub fn call(c: &CallRecord) -> Value {
    json(schemas::Call {
        id: c.id.clone(),
        booking: c.booking.clone(),
        node: c.node.clone(),
        taken_over_by: c.taken_over_by.clone(),
        legs: schemas::CallLegs {
            caller: leg(&c.caller_leg),
            callee: leg(&c.callee_leg),
        },
        twilio_call_sid: c.twilio_call_sid.clone(),
        caller: c.caller.clone(),
        called: c.called.clone(),
        status: c.status.as_str(),
        created_at: rfc3339(c.created_ms),
        ringing_at: c.ringing_ms.map(rfc3339),
        answered_at: c.answered_ms.map(rfc3339),
        ended_at: c.ended_ms.map(rfc3339),
        talk_ms: c.talk_ms,
        billed_seconds: c.billed_seconds,
        amount: c.amount,
        currency: c.currency.clone(),
        end_reason: c.end_reason.clone(),
        charged: c.charged,
        refunded_amount: c.refunded_amount,
        dispute: c.dispute.as_ref().map(|d| schemas::CallDispute {
            id: d.id.clone(),
            status: d.status.clone(),
            amount: d.amount,
        }),
        rating: c.rating.as_ref().map(|r| schemas::CallRating {
            currency: r.currency.clone(),
            price_per_minute: r.price_per_minute,
            increment_seconds: r.increment_seconds,
            minimum_seconds: r.minimum_seconds,
            cap_seconds: r.cap_seconds,
            recording_price_per_minute: r.recording_price_per_minute,
        }),
        recording_amount: c.recording_amount,
        recording: c.recording.as_ref().map(|r| schemas::CallRecording {
            state: r.state.as_str(),
            node: r.node.clone(),
            started_at: rfc3339(r.started_ms),
            ended_at: r.ended_ms.map(rfc3339),
            bytes: r.bytes,
            sha256: r.sha256.clone(),
            duration_ms: r.duration_ms,
            dropped_frames: r.dropped_frames,
            late_frames: r.late_frames,
            error: r.error.clone(),
            deleted_at: r.deleted_ms.map(rfc3339),
            deleted_reason: r.deleted_reason.clone(),
        }),
        events: c
            .events
            .iter()
            .map(|e| schemas::CallEventView {
                seq: e.seq,
                at: rfc3339(e.at_ms),
                status: e.status.as_str(),
                sip_code: e.sip_code,
                sip_reason: e.sip_reason.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
        payment_intent: c.payment_intent.clone(),
        settlements: c.settlements.iter().map(settlement_row).collect(),
        candidates: c.candidates.clone(),
        live: None,
    })
}

fn settlement_row(s: &SettlementView) -> schemas::SettlementRow {
    schemas::SettlementRow {
        id: s.id.clone(),
        call: s.call.clone(),
        booking: s.booking.clone(),
        operation: s.operation.clone(),
        idempotency_key: s.idempotency_key.clone(),
        amount: s.amount,
        currency: s.currency.clone(),
        state: s.state.clone(),
        payment_intent: s.payment_intent.clone(),
        tries: s.tries,
        last_error: s.last_error.clone(),
        created_at: rfc3339(s.created_ms),
        updated_at: rfc3339(s.updated_ms),
        next_attempt_at: s.next_attempt_ms.map(rfc3339),
        capture_before: s.capture_before_ms.map(rfc3339),
        reason: s.reason.clone(),
        stripe_object: s.stripe_object.clone(),
    }
}

/// A refund as written.
pub fn refund(row: &Settlement) -> Value {
    json(schemas::Refund {
        id: row.facts.id.clone(),
        call: row.facts.call_id.clone(),
        amount: row.facts.amount,
        currency: row.facts.currency.clone(),
        reason: row.facts.reason.clone(),
        state: row.state.as_str(),
        payment_intent: row.facts.payment_intent.clone(),
        idempotency_key: row.facts.key.clone(),
    })
}

/// An event with every delivery of it.
pub fn event(event: &EventView) -> Value {
    json(schemas::Event {
        id: event.id.clone(),
        kind: event.kind.clone(),
        booking: event.booking.clone(),
        sequence: event.sequence,
        created_at: rfc3339(event.created_ms),
        body: event.body.clone(),
        deliveries: event
            .deliveries
            .iter()
            .map(|d| schemas::Delivery {
                endpoint: d.endpoint.clone(),
                state: d.state.clone(),
                attempts: d.attempts,
                last_status: d.last_status,
                last_error: d.last_error.clone(),
                delivered_at: d.delivered_ms.map(rfc3339),
                next_attempt_at: (d.state == "pending").then(|| rfc3339(d.next_attempt_ms)),
            })
            .collect(),
    })
}
