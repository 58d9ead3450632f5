//! The database schema, as an ordered list of migrations.
//!
//! Times are integer milliseconds since the Unix epoch (UTC); money is an
//! integer in the currency's minor unit with the ISO currency code beside
//! it; our ids are prefixed UUIDv7 strings (`bk_`, `call_`, `st_`). A
//! migration, once released, is never edited: add a new one.

use rusqlite_migration::{M, Migrations};

/// Schema v1: bookings, the call record and its events, the settlement
/// outbox and webhook de-duplication.
const V1: &str = r#"
CREATE TABLE bookings (
    id                    TEXT PRIMARY KEY,
    called                TEXT NOT NULL,              -- trunk number dialled, E.164
    callers               TEXT NOT NULL DEFAULT '[]', -- JSON array of E.164 caller ids
    pin                   TEXT,
    callee                TEXT NOT NULL,              -- JSON: {"uri"} or {"number","trunk"}
    currency              TEXT NOT NULL,
    price_per_minute      INTEGER NOT NULL CHECK (price_per_minute >= 0),
    increment_seconds     INTEGER NOT NULL DEFAULT 1 CHECK (increment_seconds > 0),
    minimum_seconds       INTEGER NOT NULL DEFAULT 0 CHECK (minimum_seconds >= 0),
    cap_seconds           INTEGER NOT NULL CHECK (cap_seconds > 0),
    window_start_ms       INTEGER NOT NULL,
    window_end_ms         INTEGER NOT NULL CHECK (window_end_ms > window_start_ms),
    stripe_customer       TEXT,
    stripe_payment_method TEXT,
    cancellation_fee      INTEGER CHECK (cancellation_fee >= 0),
    state                 TEXT NOT NULL DEFAULT 'active'
                          CHECK (state IN ('active', 'in-call', 'completed', 'canceled')),
    created_ms            INTEGER NOT NULL,
    updated_ms            INTEGER NOT NULL
) STRICT;
CREATE INDEX bookings_by_called ON bookings (called, state);

CREATE TABLE calls (
    id               TEXT PRIMARY KEY,
    booking_id       TEXT REFERENCES bookings (id),
    inbound_call_id  TEXT NOT NULL,  -- SIP Call-ID of the caller's leg
    outbound_call_id TEXT,           -- SIP Call-ID of the callee's leg
    twilio_call_sid  TEXT,
    caller           TEXT,
    called           TEXT,
    status           TEXT NOT NULL DEFAULT 'queued' CHECK (status IN
                     ('queued', 'initiated', 'ringing', 'in-progress', 'completed',
                      'busy', 'failed', 'no-answer', 'canceled')),
    created_ms       INTEGER NOT NULL,
    ringing_ms       INTEGER,
    answered_ms      INTEGER,
    checkpoint_ms    INTEGER,        -- last time the running meter was saved
    ended_ms         INTEGER,
    talk_ms          INTEGER CHECK (talk_ms >= 0),
    billed_seconds   INTEGER CHECK (billed_seconds >= 0),
    amount           INTEGER CHECK (amount >= 0),
    currency         TEXT,
    end_reason       TEXT
) STRICT;
CREATE INDEX calls_by_booking ON calls (booking_id);
CREATE INDEX calls_open ON calls (created_ms) WHERE ended_ms IS NULL;
CREATE INDEX calls_by_inbound_call_id ON calls (inbound_call_id);

