//! What the daemon's tasks share: the current config, the ledger and the
//! journal of call writes, the metrics, whether we are draining and
//! whether the ledger answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tollbridge_config::Config;

use tollbridge_media::relay::Relay;
use tollbridge_sip::edge::SipEdge;

use crate::calls::journal::Journal;
use crate::calls::live::LiveCalls;
use crate::ledger::Ledger;
use crate::metrics::Metrics;

/// State shared by the HTTP API, the signal handler and call control.
pub struct Shared {
    /// The config in force. A reload swaps it; a call reads it once when it
    /// starts, a request once when it arrives.
    pub config: ArcSwap<Config>,
    /// The ledger, acting as this node (`node.name`).
    pub ledger: Ledger,
    /// The writes of calls in progress, kept while the ledger is away.
    pub journal: Arc<Journal>,
    /// Exported metrics.
    pub metrics: Metrics,
    /// The calls in progress on this node, for the API to see and end.
    pub live: Arc<LiveCalls>,
    /// The HTTPS listener's certificate, re-read on reload (`[http.tls]`).
    pub https: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
    /// The SIP `tls:` listeners' certificate, re-read on reload (`[sip.tls]`).
    pub sip_certificates: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
    /// The SIP edge, once started (absent in tests of the HTTP surface).
    pub sip: Option<Arc<SipEdge>>,
    /// The media relay (absent in tests of the HTTP surface).
    pub relay: Option<Arc<Relay>>,
    /// When the daemon started, for uptime.
    pub started: Instant,
    /// The languages with prompts, once they are loaded (before that,
    /// and in tests of the HTTP surface: the built-in ones).
    pub prompt_languages: std::sync::OnceLock<Vec<String>>,
    /// The recording writer, once started (absent in tests of the HTTP
    /// surface).
    pub recorder: std::sync::OnceLock<Arc<tollbridge_media::recording::Recorder>>,
    draining: AtomicBool,
    ledger_up: AtomicBool,
    listeners_bound: AtomicBool,
    active_calls: watch::Sender<usize>,
    drain_over: watch::Sender<bool>,
}

impl Shared {
    /// State for a daemon that has opened its database and not yet bound
    /// its listeners.
    pub fn new(
        config: Config,
        ledger: Ledger,
        sip: Option<Arc<SipEdge>>,
        relay: Option<Arc<Relay>>,
    ) -> Arc<Shared> {
        let journal = Arc::new(Journal::new(
            ledger.clone(),
            config.database.outage_buffer as usize,
        ));
        let metrics = Metrics::new(&config.node.name);
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            ledger,
            journal,
            metrics,
            live: Arc::default(),
            https: std::sync::OnceLock::new(),
            sip_certificates: std::sync::OnceLock::new(),
            sip,
            relay,
            started: Instant::now(),
            prompt_languages: std::sync::OnceLock::new(),
            recorder: std::sync::OnceLock::new(),
            draining: AtomicBool::new(false),
            ledger_up: AtomicBool::new(true),
            listeners_bound: AtomicBool::new(false),
            active_calls: watch::Sender::new(0),
            drain_over: watch::Sender::new(false),
        })
    }

    /// The languages a booking may name (see [`Shared::prompt_languages`]).
    pub fn languages(&self) -> Vec<String> {
        match self.prompt_languages.get() {
            Some(languages) => languages.clone(),
            None => tollbridge_media::prompt::BUILT_IN_LANGUAGES
                .iter()
                .map(|language| (*language).to_owned())
                .collect(),
        }
    }

    /// True once SIGTERM was received: new calls are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts draining: readiness turns 503 and the SIP edge answers new
    /// INVITEs with 503 so the trunk fails over; idempotent.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        if let Some(sip) = &self.sip {
            sip.start_draining();
        }
    }

    /// Whether the ledger answered the last heartbeat.
    pub fn ledger_up(&self) -> bool {
        self.ledger_up.load(Ordering::SeqCst)
    }

    /// Records whether the ledger answers. While it does not, the SIP
    /// edge answers new INVITEs and OPTIONS with 503 (the trunk or the
    /// dispatcher sends calls to another node) and readiness fails; calls
    /// in progress go on. Returns whether this changed it.
    pub fn set_ledger_up(&self, up: bool) -> bool {
        let changed = self.ledger_up.swap(up, Ordering::SeqCst) != up;
        if let Some(sip) = &self.sip {
            sip.set_unavailable(!up);
        }
        changed
    }

    /// The drain time is over: every call still in progress ends now
    /// (talking ones after the time-up prompt), recorded `drained`.
    pub fn end_drain(&self) {
        self.drain_over.send_replace(true);
    }

    /// Turns true when the drain time is over ([`Shared::end_drain`]).
    pub fn watch_drain_deadline(&self) -> watch::Receiver<bool> {
        self.drain_over.subscribe()
    }

    /// True once every configured listener is bound.
    pub fn listeners_bound(&self) -> bool {
        self.listeners_bound.load(Ordering::SeqCst)
    }

    /// Records that every configured listener is bound.
    pub fn mark_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::SeqCst);
    }

    /// Calls in progress now.
    pub fn active_calls(&self) -> usize {
        *self.active_calls.borrow()
    }

    /// Watches the number of calls in progress (drain, systemd STATUS).
    pub fn watch_active_calls(&self) -> watch::Receiver<usize> {
        self.active_calls.subscribe()
    }

    /// Counts a call that started; the returned guard counts it ended when
    /// dropped, so no path that ends a call can forget it.
    pub fn call_started(self: &Arc<Self>) -> ActiveCall {
        self.active_calls.send_modify(|n| *n += 1);
        ActiveCall {
            shared: self.clone(),
        }
    }
}

/// One call in progress; dropping it decrements the active-call count.
pub struct ActiveCall {
    shared: Arc<Shared>,
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.shared
            .active_calls
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}
