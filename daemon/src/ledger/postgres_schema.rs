//! The PostgreSQL schema, kept in step with [`super::sqlite_schema`]:
//! the same tables, columns, keys and checks, version for version, so one
//! set of statements serves both. Integers are `BIGINT` (times in ms,
//! money in minor units), the few fractions `DOUBLE PRECISION`.
//!
//! PostgreSQL support starts at schema version 4: its first migration
//! creates that schema whole. A migration, once released, is never
//! edited: add a new one here and in `sqlite_schema.rs` together.

/// Schema v4 (see `sqlite_schema.rs`, versions 1 to 4, for what each
/// part is for).
const V4: &str = r#"
CREATE TABLE bookings (
    id                    TEXT PRIMARY KEY,
    called                TEXT NOT NULL,
    callers               TEXT NOT NULL DEFAULT '[]',
    pin                   TEXT,
    callee                TEXT NOT NULL,
    currency              TEXT NOT NULL,
    price_per_minute      BIGINT NOT NULL CHECK (price_per_minute >= 0),
    increment_seconds     BIGINT NOT NULL DEFAULT 1 CHECK (increment_seconds > 0),
    minimum_seconds       BIGINT NOT NULL DEFAULT 0 CHECK (minimum_seconds >= 0),
    cap_seconds           BIGINT NOT NULL CHECK (cap_seconds > 0),
    window_start_ms       BIGINT NOT NULL,
    window_end_ms         BIGINT NOT NULL CHECK (window_end_ms > window_start_ms),
    stripe_customer       TEXT,
    stripe_payment_method TEXT,
    cancellation_fee      BIGINT CHECK (cancellation_fee >= 0),
    state                 TEXT NOT NULL DEFAULT 'active'
                          CHECK (state IN ('active', 'in-call', 'completed', 'canceled')),
    created_ms            BIGINT NOT NULL,
    updated_ms            BIGINT NOT NULL,
    under_minimum         TEXT NOT NULL DEFAULT 'cancel'
                          CHECK (under_minimum IN ('cancel', 'charge-minimum'))
);
CREATE INDEX bookings_by_called ON bookings (called, state);

CREATE TABLE calls (
    id               TEXT PRIMARY KEY,
    booking_id       TEXT REFERENCES bookings (id),
    inbound_call_id  TEXT NOT NULL,
    outbound_call_id TEXT,
    twilio_call_sid  TEXT,
    caller           TEXT,
    called           TEXT,
    status           TEXT NOT NULL DEFAULT 'queued' CHECK (status IN
                     ('queued', 'initiated', 'ringing', 'in-progress', 'completed',
                      'busy', 'failed', 'no-answer', 'canceled')),
    created_ms       BIGINT NOT NULL,
    ringing_ms       BIGINT,
    answered_ms      BIGINT,
    checkpoint_ms    BIGINT,
    ended_ms         BIGINT,
    talk_ms          BIGINT CHECK (talk_ms >= 0),
    billed_seconds   BIGINT CHECK (billed_seconds >= 0),
    amount           BIGINT CHECK (amount >= 0),
    currency         TEXT,
    end_reason       TEXT,
    payment_intent   TEXT,
    hold_amount      BIGINT CHECK (hold_amount >= 0),
    caller_rtp_port  BIGINT CHECK (caller_rtp_port BETWEEN 1 AND 65535),
    callee_rtp_port  BIGINT CHECK (callee_rtp_port BETWEEN 1 AND 65535),
    caller_dialog    TEXT,
    callee_dialog    TEXT,
    hangup_pending   BIGINT NOT NULL DEFAULT 0 CHECK (hangup_pending IN (0, 1)),
    candidates       TEXT
);
CREATE INDEX calls_by_booking ON calls (booking_id);
CREATE INDEX calls_open ON calls (created_ms) WHERE ended_ms IS NULL;
CREATE INDEX calls_by_inbound_call_id ON calls (inbound_call_id);
CREATE INDEX calls_by_called ON calls (called, created_ms);
CREATE INDEX calls_hangup_pending ON calls (id) WHERE hangup_pending = 1;
CREATE INDEX calls_by_ended ON calls (ended_ms) WHERE ended_ms IS NOT NULL;

