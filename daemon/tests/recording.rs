//! Recorded calls in the ledger, on both backends: the hold priced with
//! the recording, the call priced in two parts for as long as the
//! recording ran, the captures saying what paid for what; a file a crash
//! left open finalized at start; retention deleting old files and
//! recording why.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::io::Write;
use std::time::Duration;

use support::Backend;
use tollbridge_daemon::bookings::model::Recording;
use tollbridge_daemon::calls::recording::{expire, finalize_left_open};
use tollbridge_daemon::calls::route::Route;
use tollbridge_daemon::ledger::{Ledger, RecordingDone, RecordingState};

use support::fixtures::*;

const CALLED: &str = "+81312345678";

/// A booking of 600 s at ¥1,200/min talk and ¥300/min recording, per
/// second, recorded; call `call_1` routed to it with its hold placed.
async fn recorded_call(ledger: &Ledger) -> i64 {
    let mut valid = booking("bk_1", CALLED, true, None);
    valid.booking.cap_seconds = 600;
    valid.booking.tariff.price_per_minute = 1_200;
    valid.booking.tariff.increment_seconds = 1;
    valid.booking.tariff.recording_price_per_minute = 300;
    valid.booking.recording = Some(Recording {
        enabled: true,
        announce: true,
    });
    ledger
        .create_booking("bk_1".into(), valid, T0)
        .await
        .unwrap();
    ledger
        .begin_call(new_call("call_1", CALLED), T0)
        .await
        .unwrap();
    let routed = ledger
        .route_and_claim("call_1".into(), Some(CALLED.into()), T0, first)
        .await
        .unwrap();
    assert_eq!(routed.route, Route::Booking("bk_1".into()));
    assert_eq!(routed.recording.map(|r| r.announce), Some(true));
    held(ledger).await
}

fn done(duration_ms: i64, error: Option<&str>) -> RecordingDone {
    RecordingDone {
        bytes: 44 + duration_ms * 32,
        sha256: "ab".repeat(32),
        duration_ms,
        dropped_frames: 3,
        late_frames: 1,
        error: error.map(str::to_owned),
        cut_short: false,
    }
}

/// Call `call_1`'s recording begins at 2 s into `/r/call_1.wav`.
async fn begin(ledger: &Ledger) {
    ledger
        .begin_recording("call_1".into(), "/r/call_1.wav".into(), T0 + 2_000)
        .await
        .unwrap();
}

/// Call `call_1`'s recording came to `done`.
async fn finish(ledger: &Ledger, done: RecordingDone) {
    ledger
        .finish_recording("call_1".into(), done, T0 + 32_000)
        .await
        .unwrap();
}

/// Closes call `call_1` after `talk_ms` of talk: (amount, recording part).
async fn close(ledger: &Ledger, talk_ms: i64) -> (i64, i64) {
    let priced = ledger
        .close_call("call_1".into(), talked(talk_ms), T0 + 32_000)
        .await
        .unwrap()
        .unwrap();
    (priced.amount, priced.recording_amount)
}

/// Call `call_1`'s recording as the ledger has it.
async fn recording_of(ledger: &Ledger) -> tollbridge_daemon::ledger::RecordingRow {
    ledger.recording("call_1".into()).await.unwrap().unwrap()
}

/// The call's capture rows: (amount, reason).
async fn captures(ledger: &Ledger) -> Vec<(i64, Option<String>)> {
    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    record
        .settlements
        .iter()
        .filter(|s| s.operation == "capture")
        .map(|s| (s.amount, s.reason.clone()))
        .collect()
}

async fn the_hold_and_the_price_count_the_recording_apart(backend: Backend) {
    let ledger = support::open(backend).await;
    // 600 s at ¥1,500/min together: ¥15,000 held.
    assert_eq!(recorded_call(&ledger).await, 15_000);
    begin(&ledger).await;
    finish(&ledger, done(30_000, None)).await;
    // 30 s: ¥600 talk + ¥150 recording.
    assert_eq!(close(&ledger, 30_000).await, (750, 150));
    assert_eq!(
        captures(&ledger).await,
        [(
            750,
            Some("the call's 750 jpy: talk 600, recording 150".into())
        )]
    );
    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(record.amount, Some(750));
    assert_eq!(record.recording_amount, Some(150));
    assert_eq!(
        record.rating.and_then(|r| r.recording_price_per_minute),
        Some(300)
    );
    let recording = record.recording.expect("the recording is on the record");
    assert_eq!(recording.state, RecordingState::Complete);
    assert_eq!(
        (
            recording.duration_ms,
            recording.dropped_frames,
            recording.late_frames
        ),
        (Some(30_000), 3, 1)
    );
    assert_eq!(recording.node, ledger.node());
    let ended = ledger
        .events(Some("bk_1".into()), Some("call.ended".into()), None, 1)
        .await
        .unwrap();
    assert_eq!(ended[0].body["data"]["recording_amount"], 150);
    let exported = ledger.export_page(T0 - 1, T0 + 1, None, 10).await.unwrap();
    assert_eq!(
        (
            exported[0].amount,
            exported[0].recording_price_per_minute,
            exported[0].recording_amount
        ),
        (Some(750), Some(300), Some(150))
    );
}

