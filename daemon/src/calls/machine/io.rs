//! What goes into a call's machine and what comes out: the inputs the
//! shell feeds it, the commands it returns, and the records they carry.

use std::time::{Duration, Instant};

use tollbridge_media::bridge::{Inactivity, Side};
use tollbridge_media::leg::Peer;
use tollbridge_media::prompt::PromptName;
use tollbridge_media::sdp::{Codec, Crypto, SrtpPolicy};
use tollbridge_media::stream::PromptMode;

use super::Status;
use crate::calls::route::Route;

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
    /// The routed booking extends the paid time: the talk time one more
    /// card hold buys, and the most the call may reach. Given before the
    /// `Routed` it belongs to.
    Extension {
        /// One block's talk time.
        block: Duration,
        /// The call's talk time at most.
        most: Duration,
        /// The caller is offered each block with the warning and takes it
        /// with `1`, rather than it being held without asking.
        ask: bool,
    },
    /// The routed booking records its calls (announced to both parties
    /// first when `announce`). Given before the `Routed` it belongs to.
    Recording {
        /// Both parties hear the recording notice before each other.
        announce: bool,
    },
    /// The hold succeeded; it covers this much talk time.
    HoldApproved(Duration),
    /// The hold asked for by [`Command::Extend`] succeeded (it adds this
    /// much talk time) or failed (why).
    Extended(Result<Duration, String>),
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
    /// SRTP on the callee's leg (its trunk's or callee's policy), known
    /// once the call is routed; given before [`Input::Routed`].
    CalleeSrtp(SrtpPolicy),
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
    /// Make a leg SRTP, or change its keys: `receive` is the party's line
    /// (its key), `send` ours; `None` leaves that direction as it is.
    Srtp {
        /// The leg.
        side: Side,
        /// The party's key, to check and decrypt what it sends.
        receive: Option<Crypto>,
        /// Our key, to encrypt what we send it.
        send: Option<Crypto>,
    },
    /// Arm the relay's inactivity watch.
    WatchMedia(Duration),
    /// Tell the relay to stop forwarding at this instant (the cap).
    ForwardUntil(Instant),
    /// Place the card hold for extension block `block` (2 on), adding
    /// `adds` of talk time (answered with [`Input::Extended`]).
    Extend {
        /// Which of the call's holds it is.
        block: u32,
        /// The talk time it buys.
        adds: Duration,
        /// The call's paid time once it succeeds.
        covered: Duration,
    },
    /// Store what became of an extension: the call's new cap, or why the
    /// paid time stays as it was (the booking platform is told).
    RecordExtension {
        /// Which of the call's holds it was.
        block: u32,
        /// The new cap, or why there is none.
        cap: Result<Duration, String>,
    },
    /// Play a prompt to a party.
    Play(Side, PromptName, PromptMode),
    /// Start recording both parties; the file's time begins at this
    /// instant (the talk's start).
    StartRecording(Instant),
    /// End the recording at this instant (the talk's end, as billed), and
    /// store what it came to before the call's end is recorded.
    StopRecording(Instant),
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
