//! One bridged call as a sans-IO state machine (the B2BUA's brain).
//!
//! It owns the decisions for both legs: routing outcome in, outbound
//! INVITE, ringing and early media relayed, the answer, hold re-INVITEs,
//! who hangs up whom, and every status change for the record. It never
//! touches a socket or reads the clock: [`Call::handle`] takes an [`Input`]
//! and `now`, [`Call::poll`] hands out [`Command`]s, and
//! [`Call::deadline`] says when to call [`Call::handle_timeout`] (quinn-proto's
//! shape). The task in `calls::task` carries the commands out.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tollbridge_media::bridge::{Inactivity, Side};
use tollbridge_media::leg::Peer;
use tollbridge_media::prompt::PromptName;
use tollbridge_media::sdp::{self, AudioStream, Codec, Crypto, LocalStream, SdpWriter, SrtpPolicy};
use tollbridge_media::srtp::MasterKey;
use tollbridge_media::stream::PromptMode;
use tollbridge_sip::reject::RejectReason;

use super::route::Route;

mod ending;
mod io;
mod legs;
mod meter;
mod pin;

pub use io::{Command, End, Event, Input, Progress};
use legs::peer_of;

/// How the call is set up (from the config, once per call).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long the callee may ring.
    pub ring_timeout: Duration,
    /// RTP inactivity that ends a connected call.
    pub media_timeout: Duration,
    /// How long a caller has for the first PIN digit.
    pub pin_first_digit: Duration,
    /// How long between PIN digits before the entry counts as complete.
    pub pin_inter_digit: Duration,
    /// PIN entries allowed.
    pub pin_tries: u8,
    /// Our relay addresses for the caller's and the callee's leg.
    pub relay: [SocketAddr; 2],
    /// Both parties hear the warning this long before the cap (none when
    /// the cap is shorter).
    pub warning_before: Duration,
    /// How long each prompt plays (the time-up prompt ends at the cap).
    pub prompt_lengths: Vec<(PromptName, Duration)>,
    /// SRTP on the caller's leg (its trunk's policy).
    pub caller_srtp: SrtpPolicy,
    /// Our SRTP master keys for the caller's and the callee's leg, used
    /// when the leg is SRTP; the call's own, never logged.
    pub srtp_keys: [MasterKey; 2],
}

impl Settings {
    fn prompt_length(&self, name: PromptName) -> Duration {
        self.prompt_lengths
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Duration::ZERO, |(_, d)| *d)
    }
}

/// The Twilio call-status vocabulary the record uses (the ledger's type).
pub use crate::ledger::CallStatus as Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for routing.
    Routing,
    /// Collecting PIN digits.
    Pin,
    /// Waiting for a PIN lookup.
    CheckingPin,
    /// The callee is being dialled.
    Dialing,
    /// The callee answered; the card hold has not succeeded yet.
    AwaitingHold,
    /// Both parties are connected.
    Connected,
    /// The call has ended; a farewell prompt plays to the caller before
    /// the hang-up.
    Closing,
    /// The call has ended.
    Over,
}

/// How the paid time grows: a block per further card hold, up to a most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Growth {
    block: Duration,
    most: Duration,
    ask: bool,
}

/// The card hold that gates the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Ledger-only, or no card on the booking.
    NotNeeded,
    /// Being placed.
    Pending,
    /// Placed.
    Approved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CalleeLeg {
    None,
    Placing,
    Placed,
    Gone,
}

