//! G.711 µ-law (PCMU) and A-law (PCMA), 16-bit linear in and out.
//!
//! Written by hand (the classic segment arithmetic of ITU-T G.711 as in the
//! Sun reference code, about 40 lines) rather than pulled in: it has no
//! state, no allocation, and is tested below against the standard's
//! reference points and a full round trip of every code.

use crate::sdp::Codec;

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Encodes one 16-bit linear sample as µ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(ULAW_CLIP) + ULAW_BIAS;
    let highest_bit = 31 - pcm.leading_zeros() as i32;
    let exponent = (highest_bit - 7).clamp(0, 7);
    let mantissa = (pcm >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Decodes one µ-law byte to 16-bit linear.
pub fn ulaw_decode(code: u8) -> i16 {
    let code = !code;
    let exponent = (code >> 4) & 0x07;
    let mantissa = i32::from(code & 0x0f);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if code & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }) as i16
}

/// The top of each A-law segment, in 13-bit magnitude.
const ALAW_SEGMENT_END: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

/// Encodes one 16-bit linear sample as A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    let mut pcm = i32::from(sample) >> 3;
    let mask = if pcm >= 0 {
        0xd5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let Some(segment) = ALAW_SEGMENT_END.iter().position(|end| pcm <= *end) else {
        return 0x7f ^ mask;
    };
    let shift = if segment < 2 { 1 } else { segment };
    let code = ((segment as i32) << 4) | ((pcm >> shift) & 0x0f);
    (code as u8) ^ mask
}

/// Decodes one A-law byte to 16-bit linear.
pub fn alaw_decode(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut magnitude = i32::from(code & 0x0f) << 4;
    let segment = (code & 0x70) >> 4;
    match segment {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        _ => magnitude = (magnitude + 0x108) << (segment - 1),
    }
    (if code & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }) as i16
}

/// Encodes samples into `out` (same length) with `codec`.
pub fn encode(codec: Codec, samples: &[i16], out: &mut [u8]) {
    let encode = match codec {
        Codec::Pcmu => ulaw_encode,
        Codec::Pcma => alaw_encode,
    };
    for (sample, byte) in samples.iter().zip(out.iter_mut()) {
        *byte = encode(*sample);
    }
}

/// Decodes one byte with `codec`.
pub fn decode(codec: Codec, code: u8) -> i16 {
    match codec {
        Codec::Pcmu => ulaw_decode(code),
        Codec::Pcma => alaw_decode(code),
    }
}

/// The codec of a static payload type, if it is G.711.
pub fn codec_of(payload_type: u8) -> Option<Codec> {
    match payload_type {
        0 => Some(Codec::Pcmu),
        8 => Some(Codec::Pcma),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_points_of_the_standard() {
        // µ-law: ±0, full scale, and the first steps (G.711 Table 2a, in the
        // 16-bit scaling of the reference code).
        let ulaw = [
            (0xffu8, 0i16),
            (0x7f, 0),
            (0x80, 32124),
            (0x00, -32124),
            (0xfe, 8),
            (0x7e, -8),
            (0xef, 132),
            (0xf0, 120),
        ];
        for (code, linear) in ulaw {
            assert_eq!(ulaw_decode(code), linear, "µ-law {code:#04x}");
        }
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // A-law: the smallest steps, full scale (G.711 Table 1a, even bits
        // inverted on the line: 0xD5 is +8, 0x55 is -8).
        let alaw = [
            (0xd5u8, 8i16),
            (0x55, -8),
            (0xaa, 32256),
            (0x2a, -32256),
            (0xd4, 24),
            (0xc5, 264),
        ];
        for (code, linear) in alaw {
            assert_eq!(alaw_decode(code), linear, "A-law {code:#04x}");
        }
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_encode(i16::MAX), 0xaa);
        assert_eq!(alaw_encode(i16::MIN), 0x2a);
    }

    #[test]
    fn every_code_survives_a_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
            // µ-law has two zeros; -0 (0x7f) comes back as +0 (0xff).
            let expected = if code == 0x7f { 0xff } else { code };
            assert_eq!(
                ulaw_encode(ulaw_decode(code)),
                expected,
                "µ-law {code:#04x}"
            );
        }
    }

    #[test]
    fn encoding_is_monotonic_and_close() {
        let mut previous = i16::MIN;
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            for (encode, decode) in [
                (ulaw_encode as fn(i16) -> u8, ulaw_decode as fn(u8) -> i16),
                (alaw_encode, alaw_decode),
            ] {
                let back = i32::from(decode(encode(sample)));
                let error = (back - i32::from(sample)).abs();
                // Quantisation error stays within half the largest step (1024)
                // plus clipping at the extremes.
                assert!(error <= 1100, "{sample} -> {back}");
            }
            assert!(ulaw_decode(ulaw_encode(sample)) >= ulaw_decode(ulaw_encode(previous)));
            previous = sample;
        }
    }
}
