//! Prompts: WAV files (8 kHz, mono, 16-bit PCM) read once at start and
//! encoded to PCMU and PCMA, so playing one costs no encoding.
//!
//! The defaults ship in `media/prompts/` (made by `scripts/make-prompts`)
//! and are built into the binary; `prompts.dir` may override any of them
//! with a file of the same name. Anything but 8 kHz mono 16-bit PCM is
//! refused with the file's name: the daemon does not resample.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::g711;
use crate::sdp::Codec;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// The longest prompt accepted.
const MAX_SECONDS: usize = 60;

/// Why a prompt could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("prompt {file}: {reason}")]
pub struct PromptError {
    /// The file (or the built-in prompt's name).
    pub file: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The prompts Tollbridge plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptName {
    /// "Enter your booking code followed by hash."
    Pin,
    /// No booking matched.
    NoBooking,
    /// The card hold was declined.
    PaymentDeclined,
    /// The expert did not answer or refused.
    CalleeUnavailable,
    /// The paid time is about to run out.
    Warning,
    /// The paid time has run out.
    TimeUp,
}

impl PromptName {
    /// Every prompt.
    pub const ALL: [PromptName; 6] = [
        PromptName::Pin,
        PromptName::NoBooking,
        PromptName::PaymentDeclined,
        PromptName::CalleeUnavailable,
        PromptName::Warning,
        PromptName::TimeUp,
    ];

    /// The file name stem (`warning` for `warning.wav`).
    pub fn stem(self) -> &'static str {
        match self {
            PromptName::Pin => "pin",
            PromptName::NoBooking => "no-booking",
            PromptName::PaymentDeclined => "payment-declined",
            PromptName::CalleeUnavailable => "callee-unavailable",
            PromptName::Warning => "warning",
            PromptName::TimeUp => "time-up",
        }
    }

    fn builtin(self) -> &'static [u8] {
        match self {
            PromptName::Pin => include_bytes!("../prompts/pin.wav"),
            PromptName::NoBooking => include_bytes!("../prompts/no-booking.wav"),
            PromptName::PaymentDeclined => include_bytes!("../prompts/payment-declined.wav"),
            PromptName::CalleeUnavailable => include_bytes!("../prompts/callee-unavailable.wav"),
            PromptName::Warning => include_bytes!("../prompts/warning.wav"),
            PromptName::TimeUp => include_bytes!("../prompts/time-up.wav"),
        }
    }
}

/// One prompt, decoded and encoded, padded to whole 20 ms frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    name: PromptName,
    samples: Vec<i16>,
    pcmu: Vec<u8>,
    pcma: Vec<u8>,
}

impl Prompt {
    /// Reads a WAV file's bytes; `file` names it in errors.
    pub fn from_wav(name: PromptName, bytes: &[u8], file: &str) -> Result<Prompt, PromptError> {
        let fail = |reason: String| PromptError {
            file: file.to_owned(),
            reason,
        };
        let reader =
            hound::WavReader::new(bytes).map_err(|e| fail(format!("not a WAV file: {e}")))?;
        let spec = reader.spec();
        if spec.sample_rate != 8000
            || spec.channels != 1
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
        {
            return Err(fail(format!(
                "is {} Hz, {} channel(s), {}-bit {:?}; prompts must be 8000 Hz mono 16-bit PCM (e.g. sox in.wav -r 8000 -c 1 -b 16 out.wav)",
                spec.sample_rate, spec.channels, spec.bits_per_sample, spec.sample_format
            )));
        }
        let mut samples: Vec<i16> = reader
            .into_samples::<i16>()
            .collect::<Result<_, _>>()
            .map_err(|e| fail(format!("unreadable samples: {e}")))?;
        if samples.is_empty() {
            return Err(fail("has no samples".into()));
        }
        if samples.len() > MAX_SECONDS * 8000 {
            return Err(fail(format!("is longer than {MAX_SECONDS} s")));
        }
        samples.resize(samples.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES, 0);
        let mut pcmu = vec![0; samples.len()];
        let mut pcma = vec![0; samples.len()];
        g711::encode(Codec::Pcmu, &samples, &mut pcmu);
        g711::encode(Codec::Pcma, &samples, &mut pcma);
        Ok(Prompt {
            name,
            samples,
            pcmu,
            pcma,
        })
    }

    /// Which prompt this is.
    pub fn name(&self) -> PromptName {
        self.name
    }

    /// The linear samples (for mixing).
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// The prompt encoded with `codec`.
    pub fn encoded(&self, codec: Codec) -> &[u8] {
        match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        }
    }

    /// How many 20 ms frames it lasts.
    pub fn frames(&self) -> usize {
        self.samples.len() / FRAME_SAMPLES
    }

    /// How long it plays.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.frames() as u64 * 20)
    }
}

