//! SIP over TLS end to end: the real daemon with a `tls:` listener and a
//! certificate from a CA the test makes (rcgen), PJSIP (pjsua2) as the
//! expert's softphone over TLS, SIPp as the caller. A softphone registers
//! over TLS and takes a booked call on its connection; a callee dialled at
//! a `;transport=tls` URI is reached over TLS with its certificate
//! checked; one whose certificate names another host is not called and
//! the call record says why; after a crash, the restarted daemon hangs up
//! a TLS callee on a new connection checked against the name it dialled;
//! a renewed certificate is served after SIGHUP while a connection made
//! before it goes on; `check-config` names the key of a bad certificate.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;

use common::experts::*;
use common::pjsua2::{Pjsua2, Setup};
use common::*;
use tollbridge_e2e::tls::{Issued, TestCa};

/// A daemon with UDP, TCP and TLS listeners, serving `ours`, trusting the
/// test CA for outbound TLS, taking REGISTER from loopback.
fn tls_daemon(ca: &TestCa, ours: &Issued) -> Daemon {
    start_tls_daemon(
        ca,
        ours,
        "[registrar]\nallow = [\"127.0.0.0/8\"]\nrealm = \"tollbridge.test\"\nkeepalive = \"5s\"\n",
    )
}

/// A PJSIP callee on a TLS listener serving `own`, registering nowhere.
fn callee_setup<'a>(user: &'a str, ca: &'a TestCa, own: &'a Issued, srtp: &'a str) -> Setup<'a> {
    Setup {
        registrar: "-".into(),
        user,
        tls: Some((ca, Some(own))),
        srtp,
        call: None,
        tone_hz: 440.0,
    }
}

