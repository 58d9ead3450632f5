//! The thin async shell around [`Call`]: one task per call feeds it what
//! the two SIP legs, the relay, the database and the clock report, and
//! carries out the commands it returns. Ending a call hangs up both legs
//! concurrently, so a peer that never answers its BYE (up to 32 s of
//! retransmissions) does not delay the other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tollbridge_config::{Config, Latch};
use tollbridge_media::bridge::Side;
use tollbridge_media::prompt::{Prompt, PromptLibrary, PromptName, Prompts};
use tollbridge_media::relay::{CallMedia, MediaEvent, Relay};
use tollbridge_sip::edge::{
    EdgeError, InboundCall, InboundLeg, LegEvent, OutboundEvent, OutboundLeg, OutboundRequest,
    Reoffer, SipEdge, twilio_error_for_operator,
};
use tollbridge_sip::reject::RejectReason;
use tracing::Instrument;

use super::journal::{CallWrite, Written};
use super::live::{LiveCall, Operator, OperatorInbox, Registration};
use super::machine::{Call, Command, Input, Settings, Status};
use super::meter::Meters;
use super::route::{self, Route, e164};
use crate::ledger::{CallEnd, LedgerError, NewCall, Priced, Routed};
use crate::settle::{Held, Settler};
use crate::state::{ActiveCall, Shared};

mod commands;
mod recording;

/// How long a caller has for the first digit of a PIN.
const PIN_FIRST_DIGIT: Duration = Duration::from_secs(10);
/// How long between PIN digits before the entry counts as complete.
const PIN_INTER_DIGIT: Duration = Duration::from_secs(5);
/// PIN entries a caller gets.
const PIN_TRIES: u8 = 3;
/// The longest we wait for a BYE/CANCEL transaction at the end of a call
/// (Timer F, 64 × T1, plus a margin).
const HANG_UP_LIMIT: Duration = Duration::from_secs(35);

/// The relay's latch policy from `media.latch`.
pub fn latch_policy(latch: Latch) -> tollbridge_media::leg::LatchPolicy {
    match latch {
        Latch::Learn => tollbridge_media::leg::LatchPolicy::Learn,
        Latch::SignalledIp => tollbridge_media::leg::LatchPolicy::SignalledIp,
        Latch::Any => tollbridge_media::leg::LatchPolicy::Any,
    }
}

/// What every call task uses.
pub struct CallControl {
    /// Config, store, metrics.
    pub shared: Arc<Shared>,
    /// Places the calls to the experts.
    pub edge: Arc<SipEdge>,
    /// Moves the media.
    pub relay: Arc<Relay>,
    /// The prompts of every language, read once at start.
    pub prompts: Arc<PromptLibrary>,
    /// The talking calls, for checkpoints.
    pub meters: Arc<Meters>,
    /// Holds and captures (absent in ledger-only mode).
    pub settler: Option<Arc<Settler>>,
}

/// Takes every call the SIP edge hands over, each in its own task.
pub async fn answer_calls(control: Arc<CallControl>, mut calls: mpsc::Receiver<InboundCall>) {
    while let Some(call) = calls.recv().await {
        let id = format!("call_{}", uuid::Uuid::now_v7().simple());
        let span = tracing::info_span!(
            "call",
            node = %control.shared.ledger.node(),
            id = %id,
            sip_call_id = %call.call_id
        );
        let control = control.clone();
        // The call's long-lived task is its shell's alone: what starting
        // the call needed (the INVITE as handed over, the first ledger
        // write) is freed with the task that did it.
        tokio::spawn(
            async move {
                if let Some(shell) = start_call(control, id, call).await {
                    tokio::spawn(shell.run().in_current_span());
                }
            }
            .instrument(span),
        );
    }
}

