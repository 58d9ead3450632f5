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
use tollbridge_media::sdp::{self, AudioStream, Codec, LocalStream, SdpWriter};
use tollbridge_media::stream::PromptMode;
use tollbridge_sip::reject::RejectReason;

use super::route::Route;

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

/// Something that happened to the call.
#[derive(Debug)]
pub enum Input {
    /// Routing (or a PIN check) decided; a booking is already claimed.
    Routed(Route),
    /// The routed booking's cap: the longest the call may talk. Given
    /// before the `Routed` it belongs to.
    Cap(Duration),
    /// How long each prompt plays in the routed booking's language (the
    /// meter's warning and time-up are timed by them). Given before the
    /// `Routed` it belongs to.
    PromptLengths(Vec<(PromptName, Duration)>),
    /// A card hold is being placed for the routed booking: the parties
    /// are not bridged until it succeeds. Given before the `Routed`.
    HoldPending,
    /// The hold succeeded; it covers this much talk time.
    HoldApproved(Duration),
    /// The hold was declined (or its outcome is unknown): nobody talks
    /// unpaid.
    HoldDeclined(String),
    /// The caller ACKed our 200.
    CallerConfirmed,
    /// The caller sent CANCEL.
    CallerCancelled,
    /// The caller sent BYE.
    CallerHungUp,
    /// The caller's leg died (no ACK, transport failure).
    CallerFailed(String),
    /// The caller sent a re-INVITE with this offer.
    CallerReoffer(Vec<u8>),
    /// The outbound INVITE went out (its SIP Call-ID) or could not.
    CalleePlaced(Result<String, String>),
    /// 180, or 183 with SDP.
    CalleeRinging(Option<Vec<u8>>),
    /// The callee answered with this SDP.
    CalleeAnswered(Vec<u8>),
    /// The callee (or the trunk on its way) refused with this final code.
    CalleeRefused {
        /// The SIP status code.
        code: u16,
        /// Twilio's `X-Twilio-Error` code on the refusal, when present.
        twilio_error: Option<String>,
    },
    /// The callee sent BYE.
    CalleeHungUp,
    /// The callee's leg died.
    CalleeFailed(String),
    /// The callee sent a re-INVITE with this offer.
    CalleeReoffer(Vec<u8>),
    /// A DTMF key from the caller.
    CallerKey(char),
    /// A party's RTP stopped for the media timeout.
    MediaInactive(Inactivity),
    /// The daemon is stopping and its drain time is over: a talking call
    /// hears the time-up prompt and ends (`drained`), any other ends now.
    Drain,
    /// An operator ends the call (`POST /v1/calls/{id}/hangup`, recorded
    /// `hung-up`): with `announce`, a talking call hears the time-up prompt
    /// first; an unanswered caller gets 603, so no trunk rings another host.
    HangUp {
        /// Play the time-up prompt to both parties before the BYEs.
        announce: bool,
    },
}

/// What an operator sees of a call in progress, from the machine's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// `routing`, `pin`, `dialing`, `awaiting-hold`, `talking` or `ending`.
    pub phase: &'static str,
    /// Talk so far (zero before the callee answered).
    pub talk: Duration,
    /// Paid time left, when the call is talking under a cap.
    pub remaining: Option<Duration>,
    /// The codec both legs agreed on, once known.
    pub codec: Option<Codec>,
}

