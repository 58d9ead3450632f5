//! Outbound legs: an INVITE we place to the expert, through a trunk's
//! termination URI (a phone number) or to a plain SIP URI (a softphone).
//!
//! Rules kept for Twilio termination: the host name stays in the
//! Request-URI while we send to its resolved addresses, trying the next
//! address after 4 s without any response; `Max-Forwards: 70`; From is the
//! configured caller ID; 401/407 challenges are answered once each with the
//! trunk's credentials (same Call-ID, CSeq + 1); calls per second are
//! limited per trunk by queueing briefly instead of sending into a 503; a
//! request too large for one UDP datagram goes over TCP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::sip::Header;
use rsipstack::transport::SipAddr;

use super::inbound::Reoffer;
use super::leg::Leg;
use super::{EdgeError, Transport};

/// How long a peer may stay silent (not even 100 Trying) before the next
/// resolved address is tried; Twilio's own origination uses the same 4 s.
pub const SILENCE_BEFORE_NEXT_ADDRESS: Duration = Duration::from_secs(4);

/// The most we wait in the per-trunk calls-per-second queue.
pub const CPS_QUEUE_LIMIT: Duration = Duration::from_secs(5);

/// Above this many bytes a UAC request goes over TCP, not UDP (RFC 3261
/// §18.1.1 uses the path MTU minus 200; 1,300 is its usual value).
pub const UDP_REQUEST_LIMIT: usize = 1300;

/// What a digest answer adds to a challenged INVITE besides the
/// Request-URI and user name it repeats: the header name, realm, nonce,
/// opaque, cnonce, response and the fixed parameters (Twilio's realm and
/// nonce are well under 64 bytes each; this leaves room to spare).
const DIGEST_OVERHEAD: usize = 400;

/// What [`SipEdge::place_call`](super::SipEdge::place_call) should dial.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The Request-URI, e.g. `sip:+81312345678@acme.pstn.twilio.com` or
    /// `sip:expert@192.0.2.10:5070`.
    pub request_uri: String,
    /// The user part of our From: the caller ID for a trunk.
    pub from_user: String,
    /// Our SDP offer.
    pub offer: Vec<u8>,
    /// Digest credentials (user name, password) for 401/407 challenges.
    pub credentials: Option<(String, String)>,
    /// The trunk this call goes through and its calls-per-second limit
    /// (Twilio's default is 1 per trunk per region); `None` for a plain URI.
    pub trunk: Option<(String, NonZeroU32)>,
    /// Force a transport; `None` picks UDP, or TCP for a large request.
    pub transport: Option<Transport>,
}

/// What happened on an outbound leg.
#[derive(Debug)]
pub enum OutboundEvent {
    /// 180, or 183 with early media SDP.
    Ringing {
        /// The early media answer, when the provisional carried SDP.
        early_media: Option<Vec<u8>>,
    },
    /// 200: the callee answered with this SDP (we have ACKed).
    Answered {
        /// Their SDP answer.
        answer: Vec<u8>,
    },
    /// A final failure response (busy, declined, unavailable...).
    Failed {
        /// The status code.
        code: u16,
        /// Twilio's `X-Twilio-Error` on it, when present: the reason of a
        /// refusal by the trunk itself (10001: the account is inactive;
        /// 32204: the From number is not allowed), which wants an operator.
        twilio_error: Option<String>,
    },
    /// The callee hung up (BYE).
    HungUp,
    /// The callee sent a re-INVITE.
    Reoffer(Reoffer),
    /// The leg ended for another reason (timeout, cancel, transport).
    Ended(String),
}

/// What an `X-Twilio-Error` code on a refused INVITE means when it is the
/// operator's to fix, not the callee's: the account is inactive (10001),
/// or our From is not a number Twilio lets this account use (32204).
pub fn twilio_error_for_operator(code: &str) -> Option<&'static str> {
    match code {
        "10001" => Some(
            "Twilio refused the call: the account is inactive (Twilio error 10001); no expert can be reached through this trunk until it is reactivated",
        ),
        "32204" => Some(
            "Twilio refused our caller ID (Twilio error 32204): the From number must be a Twilio number or a verified caller ID of the account",
        ),
        _ => None,
    }
}

