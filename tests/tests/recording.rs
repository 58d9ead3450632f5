//! Recording end to end: the real daemon, SIPp for signalling, the test's
//! sockets as both phones, the Stripe fake as Stripe. A recorded call's
//! file holds the caller left and the expert right, the notice and the
//! warning in both, as long as the talk; it is priced apart and captured
//! as one sum; the API serves it by range and deletes it.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::heard::*;
use common::stripe::*;
use common::*;
use tollbridge_e2e::stripe_fake::StripeFake;
use tollbridge_e2e::{DaemonOptions, HttpResponse, http_exchange};
use tollbridge_media::g711;
use tollbridge_media::prompt::{Prompt, PromptName, Prompts};
use tollbridge_media::sdp::Codec;

/// μ-law bytes the parties send: near silence while latching (so a
/// prompt mixed over it is still found), then each party's own sound.
const QUIET: u8 = 0xfe;
const CALLER_SOUND: u8 = 0x11;
const EXPERT_SOUND: u8 = 0x22;

/// The config of a daemon charging through `fake`, warning 3 s before the
/// cap, keeping recordings in its working directory, with `more` appended.
fn config(fake: &StripeFake, more: &str) -> String {
    daemon_config(
        "ring_timeout = \"10s\"",
        "60s",
        &format!(
            "[stripe]\nsecret_key = \"sk_test_fake\"\napi_base = \"{}\"\nrequest_timeout = \"1s\"\n\n[prompts]\nwarning_before = \"3s\"\n\n{more}",
            fake.url()
        ),
    )
}

fn daemon(fake: &StripeFake, more: &str) -> Daemon {
    start_daemon_as(DaemonOptions {
        config: Some(config(fake, more)),
        ..DaemonOptions::default()
    })
}

/// A recorded booking for caller 1: ¥1,200 a minute talk, ¥300 a minute
/// recording, a 10 s cap.
fn recorded_booking(expert: &str) -> Value {
    let mut booking = card_booking(&caller_id(1), "pm_card_visa", expert);
    booking["cap_seconds"] = json!(10);
    booking["tariff"]["recording_price_per_minute"] = json!(300);
    booking["recording"] = json!({"enabled": true});
    booking
}

/// The WAV's channels, read with hound.
fn channels(wav: &[u8]) -> (Vec<i16>, Vec<i16>) {
    let reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8_000, 16)
    );
    let samples: Vec<i16> = reader.into_samples::<i16>().map(Result::unwrap).collect();
    samples.chunks_exact(2).map(|s| (s[0], s[1])).unzip()
}

/// Where a frame of 160 `sound` samples (decoded μ-law) starts in
/// `channel`, if anywhere.
fn sound_at(channel: &[i16], sound: u8) -> Option<usize> {
    let sample = g711::ulaw_decode(sound);
    channel
        .windows(160)
        .position(|w| w.iter().all(|s| *s == sample))
}

/// Whether `channel` holds one of the loudest frames of `prompt` (as
/// heard in μ-law), with at most the near-silence of [`QUIET`] under it.
fn holds_prompt(channel: &[i16], prompt: &Prompt) -> bool {
    let encoded = prompt.encoded(Codec::Pcmu);
    let loudest = (0..prompt.frames())
        .max_by_key(|i| {
            prompt.samples()[i * 160..(i + 1) * 160]
                .iter()
                .map(|s| i64::from(s.unsigned_abs()))
                .sum::<i64>()
        })
        .unwrap();
    let frame: Vec<i16> = encoded[loudest * 160..(loudest + 1) * 160]
        .iter()
        .map(|b| g711::ulaw_decode(*b))
        .collect();
    let under = i32::from(g711::ulaw_decode(QUIET));
    channel.windows(160).any(|w| {
        let offset = i32::from(w[0]) - i32::from(frame[0]);
        (offset == 0 || offset == under)
            && w.iter()
                .zip(&frame)
                .all(|(got, want)| i32::from(*got) - i32::from(*want) == offset)
    })
}

fn get_recording(daemon: &Daemon, call: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let auth = format!("Bearer {TOKEN}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    http_exchange(
        daemon.http,
        "GET",
        &format!("/v1/calls/{call}/recording"),
        &all,
        None,
    )
    .unwrap()
}

