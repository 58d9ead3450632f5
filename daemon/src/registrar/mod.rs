//! The registrar (RFC 3261 §10.3): experts' softphones REGISTER with
//! digest authentication against the HA1 of their account, and the
//! devices they bind are kept in the ledger (so a call on any node rings
//! them). Each REGISTER is checked in this order: its source against
//! `registrar.allow` (the gate did too; a reload may have narrowed it),
//! the source's rate and lockout ([`guard`]), its Contacts, then the digest
//! (a fresh nonce, the realm, the password, no replay, and its own
//! account's address-of-record), then the bindings' lifetimes, and only
//! then the ledger. Every refusal is counted by reason.
//!
//! The SIP of it (reading the request, the answers) is the edge's
//! [`RegisterRequest`]; the digest arithmetic and nonces are
//! `tollbridge_sip::digest`'s. Keep-alives toward the devices registered
//! through this node run in [`keep_alive_loop`].

pub mod guard;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tollbridge_config::Config;
use tollbridge_sip::digest::{Credentials, NonceCheck, Nonces, challenge};
use tollbridge_sip::edge::{RegisterContacts, RegisterRequest, SipEdge};

use crate::clock::now_ms;
use crate::ledger::{Device, RegisterRefused, Registering};
use crate::shutdown::Shutdown;
use crate::state::Shared;
use guard::{Admission, Guard};

/// The realm experts' passwords are hashed in: `registrar.realm`, else
/// `sip.public_address`'s host, else `tollbridge`.
pub fn realm_of(config: &Config) -> String {
    config
        .registrar
        .realm
        .clone()
        .or_else(|| config.sip.public_address.as_ref().map(|p| p.host.clone()))
        .unwrap_or_else(|| "tollbridge".to_owned())
}

/// The registrar of one node.
pub struct Registrar {
    shared: Arc<Shared>,
    nonces: Nonces,
    guard: Mutex<Guard>,
}

/// How a REGISTER ended, for the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Registered,
    Challenged,
    Refused(&'static str),
}

impl Registrar {
    /// A registrar whose nonces are keyed by `secret` (the ledger's,
    /// shared by the nodes).
    pub fn new(shared: Arc<Shared>, secret: &[u8]) -> Registrar {
        let lifetime = shared.config.load().registrar.nonce_lifetime;
        Registrar {
            nonces: Nonces::new(
                secret,
                u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
            ),
            shared,
            guard: Mutex::new(Guard::default()),
        }
    }

    /// Answers every REGISTER the edge hands over, each in its own task,
    /// until the edge stops.
    pub async fn serve(self: Arc<Self>, mut registers: mpsc::Receiver<RegisterRequest>) {
        while let Some(request) = registers.recv().await {
            let registrar = self.clone();
            tokio::spawn(async move { registrar.handle(request).await });
        }
    }

    fn with_guard<T>(&self, f: impl FnOnce(&mut Guard) -> T) -> Option<T> {
        self.guard.lock().ok().map(|mut guard| f(&mut guard))
    }

    async fn handle(&self, request: RegisterRequest) {
        let outcome = self.decide(request).await;
        let word = match outcome {
            Outcome::Registered => "registered",
            Outcome::Challenged => "challenged",
            Outcome::Refused(why) => why,
        };
        self.shared.metrics.register_answered(word);
    }

    /// A failed authentication: counted, and the source locked out at the
    /// limit.
    fn failed(&self, request: &RegisterRequest, reason: &'static str, config: &Config) {
        self.shared.metrics.register_auth_failed(reason);
        let settings = &config.registrar;
        let lockout = i64::try_from(settings.lockout.as_millis()).unwrap_or(i64::MAX);
        let locked = self
            .with_guard(|g| {
                g.failed(
                    request.source.ip(),
                    settings.max_failures,
                    lockout,
                    now_ms(),
                )
            })
            .unwrap_or(false);
        tracing::warn!(source = %request.source, user = %request.user, reason, locked, "REGISTER failed authentication");
        if locked {
            self.shared.metrics.register_lockout();
        }
    }

