//! Experts on softphones end to end: the real daemon as registrar, the
//! suite's phone (`tollbridge_e2e::phone`) registering with digest and
//! taking calls, SIPp as the caller. A registered device is called where
//! it registered from and talks both ways; a wrong password is refused
//! and, repeated, locks the address out; two devices ring and the loser
//! gets CANCEL; a binding that lapses rings nothing.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::experts::*;
use common::*;
use tollbridge_e2e::phone::{Message, Phone};

/// A daemon taking REGISTER from loopback, locking an address out after
/// three failures, pinging devices every 5 s.
fn registrar_daemon() -> Daemon {
    start_daemon_sections(
        "ring_timeout = \"10s\"",
        "30s",
        "[registrar]\nallow = [\"127.0.0.0/8\"]\nrealm = \"tollbridge.test\"\nmax_failures = 3\nlockout = \"1m\"\nmin_expires = \"10s\"\nkeepalive = \"5s\"\n",
    )
}

fn sip_address(daemon: &Daemon) -> SocketAddr {
    daemon.sip_udp().expect("the daemon's SIP UDP address")
}

/// The relay address an INVITE's SDP offers.
fn offered_relay(invite: &Message) -> SocketAddr {
    let port = invite
        .body()
        .lines()
        .find_map(|line| line.strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .expect("an audio port in the INVITE");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Answers `invite` from `phone`: 180, then 200 with its SDP, and waits
/// for the ACK.
fn answer(phone: &mut Phone, invite: &Message) {
    phone.respond(invite, 180, None);
    let sdp = phone.answer_sdp();
    phone.respond(invite, 200, Some(&sdp));
    phone
        .next_request("ACK", Duration::from_secs(5))
        .expect("the ACK of our 200");
}

/// One 20 ms PCMU frame of `fill` from `socket` to `target`.
fn frame(socket: &UdpSocket, target: SocketAddr, fill: u8, seq: u16) {
    socket
        .send_to(&rtp(0, seq, 0x5151, &[fill; 160]), target)
        .unwrap();
}

/// Whether a frame of `fill` reaches `socket` within a second of sending.
fn hears(socket: &UdpSocket, fill: u8) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && n == 172
            && buf[12..n].iter().all(|b| *b == fill)
        {
            return true;
        }
    }
    false
}

/// Both parties send a few frames; each hears the other.
fn talk_both_ways(
    caller_media: &UdpSocket,
    caller_relay: SocketAddr,
    phone: &Phone,
    phone_relay: SocketAddr,
) {
    let mut caller_heard = false;
    let mut phone_heard = false;
    for seq in 1..=25u16 {
        // The phone sends first: behind a NAT its first packet opens the
        // way, and the relay latches to where it comes from.
        frame(&phone.media, phone_relay, 0x22, seq);
        frame(caller_media, caller_relay, 0x11, seq);
        caller_heard |= hears(caller_media, 0x22);
        phone_heard |= hears(&phone.media, 0x11);
        if caller_heard && phone_heard {
            break;
        }
    }
    assert!(caller_heard, "the caller hears the expert's device");
    assert!(phone_heard, "the expert's device hears the caller");
}

/// A registered device takes a booked call and both sides hear each
/// other; the cap ends it with BYE to both. `nat` makes the phone write a
/// private address in its Contact and SDP.
fn a_booked_call_reaches_the_device(nat: Option<&str>) {
    let daemon = registrar_daemon();
    create_expert(&daemon, "alice");
    let mut phone = Phone::new("alice", sip_address(&daemon));
    if let Some(private) = nat {
        phone = phone.behind_nat(private);
    }
    assert_eq!(phone.register(PASSWORD, 300), Some(200));
    let listed = devices(&daemon, "alice");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["contact"], phone.contact());
    assert_eq!(
        listed[0]["source"],
        phone.addr.to_string(),
        "where it registered from"
    );
    assert_eq!(listed[0]["transport"], "udp");
    let booking = book_expert(&daemon, "alice", 4);
    let caller_media = media_socket();
    let caller = caller(
        &daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &[],
    );
    let invite = phone
        .next_request("INVITE", Duration::from_secs(10))
        .expect("the INVITE reaches the registered device");
    // Sent where the REGISTER came from, to the Contact it registered.
    assert_eq!(
        invite.first_line(),
        format!("INVITE {} SIP/2.0", phone.contact())
    );
    answer(&mut phone, &invite);
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    talk_both_ways(&caller_media, caller_relay, &phone, offered_relay(&invite));
    let bye = phone
        .next_request("BYE", Duration::from_secs(8))
        .expect("BYE at the cap");
    phone.respond(&bye, 200, None);
    assert_passed("caller (BYE at the cap)", caller);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "cap-reached");
    assert_eq!(call["talk_ms"], 4_000);
}