CREATE TABLE call_events (
    call_id    TEXT NOT NULL REFERENCES calls (id),
    seq        BIGINT NOT NULL CHECK (seq > 0),
    at_ms      BIGINT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN
               ('queued', 'initiated', 'ringing', 'in-progress', 'completed',
                'busy', 'failed', 'no-answer', 'canceled')),
    sip_code   BIGINT CHECK (sip_code BETWEEN 100 AND 699),
    sip_reason TEXT,
    detail     TEXT,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE call_legs (
    call_id           TEXT NOT NULL REFERENCES calls (id),
    side              TEXT NOT NULL CHECK (side IN ('caller', 'callee')),
    packets_received  BIGINT NOT NULL CHECK (packets_received >= 0),
    bytes_received    BIGINT NOT NULL CHECK (bytes_received >= 0),
    packets_sent      BIGINT NOT NULL CHECK (packets_sent >= 0),
    bytes_sent        BIGINT NOT NULL CHECK (bytes_sent >= 0),
    packets_lost      BIGINT NOT NULL CHECK (packets_lost >= 0),
    jitter_ms         DOUBLE PRECISION NOT NULL CHECK (jitter_ms >= 0),
    dropped_foreign   BIGINT NOT NULL CHECK (dropped_foreign >= 0),
    dropped_malformed BIGINT NOT NULL CHECK (dropped_malformed >= 0),
    rtcp_received     BIGINT NOT NULL CHECK (rtcp_received >= 0),
    PRIMARY KEY (call_id, side)
);

CREATE TABLE settlements (
    id                TEXT PRIMARY KEY,
    booking_id        TEXT REFERENCES bookings (id),
    call_id           TEXT REFERENCES calls (id),
    operation         TEXT NOT NULL CHECK (operation IN
                      ('authorize', 'capture', 'cancel', 'cancellation-fee')),
    attempt           BIGINT NOT NULL DEFAULT 1 CHECK (attempt > 0),
    idempotency_key   TEXT NOT NULL UNIQUE,
    amount            BIGINT NOT NULL CHECK (amount >= 0),
    currency          TEXT NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                      ('pending', 'sent', 'succeeded', 'failed', 'unknown')),
    payment_intent    TEXT,
    customer          TEXT,
    payment_method    TEXT,
    tries             BIGINT NOT NULL DEFAULT 0 CHECK (tries >= 0),
    last_error        TEXT,
    created_ms        BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL,
    next_attempt_ms   BIGINT,
    capture_before_ms BIGINT,
    act_by_ms         BIGINT
);
CREATE INDEX settlements_open ON settlements (next_attempt_ms)
    WHERE state IN ('pending', 'sent', 'unknown');
CREATE INDEX settlements_by_call ON settlements (call_id);

CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    received_ms  BIGINT NOT NULL,
    processed_ms BIGINT
);
"#;

