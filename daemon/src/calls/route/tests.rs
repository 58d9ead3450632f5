use super::*;

const NOW: i64 = 1_000_000;

fn booking(id: &str, callers: &[&str], pin: Option<&str>) -> Candidate {
    Candidate {
        id: id.into(),
        callers: callers.iter().map(|c| (*c).to_owned()).collect(),
        pin: pin.map(str::to_owned),
        window_start_ms: NOW - 1000,
        window_end_ms: NOW + 1000,
        in_call: false,
    }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|c| (*c).to_owned()).collect()
}

#[test]
fn routing_table() {
    let alice = booking("bk_a", &["+811"], None);
    let bob = booking("bk_b", &["+812"], Some("1234"));
    let pin_only = booking("bk_p", &[], Some("9999"));
    let closed = Candidate {
        window_end_ms: NOW,
        ..booking("bk_c", &["+813"], None)
    };
    let busy = Candidate {
        in_call: true,
        ..booking("bk_d", &["+814"], None)
    };
    let twice_a = booking("bk_a2", &["+811"], None);
    let cases: Vec<(&str, Vec<Candidate>, Vec<String>, Route)> = vec![
        (
            "nothing booked",
            vec![],
            ids(&["+811"]),
            Route::Refuse(RejectReason::UnknownNumber),
        ),
        (
            "caller id",
            vec![alice.clone(), bob.clone()],
            ids(&["+811"]),
            Route::Booking("bk_a".into()),
        ),
        (
            "P-Asserted-Identity",
            vec![alice.clone()],
            ids(&["+999", "+811"]),
            Route::Booking("bk_a".into()),
        ),
        (
            "stranger, no pin",
            vec![alice.clone()],
            ids(&["+999"]),
            Route::Refuse(RejectReason::NoBooking),
        ),
        (
            "stranger, pin possible",
            vec![alice.clone(), pin_only.clone()],
            ids(&["+999"]),
            Route::AskPin,
        ),
        ("anonymous", vec![pin_only.clone()], vec![], Route::AskPin),
        (
            "window closed",
            vec![closed.clone()],
            ids(&["+813"]),
            Route::Refuse(RejectReason::OutsideWindow),
        ),
        (
            "in a call",
            vec![busy],
            ids(&["+814"]),
            Route::Refuse(RejectReason::BookingInCall),
        ),
        (
            "two bookings, no pin",
            vec![alice.clone(), twice_a.clone()],
            ids(&["+811"]),
            Route::Refuse(RejectReason::NoBooking),
        ),
        (
            "two bookings, pin decides",
            vec![alice.clone(), twice_a, bob.clone()],
            ids(&["+811"]),
            Route::AskPin,
        ),
        (
            "open one of two",
            vec![
                closed.clone(),
                Candidate {
                    callers: ids(&["+813"]),
                    ..alice.clone()
                },
            ],
            ids(&["+813"]),
            Route::Booking("bk_a".into()),
        ),
    ];
    for (name, bookings, callers, expected) in cases {
        assert_eq!(route(&bookings, &callers, NOW), expected, "{name}");
    }
}

#[test]
fn pin_table() {
    let bob = booking("bk_b", &["+812"], Some("1234"));
    let pin_only = booking("bk_p", &[], Some("9999"));
    let late = Candidate {
        window_start_ms: NOW + 1,
        ..booking("bk_l", &[], Some("5555"))
    };
    let taken = Candidate {
        in_call: true,
        ..booking("bk_t", &[], Some("7777"))
    };
    let same_pin = booking("bk_s", &[], Some("9999"));
    let all = vec![bob.clone(), pin_only.clone(), late, taken];
    let cases = [
        ("right pin", "9999", Route::Booking("bk_p".into())),
        ("other booking's pin", "1234", Route::Booking("bk_b".into())),
        ("wrong pin", "0000", Route::AskPin),
        ("prefix", "99", Route::AskPin),
        ("longer", "99999", Route::AskPin),
        ("empty", "", Route::AskPin),
        (
            "not yet open",
            "5555",
            Route::Refuse(RejectReason::OutsideWindow),
        ),
        (
            "in a call",
            "7777",
            Route::Refuse(RejectReason::BookingInCall),
        ),
    ];
    for (name, pin, expected) in cases {
        assert_eq!(route_by_pin(&all, pin, NOW), expected, "{name}");
    }
    assert_eq!(
        route_by_pin(&[pin_only, same_pin], "9999", NOW),
        Route::Refuse(RejectReason::NoBooking)
    );
}

#[test]
fn numbers_are_normalized_to_e164() {
    let cases = [
        ("+81312345678", Some("+81312345678")),
        ("81312345678", Some("+81312345678")),
        ("0081312345678", Some("+81312345678")),
        ("tel:+81-3-1234-5678", Some("+81312345678")),
        ("+1 (415) 555.0100", Some("+14155550100")),
        ("+81312345678;npdi", Some("+81312345678")),
        ("0312345678", None),
        ("anonymous", None),
        ("", None),
        ("+", None),
        ("+1234567890123456", None),
        ("+12ab", None),
    ];
    for (input, expected) in cases {
        assert_eq!(e164(input).as_deref(), expected, "{input}");
    }
}