#[test]
fn a_registered_device_takes_a_booked_call_and_talks_both_ways() {
    a_booked_call_reaches_the_device(None);
}

#[test]
fn a_device_behind_a_nat_is_called_where_it_registered_from() {
    // Its Contact and SDP say 10.9.8.7: only the REGISTER's source, and
    // latching to where its RTP comes from, reach it.
    a_booked_call_reaches_the_device(Some("10.9.8.7:5060"));
}

#[test]
fn a_wrong_password_is_refused_and_repeated_ones_lock_the_address_out() {
    let daemon = registrar_daemon();
    create_expert(&daemon, "bob");
    let registrar = sip_address(&daemon);
    // An unknown account gets the same answer as a wrong password.
    let mut stranger = Phone::new("mallory", registrar);
    assert_eq!(stranger.register(PASSWORD, 300), Some(403));
    let mut phone = Phone::new("bob", registrar);
    assert_eq!(phone.register("not the password", 300), Some(403));
    // The third failure from this address locks it out: even the right
    // password is refused now.
    assert_eq!(phone.register("still not it", 300), Some(403));
    assert_eq!(phone.register(PASSWORD, 300), Some(403));
    assert!(devices(&daemon, "bob").is_empty());
    let metrics = tollbridge_e2e::http_request(daemon.http, "GET", "/metrics", None, None)
        .unwrap()
        .1;
    for line in [
        "tollbridge_register_auth_failures_total{reason=\"wrong-password\"} 2",
        "tollbridge_register_auth_failures_total{reason=\"unknown-user\"} 1",
        "tollbridge_register_lockouts_total 1",
        "tollbridge_registers_total{outcome=\"locked-out\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[test]
fn two_devices_ring_and_the_one_that_did_not_answer_gets_cancel() {
    let daemon = registrar_daemon();
    create_expert(&daemon, "carol");
    let registrar = sip_address(&daemon);
    let mut desk = Phone::new("carol", registrar);
    let mut mobile = Phone::new("carol", registrar);
    assert_eq!(desk.register(PASSWORD, 300), Some(200));
    assert_eq!(mobile.register(PASSWORD, 300), Some(200));
    assert_eq!(devices(&daemon, "carol").len(), 2);
    let booking = book_expert(&daemon, "carol", 3);
    let caller_media = media_socket();
    let caller = caller(
        &daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &[],
    );
    let to_desk = desk
        .next_request("INVITE", Duration::from_secs(10))
        .expect("the desk phone rings");
    let to_mobile = mobile
        .next_request("INVITE", Duration::from_secs(10))
        .expect("the mobile rings too");
    mobile.respond(&to_mobile, 180, None);
    answer(&mut desk, &to_desk);
    let cancel = mobile
        .next_request("CANCEL", Duration::from_secs(5))
        .expect("the mobile gets CANCEL once the desk answered");
    assert_eq!(
        cancel.header("Call-ID"),
        to_mobile.header("Call-ID"),
        "for its own INVITE"
    );
    mobile.respond(&cancel, 200, None);
    mobile.respond(&to_mobile, 487, None);
    mobile
        .next_request("ACK", Duration::from_secs(5))
        .expect("the 487 is ACKed");
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    talk_both_ways(&caller_media, caller_relay, &desk, offered_relay(&to_desk));
    let bye = desk
        .next_request("BYE", Duration::from_secs(8))
        .expect("BYE at the cap");
    desk.respond(&bye, 200, None);
    assert_passed("caller", caller);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "cap-reached");
    assert!(
        mobile
            .next_request("BYE", Duration::from_millis(500))
            .is_none(),
        "nothing more for the mobile"
    );
}

#[test]
fn a_binding_lapses_and_a_device_can_unregister() {
    let daemon = registrar_daemon();
    create_expert(&daemon, "dave");
    let registrar = sip_address(&daemon);
    let mut phone = Phone::new("dave", registrar);
    // Shorter than registrar.min_expires: 423.
    assert_eq!(phone.register(PASSWORD, 5), Some(423));
    assert_eq!(phone.register(PASSWORD, 10), Some(200));
    let listed = devices(&daemon, "dave");
    assert_eq!(listed.len(), 1);
    // Kept alive while bound: OPTIONS come within registrar.keepalive.
    let ping = phone.next(Duration::from_secs(7)).expect("a keep-alive");
    assert_eq!(ping.method(), Some("OPTIONS"), "{}", ping.text);
    phone.respond(&ping, 200, None);
    std::thread::sleep(Duration::from_secs(6));
    assert!(devices(&daemon, "dave").is_empty(), "lapsed after 10 s");
    // A lapsed expert's call finds no device: the caller is refused.
    let booking = book_expert(&daemon, "dave", 60);
    let refused = caller(
        &daemon,
        "caller_refused.xml",
        CALLER_PREFIX,
        "40000",
        "0 96",
        &[],
    );
    assert_passed("caller (refused)", refused);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "callee-unreachable", "{call}");
    // Registered again, then removed with Expires: 0.
    let mut again = Phone::new("dave", registrar);
    assert_eq!(again.register(PASSWORD, 60), Some(200));
    assert_eq!(devices(&daemon, "dave").len(), 1);
    assert_eq!(again.register(PASSWORD, 0), Some(200));
    assert!(devices(&daemon, "dave").is_empty());
}