CREATE TABLE call_events (
    call_id    TEXT NOT NULL REFERENCES calls (id),
    seq        INTEGER NOT NULL CHECK (seq > 0),
    at_ms      INTEGER NOT NULL,
    status     TEXT NOT NULL CHECK (status IN
               ('queued', 'initiated', 'ringing', 'in-progress', 'completed',
                'busy', 'failed', 'no-answer', 'canceled')),
    sip_code   INTEGER CHECK (sip_code BETWEEN 100 AND 699),
    sip_reason TEXT,
    detail     TEXT,
    PRIMARY KEY (call_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE settlements (
    id               TEXT PRIMARY KEY,
    booking_id       TEXT REFERENCES bookings (id),
    call_id          TEXT REFERENCES calls (id),
    operation        TEXT NOT NULL CHECK (operation IN
                     ('authorize', 'capture', 'cancel', 'cancellation-fee')),
    attempt          INTEGER NOT NULL DEFAULT 1 CHECK (attempt > 0),
    idempotency_key  TEXT NOT NULL UNIQUE,
    amount           INTEGER NOT NULL CHECK (amount >= 0),
    currency         TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                     ('pending', 'in-flight', 'succeeded', 'failed', 'abandoned')),
    stripe_object_id TEXT,
    last_error       TEXT,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    next_attempt_ms  INTEGER
) STRICT;
CREATE INDEX settlements_open ON settlements (next_attempt_ms)
    WHERE state IN ('pending', 'in-flight');
CREATE INDEX settlements_by_call ON settlements (call_id);

CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,  -- Stripe's evt_ id
    type         TEXT NOT NULL,
    received_ms  INTEGER NOT NULL,
    processed_ms INTEGER
) STRICT;
"#;

/// Schema v2: per-leg media statistics of a call.
const V2: &str = r#"
CREATE TABLE call_legs (
    call_id           TEXT NOT NULL REFERENCES calls (id),
    side              TEXT NOT NULL CHECK (side IN ('caller', 'callee')),
    packets_received  INTEGER NOT NULL CHECK (packets_received >= 0),
    bytes_received    INTEGER NOT NULL CHECK (bytes_received >= 0),
    packets_sent      INTEGER NOT NULL CHECK (packets_sent >= 0),
    bytes_sent        INTEGER NOT NULL CHECK (bytes_sent >= 0),
    packets_lost      INTEGER NOT NULL CHECK (packets_lost >= 0),
    jitter_ms         REAL NOT NULL CHECK (jitter_ms >= 0),
    dropped_foreign   INTEGER NOT NULL CHECK (dropped_foreign >= 0),
    dropped_malformed INTEGER NOT NULL CHECK (dropped_malformed >= 0),
    rtcp_received     INTEGER NOT NULL CHECK (rtcp_received >= 0),
    PRIMARY KEY (call_id, side)
) STRICT, WITHOUT ROWID;
"#;

/// Schema v3: settlement rows in the states the settlement worker uses
/// (pending → sent → succeeded | failed | unknown), the PaymentIntent they
/// act on, how many times they were tried, until when a hold can be
/// captured (Stripe's `capture_before`) and when to act on it at the
/// latest; the card hold on the call; a
/// tariff's policy for calls cheaper than the currency's minimum charge.
const V3: &str = r#"
CREATE TABLE settlements_v3 (
    id               TEXT PRIMARY KEY,
    booking_id       TEXT REFERENCES bookings (id),
    call_id          TEXT REFERENCES calls (id),
    operation        TEXT NOT NULL CHECK (operation IN
                     ('authorize', 'capture', 'cancel', 'cancellation-fee')),
    attempt          INTEGER NOT NULL DEFAULT 1 CHECK (attempt > 0),
    idempotency_key  TEXT NOT NULL UNIQUE,
    amount           INTEGER NOT NULL CHECK (amount >= 0),
    currency         TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                     ('pending', 'sent', 'succeeded', 'failed', 'unknown')),
    payment_intent   TEXT,
    customer         TEXT,
    payment_method   TEXT,
    tries            INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),
    last_error       TEXT,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    next_attempt_ms  INTEGER,
    capture_before_ms INTEGER,
    act_by_ms        INTEGER
) STRICT;
INSERT INTO settlements_v3 (id, booking_id, call_id, operation, attempt, idempotency_key, amount, currency,
                            state, payment_intent, last_error, created_ms, updated_ms, next_attempt_ms)
    SELECT id, booking_id, call_id, operation, attempt, idempotency_key, amount, currency,
           CASE state WHEN 'in-flight' THEN 'sent' WHEN 'abandoned' THEN 'failed' ELSE state END,
           stripe_object_id, last_error, created_ms, updated_ms, next_attempt_ms
    FROM settlements;