/// What the call wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Answer the caller's INVITE with this failure.
    RejectCaller {
        /// The status code.
        code: u16,
    },
    /// Send the caller 180, or 183 with this SDP.
    RingCaller(Option<Vec<u8>>),
    /// Send the caller 200 with this SDP.
    AnswerCaller(Vec<u8>),
    /// BYE the caller (603 if it was never answered).
    HangUpCaller,
    /// INVITE the booking's callee with this offer.
    DialCallee(Vec<u8>),
    /// CANCEL or BYE the callee, whichever fits (once it is placed).
    HangUpCallee,
    /// Answer a pending re-INVITE: 200 with SDP, or a failure code.
    AnswerReoffer(Side, Result<Vec<u8>, u16>),
    /// Tell the relay what a party's SDP said.
    SetPeer(Side, Peer),
    /// Arm the relay's inactivity watch.
    WatchMedia(Duration),
    /// Tell the relay to stop forwarding at this instant (the cap).
    ForwardUntil(Instant),
    /// Play a prompt to a party.
    Play(Side, PromptName, PromptMode),
    /// Look the entered PIN up (answered with [`Input::Routed`]).
    CheckPin(String),
    /// Store that the call is routed to this booking.
    RecordBooking(String),
    /// Store the callee leg's SIP Call-ID.
    RecordCalleeCallId(String),
    /// Store a status change.
    Record(Event),
    /// Store the end of the call.
    RecordEnd(End),
    /// Nothing more will happen: release the call.
    Finish,
}

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The new status.
    pub status: Status,
    /// The SIP code behind it, when there is one.
    pub sip_code: Option<u16>,
    /// A short explanation.
    pub detail: Option<String>,
    /// The event is the warning both parties heard (the booking platform
    /// is told: `call.warning`).
    pub warning: bool,
}