/// One call.
#[derive(Debug)]
pub struct Call {
    settings: Settings,
    phase: Phase,
    commands: VecDeque<Command>,
    caller_offer: Option<AudioStream>,
    /// The caller's `a=crypto` line we took; `None`: plain RTP.
    caller_crypto: Option<Crypto>,
    /// SRTP towards the callee.
    callee_srtp: SrtpPolicy,
    /// The callee's answer's keys: (our line it took, its own).
    callee_crypto: Option<(Crypto, Crypto)>,
    caller_answered: bool,
    caller_gone: bool,
    callee: CalleeLeg,
    callee_offer: Option<LocalStream>,
    codec: Option<Codec>,
    callee_has_dtmf: bool,
    caller_sdp: SdpWriter,
    callee_sdp: SdpWriter,
    caller_answer: Option<Vec<u8>>,
    ringing_recorded: bool,
    deadline: Option<Instant>,
    pin: String,
    pin_tries: u8,
    answered_at: Option<Instant>,
    codec_awaiting_hold: Option<Codec>,
    cap: Option<Duration>,
    hold: Hold,
    warning_at: Option<Instant>,
    time_up_at: Option<Instant>,
    cap_at: Option<Instant>,
    /// How the paid time grows past the cap, while it still may.
    extension: Option<Growth>,
    /// When the next extension block's hold is placed.
    extend_at: Option<Instant>,
    /// The call's holds so far (the first one's included).
    blocks: u32,
    /// An extension block's hold is on its way.
    extending: bool,
    /// The caller was offered the next block and may still press `1`.
    offer_open: bool,
    /// The reason recorded when `cap_at` comes (`cap-reached`, `drained`).
    cap_reason: &'static str,
    /// Talk is billed up to here rather than to the end (the quiet party's
    /// last RTP when the media timeout ends the call).
    talk_until: Option<Instant>,
    /// The routed booking records its calls: whether it is announced.
    recording: Option<bool>,
    /// The recording was started (it is stopped when the call ends).
    recording_started: bool,
}

