//! Stopping the background loops before the store closes (mini-redis's
//! `shutdown.rs` pattern): every loop holds a [`Shutdown`] and returns
//! once it fires, finishing the unit of work it is in (a checkpoint, a
//! Stripe request and its row); [`Background::stop`] fires it and waits
//! for each loop, so nothing writes to a closed database and nothing is
//! left half-recorded.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// A loop's view of the stop signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stop: watch::Receiver<bool>,
}

impl Shutdown {
    /// Resolves once the daemon is stopping (at once if it already is).
    pub async fn requested(&mut self) {
        // An error means the sender is gone, which is a stop as well.
        let _ = self.stop.wait_for(|stop| *stop).await;
    }

    /// Whether the daemon is stopping.
    pub fn is_requested(&self) -> bool {
        *self.stop.borrow()
    }
}

/// The daemon's background loops, stopped together.
#[derive(Debug)]
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: JoinSet<&'static str>,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            stop: watch::Sender::new(false),
            tasks: JoinSet::new(),
        }
    }
}

impl Background {
    /// A signal for a loop to watch.
    pub fn signal(&self) -> Shutdown {
        Shutdown {
            stop: self.stop.subscribe(),
        }
    }

    /// Runs `task` (which must return once its [`Shutdown`] fires) until
    /// [`Background::stop`]; `name` is for the log.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(async move {
            task.await;
            name
        });
    }

    /// Fires the signal and waits for every loop, up to `limit`; a loop
    /// still running then is named in the log and aborted.
    pub async fn stop(mut self, limit: Duration) {
        self.stop.send_replace(true);
        let waited = tokio::time::timeout(limit, async {
            while let Some(done) = self.tasks.join_next().await {
                match done {
                    Ok(name) => tracing::debug!(task = name, "background task stopped"),
                    Err(e) => tracing::warn!(error = %e, "a background task failed"),
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                tasks = self.tasks.len(),
                limit_s = limit.as_secs(),
                "background tasks still running at the stop limit; aborted"
            );
            self.tasks.abort_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_loop_sees_the_signal_and_is_waited_for() {
        let mut background = Background::default();
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..3 {
            let mut shutdown = background.signal();
            let finished = finished.clone();
            background.spawn("test loop", async move {
                shutdown.requested().await;
                // The unit of work in hand is finished before returning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let late = background.signal();
        background.stop(Duration::from_secs(5)).await;
        assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(late.is_requested());
    }

    #[tokio::test]
    async fn a_loop_that_ignores_the_signal_is_aborted_at_the_limit() {
        let mut background = Background::default();
        background.spawn("stuck", std::future::pending());
        let started = std::time::Instant::now();
        background.stop(Duration::from_millis(50)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
