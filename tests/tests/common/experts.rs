//! Experts and their softphones: created over the API, booked, and
//! called from SIPp with the audio each way checked.

use super::*;

/// The password every test expert has.
pub const PASSWORD: &str = "correct horse battery";

/// Creates expert `name` whose devices register as `name`.
pub fn create_expert(daemon: &Daemon, name: &str) {
    let body = json!({"name": name, "username": name, "password": PASSWORD});
    let (status, created) = daemon.api("POST", "/v1/experts", TOKEN, Some(&body.to_string()));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["realm"], "tollbridge.test");
    assert!(created.get("password").is_none() && !created.to_string().contains(PASSWORD));
}

/// A booking for caller 1 whose callee is expert `name`, capped at `cap`.
pub fn book_expert(daemon: &Daemon, name: &str, cap: u32) -> String {
    let mut booking = booking_json(&[caller_id(1)], "sip:unused@127.0.0.1", cap);
    booking["callee"] = json!({"expert": name});
    create_booking(daemon, &booking)
}

/// The expert's devices as the API shows them.
pub fn devices(daemon: &Daemon, name: &str) -> Vec<Value> {
    let (status, expert) = daemon.api("GET", &format!("/v1/experts/{name}"), TOKEN, None);
    assert_eq!(status, 200, "{expert}");
    expert["devices"].as_array().cloned().unwrap_or_default()
}

/// Writes 30 s of a 440 Hz tone, 8 kHz mono 16-bit, to `path`: what
/// baresip says (its `ausine` source runs at 48 kHz only).
pub fn tone(path: &std::path::Path) {
    tone_at(path, 440.0);
}

/// Writes 30 s of a `hz` tone, 8 kHz mono 16-bit, to `path`.
pub fn tone_at(path: &std::path::Path, hz: f64) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..8_000 * 30 {
        let phase = 2.0 * std::f64::consts::PI * hz * f64::from(i) / 8_000.0;
        writer
            .write_sample((phase.sin() * 12_000.0) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
}

/// A booked call to `expert`, registered on a real softphone whose
/// User-Agent starts with `agent` and which says a tone, as
/// [`talk_until_the_cap`] checks it.
pub fn call_the_softphone(daemon: &Daemon, expert: &str, agent: &str) {
    let device = devices(daemon, expert).remove(0);
    assert!(
        device["user_agent"].as_str().unwrap().starts_with(agent),
        "{device}"
    );
    let booking = book_expert(daemon, expert, 5);
    talk_until_the_cap(daemon, &booking, agent);
}

/// Booking `booking` (5 s cap) called from SIPp: the call ends at the cap,
/// the caller heard the callee's tone (`agent`'s) and the time-up prompt
/// whole. The caller talks (loud μ-law 0x11) for 3 s, for the phone to hear.
pub fn talk_until_the_cap(daemon: &Daemon, booking: &str, agent: &str) {
    let caller_media = media_socket();
    let caller = caller(
        daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &[],
    );
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    let until = Instant::now() + Duration::from_secs(5);
    let (heard, listener) = super::heard::listen(&caller_media, until);
    super::heard::talk(
        &caller_media,
        caller_relay,
        0x11,
        0x1111,
        1,
        Duration::from_millis(3_000),
    );
    listener.join().unwrap();
    assert_passed("caller (BYE at the cap)", caller);
    let call = ended_call(daemon, booking);
    assert_eq!(call["end_reason"], "cap-reached", "{call}");
    assert_eq!(call["talk_ms"], 5_000);
    // The tone: frames whose payload varies.
    let toned = heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p)| p.len() == 172 && p[12..].iter().any(|b| *b != p[12]))
        .count();
    assert!(
        toned > 50,
        "{toned} frames of {agent}'s tone reached the caller"
    );
    let answered = super::heard::parse_ms(call["answered_at"].as_str().unwrap());
    let time_up = tollbridge_media::prompt::Prompts::built_in("en")
        .unwrap()
        .get(tollbridge_media::prompt::PromptName::TimeUp);
    super::heard::heard_whole("caller", &heard.lock().unwrap(), &time_up, answered);
}

/// Where the suite's PJSIP (`pjsua2-python` from PyPI, put in
/// `target/pjsua2` by `scripts/test`) is.
pub fn pjsua2_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pjsua2")
}