impl Call {
    /// A call offered with `offer` (the caller's SDP). `session_id` seeds our
    /// SDP origin lines.
    pub fn new(settings: Settings, offer: &[u8], session_id: u64) -> Call {
        let mut call = Call {
            settings,
            phase: Phase::Routing,
            commands: VecDeque::new(),
            caller_offer: None,
            caller_crypto: None,
            callee_srtp: SrtpPolicy::Optional,
            callee_crypto: None,
            caller_answered: false,
            caller_gone: false,
            callee: CalleeLeg::None,
            callee_offer: None,
            codec: None,
            callee_has_dtmf: false,
            caller_sdp: SdpWriter::new(session_id),
            callee_sdp: SdpWriter::new(session_id.wrapping_add(1)),
            caller_answer: None,
            ringing_recorded: false,
            deadline: None,
            pin: String::new(),
            pin_tries: 0,
            answered_at: None,
            codec_awaiting_hold: None,
            cap: None,
            hold: Hold::NotNeeded,
            warning_at: None,
            time_up_at: None,
            cap_at: None,
            extension: None,
            extend_at: None,
            blocks: 1,
            extending: false,
            offer_open: false,
            cap_reason: "cap-reached",
            talk_until: None,
            recording: None,
            recording_started: false,
        };
        call.record(Status::Queued, None, None);
        let relay = call.settings.relay[0];
        let policy = call.settings.caller_srtp;
        let parsed = AudioStream::parse_with(offer, policy != SrtpPolicy::Off)
            .and_then(|s| s.reachable_from(relay).map(|()| s))
            .and_then(|s| sdp::negotiate_crypto(&s, policy).map(|crypto| (s, crypto)));
        match parsed {
            Ok((stream, crypto)) if !stream.codecs.is_empty() => {
                call.push(Command::SetPeer(Side::Caller, peer_of(&stream, None)));
                if let Some(theirs) = &crypto {
                    call.push(Command::Srtp {
                        side: Side::Caller,
                        receive: Some(theirs.clone()),
                        send: Some(sdp::answering_crypto(theirs, &call.settings.srtp_keys[0])),
                    });
                }
                call.caller_crypto = crypto;
                call.caller_offer = Some(stream);
            }
            Ok(_) => call.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the offer has neither PCMU nor PCMA",
            ),
            Err(e) => call.refuse(
                RejectReason::NoCommonCodec,
                "offer-not-acceptable",
                &format!("unusable offer: {e}"),
            ),
        }
        call
    }

    /// The next command, in order.
    pub fn poll(&mut self) -> Option<Command> {
        let next = self.commands.pop_front();
        if self.commands.is_empty() {
            // Commands come in bursts (set-up, answer, prompts, the end);
            // between them a talking call holds no queue (0.6 KiB).
            self.commands = VecDeque::new();
        }
        next
    }

    /// When [`Call::handle_timeout`] is due.
    pub fn deadline(&self) -> Option<Instant> {
        [
            self.deadline,
            self.warning_at,
            self.time_up_at,
            self.cap_at,
            self.extend_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the call has ended (its record is closed).
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Over | Phase::Closing)
    }

    /// How a call that ends now is recorded: `completed` once the parties
    /// talked, `otherwise` before.
    fn completed_or(&self, otherwise: Status) -> Status {
        if self.phase == Phase::Connected {
            Status::Completed
        } else {
            otherwise
        }
    }

    fn push(&mut self, command: Command) {
        self.commands.push_back(command);
    }

    /// Our `a=crypto` line for an answer to the caller: our key under the
    /// line of the caller's we took; `None` when the leg is plain.
    fn caller_answer_crypto(&self) -> Option<Crypto> {
        self.caller_crypto
            .as_ref()
            .map(|theirs| sdp::answering_crypto(theirs, &self.settings.srtp_keys[0]))
    }

    fn record(&mut self, status: Status, sip_code: Option<u16>, detail: Option<String>) {
        self.push(Command::Record(Event {
            status,
            sip_code,
            detail,
            warning: false,
        }));
    }

    /// Feeds one input that happened at `now`. Timers already due run
    /// first: a hang-up in the same millisecond as the cap finds the call
    /// ended at the cap.
    pub fn handle(&mut self, input: Input, now: Instant) {
        self.handle_timeout(now);
        if self.phase == Phase::Closing {
            self.on_input_while_closing(input);
            return;
        }
        let was_over = self.is_over();
        self.on_input(input, now);
        if !was_over && self.is_over() {
            self.stamp_talk(now);
        }
    }

    /// Time has come for whatever [`Call::deadline`] said.
    pub fn handle_timeout(&mut self, now: Instant) {
        let was_over = self.is_over();
        self.run_meter(now);
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.deadline = None;
        if self.phase == Phase::Closing {
            self.finish_now(None);
            return;
        }
        self.on_deadline(now);
        if !was_over && self.is_over() {
            self.stamp_talk(now);
        }
    }

    fn on_deadline(&mut self, now: Instant) {
        match self.phase {
            Phase::Dialing => {
                self.end_with(
                    Status::NoAnswer,
                    "no-answer",
                    None,
                    "the callee did not answer within the ring timeout",
                    Some(RejectReason::CalleeNoAnswer.response().0),
                    Some((PromptName::CalleeUnavailable, now)),
                );
            }
            Phase::Pin => {
                if self.pin.is_empty() {
                    self.pin_failed(now);
                } else {
                    self.submit_pin();
                }
            }
            _ => {}
        }
    }

    fn on_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Routed(route) => self.on_routed(route, now),
            Input::Cap(cap) => self.cap = Some(cap),
            Input::PromptLengths(lengths) => self.settings.prompt_lengths = lengths,
            Input::HoldPending => self.hold = Hold::Pending,
            Input::HoldApproved(covers) => {
                self.hold = Hold::Approved;
                self.cap = Some(self.cap.map_or(covers, |cap| cap.min(covers)));
                if self.phase == Phase::AwaitingHold
                    && let Some(codec) = self.codec_awaiting_hold.take()
                {
                    self.connect(codec, now);
                }
            }
            Input::HoldDeclined(why) => self.on_hold_declined(&why, now),
            Input::Extension { block, most, ask } => {
                self.extension = Some(Growth { block, most, ask })
            }
            Input::Extended(result) => self.on_extended(result, now),
            Input::Recording { announce } => self.recording = Some(announce),
            Input::CalleeSrtp(policy) => self.callee_srtp = policy,
            Input::CallerConfirmed => {}
            Input::CallerCancelled => {
                self.caller_gone = true;
                self.end(
                    Status::Canceled,
                    "caller-cancel",
                    Some(487),
                    "the caller cancelled",
                    None,
                );
            }
            Input::CallerHungUp => {
                self.caller_gone = true;
                let status = self.completed_or(Status::Canceled);
                self.end(status, "caller-hangup", None, "the caller hung up", None);
            }
            Input::CallerFailed(why) => {
                self.caller_gone = true;
                let status = self.completed_or(Status::Failed);
                self.end(
                    status,
                    "caller-leg-failed",
                    None,
                    &format!("the caller's leg failed: {why}"),
                    None,
                );
            }
            Input::CallerReoffer(offer) => self.on_reoffer(Side::Caller, &offer),
            Input::CalleeReoffer(offer) => self.on_reoffer(Side::Callee, &offer),
            Input::CalleePlaced(result) => self.on_placed(result, now),
            Input::CalleeRinging(early) => self.on_ringing(early),
            Input::CalleeAnswered(answer) => self.on_answered(&answer, now),
            Input::CalleeRefused { code, twilio_error } => {
                self.on_refused(code, twilio_error.as_deref(), now)
            }
            Input::CalleeHungUp => {
                self.callee = CalleeLeg::Gone;
                let status = self.completed_or(Status::Failed);
                self.end(
                    status,
                    "callee-hangup",
                    None,
                    "the callee hung up",
                    Some(RejectReason::CalleeRejected.response().0),
                );
            }
            Input::CalleeFailed(why) => {
                self.callee = CalleeLeg::Gone;
                let (status, reason) = if self.phase == Phase::Connected {
                    (Status::Completed, "callee-leg-failed")
                } else {
                    (Status::Failed, "callee-unreachable")
                };
                self.end(
                    status,
                    reason,
                    None,
                    &format!("the callee's leg failed: {why}"),
                    Some(RejectReason::CalleeRejected.response().0),
                );
            }
            Input::CallerKey(key) if self.phase == Phase::Connected => self.on_talking_key(key),
            Input::CallerKey(key) => self.on_key(key, now),
            Input::MediaInactive(quiet) => self.on_media_inactive(quiet),
            Input::Drain => self.on_drain(now),
            Input::HangUp { announce } => self.on_hang_up(announce, now),
        }
    }

    /// What an operator sees of the call now.
    pub fn progress(&self, now: Instant) -> Progress {
        let phase = match self.phase {
            Phase::Routing | Phase::CheckingPin => "routing",
            Phase::Pin => "pin",
            Phase::Dialing => "dialing",
            Phase::AwaitingHold => "awaiting-hold",
            // The time-up prompt before a drain or an operator's hang-up.
            Phase::Connected if self.cap_reason != "cap-reached" => "ending",
            Phase::Connected => "talking",
            Phase::Closing | Phase::Over => "ending",
        };
        let talk = self
            .answered_at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        let remaining = match self.phase {
            Phase::Connected => self.cap_at.map(|cap| cap.saturating_duration_since(now)),
            _ => None,
        };
        Progress {
            phase,
            talk,
            remaining,
            codec: self.codec,
        }
    }

    fn on_routed(&mut self, route: Route, now: Instant) {
        let pin_phase = self.phase == Phase::CheckingPin;
        if !matches!(self.phase, Phase::Routing | Phase::CheckingPin) {
            return;
        }
        match route {
            Route::Booking(id) => {
                self.push(Command::RecordBooking(id));
                self.dial(now);
            }
            Route::AskPin if pin_phase => {
                self.pin_failed(now);
            }
            Route::AskPin => self.ask_pin(now),
            Route::Refuse(reason) => {
                let word = match reason {
                    RejectReason::UnknownNumber => "unknown-number",
                    RejectReason::OutsideWindow => "outside-window",
                    RejectReason::BookingInCall => "booking-in-call",
                    _ => "no-booking",
                };
                self.refuse(reason, word, &format!("routing: {word}"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
