//! What the API answers: the bookings, calls, settlements, events and
//! refunds it serves are these types, serialized (`views` fills them from
//! the ledger's records), and the same types describe them in the OpenAPI
//! document, so the two cannot drift apart. The smaller answers (status,
//! nodes, health) are built in place; the suite checks those against
//! their schemas here (`daemon/tests/openapi.rs`).

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::bookings::model::{Callee, FieldError, StripeCard, Tariff, Window};

/// An error: a stable `code`, a message for people, and for
/// `validation_failed` each field that failed.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// See [`ErrorBody`].
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `not_found`, `validation_failed`, `booking_overlaps`, ...
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// `validation_failed` only: each invalid field and why.
    pub fields: Option<Vec<FieldError>>,
}

/// A booking's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BookingStateWord {
    /// Callable within its window.
    Active,
    /// A call is using it.
    InCall,
    /// Its budget was used, or its window ended after a call.
    Completed,
    /// Canceled.
    Canceled,
    /// Its window ended and nobody called.
    NoShow,
}

/// A booking as stored (the PIN is never shown).
#[derive(Serialize, ToSchema)]
pub struct Booking {
    /// `bk_...`
    pub id: String,
    /// The dialled number, E.164.
    pub called: String,
    /// Caller IDs that select it.
    pub callers: Vec<String>,
    /// Whether it has a PIN.
    pub has_pin: bool,
    /// Who answers.
    pub callee: Option<Callee>,
    /// How talk is priced.
    pub tariff: Tariff,
    /// The talk time it buys, for all its calls together.
    pub cap_seconds: i64,
    /// What its calls were billed so far, seconds.
    pub used_seconds: i64,
    /// `cap_seconds` less `used_seconds`.
    pub remaining_seconds: i64,
    /// When it may be used (UTC).
    pub window: Window,
    /// The card.
    pub stripe: Option<StripeCard>,
    /// The cancellation fee, minor units.
    pub cancellation_fee: Option<i64>,
    /// The prompt language its calls hear; `null`: `prompts.language`.
    pub language: Option<String>,
    /// How its calls' paid time is extended; `null`: it is not.
    pub extension: Option<crate::bookings::model::Extension>,
    /// Whether its calls are recorded; `null`: they are not.
    pub recording: Option<crate::bookings::model::Recording>,
    /// Where it stands.
    #[schema(value_type = BookingStateWord)]
    pub state: &'static str,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A page of bookings.
#[derive(Serialize, ToSchema)]
pub struct BookingList {
    /// Newest first.
    pub bookings: Vec<Booking>,
    /// The `cursor` of the next page; null on the last.
    pub next: Option<String>,
}

/// A leg's media counters, once the call has ended.
#[derive(Serialize, ToSchema)]
pub struct LegMedia {
    /// RTP packets from the party.
    pub packets_received: i64,
    /// Their bytes.
    pub bytes_received: i64,
    /// RTP packets to the party.
    pub packets_sent: i64,
    /// Their bytes.
    pub bytes_sent: i64,
    /// Lost from the party (sequence gaps).
    pub packets_lost: i64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// From an address the leg did not latch to.
    pub dropped_foreign: i64,
    /// Not RTP.
    pub dropped_malformed: i64,
    /// RTCP packets from the party.
    pub rtcp_received: i64,
    /// SRTP or SRTCP packets that failed authentication or replayed one
    /// already seen (tampered, forged, or another key), dropped.
    pub srtp_refused: i64,
}

/// One leg of a call.
#[derive(Serialize, ToSchema)]
pub struct CallLeg {
    /// Its SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// The relay's RTP port for it.
    pub relay_port: Option<i64>,
    /// Null until the call ended.
    pub media: Option<LegMedia>,
}

/// Both legs.
#[derive(Serialize, ToSchema)]
pub struct CallLegs {
    /// The customer's.
    pub caller: CallLeg,
    /// The expert's.
    pub callee: CallLeg,
}

/// The tariff a call was rated with, and its own cap.
#[derive(Serialize, ToSchema)]
pub struct CallRating {
    /// ISO code.
    pub currency: String,
    /// Minor units a minute.
    pub price_per_minute: i64,
    /// Billing increment.
    pub increment_seconds: i64,
    /// Billed at least.
    pub minimum_seconds: i64,
    /// What remained of the booking's budget when it was routed.
    pub cap_seconds: i64,
    /// Minor units a minute of recording, on top (recorded bookings only).
    pub recording_price_per_minute: Option<i64>,
}

/// A call's recording: where the file is and what became of it
/// (`GET /v1/calls/{id}/recording` serves the file).
#[derive(Serialize, ToSchema)]
pub struct CallRecording {
    /// `recording`, `complete`, `failed` (not made, or stopped short:
    /// `error` says why) or `deleted`.
    pub state: &'static str,
    /// The node whose disk holds the file.
    pub node: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, once closed.
    pub ended_at: Option<String>,
    /// The file's size in bytes, header included.
    pub bytes: Option<i64>,
    /// The file's SHA-256, lowercase hex.
    pub sha256: Option<String>,
    /// How long the audio is, ms.
    pub duration_ms: Option<i64>,
    /// Audio frames dropped because the recorder was behind.
    pub dropped_frames: i64,
    /// Audio frames that arrived too late for their place.
    pub late_frames: i64,
    /// Why it was not made or stopped short.
    pub error: Option<String>,
    /// RFC 3339, when the file was deleted.
    pub deleted_at: Option<String>,
    /// Why (`api`, `retention 90d`).
    pub deleted_reason: Option<String>,
}

/// One status change of a call (Twilio's vocabulary).
#[derive(Serialize, ToSchema)]
pub struct CallEventView {
    /// 1, 2, 3, ...
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    /// `queued`, `initiated`, `ringing`, `in-progress`, `completed`, ...
    pub status: &'static str,
    /// The SIP status code, when one caused it.
    pub sip_code: Option<i64>,
    /// Its reason phrase.
    pub sip_reason: Option<String>,
    /// What happened.
    pub detail: Option<String>,
}

/// A settlement row: a hold, capture, release, fee or refund.
#[derive(Serialize, ToSchema)]
pub struct SettlementRow {
    /// `st_...` (`rf_...` for a refund).
    pub id: String,
    /// The call.
    pub call: Option<String>,
    /// The booking.
    pub booking: Option<String>,
    /// `authorize`, `capture`, `cancel`, `cancellation-fee`, `refund`.
    pub operation: String,
    /// The Stripe idempotency key.
    pub idempotency_key: String,
    /// Minor units.
    pub amount: i64,
    /// ISO code.
    pub currency: String,
    /// `pending`, `sent`, `succeeded`, `failed`, `unknown`.
    pub state: String,
    /// The PaymentIntent.
    pub payment_intent: Option<String>,
    /// Times sent.
    pub tries: i64,
    /// The last error.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// When it is looked at next.
    pub next_attempt_at: Option<String>,
    /// A hold's end, as Stripe said.
    pub capture_before: Option<String>,
    /// A refund's reason.
    pub reason: Option<String>,
    /// A refund's Stripe Refund (`re_...`).
    pub stripe_object: Option<String>,
}

/// A dispute on a call's charge.
#[derive(Serialize, ToSchema)]
pub struct CallDispute {
    /// `du_...`
    pub id: Option<String>,
    /// Stripe's word: `needs_response`, `under_review`, `won`, `lost`, ...
    pub status: String,
    /// Minor units.
    pub amount: Option<i64>,
}

/// A call record.
#[derive(Serialize, ToSchema)]
pub struct Call {
    /// `call_...`
    pub id: String,
    /// The booking it found.
    pub booking: Option<String>,
    /// The node that carried it.
    pub node: String,
    /// The node that closed it when `node` fell silent.
    pub taken_over_by: Option<String>,
    /// Its legs.
    pub legs: CallLegs,
    /// Twilio's CallSid.
    pub twilio_call_sid: Option<String>,
    /// Caller ID, E.164.
    pub caller: Option<String>,
    /// The dialled number, E.164.
    pub called: Option<String>,
    /// Twilio's call-status vocabulary.
    pub status: &'static str,
    /// RFC 3339.
    pub created_at: String,
    /// The expert's phone rang.
    pub ringing_at: Option<String>,
    /// The expert answered.
    pub answered_at: Option<String>,
    /// It ended.
    pub ended_at: Option<String>,
    /// Talk, ms.
    pub talk_ms: Option<i64>,
    /// Seconds billed.
    pub billed_seconds: Option<i64>,
    /// Minor units.
    pub amount: Option<i64>,
    /// ISO code.
    pub currency: Option<String>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// What was actually charged, minor units (the rated `amount`, or
    /// Stripe's minimum, or 0 when the hold was released); null while it
    /// settles or without Stripe.
    pub charged: Option<i64>,
    /// Refunded of its charge, minor units.
    pub refunded_amount: i64,
    /// Its charge's dispute.
    pub dispute: Option<CallDispute>,
    /// The part of `amount` that paid for the recording (recorded bookings
    /// with a recording price).
    pub recording_amount: Option<i64>,
    /// Its recording (recorded bookings).
    pub recording: Option<CallRecording>,
    /// The tariff and cap it was rated with.
    pub rating: Option<CallRating>,
    /// Its status changes, in order.
    pub events: Vec<CallEventView>,
    /// The card hold.
    pub payment_intent: Option<String>,
    /// Every hold, capture, release and refund.
    pub settlements: Vec<SettlementRow>,
    /// For a call that found no booking: those it could have meant.
    pub candidates: Option<Vec<String>>,
    /// What the answering node's task sees now, while it carries it.
    pub live: Option<Live>,
}

/// A call in progress as its task sees it.
#[derive(Serialize, ToSchema)]
pub struct Live {
    /// `routing`, `pin`, `dialing`, `awaiting-hold`, `talking`, `ending`.
    pub phase: String,
    /// Talk so far, ms.
    pub talk_ms: i64,
    /// Paid time left while talking under a cap, ms.
    pub remaining_ms: Option<i64>,
    /// `PCMU`, `PCMA`, ...
    pub codec: Option<String>,
    /// Each party's stream so far.
    pub media: LiveMedia,
}

/// Both parties' streams so far.
#[derive(Serialize, ToSchema)]
pub struct LiveMedia {
    /// From the customer.
    pub caller: Option<LiveLeg>,
    /// From the expert.
    pub callee: Option<LiveLeg>,
}

/// One party's stream so far.
#[derive(Serialize, ToSchema)]
pub struct LiveLeg {
    /// RTP packets received.
    pub packets_received: i64,
    /// Lost (sequence gaps).
    pub packets_lost: i64,
    /// lost / (received + lost), percent.
    pub loss_percent: f64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
}

/// A page of calls.
#[derive(Serialize, ToSchema)]
pub struct CallList {
    /// In start order.
    pub calls: Vec<Call>,
    /// The `cursor` of the next page; null on the last.
    pub next: Option<String>,
}

/// A refund asked for.
#[derive(Serialize, ToSchema)]
pub struct Refund {
    /// `rf_...`
    pub id: String,
    /// The call.
    pub call: Option<String>,
    /// Minor units.
    pub amount: i64,
    /// ISO code.
    pub currency: String,
    /// Stripe's reason word.
    pub reason: Option<String>,
    /// `pending` when new.
    pub state: &'static str,
    /// The captured PaymentIntent.
    pub payment_intent: Option<String>,
    /// `tb:refund:{id}`.
    pub idempotency_key: String,
}

/// `POST /v1/calls/{id}/hangup` accepted.
#[derive(Serialize, ToSchema)]
pub struct HangupAnswer {
    /// The call.
    pub id: String,
    /// `requested`.
    pub hangup: String,
    /// Whether the time-up prompt plays first.
    pub announce: bool,
}

/// One delivery of an event to an endpoint.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    /// The `[[webhook]]` name.
    pub endpoint: String,
    /// `pending`, `delivered`, `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The receiver's last HTTP status.
    pub last_status: Option<i64>,
    /// The last failure.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub delivered_at: Option<String>,
    /// While pending.
    pub next_attempt_at: Option<String>,
}