DROP TABLE settlements;
ALTER TABLE settlements_v3 RENAME TO settlements;
CREATE INDEX settlements_open ON settlements (next_attempt_ms)
    WHERE state IN ('pending', 'sent', 'unknown');
CREATE INDEX settlements_by_call ON settlements (call_id);

ALTER TABLE calls ADD COLUMN payment_intent TEXT;
ALTER TABLE calls ADD COLUMN hold_amount INTEGER CHECK (hold_amount >= 0);
ALTER TABLE bookings ADD COLUMN under_minimum TEXT NOT NULL DEFAULT 'cancel'
    CHECK (under_minimum IN ('cancel', 'charge-minimum'));
"#;

/// Schema v4: what a restart needs to finish a call a crash left open —
/// both legs' relay ports (held back from new calls until the parties are
/// hung up) and dialogs (to send them BYE), and whether that is still to
/// do; and the bookings a call that found none could have meant.
const V4: &str = r#"
ALTER TABLE calls ADD COLUMN caller_rtp_port INTEGER CHECK (caller_rtp_port BETWEEN 1 AND 65535);
ALTER TABLE calls ADD COLUMN callee_rtp_port INTEGER CHECK (callee_rtp_port BETWEEN 1 AND 65535);
ALTER TABLE calls ADD COLUMN caller_dialog TEXT;  -- JSON (tollbridge_sip::edge::DialogRecord)
ALTER TABLE calls ADD COLUMN callee_dialog TEXT;
ALTER TABLE calls ADD COLUMN hangup_pending INTEGER NOT NULL DEFAULT 0
    CHECK (hangup_pending IN (0, 1));
ALTER TABLE calls ADD COLUMN candidates TEXT;     -- JSON array of booking ids
CREATE INDEX calls_by_called ON calls (called, created_ms);
CREATE INDEX calls_hangup_pending ON calls (id) WHERE hangup_pending = 1;
CREATE INDEX calls_by_ended ON calls (ended_ms) WHERE ended_ms IS NOT NULL;
"#;

/// Schema v5: several nodes on one ledger. Each node's heartbeat (on
/// the ledger's clock); the node carrying each call, and the node that
/// ended it in its place when it fell silent; settlement rows claimed by
/// the node sending them, until a lease runs out; leases for work one
/// node at a time does (the reconciler's scans).
const V5: &str = r#"
CREATE TABLE nodes (
    name       TEXT PRIMARY KEY,
    started_ms INTEGER NOT NULL,
    seen_ms    INTEGER NOT NULL,
    draining   INTEGER NOT NULL DEFAULT 0 CHECK (draining IN (0, 1)),
    version    TEXT NOT NULL
) STRICT;
ALTER TABLE calls ADD COLUMN node TEXT NOT NULL DEFAULT '';  -- '' before v5: adopted at start
ALTER TABLE calls ADD COLUMN taken_over_by TEXT;
CREATE INDEX calls_open_by_node ON calls (node) WHERE ended_ms IS NULL;
ALTER TABLE settlements ADD COLUMN claimed_by TEXT;
ALTER TABLE settlements ADD COLUMN claimed_until_ms INTEGER;
CREATE TABLE leases (
    name     TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    until_ms INTEGER NOT NULL
) STRICT;
"#;

/// Schema v6: events the booking platform is told of (the outbox),
/// numbered per booking, written in the transaction of the change they
/// report; the endpoints they go to (from the nodes' `[[webhook]]`), and
/// each event's delivery to each endpoint, claimed by the node sending it.
const V6: &str = r#"
CREATE TABLE webhook_endpoints (
    name       TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    types      TEXT NOT NULL,  -- '*' or event types separated by spaces
    updated_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    booking_id  TEXT NOT NULL REFERENCES bookings (id),
    booking_seq INTEGER NOT NULL CHECK (booking_seq > 0),
    call_id     TEXT REFERENCES calls (id),
    created_ms  INTEGER NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (booking_id, booking_seq)
) STRICT;
CREATE INDEX events_by_time ON events (created_ms);
-- The accounting export reads calls by when they started.
CREATE INDEX calls_by_created ON calls (created_ms, id);
CREATE TABLE event_deliveries (
    id               TEXT PRIMARY KEY,  -- the event's id, '/', the endpoint's name
    event_id         TEXT NOT NULL REFERENCES events (id),
    endpoint         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_ms  INTEGER NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    delivered_ms     INTEGER,
    claimed_by       TEXT,
    claimed_until_ms INTEGER,
    UNIQUE (event_id, endpoint)
) STRICT;
CREATE INDEX event_deliveries_due ON event_deliveries (next_attempt_ms) WHERE state = 'pending';
"#;

