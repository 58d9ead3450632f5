//! When to send a Stripe request again, sans-IO: an attempt's outcome in,
//! "again after this long" or "stop" out.
//!
//! Stripe's rules: connection errors, timeouts, 409 (the same key in
//! flight), 429 (rate limit, lock timeout) and 5xx are retried with the same
//! idempotency key (a stored 5xx is replayed, so the retry tells the
//! truth); `Stripe-Should-Retry: false` stops, `true` retries; every other
//! 4xx is final. Back-off doubles from `base` up to `max`, with jitter so
//! many calls ending together do not retry in step.

use std::time::Duration;

/// How one attempt ended, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// No HTTP status: the connection failed or the attempt timed out.
    NoResponse,
    /// An HTTP error status, with `Stripe-Should-Retry` when it was sent.
    Status {
        /// The status code.
        code: u16,
        /// The `Stripe-Should-Retry` header.
        should_retry: Option<bool>,
    },
}

/// The retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The first back-off.
    pub base: Duration,
    /// The longest back-off.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(250),
            max: Duration::from_secs(8),
        }
    }
}

/// Whether an attempt that ended this way may be sent again.
pub fn retryable(attempt: Attempt) -> bool {
    match attempt {
        Attempt::NoResponse => true,
        Attempt::Status {
            should_retry: Some(answer),
            ..
        } => answer,
        Attempt::Status { code, .. } => matches!(code, 409 | 429 | 500..=599),
    }
}

impl RetryPolicy {
    /// How long to wait before attempt number `done + 1` after `done`
    /// attempts ended as `last`; `None` to stop. `jitter` is any number
    /// (a clock's nanoseconds will do): it spreads the wait over its
    /// upper half.
    pub fn next_delay(&self, done: u32, last: Attempt, jitter: u64) -> Option<Duration> {
        if done >= self.attempts || !retryable(last) {
            return None;
        }
        let exponent = done.saturating_sub(1).min(16);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.max);
        let half = ceiling / 2;
        let spread = half.as_micros() as u64;
        let extra = if spread == 0 { 0 } else { jitter % spread };
        Some(half + Duration::from_micros(extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Attempt {
        Attempt::Status {
            code,
            should_retry: None,
        }
    }

    #[test]
    fn what_is_retried() {
        let table = [
            (Attempt::NoResponse, true),
            (status(409), true),
            (status(429), true),
            (status(500), true),
            (status(503), true),
            (status(400), false),
            (status(401), false),
            (status(402), false),
            (status(404), false),
            (
                Attempt::Status {
                    code: 500,
                    should_retry: Some(false),
                },
                false,
            ),
            (
                Attempt::Status {
                    code: 400,
                    should_retry: Some(true),
                },
                true,
            ),
        ];
        for (attempt, expected) in table {
            assert_eq!(retryable(attempt), expected, "{attempt:?}");
        }
    }

    #[test]
    fn back_off_doubles_with_jitter_up_to_the_cap_and_stops() {
        let policy = RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let ceilings = [100u64, 200, 400, 800, 1000];
        for (done, ceiling) in (1..=5).zip(ceilings) {
            for jitter in [0u64, 1, 12_345, u64::MAX] {
                let delay = policy.next_delay(done, status(503), jitter).unwrap();
                let ceiling = Duration::from_millis(ceiling);
                assert!(delay >= ceiling / 2 && delay < ceiling, "{done}: {delay:?}");
            }
        }
        assert_eq!(
            policy.next_delay(6, status(503), 0),
            None,
            "attempts used up"
        );
        assert_eq!(policy.next_delay(1, status(402), 0), None, "final");
    }
}