/// Schema v5 (see `sqlite_schema.rs`).
const V5: &str = r#"
CREATE TABLE nodes (
    name       TEXT PRIMARY KEY,
    started_ms BIGINT NOT NULL,
    seen_ms    BIGINT NOT NULL,
    draining   BIGINT NOT NULL DEFAULT 0 CHECK (draining IN (0, 1)),
    version    TEXT NOT NULL
);
ALTER TABLE calls ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE calls ADD COLUMN taken_over_by TEXT;
-- Checkpoints rewrite every talking call's row each interval: room left
-- on each page lets that be an in-place (HOT) update that touches no index.
ALTER TABLE calls SET (fillfactor = 70);
CREATE INDEX calls_open_by_node ON calls (node) WHERE ended_ms IS NULL;
ALTER TABLE settlements ADD COLUMN claimed_by TEXT;
ALTER TABLE settlements ADD COLUMN claimed_until_ms BIGINT;
CREATE TABLE leases (
    name     TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
"#;

/// Schema v6 (see `sqlite_schema.rs`).
const V6: &str = r#"
CREATE TABLE webhook_endpoints (
    name       TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    types      TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    booking_id  TEXT NOT NULL REFERENCES bookings (id),
    booking_seq BIGINT NOT NULL CHECK (booking_seq > 0),
    call_id     TEXT REFERENCES calls (id),
    created_ms  BIGINT NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (booking_id, booking_seq)
);
CREATE INDEX events_by_time ON events (created_ms);
-- The accounting export reads calls by when they started.
CREATE INDEX calls_by_created ON calls (created_ms, id);
CREATE TABLE event_deliveries (
    id               TEXT PRIMARY KEY,  -- the event's id, '/', the endpoint's name
    event_id         TEXT NOT NULL REFERENCES events (id),
    endpoint         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_ms  BIGINT NOT NULL,
    last_status      BIGINT,
    last_error       TEXT,
    delivered_ms     BIGINT,
    claimed_by       TEXT,
    claimed_until_ms BIGINT,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX event_deliveries_due ON event_deliveries (next_attempt_ms) WHERE state = 'pending';
"#;

/// Schema v7 (see `sqlite_schema.rs`).
const V7: &str = r#"
ALTER TABLE bookings DROP CONSTRAINT bookings_state_check;
ALTER TABLE bookings ADD CONSTRAINT bookings_state_check
    CHECK (state IN ('active', 'in-call', 'completed', 'canceled', 'no-show'));
ALTER TABLE bookings ADD COLUMN used_seconds BIGINT NOT NULL DEFAULT 0 CHECK (used_seconds >= 0);
UPDATE bookings b SET used_seconds = (SELECT COALESCE(SUM(c.billed_seconds), 0) FROM calls c
    WHERE c.booking_id = b.id AND c.ended_ms IS NOT NULL AND c.billed_seconds IS NOT NULL);
CREATE INDEX bookings_open_by_window_end ON bookings (window_end_ms) WHERE state = 'active';
ALTER TABLE calls ADD COLUMN cap_seconds BIGINT CHECK (cap_seconds >= 0);
"#;

/// Schema v8 (see `sqlite_schema.rs`).
const V8: &str = r#"
ALTER TABLE settlements DROP CONSTRAINT settlements_operation_check;
ALTER TABLE settlements ADD CONSTRAINT settlements_operation_check CHECK (operation IN
    ('authorize', 'capture', 'cancel', 'cancellation-fee', 'refund'));
ALTER TABLE settlements ADD COLUMN reason TEXT;
ALTER TABLE settlements ADD COLUMN stripe_object TEXT;
CREATE INDEX settlements_by_intent ON settlements (payment_intent);
ALTER TABLE calls ADD COLUMN refunded_amount BIGINT NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0);
ALTER TABLE calls ADD COLUMN dispute_id TEXT;
ALTER TABLE calls ADD COLUMN dispute_status TEXT;
ALTER TABLE calls ADD COLUMN dispute_amount BIGINT CHECK (dispute_amount >= 0);
CREATE INDEX calls_by_payment_intent ON calls (payment_intent);
ALTER TABLE bookings ADD COLUMN minimum_charge BIGINT CHECK (minimum_charge > 0);
"#;

/// Schema v9 (see `sqlite_schema.rs`).
const V9: &str = r#"
ALTER TABLE bookings ADD COLUMN language TEXT;
"#;

/// Schema v10 (see `sqlite_schema.rs`).
const V10: &str = r#"
ALTER TABLE bookings ADD COLUMN extension_mode TEXT;
ALTER TABLE bookings ADD COLUMN extension_block_seconds BIGINT CHECK (extension_block_seconds > 0);
ALTER TABLE bookings ADD COLUMN extension_max_seconds BIGINT CHECK (extension_max_seconds > 0);
ALTER TABLE settlements ADD COLUMN block BIGINT CHECK (block > 0);
ALTER TABLE settlements ADD COLUMN incremental BIGINT NOT NULL DEFAULT 0 CHECK (incremental IN (0, 1));
ALTER TABLE settlements DROP CONSTRAINT settlements_operation_check;
ALTER TABLE settlements ADD CONSTRAINT settlements_operation_check CHECK (operation IN
    ('authorize', 'increment', 'capture', 'cancel', 'cancellation-fee', 'refund'));
"#;

/// Schema v11 (see `sqlite_schema.rs`).
const V11: &str = r#"
ALTER TABLE bookings ADD COLUMN recording_enabled BIGINT NOT NULL DEFAULT 0 CHECK (recording_enabled IN (0, 1));
ALTER TABLE bookings ADD COLUMN recording_announce BIGINT NOT NULL DEFAULT 1 CHECK (recording_announce IN (0, 1));
ALTER TABLE bookings ADD COLUMN recording_price_per_minute BIGINT NOT NULL DEFAULT 0
    CHECK (recording_price_per_minute >= 0);
ALTER TABLE calls ADD COLUMN recording_amount BIGINT CHECK (recording_amount >= 0);
CREATE TABLE recordings (
    call_id        TEXT PRIMARY KEY REFERENCES calls (id),
    node           TEXT NOT NULL,
    path           TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('recording', 'complete', 'failed', 'deleted')),
    started_ms     BIGINT NOT NULL,
    ended_ms       BIGINT,
    bytes          BIGINT CHECK (bytes >= 0),
    sha256         TEXT,
    duration_ms    BIGINT CHECK (duration_ms >= 0),
    dropped_frames BIGINT NOT NULL DEFAULT 0 CHECK (dropped_frames >= 0),
    late_frames    BIGINT NOT NULL DEFAULT 0 CHECK (late_frames >= 0),
    error          TEXT,
    deleted_ms     BIGINT,
    deleted_reason TEXT
);
CREATE INDEX recordings_by_end ON recordings (ended_ms) WHERE state = 'complete';
CREATE INDEX recordings_open ON recordings (node) WHERE state = 'recording';
"#;

