//! The calls in progress on this node, as an operator sees and steers
//! them: each call's task registers an inbox here, through which the API
//! asks it what it is doing ([`LiveCall`]) or tells it to hang up.
//!
//! Only the node carrying a call can do either; the ledger says which
//! node that is.
//!
//! The inbox is a `futures-channel` channel, not a tokio one: tokio's
//! allocates a 32-slot block and cache-padded state when made, 1.2 KiB
//! held for every live call (measured with heaptrack) by something used a
//! few times in a call's life, if ever; this one allocates per message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_channel::mpsc;
use tokio::sync::oneshot;
use tollbridge_media::relay::CallStats;

use super::machine::Progress;

/// How long the API waits for a call to say what it is doing.
const SHOW_WAIT: Duration = Duration::from_millis(500);

/// Requests a call's inbox holds before a look is refused (the call is
/// not reading its inbox).
const PENDING_REQUESTS: usize = 8;

/// What the API asks of a call in progress.
#[derive(Debug)]
pub enum Operator {
    /// End the call; with `announce`, after the time-up prompt.
    HangUp {
        /// Play the time-up prompt to both parties first.
        announce: bool,
    },
    /// Say what the call is doing now.
    Show(oneshot::Sender<LiveCall>),
}

/// A call in progress as its task sees it.
#[derive(Debug, Clone)]
pub struct LiveCall {
    /// The machine's view: phase, talk, time left, codec.
    pub progress: Progress,
    /// The relay's counters so far (none before media was opened).
    pub media: Option<CallStats>,
}

/// Where a call's task reads what operators ask of it; dropping it drops
/// the requests not yet read (a look waiting on one ends at once).
pub type OperatorInbox = mpsc::Receiver<Operator>;

/// The calls in progress on this node, by call id.
#[derive(Debug, Default)]
pub struct LiveCalls {
    calls: Mutex<HashMap<String, mpsc::Sender<Operator>>>,
}

/// A call's place in [`LiveCalls`]; dropping it removes the call.
pub struct Registration {
    calls: Arc<LiveCalls>,
    id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.calls.calls.lock() {
            calls.remove(&self.id);
        }
    }
}

/// What became of a hang-up request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangUpOutcome {
    /// The call's task has the request.
    Requested,
    /// No call with that id is in progress on this node.
    NotHere,
}