/// The numeric code an `X-Twilio-Error` value starts with (at most 8
/// digits), so nothing else from the wire reaches records or metrics.
fn twilio_error_code(value: &str) -> Option<String> {
    let digits: String = value
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty() && digits.len() <= 8).then_some(digits)
}

/// Per-trunk calls-per-second limiters.
pub(crate) struct CpsLimiters {
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    queue_limit: Duration,
}

impl Default for CpsLimiters {
    fn default() -> Self {
        CpsLimiters::new(CPS_QUEUE_LIMIT)
    }
}

impl CpsLimiters {
    fn new(queue_limit: Duration) -> Self {
        CpsLimiters {
            limiters: Mutex::new(HashMap::new()),
            queue_limit,
        }
    }

    /// Waits for a slot on `trunk` (at `cps` calls per second), up to the
    /// queue limit.
    pub(crate) async fn acquire(&self, trunk: &str, cps: NonZeroU32) -> Result<(), EdgeError> {
        let limiter = {
            let mut limiters = self
                .limiters
                .lock()
                .map_err(|_| EdgeError::Stack("cps lock poisoned".into()))?;
            limiters
                .entry(trunk.to_owned())
                .or_insert_with(|| Arc::new(RateLimiter::direct(Quota::per_second(cps))))
                .clone()
        };
        tokio::time::timeout(self.queue_limit, limiter.until_ready())
            .await
            .map_err(|_| EdgeError::CpsQueueFull(trunk.to_owned()))
    }
}

/// How long to wait for the INVITE transaction's result (its final
/// response) once the dialog has reported the failure it ended in.
const FINAL_RESPONSE_WAIT: Duration = Duration::from_millis(500);

/// One INVITE we placed and the dialog it made: a leg has one, or, when
/// it rings every device of an expert, one per device until one answers.
pub(crate) struct Branch {
    leg: Leg,
    /// The INVITE transaction, resolving to its final response; let go
    /// once the call is answered.
    invite: Option<rsipstack::platform::JoinHandle<InviteAsyncResult>>,
    /// Its SIP Call-ID.
    pub(crate) call_id: String,
}

impl Branch {
    /// The next event, or `None` once nothing more will happen.
    pub(crate) async fn next_event(&mut self) -> Option<OutboundEvent> {
        loop {
            // The state is dropped before the final response is awaited:
            // this future waits in every call's task for the whole call.
            let code = match self.leg.next_state().await? {
                DialogState::Early(_, response) => {
                    return Some(OutboundEvent::Ringing {
                        early_media: (!response.body.is_empty()).then_some(response.body),
                    });
                }
                DialogState::Confirmed(_, response) => {
                    // Answered: no final failure to read, and the INVITE
                    // task's result would be kept for the whole call.
                    self.invite = None;
                    return Some(OutboundEvent::Answered {
                        answer: response.body,
                    });
                }
                DialogState::Updated(_, request, handle) => {
                    return Some(OutboundEvent::Reoffer(Reoffer::new(request.body, handle)));
                }
                DialogState::Terminated(_, reason) => match reason {
                    TerminatedReason::UasBye => return Some(OutboundEvent::HungUp),
                    TerminatedReason::UasBusy => 486,
                    TerminatedReason::UasDecline => 603,
                    TerminatedReason::UasOther(code) | TerminatedReason::ProxyError(code) => {
                        code.code()
                    }
                    TerminatedReason::ProxyAuthRequired => 407,
                    other => return Some(OutboundEvent::Ended(format!("{other:?}"))),
                },
                _ => continue,
            };
            let twilio_error = self
                .final_response_header("X-Twilio-Error")
                .await
                .and_then(|value| twilio_error_code(&value));
            return Some(OutboundEvent::Failed { code, twilio_error });
        }
    }

    /// A header of the INVITE's final response, once the transaction has
    /// ended (briefly awaited: it ends with the response that ended the
    /// dialog).
    async fn final_response_header(&mut self, name: &str) -> Option<String> {
        let invite = self.invite.take()?;
        let (_, response) = tokio::time::timeout(FINAL_RESPONSE_WAIT, invite)
            .await
            .ok()?
            .ok()?
            .ok()?;
        super::header_value(&response?.headers, name)
    }

