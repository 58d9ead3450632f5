//! Prometheus metrics for `/metrics`.
//!
//! Counters are bumped where things happen; gauges that mirror state held
//! elsewhere (uptime, active calls, settlement rows by state) are set when
//! scraped, so they can never drift from what they describe.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Labels of one series, e.g. `[("status", "completed")]`.
type Labels = Vec<(&'static str, String)>;

/// How a call ended, in Twilio's status vocabulary.
pub const END_STATUSES: [&str; 5] = ["completed", "busy", "failed", "no-answer", "canceled"];

/// The states of a settlement row.
pub const SETTLEMENT_STATES: [&str; 5] = ["pending", "sent", "succeeded", "failed", "unknown"];

/// A dispute's states, as Stripe names them: each is a series of
/// `tollbridge_disputes`, zero while no call is in it.
pub const DISPUTE_STATUSES: [&str; 8] = [
    "warning_needs_response",
    "warning_under_review",
    "warning_closed",
    "needs_response",
    "under_review",
    "won",
    "lost",
    "prevented",
];

/// Why the SIP edge turned traffic away (`reason` label).
pub const SIP_TURNED_AWAY_REASONS: [&str; 5] = [
    "unknown-source",
    "malformed",
    "rate-limited",
    "connection-limit",
    "unknown-method",
];

/// Values read from elsewhere at scrape time.
pub struct Scrape<'a> {
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Calls in progress.
    pub active_calls: usize,
    /// Settlement rows by state.
    pub settlements: &'a [(String, u64)],
    /// Refund rows by state.
    pub refunds: &'a [(String, u64)],
    /// Calls whose charge is disputed, by the dispute's state.
    pub disputes: &'a [(String, u64)],
    /// The SIP edge's turned-away counters by reason (monotonic).
    pub sip_turned_away: &'a [(&'static str, u64)],
    /// RTP/RTCP port pairs the relay holds (two per call in progress).
    pub media_port_pairs_in_use: usize,
    /// The calls each relay thread carries (`tb-media-N`, in order).
    pub media_calls_per_thread: &'a [usize],
    /// Directions of calls the kernel fast path forwards now.
    pub media_kernel_routes: usize,
    /// SIP dialogs the edge keeps (two per call in progress).
    pub sip_dialogs: usize,
    /// Whether the ledger answered this node's last heartbeat.
    pub ledger_up: bool,
    /// Call writes kept in memory until the ledger is back.
    pub ledger_writes_waiting: usize,
    /// Call writes dropped because that buffer was full (monotonic).
    pub ledger_writes_dropped: u64,
    /// Webhook deliveries not yet made.
    pub webhook_pending: u64,
    /// Frames the recorder's full queue dropped (monotonic).
    pub recording_frames_dropped: u64,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    uptime_seconds: Gauge<f64, AtomicU64>,
    active_calls: Gauge,
    calls_total: Family<Labels, Counter>,
    settlements: Family<Labels, Gauge>,
    refunds: Family<Labels, Gauge>,
    disputes: Family<Labels, Gauge>,
    sip_turned_away: Family<Labels, Counter>,
    media_port_pairs: Gauge,
    media_relay_calls: Family<Labels, Gauge>,
    media_kernel_routes: Gauge,
    sip_dialogs: Gauge,
    talk_seconds: Family<Labels, Counter>,
    billed_amount: Family<Labels, Counter>,
    callee_refusals: Family<Labels, Counter>,
    stripe_latency: StripeLatency,
    ledger_up: Gauge,
    ledger_writes_waiting: Gauge,
    ledger_writes_dropped: Counter,
    calls_taken_over: Counter,
    calls_started: Counter,
    caller_refusals: Family<Labels, Counter>,
    relay_packets: Family<Labels, Counter>,
    relay_packets_lost: Family<Labels, Counter>,
    relay_jitter: Family<Labels, Histogram, fn() -> Histogram>,
    cap_lateness: Histogram,
    resident_memory: Gauge,
    webhook_deliveries: Family<Labels, Counter>,
    webhook_pending: Gauge,
    recordings: Family<Labels, Counter>,
    recording_frames_dropped: Counter,
    registers: Family<Labels, Counter>,
    register_auth_failures: Family<Labels, Counter>,
    register_lockouts: Counter,
}