    async fn decide(&self, request: RegisterRequest) -> Outcome {
        let config = self.shared.config.load_full();
        let settings = &config.registrar;
        let now = now_ms();
        let source = request.source.ip();
        if !settings.allow.iter().any(|net| net.contains(&source)) {
            request.forbid().await;
            return Outcome::Refused("source-not-allowed");
        }
        let admission = self
            .with_guard(|g| g.admit(source, settings.registers_per_minute, now))
            .unwrap_or(Admission::Admit);
        match admission {
            Admission::Admit => {}
            Admission::RateLimited(wait) => {
                request.slow_down(wait).await;
                return Outcome::Refused("rate-limited");
            }
            Admission::LockedOut(_) => {
                request.forbid().await;
                return Outcome::Refused("locked-out");
            }
        }
        let contacts = match &request.contacts {
            Ok(contacts) => contacts.clone(),
            Err(e) => {
                tracing::info!(source = %request.source, error = %e, "REGISTER with unreadable Contacts");
                request.bad_request().await;
                return Outcome::Refused("bad-request");
            }
        };
        let realm = realm_of(&config);
        let now_u = u64::try_from(now).unwrap_or(0);
        let Some(header) = request.authorization.clone() else {
            let nonce = self.nonces.issue(&realm, now_u);
            request.challenge(challenge(&realm, &nonce, false)).await;
            return Outcome::Challenged;
        };
        let credentials = match Credentials::parse(&header) {
            Ok(credentials) if credentials.realm == realm => credentials,
            Ok(_) => {
                // Answering another realm's challenge: challenge again.
                let nonce = self.nonces.issue(&realm, now_u);
                request.challenge(challenge(&realm, &nonce, false)).await;
                return Outcome::Challenged;
            }
            Err(e) => {
                self.failed(&request, "malformed", &config);
                tracing::info!(error = %e, "REGISTER with an Authorization we cannot check");
                let nonce = self.nonces.issue(&realm, now_u);
                request.challenge(challenge(&realm, &nonce, false)).await;
                return Outcome::Challenged;
            }
        };
        match self.nonces.check(&credentials.nonce, &realm, now_u) {
            NonceCheck::Fresh => {}
            NonceCheck::Stale => {
                let nonce = self.nonces.issue(&realm, now_u);
                request.challenge(challenge(&realm, &nonce, true)).await;
                return Outcome::Challenged;
            }
            NonceCheck::Forged => {
                self.failed(&request, "forged-nonce", &config);
                let nonce = self.nonces.issue(&realm, now_u);
                request.challenge(challenge(&realm, &nonce, false)).await;
                return Outcome::Challenged;
            }
        }
        let account = match self
            .shared
            .ledger
            .credentials(credentials.username.clone())
            .await
        {
            Ok(account) => account,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the expert's account for a REGISTER");
                request.retry_later(5).await;
                return Outcome::Refused("ledger-unavailable");
            }
        };
        let Some((expert, stored_realm, ha1)) = account else {
            self.failed(&request, "unknown-user", &config);
            request.forbid().await;
            return Outcome::Refused("unauthorized");
        };
        if stored_realm != realm {
            tracing::warn!(expert = %expert, stored_realm = %stored_realm, realm = %realm, "the expert's password was set for another realm (registrar.realm changed?); set it again with PATCH /v1/experts");
            self.failed(&request, "realm-changed", &config);
            request.forbid().await;
            return Outcome::Refused("unauthorized");
        }
        if !credentials.proves(&ha1, "REGISTER") {
            self.failed(&request, "wrong-password", &config);
            request.forbid().await;
            return Outcome::Refused("unauthorized");
        }
        if let Some(count) = credentials.nonce_count()
            && !self.nonces.first_use(&credentials.nonce, count, now_u)
        {
            self.failed(&request, "replay", &config);
            let nonce = self.nonces.issue(&realm, now_u);
            request.challenge(challenge(&realm, &nonce, false)).await;
            return Outcome::Challenged;
        }
        if request.user != credentials.username {
            self.failed(&request, "another-account", &config);
            request.forbid().await;
            return Outcome::Refused("unauthorized");
        }
        self.with_guard(|g| g.succeeded(source));
        self.bind(request, expert, contacts, &config, now).await
    }

    /// Applies an authenticated REGISTER's bindings and answers it.
    async fn bind(
        &self,
        request: RegisterRequest,
        expert: String,
        contacts: RegisterContacts,
        config: &Config,
        now: i64,
    ) -> Outcome {
        let settings = &config.registrar;
        let (min, max) = (
            settings.min_expires.as_secs(),
            settings.max_expires.as_secs(),
        );
        let contacts = match contacts {
            RegisterContacts::Query => Some(Vec::new()),
            RegisterContacts::All if request.expires == Some(0) => None,
            RegisterContacts::All => {
                // RFC 3261 §10.3 step 6: `*` only with Expires: 0.
                request.bad_request().await;
                return Outcome::Refused("bad-request");
            }
            RegisterContacts::Bindings(bindings) => {
                let mut asked = Vec::new();
                for binding in bindings {
                    let seconds = u64::from(binding.expires.or(request.expires).unwrap_or(3_600));
                    if seconds != 0 && seconds < min {
                        request
                            .too_brief(u32::try_from(min).unwrap_or(u32::MAX))
                            .await;
                        return Outcome::Refused("interval-too-brief");
                    }
                    let seconds = i64::try_from(seconds.min(max)).unwrap_or(i64::MAX);
                    asked.push((binding.uri, seconds));
                }
                Some(asked)
            }
        };
        let registering = Registering {
            expert: expert.clone(),
            received: request.source.to_string(),
            transport: match request.transport {
                tollbridge_sip::edge::Transport::Tcp => "tcp",
                tollbridge_sip::edge::Transport::Tls => "tls",
                tollbridge_sip::edge::Transport::Udp => "udp",
            }
            .to_owned(),
            call_id: request.call_id.clone(),
            cseq: i64::from(request.cseq),
            user_agent: request.user_agent.clone(),
            contacts,
            max_devices: i64::from(settings.max_devices),
        };
        match self.shared.ledger.register(registering, now).await {
            Ok(Ok(devices)) => {
                tracing::info!(expert = %expert, source = %request.source, devices = devices.len(), "registered");
                request.accept(&remaining(&devices, now)).await;
                Outcome::Registered
            }
            Ok(Err(RegisterRefused::OutOfOrder(cseq, applied))) => {
                tracing::info!(expert = %expert, cseq, applied, "REGISTER out of order");
                request.retry_later(1).await;
                Outcome::Refused("out-of-order")
            }
            Ok(Err(RegisterRefused::TooManyDevices(devices))) => {
                tracing::warn!(expert = %expert, devices, "REGISTER refused: registrar.max_devices reached");
                request.forbid().await;
                Outcome::Refused("too-many-devices")
            }
            Ok(Err(RegisterRefused::NoExpert)) => {
                request.forbid().await;
                Outcome::Refused("unauthorized")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store a REGISTER's bindings");
                request.retry_later(5).await;
                Outcome::Refused("ledger-unavailable")
            }
        }
    }

    /// Forgets idle sources; run every minute.
    fn tidy(&self) {
        let lockout = self.shared.config.load().registrar.lockout;
        let lockout = i64::try_from(lockout.as_millis()).unwrap_or(i64::MAX);
        self.with_guard(|g| g.forget_idle(lockout, now_ms()));
    }
}