async fn a_recording_that_stopped_short_is_charged_for_what_it_holds(backend: Backend) {
    let ledger = support::open(backend).await;
    recorded_call(&ledger).await;
    begin(&ledger).await;
    finish(&ledger, done(10_000, Some("the disk is full"))).await;
    // 30 s of talk, 10 s of recording: ¥600 + ¥50.
    assert_eq!(close(&ledger, 30_000).await, (650, 50));
    let recording = recording_of(&ledger).await;
    assert_eq!(recording.state, RecordingState::Failed);
    assert_eq!(recording.error.as_deref(), Some("the disk is full"));
}

async fn a_recording_never_made_costs_nothing_and_says_why(backend: Backend) {
    let ledger = support::open(backend).await;
    recorded_call(&ledger).await;
    ledger
        .refuse_recording(
            "call_1".into(),
            "the disk holding /r has 3 MB free, below recording.min_free_mb = 512".into(),
            T0 + 2_000,
        )
        .await
        .unwrap();
    assert_eq!(close(&ledger, 30_000).await, (600, 0));
    let recording = recording_of(&ledger).await;
    assert_eq!(recording.state, RecordingState::Failed);
    assert!(recording.error.unwrap().contains("min_free_mb"));
    assert_eq!(recording.path, "");
}

async fn a_recording_whose_outcome_is_unknown_is_charged_with_the_talk(backend: Backend) {
    let ledger = support::open(backend).await;
    recorded_call(&ledger).await;
    // The node died mid-call: its recording row was never closed.
    begin(&ledger).await;
    assert_eq!(close(&ledger, 30_000).await, (750, 150));
}

async fn a_file_a_crash_left_open_is_finalized_at_start(backend: Backend) {
    let ledger = support::open(backend).await;
    recorded_call(&ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("call_1.wav");
    // A header from the last checkpoint (one second), then 2.5 s of audio
    // and a torn sample frame.
    let mut file = std::fs::File::create(&path).unwrap();
    let mut header = [0u8; 44];
    header[0..4].copy_from_slice(b"RIFF");
    header[8..12].copy_from_slice(b"WAVE");
    file.write_all(&header).unwrap();
    file.write_all(&vec![0x10; 80_000 + 2]).unwrap();
    drop(file);
    ledger
        .begin_recording("call_1".into(), path.display().to_string(), T0 + 2_000)
        .await
        .unwrap();
    // Another node's open recording is not this node's to finalize.
    let other = ledger.for_node("tb-other");
    other
        .begin_call(new_call("call_2", "+81399999999"), T0)
        .await
        .unwrap();
    other
        .begin_recording("call_2".into(), "/elsewhere.wav".into(), T0)
        .await
        .unwrap();
    assert_eq!(finalize_left_open(&ledger).await.unwrap(), 1);
    let row = recording_of(&ledger).await;
    assert_eq!(row.state, RecordingState::Complete);
    assert_eq!(row.duration_ms, Some(2_500));
    assert_eq!(row.bytes, Some(44 + 80_000));
    assert!(row.error.unwrap().starts_with("cut short"));
    let reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.duration(), 20_000, "2.5 s at 8 kHz");
    let sha = tollbridge_media::recording::digest(&path).unwrap().1;
    assert_eq!(row.sha256.as_deref(), Some(sha.as_str()));
    let elsewhere = ledger.recording("call_2".into()).await.unwrap().unwrap();
    assert_eq!(elsewhere.state, RecordingState::Recording);
    // The call is priced with the recording as it was finalized.
    assert_eq!(close(&ledger, 3_000).await, (75, 15));
}