#[test]
fn a_recorded_call_keeps_each_party_in_its_channel_and_is_priced_apart() {
    let fake = StripeFake::start();
    let daemon = daemon(&fake, "");
    let prompts = Prompts::built_in("en").unwrap();
    let phones = place(&daemon, recorded_booking);
    // Latching (and under the notice): near silence for 2 s; then each
    // party says something of its own for a second; then quiet to the cap.
    let seq = phones.talk((QUIET, QUIET), 1, Duration::from_millis(2_000));
    phones.talk(
        (CALLER_SOUND, EXPERT_SOUND),
        seq,
        Duration::from_millis(1_000),
    );
    assert_passed("caller (BYE at the cap)", phones.caller);
    assert_passed("expert (BYE at the cap)", phones.expert);
    let call = settled_calls(&daemon, &phones.booking).remove(0);
    assert_eq!(call["end_reason"], "cap-reached");
    assert_eq!(call["talk_ms"], 10_000);

    // Priced apart, captured as one: 10 s at ¥1,200 + ¥300 a minute.
    assert_eq!(
        (call["amount"].as_i64(), call["recording_amount"].as_i64()),
        (Some(250), Some(50)),
        "{call:#}"
    );
    assert_eq!(call["rating"]["recording_price_per_minute"], 300);
    let captures: Vec<&Value> = call["settlements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["operation"] == "capture")
        .collect();
    assert_eq!(captures.len(), 1, "{call:#}");
    assert_eq!(captures[0]["amount"], 250);
    assert_eq!(
        captures[0]["reason"],
        "the call's 250 jpy: talk 200, recording 50"
    );
    assert_eq!(call["charged"], 250);
    assert_eq!(posts(&fake.requests(), "/capture").len(), 1);

    // The file: as long as the talk, the caller left and the expert right,
    // the notice and the warning in both.
    let recording = &call["recording"];
    assert_eq!(recording["state"], "complete", "{recording:#}");
    assert_eq!(recording["dropped_frames"], 0);
    let duration = recording["duration_ms"].as_i64().unwrap();
    assert!(
        (duration - 10_000).abs() <= 40,
        "{duration} ms for 10,000 ms of talk"
    );
    let id = call["id"].as_str().unwrap();
    let full = get_recording(&daemon, id, &[]);
    assert_eq!(full.status, 200);
    assert_eq!(full.header("content-type"), Some("audio/wav"));
    assert_eq!(full.body.len() as i64, recording["bytes"].as_i64().unwrap());
    assert_eq!(
        full.header("x-recording-sha256"),
        recording["sha256"].as_str()
    );
    let on_disk = std::fs::read(
        daemon
            .dir
            .path()
            .join("recordings")
            .join(format!("{id}.wav")),
    )
    .unwrap();
    assert_eq!(full.body, on_disk);
    let (left, right) = channels(&full.body);
    let caller_at = sound_at(&left, CALLER_SOUND).expect("the caller, left");
    let expert_at = sound_at(&right, EXPERT_SOUND).expect("the expert, right");
    assert!(sound_at(&left, EXPERT_SOUND).is_none() && sound_at(&right, CALLER_SOUND).is_none());
    // They talked from about 2 s into the call.
    for at in [caller_at, expert_at] {
        assert!((14_000..20_000).contains(&at), "at sample {at}");
    }
    for name in [
        PromptName::RecordingNotice,
        PromptName::Warning,
        PromptName::TimeUp,
    ] {
        let prompt = prompts.get(name);
        assert!(
            holds_prompt(&left, &prompt),
            "{name:?} in the caller's channel"
        );
        assert!(
            holds_prompt(&right, &prompt),
            "{name:?} in the expert's channel"
        );
    }
}

#[test]
fn the_file_is_served_by_range_to_the_token_only_and_deleted_on_request() {
    let fake = StripeFake::start();
    let daemon = daemon(&fake, "");
    let phones = place(&daemon, |expert| {
        let mut booking = recorded_booking(expert);
        booking["cap_seconds"] = json!(4);
        booking["recording"] = json!({"enabled": true, "announce": false});
        booking
    });
    phones.talk(
        (CALLER_SOUND, EXPERT_SOUND),
        1,
        Duration::from_millis(1_000),
    );
    assert_passed("caller", phones.caller);
    assert_passed("expert", phones.expert);
    let call = settled_calls(&daemon, &phones.booking).remove(0);
    let id = call["id"].as_str().unwrap().to_owned();
    let full = get_recording(&daemon, &id, &[]);
    assert_eq!(full.status, 200);
    let len = full.body.len();
    assert_eq!(len as i64, 44 + 4 * 8_000 * 4, "4 s of two 16-bit channels");

    // Ranges return the exact bytes.
    let header = get_recording(&daemon, &id, &[("Range", "bytes=0-43")]);
    assert_eq!(header.status, 206);
    assert_eq!(header.body, full.body[..44]);
    assert_eq!(
        header.header("content-range"),
        Some(format!("bytes 0-43/{len}").as_str())
    );
    let middle = get_recording(&daemon, &id, &[("Range", "bytes=64000-64999")]);
    assert_eq!(
        (middle.status, &middle.body[..]),
        (206, &full.body[64_000..65_000])
    );
    let tail = get_recording(&daemon, &id, &[("Range", "bytes=-100")]);
    assert_eq!(
        (tail.status, &tail.body[..]),
        (206, &full.body[len - 100..])
    );
    let outside = get_recording(&daemon, &id, &[("Range", &format!("bytes={len}-"))]);
    assert_eq!(outside.status, 416);

    // A wrong token or none: 401, no audio.
    let wrong = http_exchange(
        daemon.http,
        "GET",
        &format!("/v1/calls/{id}/recording"),
        &[("Authorization", "Bearer not-the-token")],
        None,
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    assert!(!wrong.body.starts_with(b"RIFF"));
    let (status, _) = tollbridge_e2e::http_request(
        daemon.http,
        "GET",
        &format!("/v1/calls/{id}/recording"),
        None,
        None,
    )
    .unwrap();
    assert_eq!(status, 401);

    // An unknown call, or one without a recording: 404 with a stable code.
    let (status, body) = daemon.api("GET", "/v1/calls/call_nope/recording", TOKEN, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_recording"))
    );

    // Deleted: the file is gone, the record says when and why.
    let (status, _) = daemon.api("DELETE", &format!("/v1/calls/{id}/recording"), TOKEN, None);
    assert_eq!(status, 204);
    assert!(
        !daemon
            .dir
            .path()
            .join("recordings")
            .join(format!("{id}.wav"))
            .exists()
    );
    let (status, body) = daemon.api("GET", &format!("/v1/calls/{id}/recording"), TOKEN, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("recording_deleted"))
    );
    let (status, body) = daemon.api("DELETE", &format!("/v1/calls/{id}/recording"), TOKEN, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("recording_deleted"))
    );
    let (_, call) = daemon.api("GET", &format!("/v1/calls/{id}"), TOKEN, None);
    assert_eq!(call["recording"]["state"], "deleted");
    assert_eq!(call["recording"]["deleted_reason"], "api");
    assert!(call["recording"]["deleted_at"].is_string());
}

