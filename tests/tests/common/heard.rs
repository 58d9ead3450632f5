//! The parties' phones as the test's own sockets: what each received and
//! when, audio sent as a party talks, and a prompt's frames found in what
//! a phone got.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tollbridge_media::sdp::Codec;

use super::*;

/// What one phone received: when (wall clock) and the datagram.
pub type Heard = Arc<Mutex<Vec<(SystemTime, Vec<u8>)>>>;

/// Records everything `socket` receives until `until`.
pub fn listen(socket: &UdpSocket, until: Instant) -> (Heard, std::thread::JoinHandle<()>) {
    let heard: Heard = Arc::default();
    let socket = socket.try_clone().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let sink = heard.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while Instant::now() < until {
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push((SystemTime::now(), buf[..n].to_vec()));
            }
        }
    });
    (heard, thread)
}

/// Sends 20 ms PCMU frames filled with `fill` from `socket` to `target`
/// for `duration`.
pub fn talk(
    socket: &UdpSocket,
    target: SocketAddr,
    fill: u8,
    ssrc: u32,
    first_seq: u16,
    duration: Duration,
) -> u16 {
    let frames = (duration.as_millis() / 20) as u16;
    for i in 0..frames {
        socket
            .send_to(&rtp(0, first_seq + i, ssrc, &[fill; 160]), target)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    first_seq + frames
}

pub fn ms_since_epoch(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn parse_ms(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The offsets (ms after `answered`) at which `heard` got the frames of
/// `prompt`, in order, with the index of each frame; other packets skipped.
pub fn prompt_frames(
    heard: &[(SystemTime, Vec<u8>)],
    encoded: &[u8],
    answered: i64,
) -> Vec<(usize, i64)> {
    heard
        .iter()
        .filter(|(_, p)| p.len() == 172)
        .filter_map(|(at, packet)| {
            let payload = &packet[12..];
            let index = encoded.chunks(160).position(|frame| frame == payload)?;
            Some((index, ms_since_epoch(*at) - answered))
        })
        .collect()
}

/// The frames of `prompt` that `who` got (see [`prompt_frames`]),
/// checked to be every one of them, in order.
pub fn heard_whole(
    who: &str,
    heard: &[(SystemTime, Vec<u8>)],
    prompt: &tollbridge_media::prompt::Prompt,
    answered: i64,
) -> Vec<(usize, i64)> {
    let frames = prompt_frames(heard, prompt.encoded(Codec::Pcmu), answered);
    let name = prompt.name();
    assert_eq!(
        frames.len(),
        prompt.frames(),
        "{who} heard every frame of {name:?}"
    );
    assert!(
        frames.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "{who}: {name:?} frames in order"
    );
    frames
}

/// A call whose two phones are the test's sockets, everything they get
/// recorded: the expert (SIPp) answers, the caller (SIPp) waits for the
/// BYE, and both talk for the first 1.5 s (latching: a stream each party
/// hears), then stay quiet unless the test talks on.
pub struct HeardCall {
    pub booking: String,
    pub caller: SippPeer,
    pub expert: SippPeer,
    pub caller_media: UdpSocket,
    pub caller_relay: SocketAddr,
    /// The caller's next RTP sequence number.
    pub caller_seq: u16,
    pub caller_heard: Heard,
    pub expert_heard: Heard,
    pub listeners: [std::thread::JoinHandle<()>; 2],
}

impl HeardCall {
    /// Waits until the recording time is over: both phones must have got
    /// the BYE at the cap, after `talk_ms` of talk. Returns the call
    /// record and what each phone got.
    pub fn cut_at_the_cap(self, daemon: &Daemon, talk_ms: i64) -> (Value, Heard, Heard) {
        let [caller_thread, expert_thread] = self.listeners;
        caller_thread.join().unwrap();
        expert_thread.join().unwrap();
        assert_passed("caller (got BYE at the cap)", self.caller);
        assert_passed("expert (got BYE at the cap)", self.expert);
        let call = ended_call(daemon, &self.booking);
        assert_eq!(call["end_reason"], "cap-reached");
        assert_eq!(call["talk_ms"], talk_ms);
        (call, self.caller_heard, self.expert_heard)
    }
}

/// Books `booking(expert URI)`, places the call and records what both
/// phones get for `listen_for` from the answer.
pub fn heard_call(
    daemon: &Daemon,
    listen_for: Duration,
    booking: impl FnOnce(&str) -> Value,
) -> HeardCall {
    let phones = place(daemon, booking);
    let until = Instant::now() + listen_for;
    let (caller_heard, caller_thread) = listen(&phones.caller_media, until);
    let (expert_heard, expert_thread) = listen(&phones.expert_media, until);
    let caller_seq = phones.talk((0x11, 0x22), 1, Duration::from_millis(1500));
    HeardCall {
        booking: phones.booking,
        caller: phones.caller,
        expert: phones.expert,
        caller_media: phones.caller_media,
        caller_relay: phones.caller_relay,
        caller_seq,
        caller_heard,
        expert_heard,
        listeners: [caller_thread, expert_thread],
    }
}

/// Both phones of a call to a booking, the test's sockets, and their
/// relay addresses.
pub struct Phones {
    pub booking: String,
    pub caller: SippPeer,
    pub expert: SippPeer,
    pub caller_media: UdpSocket,
    pub expert_media: UdpSocket,
    pub caller_relay: SocketAddr,
    pub expert_relay: SocketAddr,
}

/// Books `booking(expert URI)` and places a call to it from caller 1:
/// SIPp signals (the expert answers, the caller waits for the BYE), the
/// test's sockets carry the media.
pub fn place(daemon: &Daemon, booking: impl FnOnce(&str) -> Value) -> Phones {
    let (caller_media, expert_media) = (media_socket(), media_socket());
    let expert = expert("expert_answers.xml", &port_of(&expert_media), &[]);
    let booking = create_booking(daemon, &booking(&expert_uri(&expert)));
    let caller = caller(
        daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &[],
    );
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    let expert_relay = wait_relay(&expert, "INVITE sip:expert");
    Phones {
        booking,
        caller,
        expert,
        caller_media,
        expert_media,
        caller_relay,
        expert_relay,
    }
}

impl Phones {
    /// Both parties send `fill` for `duration` at once (each its own
    /// stream, from `seq` on); returns the next sequence number.
    pub fn talk(&self, fills: (u8, u8), seq: u16, duration: Duration) -> u16 {
        let expert_media = self.expert_media.try_clone().unwrap();
        let expert_relay = self.expert_relay;
        let expert = std::thread::spawn(move || {
            talk(&expert_media, expert_relay, fills.1, 0x2222, seq, duration)
        });
        let next = talk(
            &self.caller_media,
            self.caller_relay,
            fills.0,
            0x1111,
            seq,
            duration,
        );
        expert.join().unwrap();
        next
    }
}