/// Schema v12 (see `sqlite_schema.rs`).
const V12: &str = r#"
CREATE TABLE experts (
    name        TEXT PRIMARY KEY,
    username    TEXT NOT NULL UNIQUE,
    realm       TEXT NOT NULL,
    ha1         TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
CREATE TABLE registrations (
    expert        TEXT NOT NULL REFERENCES experts (name) ON DELETE CASCADE,
    contact       TEXT NOT NULL,
    received      TEXT NOT NULL,
    transport     TEXT NOT NULL CHECK (transport IN ('udp', 'tcp')),
    node          TEXT NOT NULL,
    call_id       TEXT NOT NULL,
    cseq          BIGINT NOT NULL CHECK (cseq >= 0),
    user_agent    TEXT,
    registered_ms BIGINT NOT NULL,
    expires_ms    BIGINT NOT NULL,
    PRIMARY KEY (expert, contact)
);
CREATE INDEX registrations_by_expiry ON registrations (expires_ms);
CREATE TABLE registrar_keys (
    name   TEXT PRIMARY KEY,
    secret TEXT NOT NULL
);
"#;

/// Schema v13 (see `sqlite_schema.rs`): registrations over TLS, refused
/// SRTP packets.
const V13: &str = r#"
ALTER TABLE registrations DROP CONSTRAINT registrations_transport_check;
ALTER TABLE registrations ADD CONSTRAINT registrations_transport_check
    CHECK (transport IN ('udp', 'tcp', 'tls'));
ALTER TABLE call_legs ADD COLUMN srtp_refused BIGINT NOT NULL DEFAULT 0
    CHECK (srtp_refused >= 0);
"#;

/// Schema v14 (see `sqlite_schema.rs`): a booking's fee decision.
const V14: &str = r#"
ALTER TABLE bookings ADD COLUMN fee_decision TEXT
    CHECK (fee_decision IN ('capture', 'release', 'release-as-canceled'));
"#;

/// Every migration as (the schema version it brings, its statements),
/// oldest first.
pub(crate) const MIGRATIONS: &[(usize, &str)] = &[
    (4, V4),
    (5, V5),
    (6, V6),
    (7, V7),
    (8, V8),
    (9, V9),
    (10, V10),
    (11, V11),
    (12, V12),
    (13, V13),
    (14, V14),
];

/// The schema version this build writes.
pub(crate) const LATEST_VERSION: usize = 14;
