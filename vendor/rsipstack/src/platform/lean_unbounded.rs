//! The unbounded channel of the tokio backend: tokio's API (`send`,
//! `recv`) over `futures-channel` (Tollbridge change 7).
//!
//! tokio's unbounded channel allocates its first block of 32 slots and
//! cache-padded shared state when it is made, about 0.8 KiB even for
//! boxed messages, and a dialog's state channel and its INVITE
//! transaction's event channel live as long as the call; a call has four.
//! `futures-channel` allocates a small node per message instead, which
//! suits channels that carry a handful of messages in minutes.
//!
//! Cancel-safety: `recv` is cancel-safe (nothing is lost if the future is
//! dropped before a value is available), as tokio's is.

use core::fmt;
use core::pin::Pin;
use core::task::{Context, Poll};

use futures_channel::mpsc;
use futures_util::stream::Stream;
use tokio::sync::mpsc::error::SendError;

/// A channel without bound: `send` never waits.
pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let (sender, receiver) = mpsc::unbounded();
    (UnboundedSender(sender), UnboundedReceiver(receiver))
}

/// The sending half; cloned for each producer.
pub struct UnboundedSender<T>(mpsc::UnboundedSender<T>);

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        UnboundedSender(self.0.clone())
    }
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnboundedSender")
            .field("closed", &self.0.is_closed())
            .finish()
    }
}

impl<T> UnboundedSender<T> {
    /// Queues `value`; fails, giving it back, once the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.0
            .unbounded_send(value)
            .map_err(|e| SendError(e.into_inner()))
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The receiving half.
pub struct UnboundedReceiver<T>(mpsc::UnboundedReceiver<T>);

impl<T> fmt::Debug for UnboundedReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnboundedReceiver")
    }
}

impl<T> UnboundedReceiver<T> {
    /// The next value; `None` once every sender is gone and the queue is
    /// empty.
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await.ok()
    }

    /// Polls for the next value, as [`UnboundedReceiver::recv`] waits.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.0).poll_next(cx)
    }

    /// Stops further sends; what is queued can still be received.
    pub fn close(&mut self) {
        self.0.close();
    }
}
