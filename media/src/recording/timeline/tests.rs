use super::*;

fn frame(value: i16) -> [i16; 160] {
    [value; 160]
}

/// The timeline written out to `end`, as (left, right) samples.
fn written(timeline: &mut Timeline, end: u64) -> Vec<(i16, i16)> {
    let mut bytes = Vec::new();
    timeline.take_until(end, &mut bytes);
    bytes
        .chunks_exact(4)
        .map(|c| {
            (
                i16::from_le_bytes([c[0], c[1]]),
                i16::from_le_bytes([c[2], c[3]]),
            )
        })
        .collect()
}

#[test]
fn a_jittered_frame_lands_where_its_timestamp_says() {
    let mut timeline = Timeline::default();
    timeline.place(Source::CallerVoice, 0, 5_000, &frame(100));
    // Arrives 30 ms late (240 samples) but its timestamp says 160.
    timeline.place(Source::CallerVoice, 400, 5_160, &frame(200));
    let out = written(&mut timeline, 320);
    assert_eq!(out.len(), 320);
    assert!(out[..160].iter().all(|s| *s == (100, 0)));
    assert!(out[160..].iter().all(|s| *s == (200, 0)));
}

#[test]
fn nothing_sent_is_silence_and_the_file_keeps_its_length() {
    let mut timeline = Timeline::default();
    timeline.place(Source::CalleeVoice, 160, 0, &frame(7));
    timeline.place(Source::CalleeVoice, 1_760, 1_600, &frame(9));
    let out = written(&mut timeline, 2_400);
    assert_eq!(out.len(), 2_400);
    assert!(out[..160].iter().all(|s| *s == (0, 0)));
    assert!(out[160..320].iter().all(|s| *s == (0, 7)));
    assert!(out[320..1_760].iter().all(|s| *s == (0, 0)));
    assert!(out[1_760..1_920].iter().all(|s| *s == (0, 9)));
    assert!(out[1_920..].iter().all(|s| *s == (0, 0)));
}

#[test]
fn a_timestamp_far_from_the_arrival_anchors_the_stream_again() {
    let mut timeline = Timeline::default();
    timeline.place(Source::CallerVoice, 0, 1_000, &frame(1));
    // A new source after a re-INVITE: its timestamps start elsewhere.
    timeline.place(Source::CallerVoice, 800, 900_000, &frame(2));
    timeline.place(Source::CallerVoice, 960, 900_160, &frame(3));
    let out = written(&mut timeline, 1_120);
    assert!(out[800..960].iter().all(|s| s.0 == 2));
    assert!(out[960..1_120].iter().all(|s| s.0 == 3));
    assert!(out[160..800].iter().all(|s| s.0 == 0));
}

#[test]
fn a_prompt_mixes_under_the_voice_of_its_channel_only() {
    let mut timeline = Timeline::default();
    timeline.place(Source::CallerVoice, 0, 0, &frame(1_000));
    timeline.place(Source::PromptToCaller, 0, 77, &frame(500));
    timeline.place(Source::PromptToCallee, 0, 91, &frame(i16::MAX));
    timeline.place(Source::CalleeVoice, 0, 3, &frame(10));
    let out = written(&mut timeline, 160);
    assert!(out.iter().all(|s| *s == (1_500, i16::MAX)), "{:?}", out[0]);
}

#[test]
fn a_frame_after_its_place_was_written_is_counted_and_left_out() {
    let mut timeline = Timeline::default();
    timeline.place(Source::CallerVoice, 0, 0, &frame(4));
    let first = written(&mut timeline, 1_000);
    assert_eq!(first.len(), 1_000);
    // Its timestamp puts it at 160, long written out.
    timeline.place(Source::CallerVoice, 1_000, 160, &frame(5));
    assert_eq!(timeline.late(), 1);
    let rest = written(&mut timeline, 1_160);
    assert!(rest.iter().all(|s| *s == (0, 0)));
    assert_eq!(timeline.written(), 1_160);
}

#[test]
fn the_end_cuts_what_was_placed_after_it() {
    let mut timeline = Timeline::default();
    timeline.place(Source::CallerVoice, 0, 0, &frame(4));
    timeline.place(Source::CallerVoice, 160, 160, &frame(4));
    let mut bytes = Vec::new();
    timeline.end_at(200, &mut bytes);
    assert_eq!(bytes.len(), 200 * 4);
    assert_eq!(timeline.written(), 200);
    let mut more = Vec::new();
    timeline.take_until(200, &mut more);
    assert!(more.is_empty());
}