fn jitter_histogram() -> Histogram {
    // 0.5 ms to 256 ms.
    Histogram::new(exponential_buckets(0.5, 2.0, 10))
}

/// Stripe request latency in seconds, by operation and outcome (`ok`,
/// `declined`, `refused`, `unknown`), retries included.
pub type StripeLatency = Family<Labels, Histogram, fn() -> Histogram>;

fn stripe_histogram() -> Histogram {
    // 25 ms to about 50 s.
    Histogram::new(exponential_buckets(0.025, 2.0, 12))
}

impl Metrics {
    /// Registers every metric under the `tollbridge_` prefix; `node` is
    /// `node.name`, shown on the build info.
    pub fn new(node: &str) -> Metrics {
        let mut registry = Registry::with_prefix("tollbridge");
        let build = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("node", node.to_owned()),
        ]);
        registry.register(
            "build",
            "Build of the running daemon, and its node.name",
            build,
        );
        let ledger_up = Gauge::default();
        registry.register(
            "ledger_up",
            "1 while the ledger answers this node's heartbeats, 0 while it is out of reach",
            ledger_up.clone(),
        );
        let ledger_writes_waiting = Gauge::default();
        registry.register(
            "ledger_writes_waiting",
            "Call writes (checkpoints, closed records) kept in memory until the ledger is back",
            ledger_writes_waiting.clone(),
        );
        let ledger_writes_dropped = Counter::default();
        registry.register(
            "ledger_writes_dropped",
            "Call writes dropped because database.outage_buffer was full",
            ledger_writes_dropped.clone(),
        );
        let calls_taken_over = Counter::default();
        registry.register(
            "calls_taken_over",
            "Calls of silent nodes this node closed, hung up and settled",
            calls_taken_over.clone(),
        );
        let uptime_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "uptime_seconds",
            "Seconds since the daemon started",
            uptime_seconds.clone(),
        );
        let active_calls = Gauge::default();
        registry.register("active_calls", "Calls in progress", active_calls.clone());
        let calls_total = Family::<Labels, Counter>::default();
        registry.register("calls", "Calls ended, by final status", calls_total.clone());
        for status in END_STATUSES {
            let _ = calls_total.get_or_create(&vec![("status", status.to_owned())]);
        }
        let settlements = Family::<Labels, Gauge>::default();
        registry.register(
            "settlements",
            "Settlement rows, by state",
            settlements.clone(),
        );
        let refunds = Family::<Labels, Gauge>::default();
        registry.register(
            "refunds",
            "Refunds asked through the API, by state",
            refunds.clone(),
        );
        let disputes = Family::<Labels, Gauge>::default();
        registry.register(
            "disputes",
            "Calls whose charge the customer disputed, by the dispute's state (Stripe's word)",
            disputes.clone(),
        );
        let sip_turned_away = Family::<Labels, Counter>::default();
        registry.register(
            "sip_turned_away",
            "SIP messages and connections the edge turned away, by reason",
            sip_turned_away.clone(),
        );
        for reason in SIP_TURNED_AWAY_REASONS {
            let _ = sip_turned_away.get_or_create(&vec![("reason", reason.to_owned())]);
        }
        let media_port_pairs = Gauge::default();
        registry.register(
            "media_port_pairs_in_use",
            "RTP/RTCP port pairs the relay holds (two per call in progress)",
            media_port_pairs.clone(),
        );
        let media_relay_calls = Family::<Labels, Gauge>::default();
        registry.register(
            "media_relay_calls",
            "Calls each relay thread carries (thread = N of tb-media-N); even when balanced",
            media_relay_calls.clone(),
        );
        let media_kernel_routes = Gauge::default();
        registry.register(
            "media_kernel_routes",
            "Directions of calls the kernel fast path forwards now (media.fast_path; two per call that needs nothing but forwarding)",
            media_kernel_routes.clone(),
        );
        let sip_dialogs = Gauge::default();
        registry.register(
            "sip_dialogs",
            "SIP dialogs the edge keeps (two per call in progress; zero when idle)",
            sip_dialogs.clone(),
        );
        let talk_seconds = Family::<Labels, Counter>::default();
        registry.register(
            "talk_seconds",
            "Talk seconds of rated calls (rounded up per call), by currency",
            talk_seconds.clone(),
        );
        let billed_amount = Family::<Labels, Counter>::default();
        registry.register(
            "billed_amount",
            "Amount rated for calls, in the currency's minor unit, by currency",
            billed_amount.clone(),
        );
        let callee_refusals = Family::<Labels, Counter>::default();
        registry.register(
            "callee_refusals",
            "Final refusals of the callee's leg, by SIP code and Twilio error code (empty when none)",
            callee_refusals.clone(),
        );
        let stripe_latency: StripeLatency = Family::new_with_constructor(stripe_histogram);
        registry.register(
            "stripe_request_seconds",
            "Stripe request latency including retries, by operation and outcome",
            stripe_latency.clone(),
        );
        let calls_started = Counter::default();
        registry.register(
            "calls_started",
            "Calls offered (INVITEs that became a call record)",
            calls_started.clone(),
        );
        let caller_refusals = Family::<Labels, Counter>::default();
        registry.register(
            "caller_refusals",
            "Final refusals we answered callers' INVITEs with, by SIP code",
            caller_refusals.clone(),
        );
        let relay_packets = Family::<Labels, Counter>::default();
        registry.register(
            "relay_packets",
            "RTP packets of ended calls, by leg (caller, callee) and direction (received from the party, sent to it)",
            relay_packets.clone(),
        );
        let relay_packets_lost = Family::<Labels, Counter>::default();
        registry.register(
            "relay_packets_lost",
            "RTP packets of ended calls lost on the way from the party (RFC 3550), by leg",
            relay_packets_lost.clone(),
        );
        for leg in ["caller", "callee"] {
            let _ = relay_packets_lost.get_or_create(&vec![("leg", leg.to_owned())]);
            for direction in ["received", "sent"] {
                let _ = relay_packets.get_or_create(&vec![
                    ("leg", leg.to_owned()),
                    ("direction", direction.to_owned()),
                ]);
            }
        }
        let relay_jitter: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(jitter_histogram);
        registry.register(
            "relay_jitter_milliseconds",
            "Interarrival jitter of each ended call's party streams (RFC 3550), by leg",
            relay_jitter.clone(),
        );
        let cap_lateness = Histogram::new(exponential_buckets(0.0005, 2.0, 12));
        registry.register(
            "cap_lateness_seconds",
            "How late calls ended at their cap were ended: the meter's timer to the BYEs",
            cap_lateness.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the daemon (VmRSS), read at scrape",
            resident_memory.clone(),
        );
        let webhook_deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts, by endpoint and outcome (delivered, retry, failed)",
            webhook_deliveries.clone(),
        );
        let webhook_pending = Gauge::default();
        registry.register(
            "webhook_deliveries_pending",
            "Webhook deliveries not yet made, in the ledger (every node's), read at scrape",
            webhook_pending.clone(),
        );
        let recordings = Family::<Labels, Counter>::default();
        registry.register(
            "recordings",
            "Call recordings by outcome: complete, failed (stopped short: the disk full), refused (not started: too little free disk, the recorder behind)",
            recordings.clone(),
        );
        let recording_frames_dropped = Counter::default();
        registry.register(
            "recording_frames_dropped",
            "Audio frames left out of recordings because the recorder's queue was full (the disk slower than the calls)",
            recording_frames_dropped.clone(),
        );
        let registers = Family::<Labels, Counter>::default();
        registry.register(
            "registers",
            "REGISTERs answered by the registrar, by outcome: registered, challenged (401), or why refused",
            registers.clone(),
        );
        let register_auth_failures = Family::<Labels, Counter>::default();
        registry.register(
            "register_auth_failures",
            "REGISTERs that failed digest authentication, by reason (wrong-password, unknown-user, forged-nonce, replay, another-account, realm-changed, malformed)",
            register_auth_failures.clone(),
        );
        let register_lockouts = Counter::default();
        registry.register(
            "register_lockouts",
            "Source addresses locked out after registrar.max_failures failed attempts",
            register_lockouts.clone(),
        );
        Metrics {
            registers,
            register_auth_failures,
            register_lockouts,
            recordings,
            recording_frames_dropped,
            webhook_deliveries,
            webhook_pending,
            calls_started,
            caller_refusals,
            relay_packets,
            relay_packets_lost,
            relay_jitter,
            cap_lateness,
            resident_memory,
            ledger_up,
            ledger_writes_waiting,
            ledger_writes_dropped,
            calls_taken_over,
            callee_refusals,
            stripe_latency,
            talk_seconds,
            billed_amount,
            media_port_pairs,
            media_relay_calls,
            media_kernel_routes,
            sip_dialogs,
            registry,
            uptime_seconds,
            active_calls,
            calls_total,
            settlements,
            refunds,
            disputes,
            sip_turned_away,
        }
    }

    /// Counts a webhook delivery attempt.
    pub fn webhook_attempted(&self, endpoint: &str, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&vec![
                ("endpoint", endpoint.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// Counts a recording that ended `outcome` (`complete`, `failed`,
    /// `refused`).
    pub fn recording_finished(&self, outcome: &str) {
        self.recordings
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Counts a REGISTER answered `outcome`.
    pub fn register_answered(&self, outcome: &str) {
        self.registers
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Counts a REGISTER that failed authentication, and why.
    pub fn register_auth_failed(&self, reason: &str) {
        self.register_auth_failures
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Counts a source locked out.
    pub fn register_lockout(&self) {
        self.register_lockouts.inc();
    }

    /// Counts a call offered.
    pub fn call_started(&self) {
        self.calls_started.inc();
    }

    /// Counts a final refusal we sent a caller.
    pub fn caller_refused(&self, code: u16) {
        self.caller_refusals
            .get_or_create(&vec![("code", code.to_string())])
            .inc();
    }

    /// Adds an ended call's relay counters.
    pub fn media_closed(&self, stats: &tollbridge_media::relay::CallStats) {
        for (leg, counters) in [("caller", &stats.caller), ("callee", &stats.callee)] {
            let with = |direction: &str| {
                vec![("leg", leg.to_owned()), ("direction", direction.to_owned())]
            };
            self.relay_packets
                .get_or_create(&with("received"))
                .inc_by(counters.packets_received);
            self.relay_packets
                .get_or_create(&with("sent"))
                .inc_by(counters.packets_sent);
            self.relay_packets_lost
                .get_or_create(&vec![("leg", leg.to_owned())])
                .inc_by(counters.lost);
            if counters.packets_received > 0 {
                self.relay_jitter
                    .get_or_create(&vec![("leg", leg.to_owned())])
                    .observe(counters.jitter_ms);
            }
        }
    }

    /// Records how late a call was ended at its cap.
    pub fn cap_reached(&self, lateness: std::time::Duration) {
        self.cap_lateness.observe(lateness.as_secs_f64());
    }

    /// Counts a call that ended with `status`.
    pub fn call_ended(&self, status: &str) {
        self.calls_total
            .get_or_create(&vec![("status", status.to_owned())])
            .inc();
    }

    /// Counts a refusal of the callee's leg (`twilio_error`: Twilio's
    /// `X-Twilio-Error`, which tells a trunk problem from a busy phone).
    pub fn callee_refused(&self, code: u16, twilio_error: Option<&str>) {
        self.callee_refusals
            .get_or_create(&vec![
                ("code", code.to_string()),
                ("twilio_error", twilio_error.unwrap_or_default().to_owned()),
            ])
            .inc();
    }

    /// The Stripe latency histograms, for the gateway wrapper.
    pub fn stripe_latency(&self) -> StripeLatency {
        self.stripe_latency.clone()
    }

    /// Counts calls taken over from a silent node.
    pub fn calls_taken_over(&self, calls: usize) {
        self.calls_taken_over
            .inc_by(u64::try_from(calls).unwrap_or(u64::MAX));
    }

    /// Counts a rated call's talk time and amount.
    pub fn call_rated(&self, currency: &str, talk_seconds: u64, amount: i64) {
        let labels = vec![("currency", currency.to_owned())];
        self.talk_seconds
            .get_or_create(&labels)
            .inc_by(talk_seconds);
        self.billed_amount
            .get_or_create(&labels)
            .inc_by(u64::try_from(amount).unwrap_or(0));
    }

    /// Renders the OpenMetrics text, after bringing the scraped values in.
    pub fn render(&self, scrape: &Scrape) -> String {
        self.uptime_seconds.set(scrape.uptime_seconds);
        self.webhook_pending
            .set(i64::try_from(scrape.webhook_pending).unwrap_or(i64::MAX));
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
        }
        self.active_calls
            .set(i64::try_from(scrape.active_calls).unwrap_or(i64::MAX));
        for state in SETTLEMENT_STATES {
            let count = scrape
                .settlements
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.settlements
                .get_or_create(&vec![("state", state.to_owned())])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        for state in SETTLEMENT_STATES {
            let count = scrape
                .refunds
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.refunds
                .get_or_create(&vec![("state", state.to_owned())])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        for status in DISPUTE_STATUSES {
            let count = scrape
                .disputes
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            self.disputes
                .get_or_create(&vec![("status", status.to_owned())])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.media_port_pairs
            .set(i64::try_from(scrape.media_port_pairs_in_use).unwrap_or(i64::MAX));
        for (thread, calls) in scrape.media_calls_per_thread.iter().enumerate() {
            self.media_relay_calls
                .get_or_create(&vec![("thread", thread.to_string())])
                .set(i64::try_from(*calls).unwrap_or(i64::MAX));
        }
        self.media_kernel_routes
            .set(i64::try_from(scrape.media_kernel_routes).unwrap_or(i64::MAX));
        self.sip_dialogs
            .set(i64::try_from(scrape.sip_dialogs).unwrap_or(i64::MAX));
        self.ledger_up.set(i64::from(scrape.ledger_up));
        self.ledger_writes_waiting
            .set(i64::try_from(scrape.ledger_writes_waiting).unwrap_or(i64::MAX));
        self.ledger_writes_dropped.inc_by(
            scrape
                .ledger_writes_dropped
                .saturating_sub(self.ledger_writes_dropped.get()),
        );
        // The edge's counters only grow; carry the growth into ours.
        for (reason, total) in scrape.sip_turned_away {
            let counter = self
                .sip_turned_away
                .get_or_create(&vec![("reason", (*reason).to_owned())]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.recording_frames_dropped.inc_by(
            scrape
                .recording_frames_dropped
                .saturating_sub(self.recording_frames_dropped.get()),
        );
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// This process's resident memory, from `/proc/self/status`.
fn resident_memory_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kilobytes: i64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kilobytes.checked_mul(1024)
}

#[cfg(test)]
mod tests;