/// Schema v7: paid time that spans calls. A booking's `cap_seconds` is
/// its budget for all its calls together and `used_seconds` what its
/// connected calls have been billed so far (each call keeps the cap it was
/// given: what remained when it was routed); a booking whose window ended
/// without any call is a `no-show`. SQLite cannot change a CHECK in
/// place: the table is rebuilt (foreign keys are off while migrations
/// run, and checked after).
const V7: &str = r#"
CREATE TABLE bookings_v7 (
    id                    TEXT PRIMARY KEY,
    called                TEXT NOT NULL,              -- trunk number dialled, E.164
    callers               TEXT NOT NULL DEFAULT '[]', -- JSON array of E.164 caller ids
    pin                   TEXT,
    callee                TEXT NOT NULL,              -- JSON: {"uri"} or {"number","trunk"}
    currency              TEXT NOT NULL,
    price_per_minute      INTEGER NOT NULL CHECK (price_per_minute >= 0),
    increment_seconds     INTEGER NOT NULL DEFAULT 1 CHECK (increment_seconds > 0),
    minimum_seconds       INTEGER NOT NULL DEFAULT 0 CHECK (minimum_seconds >= 0),
    cap_seconds           INTEGER NOT NULL CHECK (cap_seconds > 0),
    window_start_ms       INTEGER NOT NULL,
    window_end_ms         INTEGER NOT NULL CHECK (window_end_ms > window_start_ms),
    stripe_customer       TEXT,
    stripe_payment_method TEXT,
    cancellation_fee      INTEGER CHECK (cancellation_fee >= 0),
    state                 TEXT NOT NULL DEFAULT 'active'
                          CHECK (state IN ('active', 'in-call', 'completed', 'canceled', 'no-show')),
    created_ms            INTEGER NOT NULL,
    updated_ms            INTEGER NOT NULL,
    under_minimum         TEXT NOT NULL DEFAULT 'cancel'
                          CHECK (under_minimum IN ('cancel', 'charge-minimum')),
    used_seconds          INTEGER NOT NULL DEFAULT 0 CHECK (used_seconds >= 0)
) STRICT;
INSERT INTO bookings_v7 (id, called, callers, pin, callee, currency, price_per_minute, increment_seconds,
                         minimum_seconds, cap_seconds, window_start_ms, window_end_ms, stripe_customer,
                         stripe_payment_method, cancellation_fee, state, created_ms, updated_ms,
                         under_minimum, used_seconds)
    SELECT b.id, b.called, b.callers, b.pin, b.callee, b.currency, b.price_per_minute, b.increment_seconds,
           b.minimum_seconds, b.cap_seconds, b.window_start_ms, b.window_end_ms, b.stripe_customer,
           b.stripe_payment_method, b.cancellation_fee, b.state, b.created_ms, b.updated_ms,
           b.under_minimum,
           (SELECT COALESCE(SUM(c.billed_seconds), 0) FROM calls c
            WHERE c.booking_id = b.id AND c.ended_ms IS NOT NULL AND c.billed_seconds IS NOT NULL)
    FROM bookings b;
DROP TABLE bookings;
ALTER TABLE bookings_v7 RENAME TO bookings;
CREATE INDEX bookings_by_called ON bookings (called, state);
CREATE INDEX bookings_open_by_window_end ON bookings (window_end_ms) WHERE state = 'active';
ALTER TABLE calls ADD COLUMN cap_seconds INTEGER CHECK (cap_seconds >= 0);  -- the call's own cap
"#;

