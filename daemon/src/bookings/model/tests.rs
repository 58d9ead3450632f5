use super::*;

fn now() -> OffsetDateTime {
    parse_time("2026-11-25T00:00:00Z").unwrap()
}

fn good() -> serde_json::Value {
    serde_json::json!({
        "called": "+81312345678",
        "callers": ["+819012345678"],
        "callee": {"number": "+815011112222", "trunk": "twilio"},
        "tariff": {"currency": "jpy", "price_per_minute": 100},
        "cap_seconds": 1800,
        "window": {"start": "2026-12-01T10:00:00+09:00", "end": "2026-12-01T11:00:00+09:00"}
    })
}

/// Stripe's limits, with a card: each case's fee, price a minute and
/// cap, and the field refused (none when it fits).
#[test]
fn stripe_limits_table() {
    // currency, fee, price a minute, cap, the field refused
    type Case = (&'static str, Option<i64>, i64, i64, Option<&'static str>);
    let cases: [Case; 9] = [
        ("jpy", Some(50), 100, 600, None),
        ("jpy", Some(49), 100, 600, Some("cancellation_fee")),
        ("jpy", Some(0), 100, 600, None),
        ("gbp", Some(30), 100, 600, None),
        ("gbp", Some(29), 100, 600, Some("cancellation_fee")),
        ("usd", Some(100_000_000), 100, 600, Some("cancellation_fee")),
        // ¥1,000,000,000 a minute for a day: far past ¥99,999,999.
        ("jpy", None, 1_000_000_000, 86_400, Some("cap_seconds")),
        // ¥1,157 a minute for a day: ¥1,666,080, fits.
        ("jpy", None, 1_157, 86_400, None),
        // $694.44 a minute for a day: 99,999,360 cents, just fits.
        ("usd", None, 69_444, 86_400, None),
    ];
    for (currency, fee, price, cap, refused) in cases {
        let mut body = good();
        body["tariff"]["currency"] = serde_json::json!(currency);
        body["tariff"]["price_per_minute"] = serde_json::json!(price);
        body["cap_seconds"] = serde_json::json!(cap);
        body["stripe"] = serde_json::json!({"customer": "cus_1", "payment_method": "pm_1"});
        body["cancellation_fee"] = serde_json::json!(fee);
        assert_eq!(
            refused_fields(body),
            refused.map(str::to_owned).into_iter().collect::<Vec<_>>(),
            "{currency} fee {fee:?}, {price}/min for {cap} s"
        );
    }
}

/// An account settling in dollars: yen bookings need the least yen
/// charge said, and that is the minimum for the fee and for calls.
#[test]
fn another_settlement_currency_needs_its_minimum_said() {
    use tollbridge_billing::rating::Currency;
    use tollbridge_billing::settlement::Minimums;
    let with_card = |fee: Option<i64>| {
        let mut body = good();
        body["stripe"] = serde_json::json!({"customer": "cus_1", "payment_method": "pm_1"});
        body["cancellation_fee"] = serde_json::json!(fee);
        serde_json::from_value::<NewBooking>(body).unwrap()
    };
    let validate_with = |booking: NewBooking, minimums: &Minimums| {
        let charges = booking.stripe.is_some();
        check_with(booking, charges, minimums)
    };
    let unknown = Minimums {
        settlement: Some(Currency::Usd),
        configured: vec![],
    };
    let errors = validate_with(with_card(None), &unknown).unwrap_err();
    assert_eq!(errors[0].field, "tariff.currency", "{errors:?}");
    assert!(
        errors[0].message.contains("stripe.minimum_charge.jpy"),
        "{errors:?}"
    );
    let said = Minimums {
        settlement: Some(Currency::Usd),
        configured: vec![(Currency::Jpy, 80)],
    };
    let errors = validate_with(with_card(Some(60)), &said).unwrap_err();
    assert_eq!(errors[0].field, "cancellation_fee", "{errors:?}");
    let valid = validate_with(with_card(Some(80)), &said).unwrap();
    assert_eq!(valid.minimum_charge, 80);
    // Without a card (ledger-only) nothing is charged: the currency's own.
    let mut no_card = good();
    no_card["cancellation_fee"] = serde_json::Value::Null;
    let booking: NewBooking = serde_json::from_value(no_card).unwrap();
    assert_eq!(validate_with(booking, &unknown).unwrap().minimum_charge, 50);
}

/// The fields a booking with a card is refused on (none when valid).
fn refused_fields(body: serde_json::Value) -> Vec<String> {
    check(body, true)
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.field)
        .collect()
}

fn check(body: serde_json::Value, charges: bool) -> Result<ValidBooking, Vec<FieldError>> {
    let booking: NewBooking = serde_json::from_value(body).unwrap();
    check_with(
        booking,
        charges,
        &tollbridge_billing::settlement::Minimums::default(),
    )
}

