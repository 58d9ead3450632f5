//! Prompts: WAV files (8 kHz, mono, 16-bit PCM) read once at start and
//! encoded to PCMU and PCMA, so playing one costs no encoding.
//!
//! Prompts come in sets, one per language. English and Japanese ship in
//! `media/prompts/<language>/` (made by `scripts/make-prompts`) and are
//! built into the binary; `prompts.dir/<language>/` overrides any of them
//! with a file of the same name or adds a language, and files directly in
//! `prompts.dir` override the default language's. A language that lacks a
//! prompt plays the default language's instead, and says so
//! ([`PromptLibrary::missing`]). Anything but 8 kHz mono 16-bit PCM is
//! refused with the file's name: the daemon does not resample.

use std::path::Path;
use std::sync::{Arc, OnceLock};
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
    /// The PIN entered matched no booking; enter it again.
    WrongPin,
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
    /// An extension offer to the caller, before the block's length: "To
    /// extend your call by" (played as one prompt with the length and
    /// [`PromptName::ExtendOfferEnd`], see [`Prompts::extend_offer`]).
    ExtendOffer,
    /// An extension offer, after the block's length: "press 1."
    ExtendOfferEnd,
    /// The caller's extension succeeded.
    Extended,
    /// The caller's extension failed.
    NotExtended,
    /// "This call is recorded", to both parties before they hear each
    /// other, when the booking records its calls.
    RecordingNotice,
}

impl PromptName {
    /// Every prompt.
    pub const ALL: [PromptName; 12] = [
        PromptName::Pin,
        PromptName::WrongPin,
        PromptName::NoBooking,
        PromptName::PaymentDeclined,
        PromptName::CalleeUnavailable,
        PromptName::Warning,
        PromptName::TimeUp,
        PromptName::ExtendOffer,
        PromptName::ExtendOfferEnd,
        PromptName::Extended,
        PromptName::NotExtended,
        PromptName::RecordingNotice,
    ];

    /// The file name stem (`warning` for `warning.wav`).
    pub fn stem(self) -> &'static str {
        match self {
            PromptName::Pin => "pin",
            PromptName::WrongPin => "wrong-pin",
            PromptName::NoBooking => "no-booking",
            PromptName::PaymentDeclined => "payment-declined",
            PromptName::CalleeUnavailable => "callee-unavailable",
            PromptName::Warning => "warning",
            PromptName::TimeUp => "time-up",
            PromptName::ExtendOffer => "extend-offer",
            PromptName::ExtendOfferEnd => "extend-offer-end",
            PromptName::Extended => "extended",
            PromptName::NotExtended => "not-extended",
            PromptName::RecordingNotice => "recording-notice",
        }
    }

    fn index(self) -> usize {
        PromptName::ALL.iter().position(|n| *n == self).unwrap_or(0)
    }
}

/// The built-in prompts of one language, in [`PromptName::ALL`]'s order.
macro_rules! built_in {
    ($language:literal) => {
        [
            include_bytes!(concat!("../prompts/", $language, "/pin.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/wrong-pin.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/no-booking.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/payment-declined.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/callee-unavailable.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/warning.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/time-up.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/extend-offer.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/extend-offer-end.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/extended.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/not-extended.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/recording-notice.wav")).as_slice(),
        ]
    };
}

/// The block lengths, in minutes, an extension offer can say ("to extend
/// your call by N minutes"): each a `minutes-N.wav` in every language.
pub const OFFERED_MINUTES: [u32; 10] = [1, 2, 3, 5, 10, 15, 20, 30, 45, 60];

/// The built-in lengths of one language, in [`OFFERED_MINUTES`]' order.
macro_rules! built_in_minutes {
    ($language:literal) => {
        [
            include_bytes!(concat!("../prompts/", $language, "/minutes-1.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/minutes-2.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/minutes-3.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/minutes-5.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/minutes-10.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/minutes-15.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/minutes-20.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/minutes-30.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/minutes-45.wav")).as_slice(),
            include_bytes!(concat!("../prompts/", $language, "/minutes-60.wav")).as_slice(),
        ]
    };
}

/// The languages with built-in prompts.
pub const BUILT_IN_LANGUAGES: [&str; 2] = ["en", "ja"];

/// The built-in prompt `name` of `language`, when it has one.
fn built_in(language: &str, name: PromptName) -> Option<&'static [u8]> {
    const ENGLISH: [&[u8]; 12] = built_in!("en");
    const JAPANESE: [&[u8]; 12] = built_in!("ja");
    match language {
        "en" => Some(ENGLISH[name.index()]),
        "ja" => Some(JAPANESE[name.index()]),
        _ => None,
    }
}