/// Schema v8: refunds and disputes. A refund is a settlement row
/// (operation `refund`, id `rf_...`, its key derived from that id) with
/// the customer-facing `reason` and the Stripe object it created
/// (`stripe_object`, `re_...`); the call keeps what was refunded of its
/// charge (by us or in Stripe's dashboard) and its dispute's state. The
/// operation CHECK grows: the table is rebuilt (nothing refers to it).
/// A booking keeps the least charge Stripe takes in its currency from
/// this account (it differs when the account settles in another).
const V8: &str = r#"
CREATE TABLE settlements_v8 (
    id                TEXT PRIMARY KEY,
    booking_id        TEXT REFERENCES bookings (id),
    call_id           TEXT REFERENCES calls (id),
    operation         TEXT NOT NULL CHECK (operation IN
                      ('authorize', 'capture', 'cancel', 'cancellation-fee', 'refund')),
    attempt           INTEGER NOT NULL DEFAULT 1 CHECK (attempt > 0),
    idempotency_key   TEXT NOT NULL UNIQUE,
    amount            INTEGER NOT NULL CHECK (amount >= 0),
    currency          TEXT NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                      ('pending', 'sent', 'succeeded', 'failed', 'unknown')),
    payment_intent    TEXT,
    customer          TEXT,
    payment_method    TEXT,
    tries             INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),
    last_error        TEXT,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL,
    next_attempt_ms   INTEGER,
    capture_before_ms INTEGER,
    act_by_ms         INTEGER,
    claimed_by        TEXT,
    claimed_until_ms  INTEGER,
    reason            TEXT,
    stripe_object     TEXT
) STRICT;
INSERT INTO settlements_v8 (id, booking_id, call_id, operation, attempt, idempotency_key, amount, currency,
                            state, payment_intent, customer, payment_method, tries, last_error, created_ms,
                            updated_ms, next_attempt_ms, capture_before_ms, act_by_ms, claimed_by,
                            claimed_until_ms)
    SELECT id, booking_id, call_id, operation, attempt, idempotency_key, amount, currency, state,
           payment_intent, customer, payment_method, tries, last_error, created_ms, updated_ms,
           next_attempt_ms, capture_before_ms, act_by_ms, claimed_by, claimed_until_ms
    FROM settlements;
DROP TABLE settlements;
ALTER TABLE settlements_v8 RENAME TO settlements;
CREATE INDEX settlements_open ON settlements (next_attempt_ms)
    WHERE state IN ('pending', 'sent', 'unknown');
CREATE INDEX settlements_by_call ON settlements (call_id);
CREATE INDEX settlements_by_intent ON settlements (payment_intent);
ALTER TABLE calls ADD COLUMN refunded_amount INTEGER NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0);
ALTER TABLE calls ADD COLUMN dispute_id TEXT;
ALTER TABLE calls ADD COLUMN dispute_status TEXT;
ALTER TABLE calls ADD COLUMN dispute_amount INTEGER CHECK (dispute_amount >= 0);
CREATE INDEX calls_by_payment_intent ON calls (payment_intent);
-- Stripe's least charge in the booking's currency for this account
-- (stripe.minimum_charge), fixed when it was booked; NULL: the currency's own.
ALTER TABLE bookings ADD COLUMN minimum_charge INTEGER CHECK (minimum_charge > 0);
"#;

/// Schema v9: a booking's prompt language (NULL: `prompts.language`).
const V9: &str = r#"
ALTER TABLE bookings ADD COLUMN language TEXT;
"#;

