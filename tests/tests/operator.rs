//! What an operator does to a running daemon from a shell: list the calls
//! in progress with `tollbridge calls`, end one with `tollbridge hangup`.
//! The real binary as daemon and as CLI, SIPp as both phones, media from
//! the test's own sockets; everything on 127.0.0.1.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

/// `tollbridge ARGS` with the daemon's config and API address (its config
/// listens on port 0, so the CLI is told the port); its exit status,
/// stdout and stderr.
fn cli(daemon: &Daemon, args: &[&str]) -> (i32, String, String) {
    cli_at(daemon, args, &format!("http://{}", daemon.http))
}

fn cli_at(daemon: &Daemon, args: &[&str], api: &str) -> (i32, String, String) {
    let output = Command::new(tollbridge_e2e::binary())
        .args(args)
        .arg("--config")
        .arg(daemon.config_path.as_ref().unwrap())
        .args(["--api", api])
        .env_remove("TOLLBRIDGE_CONFIG")
        .output()
        .expect("the CLI runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends `count` PCMU packets from `socket` to `to`, 20 ms apart in RTP
/// time, skipping every tenth sequence number (10 % loss).
fn stream(socket: &std::net::UdpSocket, to: std::net::SocketAddr, count: u16) {
    for n in 0..count {
        if n % 10 == 5 {
            continue;
        }
        socket
            .send_to(&rtp(0, 1000 + n, 0x1234, &[0xff; 160]), to)
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_operator_sees_a_live_call_and_hangs_it_up_from_the_cli() {
    let daemon = start_daemon("");
    let call = bridged(&daemon, "caller_waits_bye.xml", &[]);
    stream(&call.caller_media, call.caller_relay, 50);

    // The table: the call, talking, its codec, its loss, its node.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (id, table) = loop {
        let (code, out, err) = cli(&daemon, &["calls"]);
        assert_eq!(code, 0, "{out}{err}");
        let row = out.lines().nth(1).unwrap_or_default().to_owned();
        if row.contains("talking") && row.contains("10.0/") {
            break (row.split_whitespace().next().unwrap().to_owned(), out);
        }
        assert!(Instant::now() < deadline, "no talking call listed:\n{out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(id.starts_with("call_"), "{table}");
    for part in [call.booking.as_str(), "PCMU", "+815", "9:5"] {
        assert!(table.contains(part), "{part} not in\n{table}");
    }
    assert_eq!(table.lines().count(), 2, "one call:\n{table}");

    // The same as JSON: live figures beside the record.
    let (code, out, err) = cli(&daemon, &["calls", "--active", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let live = &listed["calls"][0]["live"];
    assert_eq!(live["phase"], "talking", "{listed}");
    assert_eq!(live["codec"], "PCMU", "{listed}");
    assert_eq!(live["media"]["caller"]["packets_received"], 45, "{listed}");
    assert_eq!(live["media"]["caller"]["packets_lost"], 5, "{listed}");
    let remaining = live["remaining_ms"].as_u64().unwrap();
    assert!((590_000..=600_000).contains(&remaining), "{listed}");

    // Hang up after the time-up prompt: both phones get BYE.
    let (code, out, err) = cli(&daemon, &["hangup", &id, "--announce"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("hang-up requested"), "{err}");
    assert!(out.contains("completed (hung-up)"), "{out}");
    assert_passed("caller", call.caller);
    assert_passed("expert", call.expert);
    let record = ended_call(&daemon, &call.booking);
    assert_eq!(record["end_reason"], "hung-up", "{record}");
    assert!(
        details(&record)
            .iter()
            .any(|d| d == "time-up played to both parties"),
        "{record}"
    );
    assert!(
        details(&record)
            .iter()
            .any(|d| d.contains("hung up by the operator")),
        "{record}"
    );

    // Nothing left to list or hang up.
    let (code, out, _) = cli(&daemon, &["calls"]);
    assert_eq!((code, out.lines().count()), (0, 1), "{out}");
    let (code, _, err) = cli(&daemon, &["hangup", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("409 call_ended"), "{err}");
    assert_no_ports_held(&daemon);
}

#[test]
fn a_call_hung_up_at_once_ends_without_a_prompt() {
    let daemon = start_daemon("");
    let call = bridged(&daemon, "caller_waits_bye.xml", &[]);
    let (_, body) = daemon.api(
        "GET",
        &format!("/v1/calls?booking={}", call.booking),
        TOKEN,
        None,
    );
    let id = body["calls"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = daemon.api("POST", &format!("/v1/calls/{id}/hangup"), TOKEN, Some("{}"));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["announce"], false);
    assert_passed("caller", call.caller);
    assert_passed("expert", call.expert);
    let record = ended_call(&daemon, &call.booking);
    assert_eq!(
        (record["status"].as_str(), record["end_reason"].as_str()),
        (Some("completed"), Some("hung-up")),
        "{record}"
    );
    assert!(
        !details(&record)
            .iter()
            .any(|d| d.contains("time-up played")),
        "{record}"
    );
}

#[test]
fn bad_hang_up_requests_and_queries_change_nothing() {
    let daemon = start_daemon("");
    let call = bridged(&daemon, "caller_waits_bye.xml", &[]);
    let (_, body) = daemon.api("GET", "/v1/calls?active=true", TOKEN, None);
    let id = body["calls"][0]["id"].as_str().unwrap().to_owned();
    let hangup = format!("/v1/calls/{id}/hangup");
    for (path, body, status, code) in [
        (
            hangup.as_str(),
            Some("{\"announce\": \"yes\"}"),
            422,
            "validation_failed",
        ),
        (
            hangup.as_str(),
            Some("{\"announce\": true, \"now\": 1}"),
            422,
            "validation_failed",
        ),
        (hangup.as_str(), Some("not json"), 400, "bad_json"),
        ("/v1/calls/call_nope/hangup", None, 404, "not_found"),
    ] {
        let (got, answer) = daemon.api("POST", path, TOKEN, body);
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body:?}: {answer}"
        );
    }
    let (status, answer) = daemon.api("POST", &hangup, "wrong-token-0123456789", None);
    assert_eq!(status, 401, "{answer}");
    for query in ["active=maybe", "active=true&limit=0", "limit=5"] {
        let (status, answer) = daemon.api("GET", &format!("/v1/calls?{query}"), TOKEN, None);
        assert_eq!(status, 422, "{query}: {answer}");
    }
    // The call went on untouched.
    let (_, body) = daemon.api("GET", &format!("/v1/calls/{id}"), TOKEN, None);
    assert_eq!(body["live"]["phase"], "talking", "{body}");

    // The CLI names what is wrong: a config without a token, a bad --api.
    let bare = daemon.dir.path().join("no-token.toml");
    std::fs::write(&bare, "[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let output = Command::new(tollbridge_e2e::binary())
        .args(["calls", "--config"])
        .arg(&bare)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("http.api_token"),
        "{output:?}"
    );
    let (code, _, err) = cli_at(&daemon, &["calls"], "ftp://x");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--api ftp://x"), "{err}");
    // Nobody there: said so, exit 1.
    let (code, _, err) = cli_at(&daemon, &["calls"], "http://127.0.0.1:9");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the daemon's API"), "{err}");
    let (code, _, err) = cli(&daemon, &["hangup", "call_nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("404 not_found"), "{err}");
    drop(call);
}

/// `tollbridge ARGS --config` of `daemon`, run in its directory (its
/// ledger is `./tollbridge.db` there).
fn cli_in_dir(daemon: &Daemon, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(tollbridge_e2e::binary())
        .args(args)
        .arg("--config")
        .arg(daemon.config_path.as_ref().unwrap())
        .current_dir(daemon.dir.path())
        .env_remove("TOLLBRIDGE_CONFIG")
        .output()
        .expect("the CLI runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every call to [`NUMBER`] the daemon's API lists.
fn calls_to_number(daemon: &Daemon) -> Vec<Value> {
    let (status, body) = daemon.api(
        "GET",
        "/v1/calls?called=%2B81500000001&limit=500",
        TOKEN,
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["calls"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_backup_taken_during_20_live_calls_holds_every_closed_record() {
    let mut daemon = start_daemon("");
    let expert = expert("expert_answers.xml", "9", &["-m", "20"]);
    for n in 1..=20 {
        book(&daemon, &[caller_id(n)], None, &expert_uri(&expert));
    }
    let callers = caller(
        &daemon,
        "caller_hangs_up.xml",
        CALLER_PREFIX,
        "9",
        "0 96",
        &["-m", "20", "-r", "10", "-l", "20", "-d", "3000"],
    );
    // Back up while some calls have closed and others are talking.
    let deadline = Instant::now() + Duration::from_secs(30);
    let closed_before: Vec<Value> = loop {
        let calls = calls_to_number(&daemon);
        let closed: Vec<Value> = calls
            .iter()
            .filter(|c| !c["ended_at"].is_null())
            .cloned()
            .collect();
        if closed.len() >= 3 && calls.len() > closed.len() {
            break closed;
        }
        assert!(Instant::now() < deadline, "calls: {calls:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let copy = daemon.dir.path().join("backup.db");
    let (code, out, err) = cli_in_dir(&daemon, &["backup", copy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("open)"), "{out}");
    assert_passed("callers", callers);
    assert_passed("expert", expert);

    // The copy is refused as a target and while the daemon runs.
    let (code, _, err) = cli_in_dir(&daemon, &["backup", copy.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");
    let (code, _, err) = cli_in_dir(&daemon, &["restore", copy.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("in use by a running tollbridge"), "{err}");
    let garbage = daemon.dir.path().join("garbage.db");
    std::fs::write(&garbage, "SQLite format 3? no.").unwrap();

    // The copy opens in a daemon of its own and holds every record that
    // was closed before the backup, as it was.
    let restored = Daemon::start(&test_config(
        &format!("api_token = \"{TOKEN}\""),
        &format!(
            "[database]\npath = \"{}\"\n\n[media]\naddress = \"127.0.0.1\"\nports = \"{}\"\n",
            copy.display(),
            port_range()
        ),
    ));
    let in_copy = calls_to_number(&restored);
    assert!(in_copy.len() >= closed_before.len(), "{in_copy:?}");
    for before in &closed_before {
        let copied = in_copy
            .iter()
            .find(|c| c["id"] == before["id"])
            .unwrap_or_else(|| panic!("{} missing from the backup", before["id"]));
        for field in [
            "status",
            "end_reason",
            "ended_at",
            "talk_ms",
            "billed_seconds",
            "amount",
        ] {
            assert_eq!(copied[field], before[field], "{field} of {}", before["id"]);
        }
    }
    drop(restored);

    // With the daemon stopped: a bad file is refused, the copy restored.
    daemon.signal("TERM");
    assert!(
        daemon
            .wait_exit(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
    let (code, _, err) = cli_in_dir(&daemon, &["restore", garbage.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not a usable ledger") || err.contains("garbage.db"),
        "{err}"
    );
    let (code, out, err) = cli_in_dir(&daemon, &["restore", copy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kept as"), "{out}");
}

/// The `Server` (or, as rsipstack writes it on responses too,
/// `User-Agent`) header of the daemon's answer to an OPTIONS.
fn server_header(daemon: &Daemon) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let to = daemon.sip_udp().unwrap();
    let options = format!(
        "OPTIONS sip:probe@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKua{}\r\n\
         From: <sip:probe@{local}>;tag=ua\r\nTo: <sip:probe@{to}>\r\nCall-ID: ua-{}@test\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        local.port(),
        local.port()
    );
    socket.send_to(options.as_bytes(), to).unwrap();
    let mut buffer = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buffer).unwrap();
    let answer = String::from_utf8_lossy(&buffer[..n]).into_owned();
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    answer
        .lines()
        .find_map(|line| {
            line.strip_prefix("Server: ")
                .or_else(|| line.strip_prefix("User-Agent: "))
        })
        .map(str::to_owned)
}

#[test]
fn the_server_header_names_no_version_unless_configured() {
    let daemon = start_daemon("");
    assert_eq!(server_header(&daemon).as_deref(), Some("Tollbridge"));
    let with_version = Daemon::start(&format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\nuser_agent = \"Tollbridge/9.9.9\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\n\n\
         [media]\naddress = \"127.0.0.1\"\nports = \"{}\"\n",
        port_range()
    ));
    assert!(with_version.wait_for_log("sip listening", Duration::from_secs(10)));
    assert_eq!(
        server_header(&with_version).as_deref(),
        Some("Tollbridge/9.9.9")
    );
}

#[test]
fn the_accounting_export_lists_each_call_from_the_cli() {
    let daemon = start_daemon("");
    let from = rfc3339(time::Duration::minutes(-1));
    let call = bridged(&daemon, "caller_hangs_up.xml", &["-d", "500"]);
    assert_passed("caller", call.caller);
    assert_passed("expert", call.expert);
    let record = ended_call(&daemon, &call.booking);
    let to = rfc3339(time::Duration::minutes(1));
    let (code, out, err) = cli_in_dir(
        &daemon,
        &["export", "--from", &from, "--to", &to, "--format", "jsonl"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 call(s)"), "{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["call"], record["id"]);
    assert_eq!(line["booking"], record["booking"]);
    assert_eq!(line["billed_seconds"], record["billed_seconds"]);
    assert_eq!(line["amount"], record["amount"]);
    let (code, out, _) = cli_in_dir(&daemon, &["export", "--from", &from, "--to", &to]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "a header and one call: {out}");
    for args in [
        ["export", "--from", "yesterday", "--to", &to],
        ["export", "--from", &to, "--to", &from],
    ] {
        let (code, _, err) = cli_in_dir(&daemon, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let (code, _, err) = cli_in_dir(
        &daemon,
        &["export", "--from", &from, "--to", &to, "--format", "xml"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("csv or jsonl"), "{err}");
}