    /// What it takes to end this dialog after a restart.
    pub(crate) fn record(&self) -> super::DialogRecord {
        self.leg.record()
    }

    /// CANCEL while it rings, BYE once answered.
    pub(crate) async fn hang_up(&mut self) -> Result<(), EdgeError> {
        self.leg.end().await
    }
}

/// Control of one outbound leg.
pub struct OutboundLeg {
    /// The INVITE placed; while a fork rings, one of its devices' (the one
    /// that answered, once one has).
    pub(crate) main: Branch,
    /// The other devices of a fork still ringing.
    pub(crate) others: Vec<Branch>,
    /// How the fork stands, when the leg rang several devices.
    pub(crate) fork: Option<super::fork::Fork>,
    /// The SIP Call-ID, for the call record (the answering device's once
    /// one has answered).
    pub call_id: String,
}

impl std::fmt::Debug for OutboundLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundLeg")
            .field("call_id", &self.call_id)
            .field("ringing_too", &self.others.len())
            .finish()
    }
}

impl OutboundLeg {
    fn single(branch: Branch) -> OutboundLeg {
        OutboundLeg {
            call_id: branch.call_id.clone(),
            main: branch,
            others: Vec::new(),
            fork: None,
        }
    }

    /// The next event, or `None` once nothing more will happen.
    pub async fn next_event(&mut self) -> Option<OutboundEvent> {
        if self.fork.is_some() {
            // Boxed: only a ringing fork needs it, not an answered call.
            return Box::pin(self.next_forked_event()).await;
        }
        self.main.next_event().await
    }

    /// What it takes to end this leg's dialog after a restart; meaningful
    /// once it is answered.
    pub fn dialog_record(&self) -> super::DialogRecord {
        self.main.record()
    }

    /// Ends the leg: CANCEL while it rings (every device of a fork), BYE
    /// once answered.
    pub async fn hang_up(&mut self) -> Result<(), EdgeError> {
        for other in &mut self.others {
            if let Err(e) = other.hang_up().await {
                tracing::debug!(error = %e, call_id = %other.call_id, "cannot cancel a forked INVITE");
            }
        }
        self.main.hang_up().await
    }
}

/// The host a Request-URI names: the name a TLS peer's certificate must
/// carry.
pub(crate) fn target_host(request: &OutboundRequest) -> Result<String, EdgeError> {
    let callee = rsipstack::sip::Uri::try_from(request.request_uri.as_str())
        .map_err(|e| EdgeError::BadTarget(format!("{}: {e}", request.request_uri)))?;
    Ok(uri_target(&callee, Transport::Tls).0)
}

/// The host and port a Request-URI names (the port defaulting to 5060, or
/// 5061 for TLS).
pub(crate) fn uri_target(uri: &rsipstack::sip::Uri, transport: Transport) -> (String, u16) {
    let default = match transport {
        Transport::Tls => 5061,
        _ => 5060,
    };
    let port = uri
        .host_with_port
        .port
        .as_ref()
        .map_or(default, |p| p.value());
    let host = uri.host_with_port.host.to_string();
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    (host, port)
}

/// The transport a request goes over: as asked, else as its Request-URI's
/// `transport` parameter names, else UDP unless the
/// INVITE as the stack renders it (plus the digest answer a challenge
/// would add) is too large for one datagram.
pub(crate) fn transport_for(
    dialogs: &DialogLayer,
    contact: &rsipstack::sip::Uri,
    public_host: &str,
    request: &OutboundRequest,
) -> Result<Transport, EdgeError> {
    if let Some(transport) = request.transport {
        return Ok(transport);
    }
    let callee = rsipstack::sip::Uri::try_from(request.request_uri.as_str())
        .map_err(|e| EdgeError::BadTarget(format!("{}: {e}", request.request_uri)))?;
    // A termination URI may name its transport (`;transport=tls` for
    // Twilio's Secure Trunking).
    for param in &callee.params {
        if let rsipstack::sip::Param::Transport(named) = param {
            return match named {
                rsipstack::sip::transport::Transport::Udp => Ok(Transport::Udp),
                rsipstack::sip::transport::Transport::Tcp => Ok(Transport::Tcp),
                rsipstack::sip::transport::Transport::Tls => Ok(Transport::Tls),
                other => Err(EdgeError::BadTarget(format!(
                    "{}: transport {other} is not one we speak (udp, tcp, tls)",
                    request.request_uri
                ))),
            };
        }
    }
    let option = invite_option(request, contact, public_host, Transport::Udp, None)?;
    let rendered = dialogs
        .make_invite_request(&option)
        .map_err(|e| EdgeError::BadTarget(format!("{}: {e}", request.request_uri)))?
        .to_string()
        .len();
    Ok(if fits_a_datagram(rendered, request) {
        Transport::Udp
    } else {
        Transport::Tcp
    })
}