#[test]
fn the_experts_api_refuses_bad_input_and_never_shows_a_password() {
    let daemon = registrar_daemon();
    let post = |body: Value| daemon.api("POST", "/v1/experts", TOKEN, Some(&body.to_string()));
    let (status, body) = post(json!({"name": "a b", "username": "x y", "password": "short"}));
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "username", "password"]);
    let (status, _) =
        post(json!({"name": "erin", "username": "erin", "password": PASSWORD, "admin": true}));
    assert_eq!(status, 422, "unknown fields are refused");
    create_expert(&daemon, "erin");
    let (status, body) = post(json!({"name": "erin", "username": "erin2", "password": PASSWORD}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("expert_exists"))
    );
    let (status, body) = post(json!({"name": "erin2", "username": "erin", "password": PASSWORD}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("expert_exists"))
    );
    // A booking may only name an expert that exists.
    let mut booking = booking_json(&[caller_id(1)], "sip:unused@127.0.0.1", 60);
    booking["callee"] = json!({"expert": "nobody"});
    let (status, body) = daemon.api("POST", "/v1/bookings", TOKEN, Some(&booking.to_string()));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "callee.expert");
    // A new password works; the old one no longer does.
    let (status, _) = daemon.api(
        "PATCH",
        "/v1/experts/erin",
        TOKEN,
        Some(&json!({"password": "a brand new passphrase"}).to_string()),
    );
    assert_eq!(status, 200);
    let mut phone = Phone::new("erin", sip_address(&daemon));
    assert_eq!(phone.register(PASSWORD, 60), Some(403));
    assert_eq!(phone.register("a brand new passphrase", 60), Some(200));
    let (_, listed) = daemon.api("GET", "/v1/experts", TOKEN, None);
    assert!(!listed.to_string().contains("passphrase") && !listed.to_string().contains("ha1"));
    assert_eq!(listed["experts"][0]["devices"].as_array().unwrap().len(), 1);
    let (status, _) = daemon.api("DELETE", "/v1/experts/erin", TOKEN, None);
    assert_eq!(status, 204);
    let (status, _) = daemon.api("GET", "/v1/experts/erin", TOKEN, None);
    assert_eq!(status, 404);
    assert_eq!(phone.register("a brand new passphrase", 60), Some(403));
}

