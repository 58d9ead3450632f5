//! Events told to the booking platform by webhook, as a platform receives
//! them: a receiver on 127.0.0.1 that checks every signature, answering
//! 500, dropping the connection, or not being there at all, and a daemon
//! killed with SIGKILL after the events were committed and before they
//! were delivered. Real daemon, SIPp as both phones.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::*;
use hmac::Mac;

const SECRET: &str = "whsec_platform_0123456789";

/// What the receiver does with the next requests, in order; then 200.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    Hangup,
}

/// One request the receiver got, signature checked.
#[derive(Debug, Clone)]
struct Received {
    event: Value,
    answered: Option<u16>,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start_on(listener: TcpListener, script: Vec<Answer>) -> Receiver {
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, script) = (log.clone(), script.clone());
                std::thread::spawn(move || serve(stream, &log, &script));
            }
        });
        Receiver { address, received }
    }

    fn start(script: Vec<Answer>) -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// The events answered 200, by id, once `done` says enough arrived.
    fn delivered(&self, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let events: Vec<Value> = self
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.answered == Some(200))
                .map(|r| r.event.clone())
                .collect();
            if done(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "delivered so far: {events:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads one request, checks its signature, answers as the script says.
fn serve(stream: TcpStream, log: &Mutex<Vec<Received>>, script: &Mutex<Vec<Answer>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    assert!(line.starts_with("POST /hook "), "{line}");
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    let body = String::from_utf8(body).unwrap();
    // The signature, checked as the docs tell a receiver to.
    let signature = &headers["tollbridge-signature"];
    let (t, v1) = signature
        .split_once(',')
        .map(|(t, v1)| (t.trim_start_matches("t="), v1.trim_start_matches("v1=")))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    assert_eq!(
        v1,
        hex::encode(mac.finalize().into_bytes()),
        "bad signature"
    );
    let age = tollbridge_e2e::stripe_fake::unix_now() - t.parse::<i64>().unwrap();
    assert!((0..=5).contains(&age), "signed {age} s ago");
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        headers["tollbridge-event-id"],
        event["id"].as_str().unwrap()
    );
    let answer = {
        let mut script = script.lock().unwrap();
        if script.is_empty() {
            Answer::Status(200)
        } else {
            script.remove(0)
        }
    };
    let answered = match answer {
        Answer::Hangup => None,
        Answer::Status(status) => {
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            Some(status)
        }
    };
    log.lock().unwrap().push(Received { event, answered });
}

fn webhook_section(url: &str) -> String {
    format!(
        "[[webhook]]\nname = \"platform\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nfirst_retry = \"200ms\"\n"
    )
}

/// A booking whose window ends [`WINDOW`] from now: its call is over by
/// then, and the window's end completes it (`booking.completed`).
fn closing_soon(callers: &[String], expert: &str) -> Value {
    let mut booking = booking_json(callers, expert, 600);
    booking["window"]["end"] = json!(rfc3339(WINDOW));
    booking
}

/// How long the bookings of these tests are open.
const WINDOW: time::Duration = time::Duration::seconds(10);

/// One connected call of about a second, the caller hanging up, on a
/// booking that completes when its window ends soon after.
fn one_call(daemon: &Daemon) -> String {
    let expert = expert("expert_answers.xml", "9", &[]);
    let booking = create_booking(daemon, &closing_soon(&[caller_id(1)], &expert_uri(&expert)));
    let caller = caller(
        daemon,
        "caller_hangs_up.xml",
        CALLER_PREFIX,
        "9",
        "0 96",
        &["-d", "1000"],
    );
    assert_passed("caller", caller);
    assert_passed("expert", expert);
    booking
}