#[test]
fn without_room_on_the_disk_the_call_goes_on_unrecorded_and_says_why() {
    let fake = StripeFake::start();
    // More free space asked for than any disk has.
    let daemon = daemon(&fake, "[recording]\nmin_free_mb = 100000000\n");
    let phones = place(&daemon, |expert| {
        let mut booking = recorded_booking(expert);
        booking["cap_seconds"] = json!(3);
        booking
    });
    phones.talk(
        (CALLER_SOUND, EXPERT_SOUND),
        1,
        Duration::from_millis(1_000),
    );
    assert_passed("caller (BYE at the cap)", phones.caller);
    assert_passed("expert (BYE at the cap)", phones.expert);
    let call = settled_calls(&daemon, &phones.booking).remove(0);
    assert_eq!(call["end_reason"], "cap-reached");
    assert_eq!(call["talk_ms"], 3_000);
    let recording = &call["recording"];
    assert_eq!(recording["state"], "failed");
    assert!(
        recording["error"]
            .as_str()
            .unwrap()
            .contains("below recording.min_free_mb = 100000000"),
        "{recording:#}"
    );
    // Only the talk is charged: 3 s at ¥1,200 a minute.
    assert_eq!(
        (call["amount"].as_i64(), call["recording_amount"].as_i64()),
        (Some(60), Some(0))
    );
    let id = call["id"].as_str().unwrap();
    let (status, body) = daemon.api("GET", &format!("/v1/calls/{id}/recording"), TOKEN, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("recording_not_made"))
    );
    let metrics = tollbridge_e2e::http_request(daemon.http, "GET", "/metrics", None, None)
        .unwrap()
        .1;
    assert!(
        metrics.contains("tollbridge_recordings_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_full_disk_ends_the_recording_and_not_the_call() {
    let fake = StripeFake::start();
    // 64 KiB for recordings: the header and about two seconds of audio.
    let daemon = start_daemon_as(DaemonOptions {
        config: Some(config(&fake, "[recording]\nmin_free_mb = 0\n")),
        small_disk: Some(("recordings", 64 * 1024)),
        ..DaemonOptions::default()
    });
    let phones = place(&daemon, |expert| {
        let mut booking = recorded_booking(expert);
        booking["cap_seconds"] = json!(5);
        booking["recording"] = json!({"enabled": true, "announce": false});
        booking
    });
    phones.talk(
        (CALLER_SOUND, EXPERT_SOUND),
        1,
        Duration::from_millis(3_000),
    );
    assert_passed("caller (BYE at the cap)", phones.caller);
    assert_passed("expert (BYE at the cap)", phones.expert);
    let call = settled_calls(&daemon, &phones.booking).remove(0);
    // The call went on to its cap, both ways.
    assert_eq!(call["end_reason"], "cap-reached");
    assert_eq!(call["talk_ms"], 5_000);
    for leg in ["caller", "callee"] {
        let media = &call["legs"][leg]["media"];
        assert!(
            media["packets_sent"].as_i64().unwrap() > 100,
            "{leg}: {media}"
        );
    }
    let recording = &call["recording"];
    assert_eq!(recording["state"], "failed", "{recording:#}");
    assert!(
        recording["error"]
            .as_str()
            .unwrap()
            .contains("the disk is full"),
        "{recording:#}"
    );
    let duration = recording["duration_ms"].as_i64().unwrap();
    assert!((1_500..=2_600).contains(&duration), "{duration} ms kept");
    // Charged for the talk and for the recording it kept, not the rest.
    let talk = 100;
    let recorded = call["recording_amount"].as_i64().unwrap();
    assert!((1..25).contains(&recorded), "{recorded}");
    assert_eq!(call["amount"].as_i64(), Some(talk + recorded));
    // What it kept plays.
    let id = call["id"].as_str().unwrap();
    let file = get_recording(&daemon, id, &[]);
    assert_eq!(file.status, 200);
    let (left, right) = channels(&file.body);
    assert_eq!(left.len() as i64 * 1000 / 8_000, duration);
    assert!(sound_at(&left, CALLER_SOUND).is_some() && sound_at(&right, EXPERT_SOUND).is_some());
    let metrics = tollbridge_e2e::http_request(daemon.http, "GET", "/metrics", None, None)
        .unwrap()
        .1;
    assert!(
        metrics.contains("tollbridge_recordings_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn after_kill_9_the_file_is_finalized_at_restart_as_long_as_the_talk_until_the_crash() {
    let fake = StripeFake::start();
    let daemon = daemon(&fake, "");
    let phones = place(&daemon, |expert| {
        let mut booking = recorded_booking(expert);
        booking["cap_seconds"] = json!(60);
        booking["recording"] = json!({"enabled": true, "announce": false});
        booking
    });
    phones.talk(
        (CALLER_SOUND, EXPERT_SOUND),
        1,
        Duration::from_millis(3_500),
    );
    let (_, calls) = daemon.api(
        "GET",
        &format!("/v1/calls?booking={}", phones.booking),
        TOKEN,
        None,
    );
    let answered = parse_ms(calls["calls"][0]["answered_at"].as_str().unwrap());
    let id = calls["calls"][0]["id"].as_str().unwrap().to_owned();
    let crashed = ms_since_epoch(std::time::SystemTime::now());
    let daemon = daemon.crash_and_restart();
    assert!(
        daemon.wait_for_log("finalized recordings left open", Duration::from_secs(10)),
        "{:?}",
        daemon.logs()
    );
    let (_, call) = daemon.api("GET", &format!("/v1/calls/{id}"), TOKEN, None);
    let recording = &call["recording"];
    assert_eq!(recording["state"], "complete", "{call:#}");
    assert!(
        recording["error"]
            .as_str()
            .unwrap()
            .starts_with("cut short"),
        "{recording:#}"
    );
    // As long as the talk until the crash, less at most one checkpoint
    // (500 ms) and the reordering room (400 ms).
    let duration = recording["duration_ms"].as_i64().unwrap();
    let talked = crashed - answered;
    assert!(
        duration <= talked + 20 && duration >= talked - 1_000,
        "{duration} ms kept of {talked} ms talked"
    );
    let file = get_recording(&daemon, &id, &[]);
    assert_eq!(file.status, 200);
    assert_eq!(
        file.header("x-recording-sha256"),
        recording["sha256"].as_str()
    );
    let (left, right) = channels(&file.body);
    assert_eq!(left.len() as i64 * 1000 / 8_000, duration);
    assert!(sound_at(&left, CALLER_SOUND).is_some() && sound_at(&right, EXPERT_SOUND).is_some());
    drop(phones);
}
