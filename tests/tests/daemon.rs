//! The daemon's life cycle, run as the real binary: defaults, systemd
//! notifications, drain on SIGTERM, reload on SIGHUP, config checking and
//! the API's token.

use std::process::Command;
use std::time::{Duration, Instant};

use tollbridge_e2e::{Daemon, DaemonOptions, NotifySocket, binary, run_sipp, test_config};

const TOKEN: &str = "e2e-token-0123456789abcdef";
const OTHER_TOKEN: &str = "e2e-token-second-0123456789";

fn wait_ready(daemon: &Daemon, timeout: Duration) -> (u16, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = daemon.get("/readyz", None);
        if answer.0 == 200 || Instant::now() >= deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The README's first command: no config at all. It binds the default
/// loopback ports (HTTP 8080), so no other test uses the defaults.
#[test]
fn runs_on_defaults_notifies_systemd_and_drains_on_sigterm() {
    let notify = NotifySocket::new();
    let started = Instant::now();
    let mut daemon = Daemon::start_with(DaemonOptions {
        config: None,
        env: vec![("NOTIFY_SOCKET".into(), notify.path().display().to_string())],
        ..DaemonOptions::default()
    });
    assert_eq!(daemon.http.to_string(), "127.0.0.1:8080");
    assert_eq!(
        wait_ready(&daemon, Duration::from_secs(10)),
        (200, r#"{"status":"ready"}"#.to_owned())
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let ready = notify.wait_for("READY=1", Duration::from_secs(5));
    assert!(ready.is_ok(), "no READY=1 on the notify socket: {ready:?}");
    assert!(
        daemon.dir.path().join("tollbridge.db").is_file(),
        "the default database is ./tollbridge.db"
    );
    assert!(
        daemon.logs().iter().any(|l| l.contains("ledger-only")),
        "the start-up log says Stripe is in ledger-only mode"
    );

    daemon.signal("TERM");
    let stopping = notify.wait_for("STOPPING=1", Duration::from_secs(10));
    assert!(
        stopping.is_ok(),
        "no STOPPING=1 on the notify socket: {stopping:?}"
    );
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "logs:\n{}",
        daemon.logs().join("\n")
    );
}

#[test]
fn the_api_needs_the_token_and_says_ledger_only() {
    let daemon = Daemon::start(&test_config(&format!("api_token = \"{TOKEN}\""), ""));
    let (status, body) = daemon.get("/v1/status", None);
    assert_eq!(status, 401);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    let (status, body) = daemon.get("/v1/status", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["stripe"]["mode"], "ledger-only");
    let (status, body) = daemon.get("/metrics", None);
    assert_eq!(status, 200);
    assert!(body.contains("tollbridge_build_info"), "{body}");
}

#[test]
fn sighup_with_a_bad_file_keeps_the_old_config_and_a_good_one_applies() {
    let daemon = Daemon::start(&test_config(&format!("api_token = \"{TOKEN}\""), ""));
    let config_path = daemon.config_path.clone().unwrap();
    assert_eq!(daemon.get("/v1/status", Some(TOKEN)).0, 200);

    // A broken file: a bad token and a bad section. Nothing changes.
    std::fs::write(
        &config_path,
        test_config(&format!("api_token = \"{OTHER_TOKEN}\"\nbogus = 1"), ""),
    )
    .unwrap();
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log("config reload failed", Duration::from_secs(10)),
        "logs:\n{}",
        daemon.logs().join("\n")
    );
    assert!(
        daemon.logs().iter().any(|l| l.contains("http.bogus")),
        "the reload error names the key"
    );
    assert_eq!(
        daemon.get("/v1/status", Some(TOKEN)).0,
        200,
        "the old token still works"
    );
    assert_eq!(daemon.get("/v1/status", Some(OTHER_TOKEN)).0, 401);
    assert_eq!(daemon.get("/readyz", None).0, 200);

    // A valid file with a new token: applied.
    std::fs::write(
        &config_path,
        test_config(&format!("api_token = \"{OTHER_TOKEN}\""), ""),
    )
    .unwrap();
    daemon.signal("HUP");
    assert!(daemon.wait_for_log("config reloaded", Duration::from_secs(10)));
    assert_eq!(daemon.get("/v1/status", Some(OTHER_TOKEN)).0, 200);
    assert_eq!(daemon.get("/v1/status", Some(TOKEN)).0, 401);
}

#[test]
fn systemd_directories_hold_the_database_and_the_credentials() {
    let state = tempfile::tempdir().unwrap();
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("api_token"), format!("{TOKEN}\n")).unwrap();
    let daemon = Daemon::start_with(DaemonOptions {
        config: Some(test_config("api_token = \"api_token\"", "")),
        env: vec![
            ("STATE_DIRECTORY".into(), state.path().display().to_string()),
            (
                "CREDENTIALS_DIRECTORY".into(),
                credentials.path().display().to_string(),
            ),
        ],
        ..DaemonOptions::default()
    });
    assert_eq!(daemon.get("/v1/status", Some(TOKEN)).0, 200);
    assert!(state.path().join("tollbridge.db").is_file());
    assert!(
        !daemon.logs().iter().any(|l| l.contains(TOKEN)),
        "a secret reached the logs"
    );
}