/// All prompts, ready to play.
#[derive(Debug, Clone)]
pub struct Prompts {
    prompts: Vec<Arc<Prompt>>,
}

impl Prompts {
    /// The built-in prompts, each overridden by `<dir>/<name>.wav` when
    /// `dir` has one.
    pub fn load(dir: Option<&Path>) -> Result<Prompts, PromptError> {
        let mut prompts = Vec::with_capacity(PromptName::ALL.len());
        for name in PromptName::ALL {
            let file: Option<PathBuf> = dir
                .map(|d| d.join(format!("{}.wav", name.stem())))
                .filter(|p| p.exists());
            let prompt = match file {
                Some(path) => {
                    let shown = path.display().to_string();
                    let bytes = std::fs::read(&path).map_err(|e| PromptError {
                        file: shown.clone(),
                        reason: e.to_string(),
                    })?;
                    Prompt::from_wav(name, &bytes, &shown)?
                }
                None => Prompt::from_wav(
                    name,
                    name.builtin(),
                    &format!("built-in {}.wav", name.stem()),
                )?,
            };
            prompts.push(Arc::new(prompt));
        }
        Ok(Prompts { prompts })
    }

    /// One prompt.
    pub fn get(&self, name: PromptName) -> Arc<Prompt> {
        let index = PromptName::ALL.iter().position(|n| *n == name).unwrap_or(0);
        self.prompts[index].clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn wav(rate: u32, channels: u16, bits: u16, samples: usize) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        };
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut bytes, spec).unwrap();
        for i in 0..samples * usize::from(channels) {
            if bits == 16 {
                writer.write_sample((i as i16).wrapping_mul(97)).unwrap();
            } else {
                writer.write_sample(i as i8).unwrap();
            }
        }
        writer.finalize().unwrap();
        bytes.into_inner()
    }

    #[test]
    fn the_built_in_prompts_load_and_are_encoded_both_ways() {
        let prompts = Prompts::load(None).unwrap();
        for name in PromptName::ALL {
            let prompt = prompts.get(name);
            assert_eq!(prompt.name(), name);
            assert!(
                prompt.frames() > 10,
                "{name:?} is {} frames",
                prompt.frames()
            );
            assert_eq!(
                prompt.encoded(Codec::Pcmu).len(),
                prompt.frames() * FRAME_SAMPLES
            );
            assert_eq!(
                prompt.encoded(Codec::Pcma)[0],
                g711::alaw_encode(prompt.samples()[0])
            );
        }
        // Time-up must fit before a short cap; the warning before its minute.
        assert!(prompts.get(PromptName::TimeUp).duration() < Duration::from_secs(3));
    }

    #[test]
    fn a_prompt_is_padded_to_whole_frames() {
        let prompt =
            Prompt::from_wav(PromptName::Warning, &wav(8000, 1, 16, 161), "x.wav").unwrap();
        assert_eq!(prompt.frames(), 2);
        assert_eq!(prompt.samples()[161..], [0; 159]);
        assert_eq!(prompt.duration(), Duration::from_millis(40));
    }

    #[test]
    fn anything_but_8khz_mono_16_bit_is_refused_naming_the_file() {
        let cases = [
            (wav(16000, 1, 16, 100), "16000 Hz"),
            (wav(8000, 2, 16, 100), "2 channel(s)"),
            (wav(8000, 1, 8, 100), "8-bit"),
            (wav(8000, 1, 16, 0), "no samples"),
            (b"RIFF....not a wav".to_vec(), "not a WAV file"),
            (Vec::new(), "not a WAV file"),
        ];
        for (bytes, reason) in cases {
            let error =
                Prompt::from_wav(PromptName::Pin, &bytes, "/etc/tollbridge/prompts/pin.wav")
                    .unwrap_err();
            let text = error.to_string();
            assert!(
                text.starts_with("prompt /etc/tollbridge/prompts/pin.wav: "),
                "{text}"
            );
            assert!(text.contains(reason), "{text}");
        }
    }

    #[test]
    fn a_directory_overrides_the_prompts_it_has() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("warning.wav"), wav(8000, 1, 16, 320)).unwrap();
        let prompts = Prompts::load(Some(dir.path())).unwrap();
        assert_eq!(prompts.get(PromptName::Warning).frames(), 2);
        assert!(
            prompts.get(PromptName::TimeUp).frames() > 10,
            "the rest stay built in"
        );
        std::fs::write(dir.path().join("time-up.wav"), wav(44100, 1, 16, 100)).unwrap();
        let error = Prompts::load(Some(dir.path())).unwrap_err();
        assert!(error.file.ends_with("time-up.wav"), "{error}");
    }
}