/// The built-in saying of the `index`th of [`OFFERED_MINUTES`] in
/// `language`, when it has one.
fn built_in_minutes(language: &str, index: usize) -> Option<&'static [u8]> {
    const ENGLISH: [&[u8]; 10] = built_in_minutes!("en");
    const JAPANESE: [&[u8]; 10] = built_in_minutes!("ja");
    match language {
        "en" => ENGLISH.get(index).copied(),
        "ja" => JAPANESE.get(index).copied(),
        _ => None,
    }
}

/// Whether `tag` is a language tag as prompt sets and bookings name them:
/// a primary subtag of 2 or 3 lower-case letters, optionally followed by
/// `-` and a region or variant (`en`, `ja`, `pt-BR`, `yue`).
pub fn is_language_tag(tag: &str) -> bool {
    let (primary, rest) = match tag.split_once('-') {
        Some((primary, rest)) => (primary, Some(rest)),
        None => (tag, None),
    };
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_lowercase())
        && rest.is_none_or(|rest| {
            (2..=8).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        })
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
        let samples: Vec<i16> = reader
            .into_samples::<i16>()
            .collect::<Result<_, _>>()
            .map_err(|e| fail(format!("unreadable samples: {e}")))?;
        if samples.is_empty() {
            return Err(fail("has no samples".into()));
        }
        if samples.len() > MAX_SECONDS * 8000 {
            return Err(fail(format!("is longer than {MAX_SECONDS} s")));
        }
        Ok(Prompt::from_samples(name, samples))
    }

    /// A prompt of these 8 kHz samples, padded to whole frames.
    pub(crate) fn from_samples(name: PromptName, mut samples: Vec<i16>) -> Prompt {
        samples.resize(samples.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES, 0);
        let mut pcmu = vec![0; samples.len()];
        let mut pcma = vec![0; samples.len()];
        g711::encode(Codec::Pcmu, &samples, &mut pcmu);
        g711::encode(Codec::Pcma, &samples, &mut pcma);
        Prompt {
            name,
            samples,
            pcmu,
            pcma,
        }
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

/// One language's prompts, ready to play.
#[derive(Debug, Clone)]
pub struct Prompts {
    prompts: Vec<Arc<Prompt>>,
    /// How each of [`OFFERED_MINUTES`] is said.
    minutes: Vec<Arc<Prompt>>,
    /// Each offer, joined the first time a call needs it and shared by
    /// every call after (an offer is ~4 s: 128 KB of samples and
    /// encodings, not to be built per call).
    offers: Vec<OnceLock<Arc<Prompt>>>,
}

impl Prompts {
    fn new(prompts: Vec<Arc<Prompt>>, minutes: Vec<Arc<Prompt>>) -> Prompts {
        Prompts {
            prompts,
            minutes,
            offers: OFFERED_MINUTES.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// The built-in prompts of `language` (English's where it has none).
    pub fn built_in(language: &str) -> Result<Prompts, PromptError> {
        let prompts = PromptName::ALL
            .iter()
            .map(|name| {
                let (bytes, from) = match built_in(language, *name) {
                    Some(bytes) => (bytes, language),
                    None => (built_in("en", *name).unwrap_or_default(), "en"),
                };
                let file = format!("built-in {from}/{}.wav", name.stem());
                Prompt::from_wav(*name, bytes, &file).map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        let minutes = OFFERED_MINUTES
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (bytes, from) = match built_in_minutes(language, i) {
                    Some(bytes) => (bytes, language),
                    None => (built_in_minutes("en", i).unwrap_or_default(), "en"),
                };
                let file = format!("built-in {from}/minutes-{n}.wav");
                Prompt::from_wav(PromptName::ExtendOffer, bytes, &file).map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        Ok(Prompts::new(prompts, minutes))
    }

    /// One prompt.
    pub fn get(&self, name: PromptName) -> Arc<Prompt> {
        self.prompts[name.index()].clone()
    }

    /// The offer of an extension by `minutes` (one of [`OFFERED_MINUTES`];
    /// `None` for another length): [`PromptName::ExtendOffer`], the
    /// length, [`PromptName::ExtendOfferEnd`], played as one prompt.
    pub fn extend_offer(&self, minutes: u32) -> Option<Arc<Prompt>> {
        let index = OFFERED_MINUTES.iter().position(|m| *m == minutes)?;
        let offer = self.offers.get(index)?.get_or_init(|| {
            let parts = [
                self.get(PromptName::ExtendOffer),
                self.minutes[index].clone(),
                self.get(PromptName::ExtendOfferEnd),
            ];
            let samples = parts
                .iter()
                .flat_map(|p| p.samples().iter().copied())
                .collect();
            Arc::new(Prompt::from_samples(PromptName::ExtendOffer, samples))
        });
        Some(offer.clone())
    }
}

/// Every language's prompts, and which language plays when a call has
/// none of its own.
#[derive(Debug, Clone)]
pub struct PromptLibrary {
    default_language: String,
    default: Prompts,
    sets: Vec<(String, Prompts)>,
    missing: Vec<(String, String)>,
}

impl PromptLibrary {
    /// The built-in sets with `dir`'s files over them (see the module
    /// doc); `default_language` must have a set, built in or in `dir`.
    pub fn load(dir: Option<&Path>, default_language: &str) -> Result<PromptLibrary, PromptError> {
        let mut languages: Vec<String> =
            BUILT_IN_LANGUAGES.iter().map(|l| (*l).to_owned()).collect();
        if let Some(dir) = dir {
            for language in language_dirs(dir)? {
                if !languages.contains(&language) {
                    languages.push(language);
                }
            }
        }
        if !languages.iter().any(|l| l == default_language) {
            return Err(PromptError {
                file: "prompts.language".into(),
                reason: format!(
                    "no prompts in {default_language:?}: not built in ({}) and no such directory in prompts.dir",
                    BUILT_IN_LANGUAGES.join(", ")
                ),
            });
        }
        let mut missing = Vec::new();
        let english = Prompts::built_in("en")?;
        let default = load_set(dir, default_language, &english, true, &mut missing)?;
        let mut sets = vec![(default_language.to_owned(), default.clone())];
        for language in languages.iter().filter(|l| *l != default_language) {
            let set = load_set(dir, language, &default, false, &mut missing)?;
            sets.push((language.clone(), set));
        }
        Ok(PromptLibrary {
            default_language: default_language.to_owned(),
            default,
            sets,
            missing,
        })
    }

    /// The language of calls whose booking names none.
    pub fn default_language(&self) -> &str {
        &self.default_language
    }

    /// Every language with prompts, the default first.
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().map(|(language, _)| language.as_str())
    }

    /// The prompts of `language`; the default language's for `None` or a
    /// language without a set.
    pub fn prompts(&self, language: Option<&str>) -> &Prompts {
        language
            .and_then(|wanted| self.sets.iter().find(|(l, _)| l == wanted))
            .map_or(&self.default, |(_, set)| set)
    }

    /// The prompts a language lacks (their file names' stems), which play
    /// in the default language (or, for a default language of
    /// `prompts.dir`'s own, in English).
    pub fn missing(&self) -> &[(String, String)] {
        &self.missing
    }
}

/// The language directories in `dir` (a missing `dir` has none).
fn language_dirs(dir: &Path) -> Result<Vec<String>, PromptError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(PromptError {
                file: dir.display().to_string(),
                reason: e.to_string(),
            });
        }
    };
    let mut languages: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|name| is_language_tag(name))
        .collect();
    languages.sort();
    Ok(languages)
}

