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
