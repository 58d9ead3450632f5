//! What the registrar remembers of each source address, sans-IO: how many
//! REGISTERs it sent this minute (the rate limit) and how many of them
//! failed authentication (the lockout). Time comes in as Unix ms.
//!
//! Kept per node, in memory: a guessing attacker behind a dispatcher that
//! spreads its REGISTERs over N nodes gets N times the attempts, which the
//! lockout's length still makes hopeless against a 12-character password.

use std::collections::HashMap;
use std::net::IpAddr;

/// A minute, the rate limit's window.
const WINDOW_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, Default)]
struct Source {
    /// When its current minute began, and the REGISTERs in it.
    window_ms: i64,
    registers: u32,
    /// Failed attempts since the last success, and when the first was.
    failures: u32,
    first_failure_ms: i64,
    /// Refused until then.
    locked_until_ms: i64,
}

/// The registrar's memory of sources.
#[derive(Debug, Default)]
pub struct Guard {
    sources: HashMap<IpAddr, Source>,
}

/// What the guard says of a REGISTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go on.
    Admit,
    /// Over `registers_per_minute`: try again in this many seconds.
    RateLimited(u32),
    /// Locked out after failed attempts, for this many more seconds.
    LockedOut(u32),
}

impl Guard {
    /// Counts a REGISTER from `source` and says whether it may be looked
    /// at.
    pub fn admit(&mut self, source: IpAddr, per_minute: u32, now_ms: i64) -> Admission {
        let entry = self.sources.entry(source).or_default();
        if entry.locked_until_ms > now_ms {
            return Admission::LockedOut(seconds(entry.locked_until_ms - now_ms));
        }
        if entry.registers == 0 || now_ms - entry.window_ms >= WINDOW_MS {
            entry.window_ms = now_ms;
            entry.registers = 0;
        }
        entry.registers += 1;
        if entry.registers > per_minute {
            return Admission::RateLimited(seconds(entry.window_ms + WINDOW_MS - now_ms));
        }
        Admission::Admit
    }

    /// Counts a failed authentication from `source`: true when this one
    /// locks it out (`max` failures within `lockout_ms`).
    pub fn failed(&mut self, source: IpAddr, max: u32, lockout_ms: i64, now_ms: i64) -> bool {
        let entry = self.sources.entry(source).or_default();
        if now_ms - entry.first_failure_ms > lockout_ms {
            entry.failures = 0;
        }
        if entry.failures == 0 {
            entry.first_failure_ms = now_ms;
        }
        entry.failures += 1;
        if entry.failures >= max {
            entry.failures = 0;
            entry.locked_until_ms = now_ms + lockout_ms;
            return true;
        }
        false
    }

    /// A success: its failures are forgiven.
    pub fn succeeded(&mut self, source: IpAddr) {
        if let Some(entry) = self.sources.get_mut(&source) {
            entry.failures = 0;
        }
    }

    /// Forgets sources with nothing left to remember at `now_ms`.
    pub fn forget_idle(&mut self, lockout_ms: i64, now_ms: i64) {
        self.sources.retain(|_, s| {
            s.locked_until_ms > now_ms
                || (s.registers > 0 && now_ms - s.window_ms < WINDOW_MS)
                || (s.failures > 0 && now_ms - s.first_failure_ms <= lockout_ms)
        });
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// Whole seconds, at least one.
fn seconds(ms: i64) -> u32 {
    u32::try_from((ms + 999) / 1000).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));

    #[test]
    fn a_source_over_its_rate_waits_for_the_next_minute() {
        let mut guard = Guard::default();
        for i in 0..3 {
            assert_eq!(guard.admit(A, 3, 1_000 + i), Admission::Admit);
        }
        assert_eq!(guard.admit(A, 3, 11_000), Admission::RateLimited(50));
        assert_eq!(guard.admit(B, 3, 11_000), Admission::Admit, "per source");
        assert_eq!(guard.admit(A, 3, 61_000), Admission::Admit);
    }

    #[test]
    fn repeated_failures_lock_a_source_out_and_a_success_forgives() {
        let mut guard = Guard::default();
        let lockout = 900_000;
        assert!(!guard.failed(A, 3, lockout, 0));
        assert!(!guard.failed(A, 3, lockout, 1_000));
        guard.succeeded(A);
        assert!(!guard.failed(A, 3, lockout, 2_000), "forgiven");
        assert!(!guard.failed(A, 3, lockout, 3_000));
        assert!(guard.failed(A, 3, lockout, 4_000), "the third in a row");
        assert_eq!(guard.admit(A, 100, 5_000), Admission::LockedOut(899));
        assert_eq!(guard.admit(B, 100, 5_000), Admission::Admit);
        assert_eq!(guard.admit(A, 100, 904_000), Admission::Admit, "served");
        // Failures spread wider than the lockout do not add up.
        assert!(!guard.failed(B, 2, 1_000, 0));
        assert!(!guard.failed(B, 2, 1_000, 5_000));
    }

    #[test]
    fn idle_sources_are_forgotten() {
        let mut guard = Guard::default();
        guard.admit(A, 10, 0);
        guard.failed(B, 5, 1_000, 0);
        assert_eq!(guard.len(), 2);
        guard.forget_idle(1_000, 30_000);
        assert_eq!(guard.len(), 1, "A's minute is not over");
        guard.forget_idle(1_000, 61_000);
        assert!(guard.is_empty());
    }
}
