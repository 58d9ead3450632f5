//! What calls in progress write to the ledger, kept in memory while the
//! ledger is out of reach.
//!
//! A call does not stop because its ledger did: its status events,
//! dialogs, checkpoints and closed record go through the [`Journal`],
//! which writes them at once when it can and otherwise queues them, in
//! order, to be written when the ledger is back. Every write is one the
//! ledger can take twice (a record closes once, a checkpoint only moves
//! forward, the rest overwrite), so a write that timed out but landed
//! later does no harm when it is written again.
//!
//! The queue is bounded (`database.outage_buffer`): a call holds at most
//! one queued checkpoint (a later one replaces it), and past the bound the
//! oldest writes are dropped, checkpoints first, and counted. A closed
//! record dropped that way is not lost for good: the call stays open in
//! the ledger and the node's next start closes it at its last checkpoint.
//! Settlement follows the record: nothing is sent to Stripe for a call
//! whose close is still in memory, because the settlement rows are
//! written in the same transaction as the close.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tollbridge_media::bridge::Side;
use tollbridge_media::relay::CallStats;

use crate::ledger::{CallEnd, CallStatus, Ledger, LedgerError, Priced};

/// How long a call waits for one write before queueing it instead (a
/// server that stops answering must not stall call control).
const WRITE_WAIT: Duration = Duration::from_secs(2);

/// How often queued writes are retried while the ledger is away.
const RETRY: Duration = Duration::from_millis(500);

/// One write of a call in progress.
#[derive(Debug, Clone)]
pub enum CallWrite {
    /// A status event (and the status it moves the call to).
    Event {
        /// Our call id.
        call_id: String,
        /// The new status.
        status: CallStatus,
        /// The SIP response code behind it.
        sip_code: Option<u16>,
        /// Free text.
        detail: Option<String>,
        /// The warning both parties heard.
        warning: bool,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// The callee leg's SIP Call-ID.
    CalleeCallId {
        /// Our call id.
        call_id: String,
        /// The callee leg's Call-ID.
        sip_call_id: String,
    },
    /// A leg's dialog, for hanging it up after a crash.
    Dialog {
        /// Our call id.
        call_id: String,
        /// Which leg.
        side: Side,
        /// `DialogRecord` as JSON.
        dialog: String,
    },
    /// The relay ports our SDP names.
    RtpPorts {
        /// Our call id.
        call_id: String,
        /// Caller's and callee's.
        ports: [u16; 2],
    },
    /// The running meters of these calls at `at_ms`.
    Checkpoint {
        /// Our call ids.
        call_ids: Vec<String>,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// The closed record: rated, settled, its booking released.
    Close {
        /// Our call id.
        call_id: String,
        /// How it ended.
        end: CallEnd,
        /// When, Unix ms.
        ended_ms: i64,
    },
    /// Both legs' media counters.
    Media {
        /// Our call id.
        call_id: String,
        /// The counters.
        stats: CallStats,
    },
}

impl CallWrite {
    fn is_checkpoint(&self) -> bool {
        matches!(self, CallWrite::Checkpoint { .. })
    }

    /// Writes it; a close returns its price.
    async fn apply(&self, ledger: &Ledger) -> Result<Option<Priced>, LedgerError> {
        match self.clone() {
            CallWrite::Event {
                call_id,
                status,
                sip_code,
                detail,
                warning,
                at_ms,
            } => ledger
                .record_event_noting(call_id, status, sip_code, detail, warning, at_ms)
                .await
                .map(|()| None),
            CallWrite::CalleeCallId {
                call_id,
                sip_call_id,
            } => ledger
                .record_callee_call_id(call_id, sip_call_id)
                .await
                .map(|()| None),
            CallWrite::Dialog {
                call_id,
                side,
                dialog,
            } => ledger
                .record_dialog(call_id, side, dialog)
                .await
                .map(|()| None),
            CallWrite::RtpPorts { call_id, ports } => {
                ledger.record_rtp_ports(call_id, ports).await.map(|()| None)
            }
            CallWrite::Checkpoint { call_ids, at_ms } => {
                ledger.checkpoint(call_ids, at_ms).await.map(|()| None)
            }
            CallWrite::Close {
                call_id,
                end,
                ended_ms,
            } => ledger.close_call(call_id, end, ended_ms).await,
            CallWrite::Media { call_id, stats } => {
                ledger.record_media(call_id, stats).await.map(|()| None)
            }
        }
    }
}

/// What became of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// In the ledger (a close with its price, when it has one).
    Now(Option<Priced>),
    /// Kept in memory until the ledger is back.
    Queued,
    /// Refused by the ledger for a reason waiting will not cure (logged).
    Failed,
}

/// The call writes of this node, and those waiting for the ledger.
pub struct Journal {
    ledger: Ledger,
    /// Queued writes, each with its place in line.
    queue: Mutex<VecDeque<(u64, CallWrite)>>,
    next: AtomicU64,
    limit: usize,
    dropped: AtomicU64,
    queued: Notify,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("waiting", &self.waiting())
            .field("limit", &self.limit)
            .finish()
    }
}

/// Whether waiting may cure an error: the ledger is away, not wrong.
fn is_transient(error: &LedgerError) -> bool {
    matches!(error, LedgerError::Unavailable(_))
}