impl LiveCalls {
    /// Registers call `id`; its task reads what operators ask from the
    /// inbox until the registration is dropped.
    pub fn register(self: &Arc<Self>, id: &str) -> (Registration, OperatorInbox) {
        let (sender, receiver) = mpsc::channel(PENDING_REQUESTS);
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(id.to_owned(), sender);
        }
        let registration = Registration {
            calls: self.clone(),
            id: id.to_owned(),
        };
        (registration, receiver)
    }

    /// Hands `request` to call `id`'s task through the inbox's own slots
    /// (bounded: a call that does not read refuses more); `None` when the
    /// call is not here or its task has ended.
    fn post(&self, id: &str, request: Operator) -> Option<Result<(), Operator>> {
        let mut calls = self.calls.lock().ok()?;
        let sender = calls.get_mut(id)?;
        Some(match sender.try_send(request) {
            Ok(()) => Ok(()),
            Err(e) if e.is_disconnected() => return None,
            Err(e) => Err(e.into_inner()),
        })
    }

    /// Whether call `id` is in progress on this node.
    pub fn is_here(&self, id: &str) -> bool {
        self.calls.lock().is_ok_and(|calls| calls.contains_key(id))
    }

    /// What call `id` is doing, if it is in progress here and answers in
    /// time.
    pub async fn show(&self, id: &str) -> Option<LiveCall> {
        let (reply, answer) = oneshot::channel();
        self.post(id, Operator::Show(reply))?.ok()?;
        tokio::time::timeout(SHOW_WAIT, answer).await.ok()?.ok()
    }

    /// Asks call `id` to hang up. Never refused for a full inbox: the
    /// request goes through a sender of its own, which has a slot of its
    /// own.
    pub fn hang_up(&self, id: &str, announce: bool) -> HangUpOutcome {
        let own = self
            .calls
            .lock()
            .ok()
            .and_then(|calls| calls.get(id).cloned());
        match own.map(|mut own| own.try_send(Operator::HangUp { announce })) {
            Some(Ok(())) => HangUpOutcome::Requested,
            // Not here, or its task has ended.
            _ => HangUpOutcome::NotHere,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_registered_call_is_reached_until_its_registration_drops() {
        let calls = Arc::new(LiveCalls::default());
        let (registration, mut inbox) = calls.register("call_1");
        assert!(calls.is_here("call_1"));
        assert_eq!(calls.hang_up("call_2", false), HangUpOutcome::NotHere);
        assert_eq!(calls.hang_up("call_1", true), HangUpOutcome::Requested);
        assert!(matches!(
            inbox.recv().await,
            Ok(Operator::HangUp { announce: true })
        ));
        // A call that does not answer is shown as nothing, in time.
        assert!(calls.show("call_1").await.is_none());
        drop(registration);
        assert!(!calls.is_here("call_1"));
        assert_eq!(calls.hang_up("call_1", false), HangUpOutcome::NotHere);
    }

    #[tokio::test]
    async fn a_look_is_answered_through_the_inbox() {
        let calls = Arc::new(LiveCalls::default());
        let (_registration, mut inbox) = calls.register("call_1");
        let task = async {
            match inbox.recv().await {
                Ok(Operator::Show(reply)) => reply
                    .send(LiveCall {
                        progress: Progress {
                            phase: "talking",
                            talk: Duration::from_secs(1),
                            remaining: None,
                            codec: None,
                        },
                        media: None,
                    })
                    .unwrap(),
                other => panic!("expected a look, got {other:?}"),
            }
        };
        let (shown, ()) = tokio::join!(calls.show("call_1"), task);
        assert_eq!(shown.unwrap().progress.phase, "talking");
    }

    #[tokio::test]
    async fn a_full_inbox_refuses_looks_but_never_a_hang_up() {
        let calls = Arc::new(LiveCalls::default());
        let (_registration, mut inbox) = calls.register("call_1");
        let mut queued = 0;
        while let Some(Ok(())) = calls.post("call_1", Operator::Show(oneshot::channel().0)) {
            queued += 1;
            assert!(queued <= PENDING_REQUESTS + 1, "the inbox is bounded");
        }
        assert_eq!(queued, PENDING_REQUESTS + 1);
        let started = std::time::Instant::now();
        assert!(calls.show("call_1").await.is_none(), "a look is refused");
        assert!(
            started.elapsed() < SHOW_WAIT,
            "refused at once, not after waiting for an answer"
        );
        assert_eq!(
            calls.hang_up("call_1", true),
            HangUpOutcome::Requested,
            "a hang-up gets in behind a full inbox"
        );
        for _ in 0..queued {
            assert!(matches!(inbox.recv().await, Ok(Operator::Show(_))));
        }
        assert!(matches!(
            inbox.recv().await,
            Ok(Operator::HangUp { announce: true })
        ));
    }

    #[tokio::test]
    async fn a_wait_given_up_loses_no_request() {
        let calls = Arc::new(LiveCalls::default());
        let (_registration, mut inbox) = calls.register("call_1");
        // The task's select! drops an unfinished wait when another input wins.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), inbox.recv()).await;
        assert!(gave_up.is_err());
        assert_eq!(calls.hang_up("call_1", true), HangUpOutcome::Requested);
        let request = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await;
        assert!(matches!(
            request,
            Ok(Ok(Operator::HangUp { announce: true }))
        ));
    }

    #[tokio::test]
    async fn once_the_task_is_gone_queued_looks_end_at_once() {
        let calls = Arc::new(LiveCalls::default());
        let (_registration, inbox) = calls.register("call_1");
        let (reply, answer) = oneshot::channel();
        assert!(matches!(
            calls.post("call_1", Operator::Show(reply)),
            Some(Ok(()))
        ));
        // The task ends before its registration is dropped.
        drop(inbox);
        assert!(answer.await.is_err(), "the queued look is dropped");
        assert!(calls.show("call_1").await.is_none());
        assert_eq!(calls.hang_up("call_1", false), HangUpOutcome::NotHere);
    }
}