/// How the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The final status.
    pub status: Status,
    /// A stable reason word (`caller-hangup`, `no-answer`, ...).
    pub reason: &'static str,
    /// The SIP code behind it, when there is one.
    pub sip_code: Option<u16>,
    /// Talk time (callee's 200 to the end).
    pub talk: Duration,
    /// Whether the parties were ever connected.
    pub connected: bool,
    /// For a call ended at its paid cap: how long after the cap the meter
    /// ended it (its timer's lateness), for the cap precision metric.
    pub cap_lateness: Option<Duration>,
}

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
    /// The reason recorded when `cap_at` comes (`cap-reached`, `drained`).
    cap_reason: &'static str,
    /// Talk is billed up to here rather than to the end (the quiet party's
    /// last RTP when the media timeout ends the call).
    talk_until: Option<Instant>,
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
            cap_reason: "cap-reached",
            talk_until: None,
        };
        call.record(Status::Queued, None, None);
        let relay = call.settings.relay[0];
        match AudioStream::parse(offer).and_then(|s| s.reachable_from(relay).map(|()| s)) {
            Ok(stream) if !stream.codecs.is_empty() => {
                call.push(Command::SetPeer(Side::Caller, peer_of(&stream, None)));
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
        self.commands.pop_front()
    }

    /// When [`Call::handle_timeout`] is due.
    pub fn deadline(&self) -> Option<Instant> {
        [self.deadline, self.warning_at, self.time_up_at, self.cap_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the call has ended (its record is closed).
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Over | Phase::Closing)
    }

    fn push(&mut self, command: Command) {
        self.commands.push_back(command);
    }

    fn record(&mut self, status: Status, sip_code: Option<u16>, detail: Option<String>) {
        self.push(Command::Record(Event {
            status,
            sip_code,
            detail,
            warning: false,
        }));
    }

    /// Refuses the unanswered caller and ends the call.
    fn refuse(&mut self, reason: RejectReason, word: &'static str, detail: &str) {
        let (code, _) = reason.response();
        let status = match reason {
            RejectReason::BookingInCall | RejectReason::CalleeBusy => Status::Busy,
            RejectReason::CalleeNoAnswer => Status::NoAnswer,
            _ => Status::Failed,
        };
        self.end(status, word, Some(code), detail, Some(code));
    }

    /// Ends the call: the record first (its end time is now), then both
    /// legs, whatever state each is in.
    fn end(
        &mut self,
        status: Status,
        reason: &'static str,
        sip_code: Option<u16>,
        detail: &str,
        caller_code: Option<u16>,
    ) {
        self.end_with(status, reason, sip_code, detail, caller_code, None);
    }

    /// [`Call::end`], with a prompt the caller hears before the hang-up
    /// when we had answered it (PIN entry) and it is still there.
    fn end_with(
        &mut self,
        status: Status,
        reason: &'static str,
        sip_code: Option<u16>,
        detail: &str,
        caller_code: Option<u16>,
        farewell: Option<(PromptName, Instant)>,
    ) {
        if self.is_over() {
            return;
        }
        self.phase = Phase::Over;
        self.deadline = None;
        self.warning_at = None;
        self.time_up_at = None;
        self.cap_at = None;
        self.record(status, sip_code, Some(detail.to_owned()));
        let now_talk = Duration::ZERO;
        self.push(Command::RecordEnd(End {
            status,
            reason,
            sip_code,
            talk: now_talk,
            connected: self.answered_at.is_some(),
            cap_lateness: None,
        }));
        if matches!(self.callee, CalleeLeg::Placing | CalleeLeg::Placed) {
            self.callee = CalleeLeg::Gone;
            self.push(Command::HangUpCallee);
        }
        if let Some((prompt, now)) = farewell
            && self.caller_answered
            && !self.caller_gone
        {
            self.push(Command::Play(Side::Caller, prompt, PromptMode::Replace));
            self.phase = Phase::Closing;
            self.deadline = Some(now + self.settings.prompt_length(prompt));
            return;
        }
        self.finish_now(caller_code);
    }

    /// Hangs up (or refuses) the caller if still there, and finishes.
    fn finish_now(&mut self, caller_code: Option<u16>) {
        self.phase = Phase::Over;
        self.deadline = None;
        if !self.caller_gone {
            self.caller_gone = true;
            match caller_code {
                Some(code) if !self.caller_answered => self.push(Command::RejectCaller { code }),
                _ => self.push(Command::HangUpCaller),
            }
        }
        self.push(Command::Finish);
    }

    /// Sets the talk time on the `RecordEnd` just queued: from the
    /// callee's answer to now (or to `talk_until`), never beyond the cap.
    fn stamp_talk(&mut self, now: Instant) {
        let until = self.talk_until.map_or(now, |t| t.min(now));
        let talk = self
            .answered_at
            .map_or(Duration::ZERO, |t| until.saturating_duration_since(t));
        let talk = self.cap.map_or(talk, |cap| talk.min(cap));
        for command in self.commands.iter_mut() {
            if let Command::RecordEnd(end) = command {
                end.talk = talk;
            }
        }
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

    /// While the farewell plays, only the caller leaving matters.
    fn on_input_while_closing(&mut self, input: Input) {
        match input {
            Input::CallerHungUp | Input::CallerCancelled | Input::CallerFailed(_) => {
                self.caller_gone = true;
                self.finish_now(None);
            }
            Input::CalleePlaced(Ok(call_id)) => self.push(Command::RecordCalleeCallId(call_id)),
            _ => {}
        }
    }

    /// The meter's instants that have come: warning, time-up, cap.
    fn run_meter(&mut self, now: Instant) {
        if self.phase != Phase::Connected {
            return;
        }
        if self.warning_at.is_some_and(|at| now >= at) {
            self.warning_at = None;
            self.play_both(
                PromptName::Warning,
                PromptMode::Mix,
                "warning played to both parties",
            );
        }
        if self.time_up_at.is_some_and(|at| now >= at) {
            self.time_up_at = None;
            self.play_both(
                PromptName::TimeUp,
                PromptMode::Replace,
                "time-up played to both parties",
            );
        }
        if let Some(cap_at) = self.cap_at.filter(|at| now >= *at) {
            let (reason, detail) = match self.cap_reason {
                "drained" => (
                    "drained",
                    "the daemon stopped: its drain time ran out during the call",
                ),
                "hung-up" => (
                    "hung-up",
                    "hung up by the operator after the time-up prompt",
                ),
                _ => ("cap-reached", "the paid time ran out"),
            };
            self.end(Status::Completed, reason, None, detail, None);
            self.stamp_talk(now);
            if reason == "cap-reached" {
                for command in self.commands.iter_mut() {
                    if let Command::RecordEnd(end) = command {
                        end.cap_lateness = Some(now.saturating_duration_since(cap_at));
                    }
                }
            }
        }
    }

    fn play_both(&mut self, prompt: PromptName, mode: PromptMode, detail: &str) {
        self.push(Command::Play(Side::Caller, prompt, mode));
        self.push(Command::Play(Side::Callee, prompt, mode));
        self.push(Command::Record(Event {
            status: Status::InProgress,
            sip_code: None,
            detail: Some(detail.to_owned()),
            warning: prompt == PromptName::Warning,
        }));
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
                let status = if self.phase == Phase::Connected {
                    Status::Completed
                } else {
                    Status::Canceled
                };
                self.end(status, "caller-hangup", None, "the caller hung up", None);
            }
            Input::CallerFailed(why) => {
                self.caller_gone = true;
                let status = if self.phase == Phase::Connected {
                    Status::Completed
                } else {
                    Status::Failed
                };
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
                let status = if self.phase == Phase::Connected {
                    Status::Completed
                } else {
                    Status::Failed
                };
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
            Input::CallerKey(key) => self.on_key(key, now),
            Input::MediaInactive(quiet) => self.on_media_inactive(quiet),
            Input::Drain => self.on_drain(now),
            Input::HangUp { announce } => self.on_hang_up(announce, now),
        }
    }

    /// A party went quiet: the call ends, billed only up to the last RTP
    /// that party sent (never for the silent tail), and the record says
    /// what the relay saw.
    fn on_media_inactive(&mut self, quiet: Inactivity) {
        if self.phase != Phase::Connected {
            return;
        }
        let side = quiet.side.as_str();
        let answered = self.answered_at;
        let foreign = match quiet.dropped_foreign {
            0 => String::new(),
            n => format!(
                "; {n} packets from another source were dropped as foreign on its leg (a NAT the latch did not take? see media.latch)"
            ),
        };
        let detail = match (quiet.last_received, answered) {
            (Some(last), Some(answered)) => format!(
                "no RTP from the {side} for {:?}; talk billed to its last packet, {} s into the call{foreign}",
                self.settings.media_timeout,
                last.saturating_duration_since(answered).as_secs()
            ),
            _ => format!("no RTP ever arrived from the {side}; no talk time billed{foreign}"),
        };
        self.talk_until = quiet.last_received.or(answered);
        self.end(Status::Completed, "media-timeout", None, &detail, None);
    }

    /// An operator ends the call. A talking call ends at once (or after
    /// the time-up prompt, with `announce`), billed to now; a call not yet
    /// connected is canceled, its caller refused with 603 Decline (a 5xx
    /// would make Twilio ring the expert again through another host).
    fn on_hang_up(&mut self, announce: bool, now: Instant) {
        if self.is_over() {
            return;
        }
        if self.phase == Phase::Connected {
            if announce {
                let ends = now + self.settings.prompt_length(PromptName::TimeUp);
                if self.cap_at.is_some_and(|cap| cap <= ends) {
                    // The cap comes first, with its own prompt.
                    return;
                }
                self.warning_at = None;
                self.time_up_at = Some(now);
                self.cap_at = Some(ends);
                self.cap_reason = "hung-up";
                self.push(Command::ForwardUntil(ends));
                self.run_meter(now);
                return;
            }
            self.end(
                Status::Completed,
                "hung-up",
                None,
                "hung up by the operator",
                None,
            );
            self.stamp_talk(now);
            return;
        }
        self.end(
            Status::Canceled,
            "hung-up",
            None,
            "hung up by the operator before the call was connected",
            Some(603),
        );
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

    /// The drain time is over: a talking call hears the time-up prompt and
    /// ends as it finishes; anything else ends now, an unanswered caller
    /// with 503 so the trunk can try another host.
    fn on_drain(&mut self, now: Instant) {
        if self.is_over() {
            return;
        }
        if self.phase == Phase::Connected {
            let ends = now + self.settings.prompt_length(PromptName::TimeUp);
            if self.cap_at.is_some_and(|cap| cap <= ends) {
                return;
            }
            self.warning_at = None;
            self.time_up_at = Some(now);
            self.cap_at = Some(ends);
            self.cap_reason = "drained";
            self.push(Command::ForwardUntil(ends));
            self.run_meter(now);
            return;
        }
        let status = if self.caller_answered {
            Status::Failed
        } else {
            Status::Canceled
        };
        self.end(
            status,
            "drained",
            None,
            "the daemon stopped before the call was connected",
            Some(RejectReason::Draining.response().0),
        );
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

    /// Answers the caller ourselves to collect a PIN by DTMF.
    fn ask_pin(&mut self, now: Instant) {
        let Some(offer) = self.caller_offer.clone() else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        if offer.telephone_event.is_none() {
            self.refuse(
                RejectReason::NoBooking,
                "no-booking",
                "a PIN is needed but the caller cannot send DTMF (no telephone-event)",
            );
            return;
        }
        let Some(codec) = offer.codecs.first().copied() else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        let Ok(answer) = sdp::answer_to(&offer, codec, true, self.settings.relay[0]) else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        self.codec = Some(codec);
        let body = self.caller_sdp.render(&answer);
        self.caller_answer = Some(body.clone());
        self.caller_answered = true;
        self.push(Command::AnswerCaller(body));
        self.push(Command::SetPeer(Side::Caller, peer_of(&offer, Some(codec))));
        self.push(Command::Play(
            Side::Caller,
            PromptName::Pin,
            PromptMode::Replace,
        ));
        self.record(
            Status::Queued,
            Some(200),
            Some("answered to collect a PIN".into()),
        );
        self.phase = Phase::Pin;
        self.pin.clear();
        self.deadline = Some(now + self.settings.pin_first_digit);
    }

    fn on_key(&mut self, key: char, now: Instant) {
        if self.phase != Phase::Pin {
            return;
        }
        if key == '#' {
            self.submit_pin();
        } else if self.pin.len() < 16 {
            self.pin.push(key);
            self.deadline = Some(now + self.settings.pin_inter_digit);
        }
    }

    fn submit_pin(&mut self) {
        let pin = std::mem::take(&mut self.pin);
        self.phase = Phase::CheckingPin;
        self.deadline = None;
        self.push(Command::CheckPin(pin));
    }

    fn pin_failed(&mut self, now: Instant) {
        self.pin_tries += 1;
        if self.pin_tries >= self.settings.pin_tries {
            self.end_with(
                Status::Failed,
                "pin-failed",
                None,
                "no booking matched the PIN entries",
                None,
                Some((PromptName::NoBooking, now)),
            );
        } else {
            self.record(
                Status::Queued,
                None,
                Some(format!("PIN entry {} did not match", self.pin_tries)),
            );
            self.phase = Phase::Pin;
            self.pin.clear();
            self.push(Command::Play(
                Side::Caller,
                PromptName::WrongPin,
                PromptMode::Replace,
            ));
            self.deadline = Some(now + self.settings.pin_first_digit);
        }
    }

    /// INVITEs the callee with an offer the caller can take.
    fn dial(&mut self, now: Instant) {
        // `Call::new` keeps an offer only when it has a G.711 codec, so
        // these hold; were they not to, the call ends instead of hanging.
        let Some(caller) = self.caller_offer.clone() else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        let Ok(mut offer) = sdp::offer_for_callee(&caller, self.settings.relay[1]) else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        if let Some(codec) = self.codec {
            // The caller already talks to us (PIN): keep its codec.
            offer.codecs = vec![codec];
        }
        let body = self.callee_sdp.render(&offer);
        self.callee_offer = Some(offer);
        self.callee = CalleeLeg::Placing;
        self.phase = Phase::Dialing;
        self.deadline = Some(now + self.settings.ring_timeout);
        self.push(Command::DialCallee(body));
        self.record(Status::Initiated, None, None);
    }

    fn on_placed(&mut self, result: Result<String, String>, now: Instant) {
        match result {
            Ok(call_id) => {
                self.push(Command::RecordCalleeCallId(call_id));
                if self.callee == CalleeLeg::Placing {
                    self.callee = CalleeLeg::Placed;
                }
            }
            Err(why) => {
                if self.callee == CalleeLeg::Placing {
                    self.callee = CalleeLeg::None;
                    self.end_with(
                        Status::Failed,
                        "callee-unreachable",
                        None,
                        &format!("cannot reach the callee: {why}"),
                        Some(RejectReason::CalleeRejected.response().0),
                        Some((PromptName::CalleeUnavailable, now)),
                    );
                }
            }
        }
    }

    /// Our answer to the caller for the codec the callee took, made once
    /// and reused for 183 and 200 so the caller sees one answer.
    fn caller_answer(&mut self, codec: Codec) -> Option<Vec<u8>> {
        if self.codec == Some(codec)
            && let Some(body) = &self.caller_answer
        {
            return Some(body.clone());
        }
        let offer = self.caller_offer.as_ref()?;
        let answer =
            sdp::answer_to(offer, codec, self.callee_has_dtmf, self.settings.relay[0]).ok()?;
        let body = self.caller_sdp.render(&answer);
        self.codec = Some(codec);
        self.caller_answer = Some(body.clone());
        Some(body)
    }

    /// Reads the callee's SDP: the codec it took, and its media address.
    fn take_callee_sdp(&mut self, body: &[u8]) -> Result<Codec, String> {
        let stream = AudioStream::parse(body).map_err(|e| e.to_string())?;
        stream
            .reachable_from(self.settings.relay[1])
            .map_err(|e| e.to_string())?;
        let offer = self.callee_offer.as_ref().ok_or("no offer was sent")?;
        let codec = sdp::chosen_codec(offer, &stream).map_err(|e| e.to_string())?;
        self.callee_has_dtmf = stream.telephone_event.is_some() && offer.telephone_event.is_some();
        self.push(Command::SetPeer(
            Side::Callee,
            peer_of(&stream, Some(codec)),
        ));
        Ok(codec)
    }

    fn on_ringing(&mut self, early: Option<Vec<u8>>) {
        if self.phase != Phase::Dialing {
            return;
        }
        let code = if early.is_some() { 183 } else { 180 };
        if !self.ringing_recorded {
            self.ringing_recorded = true;
            self.record(Status::Ringing, Some(code), None);
        }
        let early_answer = match early {
            Some(body) if !self.caller_answered => self
                .take_callee_sdp(&body)
                .ok()
                .and_then(|codec| self.caller_answer(codec)),
            Some(body) => {
                let _ = self.take_callee_sdp(&body);
                None
            }
            None => None,
        };
        if !self.caller_answered {
            self.push(Command::RingCaller(early_answer));
        }
    }

    fn on_answered(&mut self, answer: &[u8], now: Instant) {
        if self.phase != Phase::Dialing {
            return;
        }
        match self.take_callee_sdp(answer) {
            Ok(codec) if self.hold == Hold::Pending => {
                // Nobody talks unpaid: the callee waits (in silence) for
                // the hold, the caller keeps ringing.
                self.phase = Phase::AwaitingHold;
                self.deadline = None;
                self.codec_awaiting_hold = Some(codec);
                self.record(
                    Status::Ringing,
                    Some(200),
                    Some("the callee answered; waiting for the card hold".into()),
                );
            }
            Ok(codec) if !self.caller_answered || Some(codec) == self.codec => {
                self.connect(codec, now)
            }
            Ok(_) | Err(_) => {
                let (code, _) = RejectReason::NoCommonCodec.response();
                self.end(
                    Status::Failed,
                    "no-common-codec",
                    Some(code),
                    "the callee's answer has no codec the caller offered",
                    Some(code),
                );
            }
        }
    }

    /// Bridges the parties: answers the caller (unless a PIN already did)
    /// and starts the meter.
    fn connect(&mut self, codec: Codec, now: Instant) {
        if !self.caller_answered {
            let Some(body) = self.caller_answer(codec) else {
                let (code, _) = RejectReason::NoCommonCodec.response();
                self.end(
                    Status::Failed,
                    "no-common-codec",
                    Some(code),
                    "the caller's offer cannot be answered",
                    Some(code),
                );
                return;
            };
            self.caller_answered = true;
            self.push(Command::AnswerCaller(body));
        }
        if let Some(offer) = self.caller_offer.clone() {
            self.push(Command::SetPeer(Side::Caller, peer_of(&offer, Some(codec))));
        }
        self.phase = Phase::Connected;
        self.deadline = None;
        self.answered_at = Some(now);
        self.record(Status::InProgress, Some(200), None);
        self.push(Command::WatchMedia(self.settings.media_timeout));
        self.start_meter(now);
    }

    /// The hold failed: the callee's leg ends, the caller hears why
    /// (answered for it when it was still ringing), and the call ends.
    fn on_hold_declined(&mut self, why: &str, now: Instant) {
        if self.is_over() {
            return;
        }
        if !self.caller_answered
            && let Some(offer) = self.caller_offer.clone()
            && let Some(codec) = offer.codecs.first().copied()
            && let Ok(answer) = sdp::answer_to(&offer, codec, false, self.settings.relay[0])
        {
            let body = self.caller_sdp.render(&answer);
            self.caller_answered = true;
            self.codec = Some(codec);
            self.push(Command::AnswerCaller(body));
            self.push(Command::SetPeer(Side::Caller, peer_of(&offer, Some(codec))));
        }
        self.end_with(
            Status::Failed,
            "payment-declined",
            None,
            &format!("the card hold failed: {why}"),
            Some(RejectReason::PaymentDeclined.response().0),
            Some((PromptName::PaymentDeclined, now)),
        );
    }

    /// Sets the meter's instants from the answer: the cap, the time-up
    /// prompt that ends at it, and the warning before it. Each prompt is
    /// heard whole: the warning starts early enough to end before the
    /// time-up begins, and is skipped when there is no room for it (or
    /// the cap is not longer than its lead).
    fn start_meter(&mut self, now: Instant) {
        let Some(cap) = self.cap else {
            return;
        };
        let cap_at = now + cap;
        self.cap_at = Some(cap_at);
        self.push(Command::ForwardUntil(cap_at));
        let time_up = self.settings.prompt_length(PromptName::TimeUp);
        let time_up_at = cap_at.checked_sub(time_up).unwrap_or(now).max(now);
        self.time_up_at = Some(time_up_at);
        let lead = self.settings.warning_before;
        let warning = self.settings.prompt_length(PromptName::Warning);
        if !lead.is_zero() && cap > lead {
            let latest = time_up_at.checked_sub(warning);
            self.warning_at = latest
                .map(|latest| (cap_at - lead).min(latest))
                .filter(|at| *at >= now);
        }
    }

    fn on_refused(&mut self, code: u16, twilio_error: Option<&str>, now: Instant) {
        if self.phase != Phase::Dialing {
            return;
        }
        self.callee = CalleeLeg::Gone;
        let (reason, word, status) = match code {
            486 | 600 => (RejectReason::CalleeBusy, "callee-busy", Status::Busy),
            408 | 480 | 487 => (RejectReason::CalleeNoAnswer, "no-answer", Status::NoAnswer),
            488 | 606 => (
                RejectReason::NoCommonCodec,
                "no-common-codec",
                Status::Failed,
            ),
            _ => (
                RejectReason::CalleeRejected,
                "callee-rejected",
                Status::Failed,
            ),
        };
        let (caller_code, _) = reason.response();
        let detail = match twilio_error {
            Some(error) => format!("the callee answered {code} (Twilio error {error})"),
            None => format!("the callee answered {code}"),
        };
        self.end_with(
            status,
            word,
            Some(code),
            &detail,
            Some(caller_code),
            Some((PromptName::CalleeUnavailable, now)),
        );
    }

    fn on_reoffer(&mut self, side: Side, offer: &[u8]) {
        let relay = match side {
            Side::Caller => self.settings.relay[0],
            Side::Callee => self.settings.relay[1],
        };
        let other_has_dtmf = match side {
            Side::Caller => self.callee_has_dtmf,
            Side::Callee => self
                .caller_offer
                .as_ref()
                .is_some_and(|o| o.telephone_event.is_some()),
        };
        let parsed = AudioStream::parse(offer).and_then(|s| s.reachable_from(relay).map(|()| s));
        let answer = match (parsed, self.codec) {
            (Ok(stream), Some(codec)) => sdp::answer_to(&stream, codec, other_has_dtmf, relay)
                .ok()
                .map(|answer| (stream, answer)),
            _ => None,
        };
        let Some((stream, answer)) = answer else {
            self.push(Command::AnswerReoffer(side, Err(488)));
            return;
        };
        let body = match side {
            Side::Caller => self.caller_sdp.render(&answer),
            Side::Callee => self.callee_sdp.render(&answer),
        };
        self.push(Command::SetPeer(side, peer_of(&stream, self.codec)));
        self.push(Command::AnswerReoffer(side, Ok(body)));
        if self.phase == Phase::Connected {
            let detail = format!("{} re-INVITE: {:?}", side.as_str(), stream.direction);
            self.record(Status::InProgress, Some(200), Some(detail));
        }
    }
}

/// The relay's view of a party's SDP.
fn peer_of(stream: &AudioStream, codec: Option<Codec>) -> Peer {
    Peer {
        rtp: stream.rtp,
        rtcp: stream.rtcp,
        direction: stream.direction,
        telephone_event: stream.telephone_event,
        codec,
    }
}

#[cfg(test)]
mod tests;