/// Schema v10: a booking's extension policy (NULL mode: off): the talk
/// time each further card hold buys and the most one call may reach; and
/// which of a call's holds a settlement row places or acts on (NULL: the
/// first, placed before the bridge), whether a hold's charge can be
/// raised by incremental authorization, and the `increment` operation
/// that raises it (the operation CHECK grows: the table is rebuilt, as in
/// V8).
const V10: &str = r#"
ALTER TABLE bookings ADD COLUMN extension_mode TEXT;
ALTER TABLE bookings ADD COLUMN extension_block_seconds INTEGER CHECK (extension_block_seconds > 0);
ALTER TABLE bookings ADD COLUMN extension_max_seconds INTEGER CHECK (extension_max_seconds > 0);
CREATE TABLE settlements_v10 (
    id                TEXT PRIMARY KEY,
    booking_id        TEXT REFERENCES bookings (id),
    call_id           TEXT REFERENCES calls (id),
    operation         TEXT NOT NULL CHECK (operation IN
                      ('authorize', 'increment', 'capture', 'cancel', 'cancellation-fee', 'refund')),
    attempt           INTEGER NOT NULL DEFAULT 1 CHECK (attempt > 0),
    idempotency_key   TEXT NOT NULL UNIQUE,
    amount            INTEGER NOT NULL CHECK (amount >= 0),
    currency          TEXT NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                      ('pending', 'sent', 'succeeded', 'failed', 'unknown')),
    payment_intent    TEXT,
    customer          TEXT,
    payment_method    TEXT,
    tries             INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),
    last_error        TEXT,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL,
    next_attempt_ms   INTEGER,
    capture_before_ms INTEGER,
    act_by_ms         INTEGER,
    claimed_by        TEXT,
    claimed_until_ms  INTEGER,
    reason            TEXT,
    stripe_object     TEXT,
    block             INTEGER CHECK (block > 0),
    incremental       INTEGER NOT NULL DEFAULT 0 CHECK (incremental IN (0, 1))
) STRICT;
INSERT INTO settlements_v10 (id, booking_id, call_id, operation, attempt, idempotency_key, amount, currency,
                             state, payment_intent, customer, payment_method, tries, last_error, created_ms,
                             updated_ms, next_attempt_ms, capture_before_ms, act_by_ms, claimed_by,
                             claimed_until_ms, reason, stripe_object)
    SELECT id, booking_id, call_id, operation, attempt, idempotency_key, amount, currency, state,
           payment_intent, customer, payment_method, tries, last_error, created_ms, updated_ms,
           next_attempt_ms, capture_before_ms, act_by_ms, claimed_by, claimed_until_ms, reason, stripe_object
    FROM settlements;
DROP TABLE settlements;
ALTER TABLE settlements_v10 RENAME TO settlements;
CREATE INDEX settlements_open ON settlements (next_attempt_ms)
    WHERE state IN ('pending', 'sent', 'unknown');
CREATE INDEX settlements_by_call ON settlements (call_id);
CREATE INDEX settlements_by_intent ON settlements (payment_intent);
"#;

/// Schema v11: recording as a paid option. A booking records its calls
/// (announced or not) at an extra price per minute; a call's record keeps
/// the part of its amount that paid for the recording; a recording is a
/// file on the node that made it, whose size, hash and fate (complete,
/// failed and why, deleted and why) the ledger keeps.
const V11: &str = r#"
ALTER TABLE bookings ADD COLUMN recording_enabled INTEGER NOT NULL DEFAULT 0 CHECK (recording_enabled IN (0, 1));
ALTER TABLE bookings ADD COLUMN recording_announce INTEGER NOT NULL DEFAULT 1 CHECK (recording_announce IN (0, 1));
ALTER TABLE bookings ADD COLUMN recording_price_per_minute INTEGER NOT NULL DEFAULT 0
    CHECK (recording_price_per_minute >= 0);
ALTER TABLE calls ADD COLUMN recording_amount INTEGER CHECK (recording_amount >= 0);
CREATE TABLE recordings (
    call_id        TEXT PRIMARY KEY REFERENCES calls (id),
    node           TEXT NOT NULL,
    path           TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('recording', 'complete', 'failed', 'deleted')),
    started_ms     INTEGER NOT NULL,
    ended_ms       INTEGER,
    bytes          INTEGER CHECK (bytes >= 0),
    sha256         TEXT,
    duration_ms    INTEGER CHECK (duration_ms >= 0),
    dropped_frames INTEGER NOT NULL DEFAULT 0 CHECK (dropped_frames >= 0),
    late_frames    INTEGER NOT NULL DEFAULT 0 CHECK (late_frames >= 0),
    error          TEXT,
    deleted_ms     INTEGER,
    deleted_reason TEXT
) STRICT;
CREATE INDEX recordings_by_end ON recordings (ended_ms) WHERE state = 'complete';
CREATE INDEX recordings_open ON recordings (node) WHERE state = 'recording';
"#;

