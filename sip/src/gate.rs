//! The gate every datagram passes before the SIP stack sees it: source ACL,
//! message checks, and the per-source INVITE rate limit.
//!
//! Sans-IO: [`Gate::inspect`] takes the bytes and their source and returns
//! a [`Verdict`]; the socket wrapper around it sends what it says. So the
//! whole policy is tested without sockets.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::acl::Acl;
use crate::wire::{self, Kind, Limits};

/// What to do with a request from a source no trunk allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSourcePolicy {
    /// Send nothing (do not confirm we exist).
    Drop,
    /// Answer 403 Forbidden.
    Reject,
}

/// The gate's rules; replaced as a whole on config reload.
#[derive(Debug, Clone)]
pub struct GateRules {
    /// Which sources belong to which trunk.
    pub acl: Acl,
    /// What unknown sources get.
    pub unknown_source: UnknownSourcePolicy,
    /// Size limits.
    pub limits: Limits,
    /// Where experts' softphones may be (`registrar.allow`): from these
    /// sources REGISTER, responses and requests within a dialog pass, never
    /// a new INVITE (a softphone is called, it does not call in).
    pub registrar: Vec<ipnet::IpNet>,
}

impl GateRules {
    /// Whether `source` is in `registrar.allow`.
    fn is_registrar_source(&self, source: IpAddr) -> bool {
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        self.registrar.iter().any(|net| net.contains(&source))
    }
}

/// The "trunk" of what passes from a registrar source: none.
const NO_TRUNK: &str = "";

/// What to do with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the SIP stack; it came from this trunk.
    Pass {
        /// The trunk the source belongs to (shared, not copied per datagram).
        trunk: Arc<str>,
    },
    /// Send `bytes` to `target` and do nothing else.
    Reply {
        /// The response.
        bytes: Vec<u8>,
        /// Where it goes.
        target: SocketAddr,
        /// Why, for counters and logs.
        reason: DropReason,
    },
    /// Do nothing at all.
    Drop(DropReason),
}

/// Why a datagram did not reach the SIP stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The source is in no trunk's allow list.
    UnknownSource,
    /// The message failed the checks in [`wire`].
    Malformed(&'static str),
    /// The source opened transactions (INVITE, OPTIONS, ...) faster than
    /// its quota.
    RateLimited,
    /// A request whose method we do not know (answered 405 with `Allow`).
    UnknownMethod,
}

/// Counters of what the gate turned away, for metrics.
#[derive(Debug, Default)]
pub struct GateStats {
    /// Datagrams from sources no trunk allows.
    pub unknown_source: AtomicU64,
    /// Malformed messages.
    pub malformed: AtomicU64,
    /// New requests over the per-source rate.
    pub rate_limited: AtomicU64,
    /// TCP connections over the per-source limit.
    pub connection_limit: AtomicU64,
    /// Requests with a method we do not know.
    pub unknown_method: AtomicU64,
}

type Limiter<C> =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The gate: rules, a per-source INVITE limiter and counters.
pub struct Gate<C: Clock = DefaultClock> {
    rules: arc_swap::ArcSwap<GateRules>,
    invites: Limiter<C>,
    clock: C,
    /// What it turned away.
    pub stats: GateStats,
}

/// The methods we handle, for `Allow` (in 405s and OPTIONS answers).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS";

/// [`ALLOW`], with REGISTER when the registrar takes it.
pub fn allow(registrar: bool) -> &'static str {
    if registrar {
        "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER"
    } else {
        ALLOW
    }
}

/// Whether the SIP stack knows `method` (a method it does not know makes
/// its parser refuse the whole message).
fn is_known_method(method: &str) -> bool {
    rsipstack::sip::Method::all()
        .iter()
        .any(|known| known.to_string().eq_ignore_ascii_case(method))
}