#[test]
fn a_pjsua2_expert_registers_over_tls_and_takes_a_booked_call_on_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let ours = ca.issue("daemon", &["localhost", "127.0.0.1"]);
    let daemon = tls_daemon(&ca, &ours);
    let tls = daemon.sip_tls().expect("the daemon's TLS listener");
    create_expert(&daemon, "ines");
    let mut phone = Pjsua2::start(
        dir.path(),
        Setup {
            registrar: tls.to_string(),
            user: "ines",
            tls: Some((&ca, None)),
            srtp: "off",
            call: None,
            tone_hz: 440.0,
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while devices(&daemon, "ines").is_empty() {
        assert!(
            Instant::now() < deadline,
            "pjsua2 never registered over TLS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let device = devices(&daemon, "ines").remove(0);
    assert_eq!(device["transport"], "tls", "{device}");
    call_the_softphone(&daemon, "ines", "pjsua2");
    assert!(
        phone.answered_and_ended(),
        "pjsua2 answered; the call ended at the cap"
    );
    let loudest = phone.heard().loudest();
    assert!(
        loudest >= 5_000.0,
        "pjsua2 heard the caller: loudest sample {loudest}"
    );
}

#[test]
fn a_callee_at_a_tls_uri_is_reached_over_tls_and_a_misnamed_one_is_not_called() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let ours = ca.issue("daemon", &["localhost", "127.0.0.1"]);
    let daemon = tls_daemon(&ca, &ours);

    // Its certificate names the host we dial: called over TLS, talks.
    let theirs = ca.issue("callee", &["localhost"]);
    let mut phone = Pjsua2::start(dir.path(), callee_setup("jun", &ca, &theirs, "off"));
    let uri = format!("sip:jun@localhost:{};transport=tls", phone.port);
    let booking = create_booking(&daemon, &booking_json(&[caller_id(1)], &uri, 5));
    talk_until_the_cap(&daemon, &booking, "pjsua2");
    assert!(phone.answered_and_ended(), "pjsua2 answered over TLS");
    let loudest = phone.heard().loudest();
    assert!(
        loudest >= 5_000.0,
        "pjsua2 heard the caller: loudest sample {loudest}"
    );

    // Its certificate is for another host: no INVITE, the caller is
    // refused, and the record says why.
    let misnamed = ca.issue("misnamed", &["expert.example.net"]);
    let phone = Pjsua2::start(dir.path(), callee_setup("kai", &ca, &misnamed, "off"));
    let uri = format!("sip:kai@localhost:{};transport=tls", phone.port);
    let booking = create_booking(&daemon, &booking_json(&[caller_id(1)], &uri, 5));
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
    let text = call.to_string();
    assert!(
        text.contains("TLS: cannot reach localhost") && text.contains("not valid for name"),
        "the record says the certificate is for another name: {text}"
    );
    drop(phone);
}

#[test]
fn after_a_crash_a_tls_callee_is_hung_up_on_a_connection_checked_by_the_name_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let ours = ca.issue("daemon", &["localhost", "127.0.0.1"]);
    // The caller's SIP comes back on the same UDP port after the crash, as
    // a real restart does.
    let config = tls_daemon_config(&ca, &ours, "").replace(
        "\"udp:127.0.0.1:0\"",
        &format!(
            "\"udp:127.0.0.1:{}\"",
            tollbridge_e2e::free_port("127.0.0.1")
        ),
    );
    let daemon = start_daemon_as(tollbridge_e2e::DaemonOptions {
        config: Some(config),
        ..tollbridge_e2e::DaemonOptions::default()
    });
    // The expert's certificate names only the host we dial; its Contact
    // (where the BYE goes) is an address.
    let theirs = ca.issue("callee", &["localhost"]);
    let mut phone = Pjsua2::start(dir.path(), callee_setup("rin", &ca, &theirs, "off"));
    let uri = format!("sip:rin@localhost:{};transport=tls", phone.port);
    let booking = create_booking(&daemon, &booking_json(&[caller_id(1)], &uri, 600));
    let caller_media = media_socket();
    let caller = caller(
        &daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &[],
    );
    wait_relay(&caller, "SIP/2.0 200 OK");
    // Both legs stored, then the crash and a restart on the same ports.
    std::thread::sleep(Duration::from_millis(1500));
    let daemon = daemon.crash_and_restart();
    let restarted = Instant::now();
    assert!(daemon.wait_for_log("sip listening", Duration::from_secs(10)));
    // Ended by our BYE, not by the phone's own 30 s life.
    let ended = phone.answered_and_ended();
    assert!(
        ended && restarted.elapsed() < Duration::from_secs(15),
        "the TLS callee got no BYE after the restart ({:?}):\n{}",
        restarted.elapsed(),
        phone.log_tail()
    );
    assert_passed("caller (BYE after the restart)", caller);
    let deadline = Instant::now() + Duration::from_secs(15);
    let details = loop {
        let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
        let call = &body["calls"][0];
        if call["events"].is_array() {
            let details: Vec<String> = event_details(call).into_iter().map(str::to_owned).collect();
            if details
                .iter()
                .filter(|d| d.contains("after a restart"))
                .count()
                == 2
            {
                break details;
            }
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        details
            .iter()
            .any(|d| d == "after a restart: BYE to the callee answered 200"),
        "{details:?}"
    );
}

/// A TLS connection to the daemon trusting `client`'s roots, by name
/// `localhost`, its handshake done (or the reason it failed).
fn tls_client(
    client: Arc<rustls::ClientConfig>,
    address: SocketAddr,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(client, name).unwrap();
    let socket = std::net::TcpStream::connect(address)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = rustls::StreamOwned::new(connection, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Sends OPTIONS on `stream`; the status line of the answer.
fn options(
    stream: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    n: u32,
) -> String {
    let local = stream.sock.local_addr().unwrap();
    let request = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKo{n}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p{n}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut buffer = [0u8; 2048];
    let n = stream.read(&mut buffer).unwrap();
    String::from_utf8_lossy(&buffer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Sends SIGHUP and waits for `line` in the daemon's log.
fn reload_and_expect(daemon: &Daemon, line: &str) {
    daemon.signal("HUP");
    expect_log(daemon, line);
}

/// Waits up to 10 s for `line` in the daemon's log.
fn expect_log(daemon: &Daemon, line: &str) {
    assert!(
        daemon.wait_for_log(line, Duration::from_secs(10)),
        "no {line:?} in {:?}",
        daemon.logs()
    );
}

#[test]
fn a_renewed_sip_certificate_is_served_after_sighup_and_open_connections_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = TestCa::new(&subdir(dir.path(), "first"));
    let ours = first_ca.issue("daemon", &["localhost"]);
    let daemon = tls_daemon(&first_ca, &ours);
    let tls = daemon.sip_tls().unwrap();
    let mut before = tls_client(first_ca.client(), tls).unwrap();
    assert_eq!(options(&mut before, 1), "SIP/2.0 200 OK");

    // Bad files on reload: logged, the running certificate stays.
    let served = std::fs::read(&ours.certificate).unwrap();
    std::fs::write(&ours.certificate, "truncated").unwrap();
    reload_and_expect(&daemon, "sip tls certificate not reloaded");
    assert_eq!(
        options(&mut tls_client(first_ca.client(), tls).unwrap(), 2),
        "SIP/2.0 200 OK"
    );

    // A renewed certificate (from another CA, to tell them apart).
    let second_ca = TestCa::new(&subdir(dir.path(), "second"));
    let renewed = second_ca.issue("daemon", &["localhost"]);
    std::fs::copy(&renewed.certificate, &ours.certificate).unwrap();
    std::fs::copy(&renewed.private_key, &ours.private_key).unwrap();
    reload_and_expect(&daemon, "sip tls certificate re-read");
    assert_eq!(
        options(&mut tls_client(second_ca.client(), tls).unwrap(), 3),
        "SIP/2.0 200 OK"
    );
    let stale = tls_client(first_ca.client(), tls);
    let refused = stale.expect_err("the old CA no longer fits").to_string();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    // The connection made before the renewal goes on.
    assert_eq!(options(&mut before, 4), "SIP/2.0 200 OK");

    // sip.tls.ca is read again too: a good file is taken, a bad one is
    // logged and the running roots stay.
    expect_log(&daemon, "sip tls ca re-read");
    std::fs::write(first_ca.ca_file(), "not a certificate").unwrap();
    reload_and_expect(&daemon, "sip tls ca not reloaded");
    assert_eq!(
        options(&mut tls_client(second_ca.client(), tls).unwrap(), 5),
        "SIP/2.0 200 OK"
    );
    drop(served);
}

#[test]
fn check_config_names_the_sip_tls_key_of_a_bad_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let good = ca.issue("good", &["localhost"]);
    let other = ca.issue("other", &["localhost"]);
    let expired = ca.issue_expired("expired", &["localhost"]);
    let config = |certificate: &std::path::Path, key: &std::path::Path, ca: &std::path::Path| {
        let path = dir.path().join("tollbridge.toml");
        std::fs::write(
            &path,
            format!(
                "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\ntls = {{ certificate = {certificate:?}, private_key = {key:?}, ca = {ca:?} }}\n"
            ),
        )
        .unwrap();
        path
    };
    let check = tollbridge_e2e::check_config;
    assert_eq!(
        check(&config(&good.certificate, &good.private_key, &ca.ca_file())),
        (Some(0), String::new())
    );
    let (code, err) = check(&config(
        &expired.certificate,
        &expired.private_key,
        &ca.ca_file(),
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("sip.tls.certificate") && err.contains("expired on"),
        "{err}"
    );
    let (code, err) = check(&config(
        &good.certificate,
        &other.private_key,
        &ca.ca_file(),
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("sip.tls.private_key") && err.contains("does not belong"),
        "{err}"
    );
    let (code, err) = check(&config(
        &good.certificate,
        &good.private_key,
        &good.private_key,
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sip.tls.ca"), "{err}");
    // `run` refuses an expired certificate too, and says why.
    let output = Command::new(tollbridge_e2e::binary())
        .args(["run", "--config"])
        .arg(config(
            &expired.certificate,
            &expired.private_key,
            &ca.ca_file(),
        ))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("expired on"), "{err}");
}

/// A new directory `name` under `dir`, for a CA of its own.
fn subdir(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    path
}
