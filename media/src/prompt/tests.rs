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
    for language in BUILT_IN_LANGUAGES {
        let prompts = Prompts::built_in(language).unwrap();
        for name in PromptName::ALL {
            let prompt = prompts.get(name);
            assert_eq!(prompt.name(), name);
            assert!(
                prompt.frames() > 10,
                "{language} {name:?} is {} frames",
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
        // Time-up must fit before a short cap.
        assert!(
            prompts.get(PromptName::TimeUp).duration() < Duration::from_secs(3),
            "{language}"
        );
    }
    let english = Prompts::built_in("en").unwrap();
    let japanese = Prompts::built_in("ja").unwrap();
    for name in PromptName::ALL {
        assert_ne!(english.get(name), japanese.get(name), "{name:?}");
    }
    assert_ne!(
        english.get(PromptName::WrongPin),
        english.get(PromptName::Pin),
        "a wrong PIN has its own prompt"
    );
}

#[test]
fn language_tags_table() {
    for good in ["en", "ja", "yue", "pt-BR", "en-gb", "sl-rozaj"] {
        assert!(is_language_tag(good), "{good}");
    }
    for bad in [
        "", "e", "EN", "english", "en-", "en-x", "en_GB", "../en", "ja/..", "en-GB-x",
    ] {
        assert!(!is_language_tag(bad), "{bad}");
    }
}

#[test]
fn a_prompt_is_padded_to_whole_frames() {
    let prompt = Prompt::from_wav(PromptName::Warning, &wav(8000, 1, 16, 161), "x.wav").unwrap();
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
        let error = Prompt::from_wav(PromptName::Pin, &bytes, "/etc/tollbridge/prompts/pin.wav")
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
    // Directly in the directory: the default language's.
    std::fs::write(dir.path().join("warning.wav"), wav(8000, 1, 16, 320)).unwrap();
    std::fs::create_dir(dir.path().join("ja")).unwrap();
    std::fs::write(dir.path().join("ja/time-up.wav"), wav(8000, 1, 16, 480)).unwrap();
    let library = PromptLibrary::load(Some(dir.path()), "en").unwrap();
    let english = library.prompts(Some("en"));
    assert_eq!(english.get(PromptName::Warning).frames(), 2);
    let japanese = library.prompts(Some("ja"));
    assert_eq!(japanese.get(PromptName::TimeUp).frames(), 3);
    assert!(
        japanese.get(PromptName::Warning).frames() > 10,
        "the top-level file is the default language's only"
    );
    assert!(library.missing().is_empty(), "{:?}", library.missing());
    std::fs::write(dir.path().join("ja/pin.wav"), wav(44100, 1, 16, 100)).unwrap();
    let error = PromptLibrary::load(Some(dir.path()), "en").unwrap_err();
    assert!(error.file.ends_with("ja/pin.wav"), "{error}");
    assert!(error.to_string().contains("44100 Hz"), "{error}");
}

#[test]
fn a_language_of_the_directory_falls_back_and_lists_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fr")).unwrap();
    std::fs::create_dir(dir.path().join("not a language")).unwrap();
    std::fs::write(dir.path().join("fr/warning.wav"), wav(8000, 1, 16, 320)).unwrap();
    let library = PromptLibrary::load(Some(dir.path()), "ja").unwrap();
    assert_eq!(library.default_language(), "ja");
    assert_eq!(library.languages().collect::<Vec<_>>(), ["ja", "en", "fr"]);
    let french = library.prompts(Some("fr"));
    assert_eq!(french.get(PromptName::Warning).frames(), 2);
    // What French lacks plays in the default language, Japanese.
    let japanese = library.prompts(Some("ja"));
    assert_eq!(
        french.get(PromptName::TimeUp),
        japanese.get(PromptName::TimeUp)
    );
    let lacking: Vec<&str> = library
        .missing()
        .iter()
        .map(|(language, stem)| {
            assert_eq!(language, "fr");
            stem.as_str()
        })
        .collect();
    assert_eq!(
        lacking.len(),
        PromptName::ALL.len() - 1 + OFFERED_MINUTES.len()
    );
    assert!(!lacking.contains(&"warning"));
    assert!(lacking.contains(&"minutes-45"));
    // A call in a language without a set hears the default's.
    assert_eq!(
        library.prompts(Some("de")).get(PromptName::Pin),
        japanese.get(PromptName::Pin)
    );
    assert_eq!(
        library.prompts(None).get(PromptName::Pin),
        japanese.get(PromptName::Pin)
    );
}

#[test]
fn an_extension_offer_says_its_length_between_its_two_halves() {
    for language in BUILT_IN_LANGUAGES {
        let prompts = Prompts::built_in(language).unwrap();
        let offer = prompts.extend_offer(10).unwrap();
        let (start, end) = (
            prompts.get(PromptName::ExtendOffer),
            prompts.get(PromptName::ExtendOfferEnd),
        );
        let ten = &prompts.minutes[4];
        assert_eq!(offer.frames(), start.frames() + ten.frames() + end.frames());
        assert_eq!(&offer.samples()[..start.samples().len()], start.samples());
        assert!(offer.samples().ends_with(end.samples()));
        assert_ne!(
            prompts.extend_offer(5).unwrap().samples(),
            offer.samples(),
            "{language}: each length is said"
        );
        assert!(prompts.extend_offer(7).is_none(), "not an offered length");
        assert!(
            Arc::ptr_eq(&prompts.extend_offer(10).unwrap(), &offer),
            "{language}: joined once, shared by every call after"
        );
    }
}

#[test]
fn a_default_language_without_prompts_is_refused_naming_the_key() {
    let error = PromptLibrary::load(None, "fr").unwrap_err();
    assert_eq!(error.file, "prompts.language");
    assert!(error.reason.contains("\"fr\""), "{error}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fr")).unwrap();
    let library = PromptLibrary::load(Some(dir.path()), "fr").unwrap();
    // Nothing in fr/: every prompt is English's, and listed.
    assert_eq!(
        library.missing().len(),
        PromptName::ALL.len() + OFFERED_MINUTES.len()
    );
    let missing_dir = dir.path().join("nowhere");
    assert!(PromptLibrary::load(Some(&missing_dir), "en").is_ok());
}