impl Gate<DefaultClock> {
    /// A gate on the real clock, allowing `invites_per_second` new INVITEs
    /// per source (bursts of twice that).
    pub fn new(rules: GateRules, invites_per_second: NonZeroU32) -> Self {
        Gate::with_clock(rules, invites_per_second, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Gate<C> {
    /// A gate on `clock` (tests pass a fake one).
    pub fn with_clock(rules: GateRules, invites_per_second: NonZeroU32, clock: C) -> Self {
        let burst = invites_per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        let quota = Quota::per_second(invites_per_second).allow_burst(burst);
        Gate {
            rules: arc_swap::ArcSwap::from_pointee(rules),
            invites: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()),
            clock,
            stats: GateStats::default(),
        }
    }

    /// Replaces the rules (config reload); the next datagram uses them.
    pub fn set_rules(&self, rules: GateRules) {
        self.rules.store(Arc::new(rules));
    }

    /// Forgets rate-limit state of sources that are back under their
    /// quota, so the table stays as small as the set of busy sources.
    pub fn forget_idle_sources(&self) {
        self.invites.retain_recent();
    }

    /// Whether a connection from `source` may be opened at all: a trunk's,
    /// or a softphone's in `registrar.allow` (each message is checked too).
    pub fn admits_connection(&self, source: IpAddr) -> bool {
        let rules = self.rules.load();
        rules.acl.trunk_for(source).is_some() || rules.is_registrar_source(source)
    }

    /// The trunk whose ACL allows `source`, if any (for connection-oriented
    /// transports, checked when the connection is accepted).
    pub fn trunk_for(&self, source: IpAddr) -> Option<String> {
        self.rules
            .load()
            .acl
            .trunk_for(source)
            .map(|t| t.to_string())
    }

    /// Decides what happens to `datagram` from `source`.
    pub fn inspect(&self, datagram: &[u8], source: SocketAddr) -> Verdict {
        match self.admit(datagram, source) {
            Ok((trunk, _)) => Verdict::Pass { trunk },
            Err(verdict) => verdict,
        }
    }

    /// [`Gate::inspect`], keeping the message the stack's parser made of
    /// what passes (the TCP path hands it on instead of parsing again).
    pub(crate) fn admit(
        &self,
        datagram: &[u8],
        source: SocketAddr,
    ) -> Result<(Arc<str>, rsipstack::sip::SipMessage), Verdict> {
        let rules = self.rules.load();
        let trunk = match rules.acl.trunk_for(source.ip()) {
            Some(trunk) => Some(trunk.clone()),
            None if rules.is_registrar_source(source.ip())
                && wire::check(datagram, rules.limits)
                    .is_ok_and(|checked| from_a_softphone(&checked)) =>
            {
                Some(Arc::from(NO_TRUNK))
            }
            None => None,
        };
        let Some(trunk) = trunk else {
            self.stats.unknown_source.fetch_add(1, Ordering::Relaxed);
            if rules.unknown_source == UnknownSourcePolicy::Reject
                && let Ok(checked) = wire::check(datagram, rules.limits)
                && let Some(bytes) = wire::reply_to(datagram, 403, "Forbidden", &[])
            {
                return Err(Verdict::Reply {
                    bytes,
                    target: checked.top_via.response_target(source),
                    reason: DropReason::UnknownSource,
                });
            }
            return Err(Verdict::Drop(DropReason::UnknownSource));
        };
        let checked = match wire::check(datagram, rules.limits) {
            Ok(checked) => checked,
            Err(malformed) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                let reason = DropReason::Malformed(malformed.reason);
                return Err(match malformed.reply {
                    Some(reply) => Verdict::Reply {
                        target: reply.via.response_target(source),
                        bytes: reply.bytes,
                        reason,
                    },
                    None => Verdict::Drop(reason),
                });
            }
        };
        // Our checks are a floor, not a full grammar: what the stack's parser
        // would still refuse (an empty host in a URI, ...) is answered here
        // with a 400 instead of vanishing inside the stack.
        let Ok(parsed) = rsipstack::sip::SipMessage::try_from(datagram) else {
            // A method the stack has never heard of is not malformed: it
            // gets 405 with what we do allow (RFC 3261 §8.2.1).
            if let Kind::Request(method) = &checked.kind
                && !is_known_method(method)
                && let Some(bytes) =
                    wire::reply_to(datagram, 405, "Method Not Allowed", &[("Allow", ALLOW)])
            {
                self.stats.unknown_method.fetch_add(1, Ordering::Relaxed);
                return Err(Verdict::Reply {
                    bytes,
                    target: checked.top_via.response_target(source),
                    reason: DropReason::UnknownMethod,
                });
            }
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            let reason = DropReason::Malformed("Unparseable Message");
            return Err(
                match wire::reply_to(datagram, 400, "Unparseable Message", &[]) {
                    Some(bytes) => Verdict::Reply {
                        bytes,
                        target: checked.top_via.response_target(source),
                        reason,
                    },
                    None => Verdict::Drop(reason),
                },
            );
        };
        // Every request that opens a transaction outside a dialog counts:
        // INVITE above all, but an OPTIONS flood holds transactions too.
        // CANCEL and ACK belong to an INVITE already admitted.
        let opens_transaction =
            matches!(&checked.kind, Kind::Request(m) if m != "ACK" && m != "CANCEL");
        if opens_transaction
            && !checked.has_to_tag()
            && let Err(not_until) = self.invites.check_key(&source.ip())
        {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            let wait = not_until.wait_time_from(self.clock.now());
            let retry_after = wait.max(Duration::from_secs(1)).as_secs().to_string();
            return Err(
                match wire::reply_to(
                    datagram,
                    503,
                    "Service Unavailable",
                    &[("Retry-After", &retry_after)],
                ) {
                    Some(bytes) => Verdict::Reply {
                        bytes,
                        target: checked.top_via.response_target(source),
                        reason: DropReason::RateLimited,
                    },
                    None => Verdict::Drop(DropReason::RateLimited),
                },
            );
        }
        Ok((trunk, parsed))
    }
}

/// What a softphone (a source in `registrar.allow`, not a trunk) may send:
/// REGISTER, OPTIONS (its keep-alive), responses (to the INVITEs and
/// OPTIONS we send it), and requests within a dialog (BYE, ACK and
/// re-INVITEs carry a To tag). Never a new INVITE: calls come in through
/// a trunk only.
fn from_a_softphone(checked: &wire::Checked) -> bool {
    match &checked.kind {
        Kind::Response(_) => true,
        Kind::Request(method) => {
            matches!(method.as_str(), "REGISTER" | "OPTIONS") || checked.has_to_tag()
        }
    }
}

#[cfg(test)]
mod tests;