/// An event the platform is told of.
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// `evt_...`
    pub id: String,
    /// `call.ended`, `booking.completed`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Its booking.
    pub booking: String,
    /// Its number among the booking's events.
    pub sequence: i64,
    /// RFC 3339.
    pub created_at: String,
    /// The body each delivery sends.
    #[schema(value_type = Object)]
    pub body: Value,
    /// One per endpoint subscribed to it.
    pub deliveries: Vec<Delivery>,
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventList {
    /// Oldest first.
    pub events: Vec<Event>,
    /// The `cursor` of the next page; null on the last.
    pub next: Option<String>,
}

/// `POST /v1/events/{id}/redeliver` accepted.
#[derive(Serialize, ToSchema)]
pub struct Redelivery {
    /// The event.
    pub id: String,
    /// Deliveries due again now.
    pub deliveries_due: i64,
}

/// Stripe's mode as configured.
#[derive(Serialize, ToSchema)]
pub struct StripeMode {
    /// `ledger-only`, `test` or `live`.
    pub mode: String,
    /// Whether calls are charged.
    pub charges: bool,
}

/// This node's state.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// The build.
    pub version: String,
    /// Stripe.
    pub stripe: StripeMode,
    /// `node.name`.
    pub node: String,
    /// Whether it is draining.
    pub draining: bool,
    /// Whether the ledger answered its last heartbeat.
    pub ledger_up: bool,
    /// Call writes kept until the ledger is back.
    pub ledger_writes_waiting: i64,
    /// Calls in progress here.
    pub active_calls: i64,
    /// Since start.
    pub uptime_seconds: i64,
}

/// A node sharing the ledger.
#[derive(Serialize, ToSchema)]
pub struct Node {
    /// `node.name`.
    pub name: String,
    /// Its build.
    pub version: String,
    /// RFC 3339.
    pub started_at: String,
    /// Since its last heartbeat.
    pub last_seen_ms_ago: i64,
    /// `up`, `draining` or `silent`.
    pub state: String,
    /// Calls it carries.
    pub open_calls: i64,
}

/// The nodes sharing the ledger.
#[derive(Serialize, ToSchema)]
pub struct Nodes {
    /// `cluster.node_timeout`, ms.
    pub node_timeout_ms: i64,
    /// Every node.
    pub nodes: Vec<Node>,
}

/// `/healthz`, `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `not-ready`.
    pub status: String,
    /// Why not ready.
    pub reasons: Option<Vec<String>>,
}