/// The types of `events` of `booking`, in sequence order, checked to be
/// numbered 1, 2, 3, ... with each id once.
fn in_sequence(events: &[Value], booking: &str) -> Vec<String> {
    let mut mine: Vec<&Value> = events.iter().filter(|e| e["booking"] == booking).collect();
    mine.sort_by_key(|e| e["sequence"].as_i64());
    let sequences: Vec<i64> = mine.iter().filter_map(|e| e["sequence"].as_i64()).collect();
    assert_eq!(
        sequences,
        (1..=mine.len() as i64).collect::<Vec<_>>(),
        "{mine:#?}"
    );
    let mut ids: Vec<&str> = mine.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), mine.len(), "an event delivered twice: {mine:#?}");
    mine.iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_event_of_a_call_arrives_signed_in_sequence_through_500s_and_dropped_connections() {
    let receiver = Receiver::start(vec![
        Answer::Status(500),
        Answer::Hangup,
        Answer::Status(500),
        Answer::Status(503),
    ]);
    let daemon = start_daemon_sections("", "30s", &webhook_section(&receiver.url()));
    let booking = one_call(&daemon);
    let events = receiver.delivered(Duration::from_secs(30), |events| {
        events.iter().any(|e| e["type"] == "booking.completed")
            && events.iter().any(|e| e["type"] == "call.ended")
    });
    let kinds = in_sequence(&events, &booking);
    assert_eq!(
        kinds,
        [
            "call.ringing",
            "call.answered",
            "call.ended",
            "booking.completed"
        ],
        "{events:#?}"
    );
    let ended = events.iter().find(|e| e["type"] == "call.ended").unwrap();
    assert_eq!(ended["data"]["status"], "completed", "{ended}");
    assert_eq!(ended["data"]["reason"], "caller-hangup", "{ended}");
    assert!(
        ended["data"]["billed_seconds"].as_i64().unwrap() >= 1,
        "{ended}"
    );
    assert_eq!(ended["data"]["currency"], "jpy", "{ended}");

    // The API lists them with their attempts; the failed ones were retried.
    let (status, listed) = daemon.api("GET", &format!("/v1/events?booking={booking}"), TOKEN, None);
    assert_eq!(status, 200, "{listed}");
    let listed = listed["events"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 4);
    let attempts: i64 = listed
        .iter()
        .map(|e| e["deliveries"][0]["attempts"].as_i64().unwrap())
        .sum();
    assert_eq!(
        attempts,
        4 + 4,
        "4 failed attempts, then each delivered: {listed:#?}"
    );
    assert!(
        listed
            .iter()
            .all(|e| e["deliveries"][0]["state"] == "delivered")
    );

    // The list pages by cursor too.
    let (_, first) = daemon.api(
        "GET",
        &format!("/v1/events?booking={booking}&limit=3"),
        TOKEN,
        None,
    );
    let next = first["next"].as_str().expect("a next page").to_owned();
    let (_, second) = daemon.api(
        "GET",
        &format!("/v1/events?booking={booking}&limit=3&cursor={next}"),
        TOKEN,
        None,
    );
    assert_eq!(second["events"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["events"][0]["id"], listed[3]["id"]);
    assert!(second["next"].is_null(), "{second}");

    // Redelivery by hand sends the same event (same id) again.
    let id = listed[2]["id"].as_str().unwrap().to_owned();
    let (status, body) = daemon.api("POST", &format!("/v1/events/{id}/redeliver"), TOKEN, None);
    assert_eq!(
        (status, &body["deliveries_due"]),
        (202, &json!(1)),
        "{body}"
    );
    receiver.delivered(Duration::from_secs(10), |events| {
        events.iter().filter(|e| e["id"] == id.as_str()).count() == 2
    });

    // Bad input changes nothing.
    for (method, path, status) in [
        ("POST", "/v1/events/evt_none/redeliver", 404),
        ("GET", "/v1/events/evt_none", 404),
        ("GET", "/v1/events?type=call.exploded", 422),
        ("GET", "/v1/events?limit=0", 422),
        ("GET", "/v1/events?colour=red", 422),
        ("GET", "/v1/events?cursor=1.call_x", 422),
    ] {
        let (got, body) = daemon.api(method, path, TOKEN, None);
        assert_eq!(got, status, "{method} {path}: {body}");
    }
    let (status, _) = daemon.api("GET", "/v1/events", "wrong-token-0123456789", None);
    assert_eq!(status, 401);
}

#[test]
fn events_committed_while_the_receiver_is_down_arrive_after_a_kill_9_and_restart() {
    // The receiver's port, free until it starts.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let daemon = start_daemon_sections("", "30s", &webhook_section(&url));
    let booking = one_call(&daemon);
    // Committed, not delivered: the receiver is not there. The booking
    // completes when its window ends.
    let deadline = Instant::now() + WINDOW.unsigned_abs() + Duration::from_secs(20);
    loop {
        let (_, listed) = daemon.api("GET", &format!("/v1/events?booking={booking}"), TOKEN, None);
        let events = listed["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["type"] == "booking.completed") {
            assert!(
                events
                    .iter()
                    .all(|e| e["deliveries"][0]["state"] == "pending"),
                "{events:#?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{listed}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let daemon = daemon.crash_and_restart();
    let receiver = Receiver::start_on(
        TcpListener::bind(("127.0.0.1", port)).expect("the receiver's port is still free"),
        vec![],
    );
    let events = receiver.delivered(Duration::from_secs(60), |events| {
        events
            .iter()
            .filter(|e| e["booking"] == booking.as_str())
            .count()
            >= 4
    });
    assert_eq!(
        in_sequence(&events, &booking),
        [
            "call.ringing",
            "call.answered",
            "call.ended",
            "booking.completed"
        ]
    );
    drop(daemon);
}

#[test]
fn settlements_are_told_as_they_conclude() {
    let fake = tollbridge_e2e::stripe_fake::StripeFake::start();
    let receiver = Receiver::start(vec![]);
    let daemon = start_daemon_sections(
        "",
        "30s",
        &format!(
            "[stripe]\nsecret_key = \"sk_test_fake\"\napi_base = \"{}\"\nrequest_timeout = \"2s\"\n\n{}",
            fake.url(),
            webhook_section(&receiver.url())
        ),
    );
    let expert = expert("expert_answers.xml", "9", &[]);
    let mut booking = closing_soon(&[caller_id(1)], &expert_uri(&expert));
    booking["tariff"]["price_per_minute"] = json!(1200);
    booking["stripe"] = json!({"customer": "cus_test", "payment_method": "pm_card_visa"});
    let booking = create_booking(&daemon, &booking);
    let caller = caller(
        &daemon,
        "caller_hangs_up.xml",
        CALLER_PREFIX,
        "9",
        "0 96",
        // Three seconds at ¥1,200 a minute: ¥60, over Stripe's ¥50 minimum.
        &["-d", "3000"],
    );
    assert_passed("caller", caller);
    assert_passed("expert", expert);
    let events = receiver.delivered(Duration::from_secs(30), |events| {
        events
            .iter()
            .any(|e| e["type"] == "settlement.succeeded" && e["data"]["operation"] == "capture")
            && events.iter().any(|e| e["type"] == "booking.completed")
    });
    let kinds = in_sequence(&events, &booking);
    let settled: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "settlement.succeeded")
        .map(|e| e["data"]["operation"].as_str().unwrap())
        .collect();
    assert!(
        settled.contains(&"authorize") && settled.contains(&"capture"),
        "{events:#?}"
    );
    let capture = events
        .iter()
        .find(|e| e["type"] == "settlement.succeeded" && e["data"]["operation"] == "capture")
        .unwrap();
    let ended = events.iter().find(|e| e["type"] == "call.ended").unwrap();
    assert_eq!(
        capture["data"]["amount"], ended["data"]["amount"],
        "{capture} {ended}"
    );
    assert!(
        capture["data"]["payment_intent"]
            .as_str()
            .is_some_and(|p| p.starts_with("pi_"))
    );
    assert!(kinds.contains(&"call.answered".to_owned()), "{kinds:?}");
}