#[test]
fn the_watchdog_is_pinged_when_systemd_asks() {
    let notify = NotifySocket::new();
    let daemon = Daemon::start_with(DaemonOptions {
        config: Some(test_config("", "")),
        env: vec![("NOTIFY_SOCKET".into(), notify.path().display().to_string())],
        watchdog_usec: Some(200_000),
        ..DaemonOptions::default()
    });
    let pinged = notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    assert!(pinged.is_ok(), "no WATCHDOG=1: {pinged:?}");
    drop(daemon);
}

#[test]
fn check_config_lists_every_mistake_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[media]\nports = \"20999-20000\"\n\n[http]\nlisten = \"everywhere\"\n\n[calls]\nring_timeout = \"soon\"\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for (line, key) in lines
        .iter()
        .zip(["media.ports", "http.listen", "calls.ring_timeout"])
    {
        assert!(
            line.contains(key) && line.contains("line "),
            "{line:?} should name {key} and its line"
        );
    }
    assert!(output.stdout.is_empty());
}

#[test]
fn check_config_accepts_the_example() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tollbridge.example.toml");
    let output = Command::new(binary())
        .arg("check-config")
        .arg(&example)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));
}

/// A prompt WAV of `samples` samples at `rate` Hz, mono 16-bit.
fn prompt_wav(rate: u32, samples: usize) -> Vec<u8> {
    let mut wav = Vec::new();
    let data = (samples * 2) as u32;
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    wav.resize(wav.len() + samples * 2, 0);
    wav
}

/// check-config reads the prompts: a language of `prompts.dir` that
/// lacks some is listed (and passes), an unplayable file or a default
/// language without prompts fails naming the file or the key.
#[test]
fn check_config_lists_missing_prompts_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts");
    std::fs::create_dir_all(prompts.join("fr")).unwrap();
    std::fs::write(prompts.join("fr/warning.wav"), prompt_wav(8000, 800)).unwrap();
    let check = |language: &str| {
        let path = dir.path().join("tollbridge.toml");
        std::fs::write(
            &path,
            format!(
                "[prompts]\ndir = \"{}\"\nlanguage = \"{language}\"\n",
                prompts.display()
            ),
        )
        .unwrap();
        Command::new(binary())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap()
    };
    let output = check("ja");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert_eq!(
        stdout,
        "prompts: fr lacks pin, wrong-pin, no-booking, payment-declined, callee-unavailable, time-up, extend-offer, extend-offer-end, extended, not-extended, recording-notice, minutes-1, minutes-2, minutes-3, minutes-5, minutes-10, minutes-15, minutes-20, minutes-30, minutes-45, minutes-60; the ja prompts play instead\nok\n"
    );
    let output = check("xx");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("prompts.language") && stderr.contains("\"xx\""),
        "{stderr}"
    );
    std::fs::create_dir_all(prompts.join("ja")).unwrap();
    std::fs::write(prompts.join("ja/time-up.wav"), prompt_wav(16000, 800)).unwrap();
    let output = check("en");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ja/time-up.wav") && stderr.contains("16000 Hz"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn run_refuses_an_invalid_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[stripe]\nsecret_key = \"env:TOLLBRIDGE_TEST_UNSET_KEY\"\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("TOLLBRIDGE_TEST_UNSET_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stripe.secret_key") && stderr.contains("TOLLBRIDGE_TEST_UNSET_KEY"),
        "{stderr}"
    );
}

#[test]
fn the_config_path_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, "[log]\nformat = \"loud\"\n").unwrap();
    let output = Command::new(binary())
        .arg("run")
        .env("TOLLBRIDGE_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("log.format"));
}

#[test]
fn version_is_printed() {
    let output = Command::new(binary()).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("tollbridge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_daemon_answers_sip_options_from_an_allowed_source() {
    let daemon = Daemon::start(&test_config("", ""));
    let sip = daemon
        .sip_udp()
        .expect("the daemon logs its SIP UDP address");
    let run = run_sipp(
        "options.xml",
        sip,
        "127.0.0.1",
        "tollbridge",
        Duration::from_secs(10),
    );
    assert!(run.passed(), "{}", run.output);
    let (_, metrics) = daemon.get("/metrics", None);
    assert!(
        metrics.contains("tollbridge_sip_turned_away_total{reason=\"unknown-source\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_call_to_an_unbooked_number_gets_100_then_404() {
    let daemon = Daemon::start(&test_config("", ""));
    let sip = daemon
        .sip_udp()
        .expect("the daemon logs its SIP UDP address");
    let run = run_sipp(
        "invite_refused.xml",
        sip,
        "127.0.0.1",
        "+81312345678",
        Duration::from_secs(10),
    );
    assert!(run.passed(), "{}", run.output);
    assert!(daemon.wait_for_log("unknown-number", Duration::from_secs(5)));
}

#[test]
fn a_sighup_right_after_start_reloads_instead_of_killing() {
    // SIGHUP's default action ends a process; the daemon must handle it
    // from before it says where it listens.
    let mut daemon = Daemon::start(&test_config("", ""));
    daemon.signal("HUP");
    assert!(daemon.wait_for_log("config reloaded", Duration::from_secs(10)));
    assert!(
        daemon.wait_exit(Duration::from_millis(200)).is_none(),
        "the daemon died on SIGHUP"
    );
    assert_eq!(daemon.get("/readyz", None).0, 200);
}