/// Whether an INVITE rendered in `rendered` bytes stays within
/// [`UDP_REQUEST_LIMIT`] even once a digest answer is added to it.
fn fits_a_datagram(rendered: usize, request: &OutboundRequest) -> bool {
    let digest = request.credentials.as_ref().map_or(0, |(user, _)| {
        DIGEST_OVERHEAD + user.len() + request.request_uri.len()
    });
    rendered + digest <= UDP_REQUEST_LIMIT
}

/// The INVITE for `request` over `transport` (to `address`, once known).
fn invite_option(
    request: &OutboundRequest,
    contact: &rsipstack::sip::Uri,
    public_host: &str,
    transport: Transport,
    address: Option<SocketAddr>,
) -> Result<InviteOption, EdgeError> {
    let callee = rsipstack::sip::Uri::try_from(request.request_uri.as_str())
        .map_err(|e| EdgeError::BadTarget(format!("{}: {e}", request.request_uri)))?;
    let caller =
        rsipstack::sip::Uri::try_from(format!("sip:{}@{public_host}", request.from_user).as_str())
            .map_err(|e| EdgeError::BadTarget(format!("caller {}: {e}", request.from_user)))?;
    let credential = request
        .credentials
        .as_ref()
        .map(|(username, password)| Credential {
            username: username.clone(),
            password: password.clone(),
            realm: None,
            auth_username: None,
        });
    Ok(InviteOption {
        caller,
        callee,
        destination: address.map(|address| SipAddr {
            r#type: Some(transport.on_stack()),
            addr: address.into(),
        }),
        content_type: Some("application/sdp".to_owned()),
        offer: Some(request.offer.clone()),
        contact: contact.clone(),
        credential,
        headers: Some(vec![Header::MaxForwards(70.into())]),
        // Our own host in the Call-ID, not the stack's default domain.
        call_id: Some(format!("{}@{public_host}", uuid::Uuid::now_v7().simple())),
        ..Default::default()
    })
}

/// Resolves the Request-URI's host to the addresses we can reach with
/// `transport` (an IPv4-only edge cannot send to an IPv6 address, and must
/// not stall 4 s on each one).
pub(crate) async fn resolve(
    request: &OutboundRequest,
    transport: Transport,
    listeners: &[super::Listener],
) -> Result<Vec<SocketAddr>, EdgeError> {
    let callee = rsipstack::sip::Uri::try_from(request.request_uri.as_str())
        .map_err(|e| EdgeError::BadTarget(format!("{}: {e}", request.request_uri)))?;
    let (host, port) = uri_target(&callee, transport);
    resolve_host(&host, port, transport, listeners).await
}

/// Resolves `host` to the addresses we can reach with `transport` (see
/// [`resolve`]).
pub(crate) async fn resolve_host(
    host: &str,
    port: u16,
    transport: Transport,
    listeners: &[super::Listener],
) -> Result<Vec<SocketAddr>, EdgeError> {
    let reachable = |address: &SocketAddr| {
        listeners
            .iter()
            .any(|l| l.transport == transport && l.addr.is_ipv4() == address.is_ipv4())
    };
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| EdgeError::BadTarget(format!("cannot resolve {host}: {e}")))?
        .filter(reachable)
        .collect();
    if addresses.is_empty() {
        return Err(EdgeError::BadTarget(format!(
            "{host} resolves to no address reachable from our {transport:?} listeners"
        )));
    }
    Ok(addresses)
}