pub use crate::clock::now_ms;

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Records a new call and builds its shell; `None` when the call was
/// refused before it could start (its record is closed).
async fn start_call(control: Arc<CallControl>, id: String, call: InboundCall) -> Option<Shell> {
    let shared = control.shared.clone();
    let active = shared.call_started();
    shared.metrics.call_started();
    let config = shared.config.load_full();
    let caller_ids: Vec<String> = [call.caller.as_deref(), call.asserted_identity.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(e164)
        .collect();
    let record = NewCall {
        id: id.clone(),
        sip_call_id: call.call_id.clone(),
        twilio_call_sid: call.twilio_call_sid.clone(),
        caller: caller_ids.first().cloned(),
        called: call.called.as_deref().and_then(e164),
    };
    let mut leg = call.leg;
    let inserted = shared.ledger.begin_call(record.clone(), now_ms()).await;
    if let Err(e) = inserted {
        // Another host can take it: 503 makes the trunk fail over.
        tracing::error!(error = %e, "cannot record a new call; refusing it with 503");
        let _ = leg.reject(RejectReason::Overloaded.response().0);
        return None;
    }
    // Our SRTP keys for the two legs, used if the legs turn out SRTP.
    let keys = (
        tollbridge_media::srtp::MasterKey::generate(),
        tollbridge_media::srtp::MasterKey::generate(),
    );
    let (Ok(caller_key), Ok(callee_key)) = keys else {
        tracing::error!("the system's random source failed; refusing the call with 503");
        refuse_unstarted(&shared, &mut leg, id, "no-randomness").await;
        return None;
    };
    let media = match control.relay.open_call() {
        Ok(media) => media,
        Err(e) => {
            tracing::error!(error = %e, "no media ports; refusing the call with 503");
            refuse_unstarted(&shared, &mut leg, id, "no-media-ports").await;
            return None;
        }
    };
    let settings = Settings {
        ring_timeout: config.calls.ring_timeout,
        media_timeout: config.media.timeout,
        pin_first_digit: PIN_FIRST_DIGIT,
        pin_inter_digit: PIN_INTER_DIGIT,
        pin_tries: PIN_TRIES,
        relay: [media.address(Side::Caller), media.address(Side::Callee)],
        warning_before: config.prompts.warning_before,
        prompt_lengths: prompt_lengths(control.prompts.prompts(None)),
        caller_srtp: crate::calls::srtp::caller_policy(&config, &call.trunk),
        srtp_keys: [caller_key, callee_key],
    };
    media.restrict_sources(Side::Caller, media_allowed(&config, &call.trunk));
    let session_id = now_ms().unsigned_abs();
    let machine = Call::new(settings, &call.offer, session_id);
    tracing::info!(caller = ?record.caller, called = ?record.called, trunk = %call.trunk, "call offered");
    let lookup = {
        let now = now_ms();
        route_lookup(
            shared.ledger.clone(),
            config.clone(),
            (id.clone(), record.called.clone(), now),
            move |bookings| route::route(bookings, &caller_ids, now),
        )
    };
    let drain = shared.watch_drain_deadline();
    let (registration, operator) = shared.live.register(&id);
    Some(Shell {
        _active: active,
        _registration: registration,
        operator,
        control,
        shared,
        drain,
        config,
        id,
        called: record.called,
        caller_number: record.caller,
        machine,
        caller: leg,
        caller_reoffer: None,
        caller_open: true,
        callee: None,
        callee_reoffer: None,
        placing: None,
        lookup: Some(lookup),
        holding: None,
        extending: None,
        booking: None,
        language: None,
        offer: None,
        media: Some(media),
        hang_up_caller: false,
        hanging_up_callee: None,
        announced: false,
        recording: None,
    })
}

/// Refuses a recorded call that cannot start with 503 (the trunk fails
/// over) and closes its record as failed for `reason`.
async fn refuse_unstarted(shared: &Shared, leg: &mut InboundLeg, id: String, reason: &str) {
    let _ = leg.reject(RejectReason::Overloaded.response().0);
    let end = CallEnd {
        status: Status::Failed,
        reason: reason.to_owned(),
        talk_ms: 0,
        connected: false,
    };
    let _ = shared
        .journal
        .write(CallWrite::Close {
            call_id: id,
            end,
            ended_ms: now_ms(),
        })
        .await;
    shared.metrics.call_ended(Status::Failed.as_str());
}

/// What a routing lookup gives: the decision, and for a booking the SRTP
/// policy of its callee's leg.
type RoutedLookup = Result<(Routed, Option<tollbridge_media::sdp::SrtpPolicy>), LedgerError>;

/// Routes the call `(id, called, now)` with `decide`, claiming the
/// booking it picks, and reads the policy of that booking's callee (a
/// callee that cannot be read is dialled, and fails, later; its leg
/// follows `media.srtp` until then).
fn route_lookup(
    ledger: crate::ledger::Ledger,
    config: Arc<Config>,
    (id, called, now): (String, Option<String>, i64),
    decide: impl FnOnce(&[route::Candidate]) -> Route + Send + 'static,
) -> Boxed<RoutedLookup> {
    Box::pin(async move {
        let routed = ledger.route_and_claim(id, called, now, decide).await?;
        let policy = match &routed.route {
            Route::Booking(booking) => match ledger.callee_of(booking.clone()).await {
                Ok(Some(callee)) => Some(crate::calls::srtp::callee_policy(&config, &callee)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the callee's SRTP policy");
                    None
                }
            },
            _ => None,
        };
        Ok((routed, policy))
    })
}

/// The networks a trunk's media may come from (none: anywhere).
fn media_allowed(config: &Config, trunk: &str) -> Vec<ipnet::IpNet> {
    config
        .trunks
        .iter()
        .find(|t| t.name == trunk)
        .map(|t| t.media_allow.clone())
        .unwrap_or_default()
}

/// An outbound leg placed, with the networks its media may come from.
/// Boxed: inline, the leg made every wake-up of the call's task carry
/// its size.
type Placed = (Box<OutboundLeg>, Vec<ipnet::IpNet>);

struct Shell {
    /// Counts this call among the active ones until the task ends.
    _active: ActiveCall,
    /// This call's place among the live calls; removed when the task ends.
    _registration: Registration,
    /// What operators ask of this call (show, hang up).
    operator: OperatorInbox,
    control: Arc<CallControl>,
    shared: Arc<Shared>,
    /// Turns true when the daemon's drain time is over.
    drain: tokio::sync::watch::Receiver<bool>,
    config: Arc<Config>,
    id: String,
    called: Option<String>,
    caller_number: Option<String>,
    machine: Call,
    caller: InboundLeg,
    caller_reoffer: Option<Reoffer>,
    caller_open: bool,
    callee: Option<Box<OutboundLeg>>,
    callee_reoffer: Option<Reoffer>,
    placing: Option<Boxed<Result<Placed, EdgeError>>>,
    lookup: Option<Boxed<RoutedLookup>>,
    holding: Option<Boxed<Result<Held, String>>>,
    /// An extension block's hold on its way: the talk time it adds.
    extending: Option<Boxed<Result<Duration, String>>>,
    booking: Option<String>,
    /// The routed booking's prompt language (`None`: the default).
    language: Option<String>,
    /// The offer of an extension block, said in the call's language with
    /// the block's length (ask mode only).
    offer: Option<Arc<Prompt>>,
    media: Option<CallMedia>,
    hang_up_caller: bool,
    /// The callee's hang-up, running on its own so a slow BYE holds nothing.
    hanging_up_callee: Option<tokio::task::JoinHandle<()>>,
    /// Whether our SDP (the relay's ports) has gone out to a party.
    announced: bool,
    /// The call's recording, until its file is closed.
    recording: Option<tokio::sync::oneshot::Receiver<tollbridge_media::recording::Outcome>>,
}

/// How long each prompt of a language's set plays.
fn prompt_lengths(prompts: &Prompts) -> Vec<(PromptName, Duration)> {
    PromptName::ALL
        .iter()
        .map(|name| (*name, prompts.get(*name).duration()))
        .collect()
}

/// Waits on an optional future; never ready when there is none.
async fn maybe<T>(future: &mut Option<Boxed<T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn next_callee_event(leg: &mut Option<Box<OutboundLeg>>) -> Option<OutboundEvent> {
    match leg {
        Some(leg) => leg.next_event().await,
        None => std::future::pending().await,
    }
}

async fn next_media_event(media: &mut Option<CallMedia>) -> Option<MediaEvent> {
    match media {
        Some(media) => media.next_event().await,
        None => std::future::pending().await,
    }
}

impl Shell {
    /// Serves the call until it is finished. What a command, a callee
    /// event or an operator request awaits (ledger writes, Stripe, SIP
    /// requests) is boxed for the time it runs: inline, the largest of
    /// those states would sit in every call's task for the whole call.
    /// An async block, not an `async fn`: the latter copies `self` into
    /// its body and keeps both copies in the task.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold self twice in every call's task"
    )]
    fn run(mut self) -> impl Future<Output = ()> + Send + 'static {
        async move {
            loop {
                while let Some(command) = self.machine.poll() {
                    if command == Command::Finish {
                        Box::pin(self.finish()).await;
                        return;
                    }
                    Box::pin(self.execute(command)).await;
                }
                let deadline = self.machine.deadline();
                let input = tokio::select! {
                    event = self.caller.next_event(), if self.caller_open => self.caller_input(event),
                    event = next_callee_event(&mut self.callee) => Box::pin(self.callee_input(event)).await,
                    placed = maybe(&mut self.placing) => {
                        self.placing = None;
                        match placed {
                            Ok((leg, allowed)) => {
                                let call_id = leg.call_id.clone();
                                self.callee = Some(leg);
                                if let Some(media) = &self.media {
                                    media.restrict_sources(Side::Callee, allowed);
                                }
                                Some(Input::CalleePlaced(Ok(call_id)))
                            }
                            Err(e) => Some(Input::CalleePlaced(Err(e.to_string()))),
                        }
                    }
                    Ok(()) = self.drain.changed() => self.drain.borrow().then_some(Input::Drain),
                    Ok(request) = self.operator.recv() => Box::pin(self.operator_input(request)).await,
                    routed = maybe(&mut self.lookup) => {
                        self.lookup = None;
                        Some(self.routed_input(routed))
                    }
                    held = maybe(&mut self.holding) => {
                        self.holding = None;
                        Some(match held {
                            Ok(held) => {
                                tracing::info!(payment_intent = %held.payment_intent, amount = held.amount, covers_s = held.covers.as_secs(), "card hold placed");
                                Input::HoldApproved(held.covers)
                            }
                            Err(why) => {
                                tracing::warn!(reason = %why, "card hold failed");
                                Input::HoldDeclined(why)
                            }
                        })
                    }
                    extended = maybe(&mut self.extending) => {
                        self.extending = None;
                        Some(Input::Extended(extended))
                    }
                    event = next_media_event(&mut self.media) => match event {
                        Some(MediaEvent::Key(Side::Caller, key)) => Some(Input::CallerKey(key)),
                        Some(MediaEvent::Key(Side::Callee, _)) => None,
                        Some(MediaEvent::Inactive(side)) => Some(Input::MediaInactive(side)),
                        None => {
                            self.media = None;
                            None
                        }
                    },
                    () = sleep_until(deadline) => {
                        self.machine.handle_timeout(std::time::Instant::now());
                        None
                    }
                };
                if let Some(input) = input {
                    self.machine.handle(input, std::time::Instant::now());
                }
            }
        }
    }

    /// What routing decided, told to the machine: the booking's prompt
    /// lengths, cap and extension terms first, the card hold set off
    /// (it runs while the expert's phone rings), then the route itself.
    fn routed_input(&mut self, routed: RoutedLookup) -> Input {
        let routed = routed.map(|(routed, callee_srtp)| {
            if let Some(policy) = callee_srtp {
                self.machine
                    .handle(Input::CalleeSrtp(policy), std::time::Instant::now());
            }
            routed
        });
        let Routed {
            route,
            cap,
            card,
            language,
            extension,
            recording,
        } = routed.unwrap_or_else(|e| {
            tracing::error!(error = %e, "routing lookup failed");
            Routed::not_to_a_booking(Route::Refuse(RejectReason::Overloaded))
        });
        let now = std::time::Instant::now;
        let prompts = self.control.prompts.prompts(language.as_deref());
        // An offer to extend says the block's length, in the call's language.
        self.offer = extension
            .filter(|terms| terms.ask)
            .and_then(|terms| u32::try_from(terms.block_seconds / 60).ok())
            .and_then(|minutes| prompts.extend_offer(minutes));
        if language.is_some() || self.offer.is_some() {
            let mut lengths = prompt_lengths(prompts);
            if let Some(offer) = &self.offer {
                for (name, length) in lengths.iter_mut() {
                    if *name == PromptName::ExtendOffer {
                        *length = offer.duration();
                    }
                }
            }
            self.machine.handle(Input::PromptLengths(lengths), now());
        }
        self.language = language;
        if let Some(cap) = cap {
            let cap = Duration::from_secs(cap.unsigned_abs());
            self.machine.handle(Input::Cap(cap), now());
        }
        if let Some(terms) = extension {
            let input = Input::Extension {
                block: Duration::from_secs(terms.block_seconds),
                most: Duration::from_secs(terms.max_seconds),
                ask: terms.ask,
            };
            self.machine.handle(input, now());
        }
        if let Some(terms) = recording {
            let input = Input::Recording {
                announce: terms.announce,
            };
            self.machine.handle(input, now());
        }
        if let Route::Booking(booking) = &route
            && card
            && let Some(settler) = self.control.settler.clone()
        {
            self.machine.handle(Input::HoldPending, now());
            let (ledger, id, booking) =
                (self.shared.ledger.clone(), self.id.clone(), booking.clone());
            self.holding = Some(Box::pin(async move {
                crate::settle::place_hold(&ledger, settler.gateway(), &id, &booking).await
            }));
        }
        Input::Routed(route)
    }

    /// An operator's request: a hang-up is the machine's to carry out;
    /// a look is answered here.
    async fn operator_input(&mut self, request: Operator) -> Option<Input> {
        match request {
            Operator::HangUp { announce } => {
                tracing::info!(announce, "hang-up requested by the operator");
                Some(Input::HangUp { announce })
            }
            Operator::Show(reply) => {
                let progress = self.machine.progress(std::time::Instant::now());
                let media = match &self.media {
                    Some(media) => media.stats().await,
                    None => None,
                };
                let _ = reply.send(LiveCall { progress, media });
                None
            }
        }
    }

    fn caller_input(&mut self, event: Option<LegEvent>) -> Option<Input> {
        Some(match event {
            Some(LegEvent::Confirmed) => Input::CallerConfirmed,
            Some(LegEvent::Cancelled) => Input::CallerCancelled,
            Some(LegEvent::HungUp) => Input::CallerHungUp,
            Some(LegEvent::Reoffer(reoffer)) => {
                let offer = reoffer.offer.clone();
                self.caller_reoffer = Some(reoffer);
                Input::CallerReoffer(offer)
            }
            Some(LegEvent::Ended(why)) => {
                self.caller_open = false;
                Input::CallerFailed(why)
            }
            None => {
                self.caller_open = false;
                Input::CallerFailed("the leg ended".into())
            }
        })
    }

    async fn callee_input(&mut self, event: Option<OutboundEvent>) -> Option<Input> {
        Some(match event {
            Some(OutboundEvent::Ringing { early_media }) => Input::CalleeRinging(early_media),
            Some(OutboundEvent::Answered { answer }) => {
                if let Some(leg) = &self.callee {
                    let record = leg.dialog_record();
                    self.store_dialog(Side::Callee, &record).await;
                }
                Input::CalleeAnswered(answer)
            }
            Some(OutboundEvent::Failed { code, twilio_error }) => {
                self.callee = None;
                self.shared
                    .metrics
                    .callee_refused(code, twilio_error.as_deref());
                if let Some(alert) = twilio_error.as_deref().and_then(twilio_error_for_operator) {
                    tracing::error!(code, "{alert}");
                }
                Input::CalleeRefused { code, twilio_error }
            }
            Some(OutboundEvent::HungUp) => {
                self.callee = None;
                Input::CalleeHungUp
            }
            Some(OutboundEvent::Reoffer(reoffer)) => {
                let offer = reoffer.offer.clone();
                self.callee_reoffer = Some(reoffer);
                Input::CalleeReoffer(offer)
            }
            Some(OutboundEvent::Ended(why)) => {
                self.callee = None;
                Input::CalleeFailed(why)
            }
            None => {
                self.callee = None;
                Input::CalleeFailed("the leg ended".into())
            }
        })
    }

    /// Hangs up the caller if asked, waits for the callee's hang-up, then
    /// closes the relay and stores its counters.
    async fn finish(mut self) {
        if let Some(holding) = self.holding.take() {
            // A hold still on its way is seen through: once it lands it is
            // released (the call is over), not left to the reconciler.
            tokio::spawn(async move {
                let _ = holding.await;
            });
        }
        if let Some(extending) = self.extending.take() {
            // The same for an extension block's hold.
            tokio::spawn(async move {
                let _ = extending.await;
            });
        }
        let caller = async {
            if self.hang_up_caller {
                match tokio::time::timeout(HANG_UP_LIMIT, self.caller.hang_up()).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot hang up the caller"),
                    Err(_) => tracing::warn!("the caller did not answer our BYE"),
                    Ok(Ok(())) => {}
                }
            }
        };
        let callee = async {
            if let Some(task) = self.hanging_up_callee.take() {
                let _ = task.await;
            }
        };
        tokio::join!(caller, callee);
        let media = self.media.take();
        let stats = match media {
            Some(media) => media.close().await,
            None => None,
        };
        // A recording the call's end did not stop ended with the media.
        self.store_recording().await;
        if let Some(stats) = stats {
            self.shared.metrics.media_closed(&stats);
            self.shared
                .journal
                .write(CallWrite::Media {
                    call_id: self.id.clone(),
                    stats,
                })
                .await;
        }
    }
}

/// Logs and counts a closed call's price, once its record is written.
pub fn rated(shared: &Shared, priced: Option<Priced>) {
    if let Some(priced) = priced {
        tracing::info!(
            billed_seconds = priced.billed_seconds,
            amount = priced.amount,
            currency = priced.currency,
            "call rated"
        );
        shared
            .metrics
            .call_rated(priced.currency, priced.talk_seconds, priced.amount);
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}