/// Schema v12: experts registering softphones. An expert is a SIP
/// account (its password kept only as HA1 for the realm it was set in); a
/// registration binds one of its devices until it expires, with the
/// address the REGISTER came from (the device is called there, behind its
/// NAT) and the node it came through; the registrar's nonce secret is
/// shared by the nodes.
const V12: &str = r#"
CREATE TABLE experts (
    name        TEXT PRIMARY KEY,
    username    TEXT NOT NULL UNIQUE,
    realm       TEXT NOT NULL,
    ha1         TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
) STRICT;
CREATE TABLE registrations (
    expert        TEXT NOT NULL REFERENCES experts (name) ON DELETE CASCADE,
    contact       TEXT NOT NULL,
    received      TEXT NOT NULL,
    transport     TEXT NOT NULL CHECK (transport IN ('udp', 'tcp')),
    node          TEXT NOT NULL,
    call_id       TEXT NOT NULL,
    cseq          INTEGER NOT NULL CHECK (cseq >= 0),
    user_agent    TEXT,
    registered_ms INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    PRIMARY KEY (expert, contact)
) STRICT;
CREATE INDEX registrations_by_expiry ON registrations (expires_ms);
CREATE TABLE registrar_keys (
    name   TEXT PRIMARY KEY,
    secret TEXT NOT NULL
) STRICT;
"#;

/// Schema v13: softphones register over TLS too (`transport = 'tls'`;
/// SQLite changes a CHECK only by rebuilding the table); a leg counts the
/// SRTP packets it refused.
const V13: &str = r#"
CREATE TABLE registrations_v13 (
    expert        TEXT NOT NULL REFERENCES experts (name) ON DELETE CASCADE,
    contact       TEXT NOT NULL,
    received      TEXT NOT NULL,
    transport     TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
    node          TEXT NOT NULL,
    call_id       TEXT NOT NULL,
    cseq          INTEGER NOT NULL CHECK (cseq >= 0),
    user_agent    TEXT,
    registered_ms INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    PRIMARY KEY (expert, contact)
) STRICT;
INSERT INTO registrations_v13 SELECT * FROM registrations;
DROP TABLE registrations;
ALTER TABLE registrations_v13 RENAME TO registrations;
CREATE INDEX registrations_by_expiry ON registrations (expires_ms);
ALTER TABLE call_legs ADD COLUMN srtp_refused INTEGER NOT NULL DEFAULT 0
    CHECK (srtp_refused >= 0);
"#;

/// Schema v14: what was decided for a booking's cancellation fee (a late
/// cancellation captures it, a call or a cancellation in time releases
/// it), kept so that a fee hold whose request was still in flight when
/// the booking was decided is captured or released once it stands.
const V14: &str = r#"
ALTER TABLE bookings ADD COLUMN fee_decision TEXT
    CHECK (fee_decision IN ('capture', 'release', 'release-as-canceled'));
"#;

const MIGRATIONS_SLICE: &[M<'static>] = &[
    M::up(V1).foreign_key_check(),
    M::up(V2).foreign_key_check(),
    M::up(V3).foreign_key_check(),
    M::up(V4).foreign_key_check(),
    M::up(V5).foreign_key_check(),
    M::up(V6).foreign_key_check(),
    M::up(V7).foreign_key_check(),
    M::up(V8).foreign_key_check(),
    M::up(V9).foreign_key_check(),
    M::up(V10).foreign_key_check(),
    M::up(V11).foreign_key_check(),
    M::up(V12).foreign_key_check(),
    M::up(V13).foreign_key_check(),
    M::up(V14).foreign_key_check(),
];

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATIONS_SLICE);

/// The schema version this build writes.
pub(crate) const LATEST_VERSION: usize = MIGRATIONS_SLICE.len();
