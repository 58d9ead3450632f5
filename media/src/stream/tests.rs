#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::prompt::{PromptName, Prompts};

fn packet(seq: u16, timestamp: u32, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut packet = vec![0x80, 0];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(&[fill; FRAME_SAMPLES]);
    packet
}

fn header_of(packet: &[u8]) -> RtpHeader {
    RtpHeader::read(packet).unwrap()
}

fn short_prompt() -> Arc<Prompt> {
    // Three frames of a ramp, as a WAV.
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut bytes, spec).unwrap();
    for i in 0..480 {
        writer.write_sample((i * 50) as i16).unwrap();
    }
    writer.finalize().unwrap();
    Arc::new(Prompt::from_wav(PromptName::Warning, bytes.get_ref(), "ramp.wav").unwrap())
}

/// Forwards `count` packets 20 ms apart from `start`, returning the
/// headers the party saw.
fn forward(
    stream: &mut OutStream,
    start: (u16, u32, u32),
    count: u16,
    at: Instant,
) -> Vec<RtpHeader> {
    (0..count)
        .filter_map(|i| {
            let mut p = packet(
                start.0.wrapping_add(i),
                start.1.wrapping_add(u32::from(i) * 160),
                start.2,
                0x11,
            );
            let header = header_of(&p);
            stream
                .forward(&mut p, header, true, at + FRAME * u32::from(i))
                .then(|| header_of(&p))
        })
        .collect()
}

#[test]
fn before_any_prompt_packets_pass_untouched() {
    let mut stream = OutStream::default();
    let now = Instant::now();
    let mut p = packet(65535, 4_000_000_000, 7, 1);
    let original = p.clone();
    assert!(stream.forward(&mut p, header_of(&original), true, now));
    assert_eq!(p, original);
}

#[test]
fn a_prompt_continues_the_stream_and_forwarding_continues_after_it() {
    let prompt = short_prompt();
    let mut stream = OutStream::default();
    let t0 = Instant::now();
    let seen = forward(&mut stream, (65534, 1000, 0xaaaa), 3, t0);
    assert_eq!(seen.last().unwrap().sequence, 0);
    let last_forward = t0 + FRAME * 2;
    // 100 ms later the prompt starts: same SSRC, next sequence number,
    // timestamp advanced by the 100 ms (800 samples).
    let start = last_forward + Duration::from_millis(100);
    stream.play(prompt.clone(), PromptMode::Replace, Codec::Pcmu, start);
    let mut out = [0u8; PROMPT_PACKET];
    let mut frames = Vec::new();
    let mut at = start;
    while let Some(len) = stream.poll_frame(at, &mut out, 99, &mut [0; FRAME_SAMPLES]) {
        frames.push(out[..len].to_vec());
        assert_eq!(
            stream.poll_frame(at, &mut out, 99, &mut [0; FRAME_SAMPLES]),
            None,
            "one frame per 20 ms"
        );
        at += FRAME;
    }
    assert_eq!(frames.len(), 3);
    let first = header_of(&frames[0]);
    assert_eq!(
        (first.sequence, first.timestamp, first.ssrc),
        (1, 1320 + 800, 0xaaaa)
    );
    assert_eq!(frames[0][1], 0x80, "marker on the first frame, PCMU");
    for (i, frame) in frames.iter().enumerate() {
        let header = header_of(frame);
        assert_eq!(header.sequence, 1 + i as u16);
        assert_eq!(header.timestamp, 2120 + 160 * i as u32);
        assert_eq!(
            &frame[12..],
            &prompt.encoded(Codec::Pcmu)[i * 160..(i + 1) * 160]
        );
    }
    // While it played, the other party was muted on this leg.
    // After it, a new source (other SSRC, other numbers) continues the stream.
    let after = forward(&mut stream, (500, 90_000, 0xbbbb), 2, at + FRAME);
    assert_eq!(after[0].ssrc, 0xaaaa);
    assert_eq!(after[0].sequence, 4);
    assert_eq!(after[0].timestamp, 2120 + 160 * 2 + 320);
    assert_eq!(after[1].sequence, 5);
    assert_eq!(after[1].timestamp, after[0].timestamp + 160);
}

#[test]
fn replace_mutes_and_mix_mixes_the_other_party() {
    let prompt = short_prompt();
    let now = Instant::now();
    // Replace: forwarded packets are not sent while the prompt plays.
    let mut replace = OutStream::default();
    replace.play(prompt.clone(), PromptMode::Replace, Codec::Pcma, now);
    let mut p = packet(1, 160, 5, 0xd5);
    p[1] = 8;
    let header = header_of(&p);
    assert!(!replace.forward(&mut p, header, true, now));
    let mut out = [0u8; PROMPT_PACKET];
    replace
        .poll_frame(now, &mut out, 1, &mut [0; FRAME_SAMPLES])
        .unwrap();
    assert_eq!(
        &out[12..],
        &prompt.encoded(Codec::Pcma)[..160],
        "the prompt alone"
    );
    // Mix: the other party's frame is heard under the prompt.
    let mut mix = OutStream::default();
    mix.play(prompt.clone(), PromptMode::Mix, Codec::Pcma, now);
    let mut loud = packet(1, 160, 5, g711::alaw_encode(8000));
    loud[1] = 8;
    let header = header_of(&loud);
    assert!(
        !mix.forward(&mut loud, header, true, now),
        "held for mixing"
    );
    let mut prompt_only = [0; FRAME_SAMPLES];
    mix.poll_frame(now, &mut out, 1, &mut prompt_only).unwrap();
    assert_eq!(
        &prompt_only[..],
        &prompt.encoded(Codec::Pcma)[..160],
        "a recording gets the prompt without the other party"
    );
    for (i, byte) in out[12..].iter().enumerate() {
        let expected = g711::alaw_encode(
            prompt.samples()[i].saturating_add(g711::alaw_decode(g711::alaw_encode(8000))),
        );
        assert_eq!(*byte, expected, "sample {i}");
    }
    // No audio from the other party this frame: the prompt alone.
    mix.poll_frame(now + FRAME, &mut out, 1, &mut [0; FRAME_SAMPLES])
        .unwrap();
    assert_eq!(&out[12..], &prompt.encoded(Codec::Pcma)[160..320]);
}

#[test]
fn a_party_that_heard_nothing_gets_a_fresh_stream_and_late_timers_catch_up() {
    let prompts = Prompts::built_in("en").unwrap();
    let prompt = prompts.get(PromptName::TimeUp);
    let mut stream = OutStream::default();
    let start = Instant::now();
    stream.play(prompt.clone(), PromptMode::Replace, Codec::Pcmu, start);
    let mut out = [0u8; PROMPT_PACKET];
    // The timer woke 65 ms late: the due frames come out back to back.
    let late = start + Duration::from_millis(65);
    let mut burst = 0;
    while stream
        .poll_frame(late, &mut out, 0x1234, &mut [0; FRAME_SAMPLES])
        .is_some()
    {
        burst += 1;
    }
    assert_eq!(burst, 4, "frames due at 0, 20, 40 and 60 ms");
    assert_eq!(header_of(&out).ssrc, 0x1234);
    assert_eq!(stream.next_frame_at(), Some(start + FRAME * 4));
}
