#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use sha2::Digest;

use super::*;
use crate::g711;

/// The file's samples as (left, right), read back with hound.
pub(crate) fn channels(path: &std::path::Path) -> Vec<(i16, i16)> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8_000, 16)
    );
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    samples.chunks_exact(2).map(|c| (c[0], c[1])).collect()
}

fn ulaw(value: i16) -> [u8; 160] {
    [g711::ulaw_encode(value); 160]
}

#[tokio::test]
async fn both_parties_land_in_their_channels_for_exactly_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::start().unwrap();
    let origin = Instant::now();
    let path = dir.path().join("calls/call_1.wav");
    let (tap, outcome) = recorder.begin(path.clone(), origin).unwrap();
    let frame = Duration::from_millis(20);
    // The caller talks for the first half second, the expert from 0.5 s to
    // 0.8 s; the last 200 ms nobody does.
    for i in 0..25u32 {
        let at = origin + frame * i;
        tap.frame(
            Source::CallerVoice,
            at,
            1_000 + 160 * i,
            Codec::Pcmu,
            &ulaw(1_000),
        );
    }
    for i in 25..40u32 {
        let at = origin + frame * i;
        tap.frame(
            Source::CalleeVoice,
            at,
            90_000 + 160 * i,
            Codec::Pcmu,
            &ulaw(-2_000),
        );
    }
    tap.stop(origin + Duration::from_secs(1));
    let outcome = outcome.await.unwrap();
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.duration, Duration::from_secs(1));
    assert_eq!(outcome.bytes, 44 + 8_000 * 4);
    assert_eq!((outcome.dropped_frames, outcome.late_frames), (0, 0));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(outcome.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    let samples = channels(&path);
    assert_eq!(samples.len(), 8_000);
    let caller = g711::ulaw_decode(g711::ulaw_encode(1_000));
    let callee = g711::ulaw_decode(g711::ulaw_encode(-2_000));
    assert!(samples[..4_000].iter().all(|s| *s == (caller, 0)));
    assert!(samples[4_000..6_400].iter().all(|s| *s == (0, callee)));
    assert!(samples[6_400..].iter().all(|s| *s == (0, 0)));
}

#[tokio::test]
async fn a_file_that_cannot_be_created_is_reported_and_nothing_else_breaks() {
    let recorder = Recorder::start().unwrap();
    let origin = Instant::now();
    let (tap, outcome) = recorder
        .begin("/dev/null/not-a-dir/call.wav".into(), origin)
        .unwrap();
    tap.frame(Source::CallerVoice, origin, 0, Codec::Pcma, &[0xd5; 160]);
    drop(tap);
    let outcome = outcome.await.unwrap();
    let error = outcome.error.unwrap();
    assert!(
        error.starts_with("cannot create /dev/null/not-a-dir/call.wav"),
        "{error}"
    );
    assert_eq!(outcome.bytes, 0);
    // The recorder still records the next call.
    let dir = tempfile::tempdir().unwrap();
    let (tap, outcome) = recorder.begin(dir.path().join("next.wav"), origin).unwrap();
    tap.stop(origin + Duration::from_millis(100));
    assert_eq!(outcome.await.unwrap().bytes, 44 + 800 * 4);
}

#[test]
fn a_file_cut_short_by_a_crash_is_made_playable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crashed.wav");
    let mut file = std::fs::File::create(&path).unwrap();
    // The header of the last checkpoint (400 bytes), 1,003 bytes of audio
    // after it, the last sample frame torn.
    file.write_all(&wav::header(400)).unwrap();
    file.write_all(&[0x11; 1_003]).unwrap();
    drop(file);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert_eq!(repair(&file).unwrap(), 1_000);
    assert_eq!(channels(&path).len(), 250);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1_044);
}

#[test]
fn a_file_that_is_not_a_recording_is_not_touched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.wav");
    std::fs::write(&path, [b'x'; 100]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert_eq!(repair(&file).unwrap_err().to_string(), "not a WAV file");
    std::fs::write(&path, b"RIFF").unwrap();
    assert!(repair(&file).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"RIFF");
}