/// A baresip (Debian's `baresip-core`) registered as expert `name`: its
/// process, where it keeps the audio it heard, and its config directory.
struct Baresip {
    child: std::process::Child,
    heard: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts baresip registering `name` at `registrar`, answering every call
/// at once, saying a 440 Hz tone and keeping what it hears (sndfile).
fn baresip(name: &str, registrar: SocketAddr) -> Baresip {
    let dir = tempfile::tempdir().unwrap();
    let listen = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let heard = dir.path().join("heard");
    std::fs::create_dir_all(&heard).unwrap();
    let says = dir.path().join("tone.wav");
    tone(&says);
    let config = format!(
        "poll_method epoll\nsip_listen {listen}\nsip_transports udp\n\
         audio_player aufile,{sink}\naudio_source aufile,{says}\naudio_alert aufile,/dev/null\n\
         module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
         module sndfile.so\nmodule_app account.so\nmodule_app menu.so\nsnd_path {heard}\n",
        sink = dir.path().join("played.wav").display(),
        says = says.display(),
        heard = heard.display(),
    );
    std::fs::write(dir.path().join("config"), config).unwrap();
    std::fs::write(
        dir.path().join("accounts"),
        format!(
            "<sip:{name}@{registrar};transport=udp>;auth_pass=\"{PASSWORD}\";answermode=auto;regint=120;audio_codecs=PCMU\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("baresip")
        .arg("-f")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("baresip (apt-get install baresip-core)");
    Baresip {
        child,
        heard,
        _dir: dir,
    }
}

/// The largest sample in the WAVs baresip kept of what it received.
fn loudest_heard(dir: &std::path::Path) -> i32 {
    let mut loudest = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains("dec") {
            continue;
        }
        if let Ok(mut reader) = hound::WavReader::open(&path) {
            for sample in reader.samples::<i16>().flatten() {
                loudest = loudest.max(i32::from(sample).abs());
            }
        }
    }
    loudest
}

#[test]
fn a_baresip_expert_registers_takes_a_booked_call_and_hears_the_caller() {
    let daemon = registrar_daemon();
    create_expert(&daemon, "frank");
    let phone = baresip("frank", sip_address(&daemon));
    let deadline = Instant::now() + Duration::from_secs(10);
    while devices(&daemon, "frank").is_empty() {
        assert!(Instant::now() < deadline, "baresip never registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    call_the_softphone(&daemon, "frank", "baresip");
    // baresip keeps what it heard once its call has ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut loudest = 0;
    while loudest < 5_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        loudest = loudest_heard(&phone.heard);
    }
    assert!(
        loudest >= 5_000,
        "baresip heard the caller: loudest sample {loudest}"
    );
}

#[test]
fn a_pjsua2_expert_registers_takes_a_booked_call_and_hears_the_caller() {
    let daemon = registrar_daemon();
    create_expert(&daemon, "gina");
    let dir = tempfile::tempdir().unwrap();
    let says = dir.path().join("tone.wav");
    let heard_file = dir.path().join("heard.wav");
    tone(&says);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("softphones/pjsua2_expert.py");
    let mut phone = std::process::Command::new("python3")
        .arg(&script)
        .arg(sip_address(&daemon).to_string())
        .arg("gina")
        .arg(PASSWORD)
        .arg(&says)
        .arg(&heard_file)
        .arg("30")
        .env("PYTHONPATH", pjsua2_path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 with pjsua2 (scripts/test installs pjsua2-python)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while devices(&daemon, "gina").is_empty() {
        assert!(Instant::now() < deadline, "pjsua2 never registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    call_the_softphone(&daemon, "gina", "pjsua2");
    let status = phone.wait().unwrap();
    assert!(
        status.success(),
        "pjsua2 answered and its call ended at the cap"
    );
    // pjsua2 recorded what it heard: the caller's loud 0x11.
    let loudest = hound::WavReader::open(&heard_file)
        .unwrap()
        .samples::<i16>()
        .flatten()
        .map(|s| i32::from(s).abs())
        .max()
        .unwrap_or(0);
    assert!(
        loudest >= 5_000,
        "pjsua2 heard the caller: loudest sample {loudest}"
    );
}

#[test]
fn a_device_registered_over_tcp_is_called_on_its_connection() {
    let daemon = registrar_daemon();
    create_expert(&daemon, "hana");
    let tcp = daemon.sip_tcp().expect("the daemon's SIP TCP address");
    // It listens nowhere: only the connection it opened reaches it.
    let mut phone = Phone::over_tcp("hana", tcp);
    assert_eq!(phone.register(PASSWORD, 300), Some(200));
    let listed = devices(&daemon, "hana");
    assert_eq!(listed[0]["transport"], "tcp", "{listed:?}");
    assert_eq!(listed[0]["source"], phone.addr.to_string());
    // Kept alive on its connection.
    let ping = phone
        .next_request("OPTIONS", Duration::from_secs(7))
        .expect("a keep-alive on the connection");
    phone.respond(&ping, 200, None);
    let booking = book_expert(&daemon, "hana", 3);
    let caller_media = media_socket();
    let caller = caller(
        &daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &[],
    );
    let invite = phone
        .next_request("INVITE", Duration::from_secs(10))
        .expect("the INVITE comes on the device's connection");
    assert!(invite.text.contains("SIP/2.0/TCP"), "{}", invite.text);
    answer(&mut phone, &invite);
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    talk_both_ways(&caller_media, caller_relay, &phone, offered_relay(&invite));
    let bye = phone
        .next_request("BYE", Duration::from_secs(8))
        .expect("BYE at the cap, on the connection");
    phone.respond(&bye, 200, None);
    assert_passed("caller (BYE at the cap)", caller);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "cap-reached");
}