/// The rules with one trunk (`twilio`), prompts in en, ja and pt-BR.
fn check_with(
    booking: NewBooking,
    charges: bool,
    minimums: &tollbridge_billing::settlement::Minimums,
) -> Result<ValidBooking, Vec<FieldError>> {
    let trunks = ["twilio".to_owned()];
    validate(
        booking,
        &Context {
            now: now(),
            trunks_with_termination: &trunks,
            charges,
            minimums,
            languages: &["en".to_owned(), "ja".to_owned(), "pt-BR".to_owned()],
        },
    )
}

#[test]
fn a_good_booking_passes_with_defaults() {
    let valid = check(good(), false).unwrap();
    assert_eq!(valid.booking.tariff.increment_seconds, 1);
    assert_eq!(valid.booking.tariff.minimum_seconds, 0);
    assert_eq!(valid.window_end_ms - valid.window_start_ms, 3_600_000);
    assert_eq!(
        crate::clock::rfc3339(valid.window_start_ms),
        "2026-12-01T01:00:00Z"
    );
}

#[test]
fn every_rule_names_its_field() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/id", serde_json::json!("booking-1"), "id"),
        ("/called", serde_json::json!("0312345678"), "called"),
        ("/callers", serde_json::json!(["+1", "x"]), "callers[0]"),
        (
            "/callers",
            serde_json::json!(["+8190", "+8190"]),
            "callers[1]",
        ),
        ("/pin", serde_json::json!("12a4"), "pin"),
        (
            "/tariff/under_minimum",
            serde_json::json!("sometimes"),
            "tariff.under_minimum",
        ),
        ("/callers", serde_json::json!([]), "callers"),
        (
            "/callee",
            serde_json::json!({"uri": "http://x"}),
            "callee.uri",
        ),
        (
            "/callee",
            serde_json::json!({"number": "+815011112222", "trunk": "nope"}),
            "callee.trunk",
        ),
        (
            "/tariff/currency",
            serde_json::json!("JPY"),
            "tariff.currency",
        ),
        (
            "/tariff/price_per_minute",
            serde_json::json!(-1),
            "tariff.price_per_minute",
        ),
        (
            "/tariff/increment_seconds",
            serde_json::json!(0),
            "tariff.increment_seconds",
        ),
        (
            "/tariff/minimum_seconds",
            serde_json::json!(100_000),
            "tariff.minimum_seconds",
        ),
        ("/cap_seconds", serde_json::json!(0), "cap_seconds"),
        (
            "/window/start",
            serde_json::json!("tomorrow"),
            "window.start",
        ),
        (
            "/window/end",
            serde_json::json!("2026-12-01T09:00:00+09:00"),
            "window.end",
        ),
        (
            "/window/end",
            serde_json::json!("2026-12-01T11:00:00"),
            "window.end",
        ),
        (
            "/stripe",
            serde_json::json!({"customer": "x", "payment_method": "pm_1"}),
            "stripe.customer",
        ),
        (
            "/cancellation_fee",
            serde_json::json!(500),
            "cancellation_fee",
        ),
    ];
    for (pointer, value, field) in cases {
        let mut body = good();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = if parent.is_empty() {
            &mut body
        } else {
            body.pointer_mut(parent).unwrap()
        };
        target[key] = value;
        let errors = check(body, false).unwrap_err();
        assert!(
            errors.iter().any(|e| e.field == field),
            "{pointer}: expected {field} in {errors:?}"
        );
    }
}