impl Journal {
    /// A journal writing to `ledger`, keeping at most `limit` writes while
    /// it is away.
    pub fn new(ledger: Ledger, limit: usize) -> Journal {
        Journal {
            ledger,
            queue: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            limit: limit.max(1),
            dropped: AtomicU64::new(0),
            queued: Notify::new(),
        }
    }

    /// Writes waiting for the ledger.
    pub fn waiting(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Writes dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes `write` now, or queues it behind the writes already waiting
    /// (order is kept) when the ledger is away or slow.
    pub async fn write(&self, write: CallWrite) -> Written {
        if self.waiting() > 0 {
            self.enqueue(write);
            return Written::Queued;
        }
        match tokio::time::timeout(WRITE_WAIT, write.apply(&self.ledger)).await {
            Ok(Ok(priced)) => Written::Now(priced),
            Ok(Err(e)) if is_transient(&e) => {
                tracing::warn!(error = %e, "ledger unreachable: keeping the call's writes in memory");
                self.enqueue(write);
                Written::Queued
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot write the call record");
                Written::Failed
            }
            Err(_) => {
                tracing::warn!(
                    wait_ms = WRITE_WAIT.as_millis() as u64,
                    "ledger write too slow: keeping the call's writes in memory"
                );
                self.enqueue(write);
                Written::Queued
            }
        }
    }

    fn enqueue(&self, write: CallWrite) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        if let CallWrite::Checkpoint { call_ids, .. } = &write {
            // A later checkpoint of a call replaces its earlier one.
            for (_, queued) in queue.iter_mut() {
                if let CallWrite::Checkpoint {
                    call_ids: earlier, ..
                } = queued
                {
                    earlier.retain(|id| !call_ids.contains(id));
                }
            }
            queue.retain(|(_, queued)| {
                !matches!(queued, CallWrite::Checkpoint { call_ids, .. } if call_ids.is_empty())
            });
        }
        let place = self.next.fetch_add(1, Ordering::Relaxed);
        queue.push_back((place, write));
        while queue.len() > self.limit {
            let victim = queue
                .iter()
                .position(|(_, write)| write.is_checkpoint())
                .unwrap_or(0);
            if let Some((_, dropped)) = queue.remove(victim) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(write = ?kind(&dropped), limit = self.limit, "ledger outage buffer full: a call write was dropped");
            }
        }
        drop(queue);
        self.queued.notify_one();
    }

    /// Writes the queued writes, oldest first, whenever there are some and
    /// the ledger takes them; `written` hears of each close written (its
    /// price), to rate and settle it. Returns once `stop` resolves and a
    /// last attempt is made.
    pub async fn flush(
        &self,
        written: impl Fn(&str, Option<Priced>),
        mut stop: crate::shutdown::Shutdown,
    ) {
        loop {
            self.flush_once(&written).await;
            if stop.is_requested() {
                let left = self.waiting();
                if left > 0 {
                    tracing::error!(
                        writes = left,
                        "stopping with call writes the ledger never took; calls left open are closed at their last checkpoint on the next start"
                    );
                }
                return;
            }
            let wait = if self.waiting() > 0 {
                tokio::time::sleep(RETRY)
            } else {
                tokio::time::sleep(Duration::from_secs(3600))
            };
            tokio::select! {
                () = wait => {}
                () = self.queued.notified() => {
                    // Give the ledger a moment before trying again.
                    tokio::time::sleep(RETRY).await;
                }
                () = stop.requested() => {}
            }
        }
    }

    /// Writes queued writes until the queue is empty or the ledger fails.
    async fn flush_once(&self, written: &impl Fn(&str, Option<Priced>)) {
        let mut flushed = 0usize;
        loop {
            let next = self.queue.lock().ok().and_then(|q| q.front().cloned());
            let Some((place, write)) = next else {
                break;
            };
            match tokio::time::timeout(WRITE_WAIT, write.apply(&self.ledger)).await {
                Ok(Ok(priced)) => {
                    if let CallWrite::Close { call_id, .. } = &write {
                        written(call_id, priced);
                    }
                }
                Ok(Err(e)) if is_transient(&e) => break,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, write = ?kind(&write), "the ledger refused a queued call write; dropped");
                }
                Err(_) => break,
            }
            flushed += 1;
            // Unless a later checkpoint replaced it (or the bound dropped
            // it) meanwhile, it is still first in line.
            if let Ok(mut queue) = self.queue.lock()
                && queue.front().is_some_and(|(first, _)| *first == place)
            {
                queue.pop_front();
            }
        }
        if flushed > 0 {
            tracing::info!(
                writes = flushed,
                left = self.waiting(),
                "queued call writes written to the ledger"
            );
        }
    }
}

/// A write's kind, for logs.
fn kind(write: &CallWrite) -> &'static str {
    match write {
        CallWrite::Event { .. } => "event",
        CallWrite::CalleeCallId { .. } => "callee-call-id",
        CallWrite::Dialog { .. } => "dialog",
        CallWrite::RtpPorts { .. } => "rtp-ports",
        CallWrite::Checkpoint { .. } => "checkpoint",
        CallWrite::Close { .. } => "close",
        CallWrite::Media { .. } => "media",
    }
}