/// Each device's Contact and the seconds its binding has left.
fn remaining(devices: &[Device], now: i64) -> Vec<(String, u32)> {
    devices
        .iter()
        .map(|d| {
            let left = (d.expires_ms - now).max(0) / 1000;
            (d.contact.clone(), u32::try_from(left).unwrap_or(u32::MAX))
        })
        .collect()
}

/// Keeps the NAT mappings (or TCP connections) of the devices registered
/// through this node open (an OPTIONS each `registrar.keepalive`), forgets lapsed
/// bindings, and tidies the registrar's memory, until the daemon stops.
pub async fn keep_alive_loop(
    registrar: Arc<Registrar>,
    edge: Arc<SipEdge>,
    mut shutdown: Shutdown,
) {
    loop {
        let every = registrar.shared.config.load().registrar.keepalive;
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(every) => {}
        }
        registrar.tidy();
        let ledger = &registrar.shared.ledger;
        if let Err(e) = ledger.expire_devices(now_ms()).await {
            tracing::debug!(error = %e, "cannot forget lapsed registrations");
        }
        let devices = match ledger.devices_through_this_node(now_ms()).await {
            Ok(devices) => devices,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the devices to keep alive");
                continue;
            }
        };
        let pings = devices.into_iter().filter_map(|device| {
            let address = device.received.parse().ok()?;
            let edge = edge.clone();
            let transport = match device.transport.as_str() {
                "tcp" => tollbridge_sip::edge::Transport::Tcp,
                "tls" => tollbridge_sip::edge::Transport::Tls,
                _ => tollbridge_sip::edge::Transport::Udp,
            };
            Some(async move {
                let answered = edge.keep_alive(&device.contact, address, transport).await;
                if !answered {
                    tracing::debug!(contact = %device.contact, %address, "a registered device did not answer its keep-alive");
                }
            })
        });
        // At most a keep-alive interval's worth of waiting: 5 s each, at once.
        let _ = tokio::time::timeout(
            every.max(Duration::from_secs(6)),
            futures_util::future::join_all(pings),
        )
        .await;
    }
}