/// Places an INVITE per `request` to `addresses` in turn, moving on when
/// one says nothing at all within [`SILENCE_BEFORE_NEXT_ADDRESS`].
pub(crate) async fn place(
    dialogs: &Arc<DialogLayer>,
    contact: &rsipstack::sip::Uri,
    public_host: &str,
    cps_limiters: &CpsLimiters,
    transport: Transport,
    addresses: Vec<SocketAddr>,
    request: OutboundRequest,
) -> Result<OutboundLeg, EdgeError> {
    if let Some((trunk, cps)) = &request.trunk {
        cps_limiters.acquire(trunk, *cps).await?;
    }
    let mut last_error = String::new();
    for address in addresses {
        let option = invite_option(&request, contact, public_host, transport, Some(address))?;
        let (states_tx, mut states) = dialogs.new_dialog_state_channel();
        let (dialog, invite) = dialogs
            .do_invite_async(option, states_tx)
            .map_err(|e| EdgeError::Dialog(e.to_string()))?;
        let id = dialog.id();
        let call_id = id.call_id.clone();
        // Wait for any sign of life beyond our own Calling state.
        let first = tokio::time::timeout(SILENCE_BEFORE_NEXT_ADDRESS, async {
            while let Some(state) = states.recv().await {
                if !matches!(*state, DialogState::Calling(_)) {
                    return Some(*state);
                }
            }
            None
        })
        .await;
        match first {
            Ok(Some(DialogState::Terminated(_, TerminatedReason::Timeout))) => {
                last_error = format!("{address}: the transaction timed out");
                dialogs.remove_dialog(&id);
            }
            Ok(Some(state)) => {
                return Ok(OutboundLeg::single(Branch {
                    leg: Leg::new(dialog, states, Some(state), dialogs.clone(), transport),
                    invite: Some(invite),
                    call_id,
                }));
            }
            Ok(None) => {
                last_error = format!("{address}: the dialog ended before any response");
                dialogs.remove_dialog(&id);
            }
            Err(_) => {
                tracing::warn!(%address, uri = %request.request_uri, "no response within 4 s; trying the next address");
                last_error = format!("{address}: no response within 4 s");
                let _ = dialog.cancel().await;
                dialogs.remove_dialog(&id);
            }
        }
    }
    Err(EdgeError::Unreachable(last_error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_errors_the_operator_must_fix_are_told_apart() {
        assert!(twilio_error_for_operator("10001").is_some_and(|m| m.contains("inactive")));
        assert!(twilio_error_for_operator("32204").is_some_and(|m| m.contains("caller ID")));
        assert_eq!(twilio_error_for_operator("13227"), None);
        assert_eq!(twilio_error_for_operator(""), None);
        // Only the code is kept of what the wire says.
        let table = [
            ("10001", Some("10001")),
            (" 32204 Caller ID not allowed", Some("32204")),
            ("10001;x=y", Some("10001")),
            ("abc", None),
            ("", None),
            ("123456789", None),
        ];
        for (value, expected) in table {
            assert_eq!(twilio_error_code(value).as_deref(), expected, "{value:?}");
        }
    }

    #[tokio::test]
    async fn a_full_cps_queue_refuses_instead_of_sending() {
        let limiters = CpsLimiters::new(Duration::ZERO);
        let one = NonZeroU32::MIN;
        limiters.acquire("twilio", one).await.unwrap();
        assert!(
            matches!(limiters.acquire("twilio", one).await, Err(EdgeError::CpsQueueFull(t)) if t == "twilio")
        );
        // Another trunk has its own budget.
        limiters.acquire("other", one).await.unwrap();
    }

    #[test]
    fn what_does_not_fit_a_datagram_once_challenged_goes_over_a_stream() {
        let request = |uri_len: usize, credentials: bool| OutboundRequest {
            request_uri: format!("sip:+{}@x", "1".repeat(uri_len)),
            from_user: "+2".into(),
            offer: Vec::new(),
            credentials: credentials.then(|| ("user".to_owned(), "secret".to_owned())),
            trunk: None,
            transport: None,
        };
        // Without credentials, the rendered size alone decides.
        assert!(fits_a_datagram(1300, &request(10, false)));
        assert!(!fits_a_datagram(1301, &request(10, false)));
        // With them, the digest answer (which repeats the URI) counts too.
        assert!(fits_a_datagram(800, &request(10, true)));
        assert!(!fits_a_datagram(800, &request(200, true)));
        assert!(!fits_a_datagram(1000, &request(10, true)));
    }
}