#[test]
fn a_past_window_and_a_missing_card_when_charging_are_refused() {
    let mut body = good();
    body["window"] =
        serde_json::json!({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"});
    let errors = check(body, true).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["window.end", "stripe"]);
}

#[test]
fn the_language_is_a_tag_with_prompts() {
    for language in ["en", "ja", "pt-BR"] {
        let mut body = good();
        body["language"] = serde_json::json!(language);
        let valid = check(body, false).unwrap();
        assert_eq!(valid.booking.language.as_deref(), Some(language));
    }
    assert_eq!(check(good(), false).unwrap().booking.language, None);
    for (language, says) in [
        ("Japanese", "a language tag"),
        ("../en", "a language tag"),
        ("", "a language tag"),
        ("fr", "has no prompts here (these do: en, ja, pt-BR)"),
    ] {
        let mut body = good();
        body["language"] = serde_json::json!(language);
        let errors = check(body, false).unwrap_err();
        assert_eq!(errors.len(), 1, "{language}: {errors:?}");
        assert_eq!(errors[0].field, "language");
        assert!(errors[0].message.contains(says), "{language}: {errors:?}");
    }
}

#[test]
fn an_extension_policy_is_checked_field_by_field() {
    let card = serde_json::json!({"customer": "cus_1", "payment_method": "pm_1"});
    // (extension, with a card, the fields refused)
    let cases: Vec<(serde_json::Value, bool, Vec<&str>)> = vec![
        (
            serde_json::json!({"mode": "auto", "block_seconds": 300, "max_seconds": 3600}),
            true,
            vec![],
        ),
        (
            serde_json::json!({"mode": "off", "block_seconds": 300, "max_seconds": 600}),
            false,
            vec![],
        ),
        (
            serde_json::json!({"mode": "always", "block_seconds": 300, "max_seconds": 3600}),
            true,
            vec!["extension.mode"],
        ),
        (
            serde_json::json!({"mode": "ask", "block_seconds": 600, "max_seconds": 3600}),
            true,
            vec![],
        ),
        // An offer says whole minutes it has a word for: not 7, not 90 s.
        (
            serde_json::json!({"mode": "ask", "block_seconds": 420, "max_seconds": 3600}),
            true,
            vec!["extension.block_seconds"],
        ),
        (
            serde_json::json!({"mode": "ask", "block_seconds": 90, "max_seconds": 3600}),
            true,
            vec!["extension.block_seconds"],
        ),
        (
            serde_json::json!({"mode": "auto", "block_seconds": 5, "max_seconds": 3600}),
            true,
            vec!["extension.block_seconds"],
        ),
        (
            serde_json::json!({"mode": "auto", "block_seconds": 300, "max_seconds": 1800}),
            true,
            vec!["extension.max_seconds"],
        ),
        (
            serde_json::json!({"mode": "auto", "block_seconds": 300, "max_seconds": 90_000}),
            true,
            vec!["extension.max_seconds"],
        ),
        (
            serde_json::json!({"mode": "auto", "block_seconds": 300, "max_seconds": 3600}),
            false,
            vec!["extension"],
        ),
    ];
    for (extension, with_card, refused) in cases {
        let mut body = good();
        body["extension"] = extension.clone();
        if with_card {
            body["stripe"] = card.clone();
        }
        let fields: Vec<String> = check(body, with_card)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, refused, "{extension}, card {with_card}");
    }
    // A block whose hold Stripe would refuse: ¥1,000,000,000 a minute.
    let mut body = good();
    body["tariff"]["price_per_minute"] = serde_json::json!(1_000_000_000);
    body["cap_seconds"] = serde_json::json!(1);
    body["extension"] =
        serde_json::json!({"mode": "auto", "block_seconds": 600, "max_seconds": 3600});
    body["stripe"] = card;
    let fields: Vec<String> = check(body, true)
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert!(
        fields.contains(&"extension.block_seconds".to_owned()),
        "{fields:?}"
    );
    // An unknown field of the policy is refused when the body is read.
    let unknown = serde_json::from_value::<NewBooking>(serde_json::json!({
        "called": "+81312345678",
        "callee": {"uri": "sip:a@b.example"},
        "tariff": {"currency": "jpy", "price_per_minute": 100},
        "cap_seconds": 60,
        "window": {"start": "x", "end": "y"},
        "extension": {"mode": "auto", "block_seconds": 60, "max_seconds": 600, "blocks": 3}
    }));
    assert!(unknown.is_err());
}

#[test]
fn a_recorded_booking_is_held_and_capped_at_both_prices() {
    // ¥1,157 + ¥1 a minute for a day is ¥1,667,520: fits. ¥69,000 + ¥500
    // a minute for a day in dollars passes Stripe's maximum only because
    // of the recording.
    type Case = (&'static str, i64, i64, bool, Option<&'static str>);
    let cases: [Case; 5] = [
        ("jpy", 1_157, 1, true, None),
        ("usd", 69_000, 444, true, None),
        ("usd", 69_000, 500, true, Some("cap_seconds")),
        // Not recorded: the recording price is not charged, nor held.
        ("usd", 69_000, 500, false, None),
        (
            "jpy",
            100,
            -1,
            true,
            Some("tariff.recording_price_per_minute"),
        ),
    ];
    for (currency, price, recording, enabled, refused) in cases {
        let mut body = good();
        body["tariff"]["currency"] = serde_json::json!(currency);
        body["tariff"]["price_per_minute"] = serde_json::json!(price);
        body["tariff"]["recording_price_per_minute"] = serde_json::json!(recording);
        body["cap_seconds"] = serde_json::json!(86_400);
        body["stripe"] = serde_json::json!({"customer": "cus_1", "payment_method": "pm_1"});
        body["recording"] = serde_json::json!({"enabled": enabled});
        assert_eq!(
            refused_fields(body),
            refused.map(str::to_owned).into_iter().collect::<Vec<_>>(),
            "{currency} {price}+{recording}/min, recorded: {enabled}"
        );
    }
}

#[test]
fn a_recording_is_announced_unless_said_otherwise() {
    let mut body = good();
    body["recording"] = serde_json::json!({"enabled": true});
    let booking: NewBooking = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(
        booking.recording,
        Some(Recording {
            enabled: true,
            announce: true
        })
    );
    assert!(booking.records());
    body["recording"] = serde_json::json!({"enabled": true, "loud": true});
    assert!(serde_json::from_value::<NewBooking>(body).is_err());
}