/// One language's set: `dir/<language>/<name>.wav`, then (for the default
/// language, `is_default`) `dir/<name>.wav`, then the built-in prompt,
/// then `fallback`'s (the default language's, or English's for the
/// default itself), noted in `missing`.
fn load_set(
    dir: Option<&Path>,
    language: &str,
    fallback: &Prompts,
    is_default: bool,
    missing: &mut Vec<(String, String)>,
) -> Result<Prompts, PromptError> {
    let mut one = |stem: String, name: PromptName, built: Option<&[u8]>| {
        let file_name = format!("{stem}.wav");
        let mut candidates = Vec::new();
        if let Some(dir) = dir {
            candidates.push(dir.join(language).join(&file_name));
            if is_default {
                candidates.push(dir.join(&file_name));
            }
        }
        match candidates.into_iter().find(|path| path.is_file()) {
            Some(path) => read_file(name, &path).map(|p| Some(Arc::new(p))),
            None => match built {
                Some(bytes) => {
                    let file = format!("built-in {language}/{file_name}");
                    Prompt::from_wav(name, bytes, &file).map(|p| Some(Arc::new(p)))
                }
                None => {
                    missing.push((language.to_owned(), stem));
                    Ok(None)
                }
            },
        }
    };
    let mut prompts = Vec::with_capacity(PromptName::ALL.len());
    for name in PromptName::ALL {
        let prompt = one(name.stem().to_owned(), name, built_in(language, name))?;
        prompts.push(prompt.unwrap_or_else(|| fallback.get(name)));
    }
    let mut minutes = Vec::with_capacity(OFFERED_MINUTES.len());
    for (i, n) in OFFERED_MINUTES.iter().enumerate() {
        let built = built_in_minutes(language, i);
        let said = one(format!("minutes-{n}"), PromptName::ExtendOffer, built)?;
        minutes.push(said.unwrap_or_else(|| fallback.minutes[i].clone()));
    }
    Ok(Prompts::new(prompts, minutes))
}

fn read_file(name: PromptName, path: &Path) -> Result<Prompt, PromptError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PromptError {
        file: shown.clone(),
        reason: e.to_string(),
    })?;
    Prompt::from_wav(name, &bytes, &shown)
}

#[cfg(test)]
mod tests;
