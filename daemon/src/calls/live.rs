//! The calls in progress on this node, as an operator sees and steers
//! them: each call's task registers a channel here, through which the API
//! asks it what it is doing ([`LiveCall`]) or tells it to hang up.
//!
//! Only the node carrying a call can do either; the ledger says which
//! node that is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tollbridge_media::relay::CallStats;

use super::machine::Progress;

/// How long the API waits for a call to say what it is doing.
const SHOW_WAIT: Duration = Duration::from_millis(500);

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
    /// receiver until the registration is dropped.
    pub fn register(self: &Arc<Self>, id: &str) -> (Registration, mpsc::Receiver<Operator>) {
        let (sender, receiver) = mpsc::channel(8);
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(id.to_owned(), sender);
        }
        let registration = Registration {
            calls: self.clone(),
            id: id.to_owned(),
        };
        (registration, receiver)
    }

    fn sender(&self, id: &str) -> Option<mpsc::Sender<Operator>> {
        self.calls.lock().ok()?.get(id).cloned()
    }

    /// Whether call `id` is in progress on this node.
    pub fn is_here(&self, id: &str) -> bool {
        self.sender(id).is_some()
    }

    /// What call `id` is doing, if it is in progress here and answers in
    /// time.
    pub async fn show(&self, id: &str) -> Option<LiveCall> {
        let sender = self.sender(id)?;
        let (reply, answer) = oneshot::channel();
        sender.try_send(Operator::Show(reply)).ok()?;
        tokio::time::timeout(SHOW_WAIT, answer).await.ok()?.ok()
    }

    /// Asks call `id` to hang up.
    pub async fn hang_up(&self, id: &str, announce: bool) -> HangUpOutcome {
        let Some(sender) = self.sender(id) else {
            return HangUpOutcome::NotHere;
        };
        match sender.send(Operator::HangUp { announce }).await {
            Ok(()) => HangUpOutcome::Requested,
            // The task ended between the look-up and the send.
            Err(_) => HangUpOutcome::NotHere,
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
        assert_eq!(calls.hang_up("call_2", false).await, HangUpOutcome::NotHere);
        assert_eq!(
            calls.hang_up("call_1", true).await,
            HangUpOutcome::Requested
        );
        assert!(matches!(
            inbox.recv().await,
            Some(Operator::HangUp { announce: true })
        ));
        // A call that does not answer is shown as nothing, in time.
        assert!(calls.show("call_1").await.is_none());
        drop(registration);
        assert!(!calls.is_here("call_1"));
        assert_eq!(calls.hang_up("call_1", false).await, HangUpOutcome::NotHere);
    }
}