async fn retention_deletes_old_files_and_records_why(backend: Backend) {
    let ledger = support::open(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let now = tollbridge_daemon::clock::now_ms();
    let mut paths = Vec::new();
    for (i, age_hours) in [(1, 49), (2, 47)] {
        let id = format!("call_{i}");
        ledger.begin_call(new_call(&id, CALLED), now).await.unwrap();
        let path = dir.path().join(format!("{id}.wav"));
        std::fs::write(&path, b"RIFF....WAVE").unwrap();
        let ended = now - age_hours * 3_600_000;
        ledger
            .begin_recording(id.clone(), path.display().to_string(), ended - 60_000)
            .await
            .unwrap();
        ledger
            .finish_recording(id.clone(), done(60_000, None), ended)
            .await
            .unwrap();
        paths.push(path);
    }
    assert_eq!(expire(&ledger, Duration::from_secs(48 * 3_600)).await, 1);
    assert!(!paths[0].exists(), "the 49 h old file is gone");
    assert!(paths[1].exists(), "the 47 h old file stays");
    let row = ledger.recording("call_1".into()).await.unwrap().unwrap();
    assert_eq!(row.state, RecordingState::Deleted);
    assert_eq!(row.deleted_reason.as_deref(), Some("retention 2d"));
    assert!(row.deleted_ms.is_some());
    // Nothing is deleted twice.
    assert_eq!(expire(&ledger, Duration::from_secs(48 * 3_600)).await, 0);
}

/// Every answer of `/v1/calls/{id}/recording` but a served file (the end
/// to end suite serves and ranges real ones): each refusal a stable code,
/// changing nothing.
async fn the_recording_endpoints_say_why_they_cannot_serve(backend: Backend) {
    let api = support::api::Api::new(backend).await;
    let ledger = api.shared.ledger.clone();
    let dir = tempfile::tempdir().unwrap();
    let node = ledger.node().to_owned();
    for (id, on) in [
        ("call_live", node.as_str()),
        ("call_never", node.as_str()),
        ("call_gone", node.as_str()),
        ("call_away", "tb-other"),
        ("call_plain", node.as_str()),
    ] {
        ledger
            .for_node(on)
            .begin_call(new_call(id, CALLED), T0)
            .await
            .unwrap();
    }
    ledger
        .begin_recording("call_live".into(), "/r/live.wav".into(), T0)
        .await
        .unwrap();
    ledger
        .refuse_recording("call_never".into(), "the recorder is behind".into(), T0)
        .await
        .unwrap();
    let gone = dir.path().join("gone.wav");
    ledger
        .begin_recording("call_gone".into(), gone.display().to_string(), T0)
        .await
        .unwrap();
    ledger
        .finish_recording("call_gone".into(), done(1_000, None), T0 + 1_000)
        .await
        .unwrap();
    ledger
        .for_node("tb-other")
        .begin_recording("call_away".into(), "/r/away.wav".into(), T0)
        .await
        .unwrap();
    ledger
        .for_node("tb-other")
        .finish_recording("call_away".into(), done(1_000, None), T0 + 1_000)
        .await
        .unwrap();
    let cases = [
        ("GET", "call_nope", 404, "no_recording"),
        ("GET", "call_plain", 404, "no_recording"),
        ("GET", "call_live", 409, "recording_in_progress"),
        ("DELETE", "call_live", 409, "recording_in_progress"),
        ("GET", "call_never", 404, "recording_not_made"),
        ("GET", "call_away", 409, "recording_on_another_node"),
        ("DELETE", "call_away", 409, "recording_on_another_node"),
        ("GET", "call_gone", 410, "recording_missing"),
    ];
    for (method, id, status, code) in cases {
        let (got, body) = api
            .send(method, &format!("/v1/calls/{id}/recording"), None)
            .await;
        assert_eq!(
            (got.as_u16(), body["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {id}: {body}"
        );
    }
    let (_, body) = api
        .send("GET", "/v1/calls/call_never/recording", None)
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the recorder is behind")
    );
    let (_, body) = api.send("GET", "/v1/calls/call_away/recording", None).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tb-other")
    );
    // A file removed by hand can still be marked deleted; then 410 says so.
    let (status, _) = api
        .send("DELETE", "/v1/calls/call_gone/recording", None)
        .await;
    assert_eq!(status.as_u16(), 204);
    let (status, body) = api.send("GET", "/v1/calls/call_gone/recording", None).await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (410, Some("recording_deleted"))
    );
    // Nothing was changed by the refusals.
    let live = ledger.recording("call_live".into()).await.unwrap().unwrap();
    assert_eq!(live.state, RecordingState::Recording);
    let away = ledger.recording("call_away".into()).await.unwrap().unwrap();
    assert_eq!(away.state, RecordingState::Complete);
}

on_both_backends!(
    the_recording_endpoints_say_why_they_cannot_serve,
    the_hold_and_the_price_count_the_recording_apart,
    a_recording_that_stopped_short_is_charged_for_what_it_holds,
    a_recording_never_made_costs_nothing_and_says_why,
    a_recording_whose_outcome_is_unknown_is_charged_with_the_talk,
    a_file_a_crash_left_open_is_finalized_at_start,
    retention_deletes_old_files_and_records_why,
);
