//! The API over HTTPS (`[http.tls]`), as Stripe reaches it: certificates
//! from a test CA made with rcgen, curl as the client (it checks the
//! chain and the name as Stripe's sender does), a signed webhook verified
//! and applied once, the certificate replaced on SIGHUP without a
//! restart, and bad files refused with the key named. Everything on
//! 127.0.0.1.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tollbridge_e2e::stripe_fake::signed_event;

const WEBHOOK_SECRET: &str = "whsec_https_test";

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1,
/// written as PEM files named after `name`.
struct Pki {
    ca: PathBuf,
    certificate: PathBuf,
    private_key: PathBuf,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Tollbridge test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let files = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        certificate: dir.join(format!("{name}.crt")),
        private_key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.certificate, leaf.pem()).unwrap();
    std::fs::write(&files.private_key, leaf_key.serialize_pem()).unwrap();
    files
}

/// A daemon serving HTTPS with the certificate at these (fixed) paths.
fn start_https(certificate: &Path, private_key: &Path) -> Daemon {
    start_daemon_sections(
        "",
        "30s",
        &format!(
            "[http.tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\n\
             [stripe]\nsecret_key = \"sk_test_fake\"\napi_base = \"http://127.0.0.1:9\"\n\
             webhook_secret = \"{WEBHOOK_SECRET}\"\n",
            certificate.display(),
            private_key.display()
        ),
    )
}

/// curl to `https://localhost:PORT{path}` trusting only `ca`: its exit
/// code, the HTTP status and the body.
fn curl(
    daemon: &Daemon,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> (i32, u16, String) {
    let port = daemon.http.port();
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--tlsv1.2", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-X", method, "-w", "\n%{http_code}"]);
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(body) = body {
        command.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let output = command
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl runs (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        output.status.code().unwrap_or(-1),
        status.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&output.stderr)),
    )
}

/// `tollbridge calls` with a config naming the daemon's address and the
/// same certificate files: the CLI reaches it over HTTPS, trusting that
/// certificate. Exit status and output.
fn cli_calls(daemon: &Daemon, certificate: &Path, private_key: &Path) -> (i32, String) {
    let config = daemon.dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"{}\"\napi_token = \"{TOKEN}\"\n\n[http.tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            daemon.http,
            certificate.display(),
            private_key.display()
        ),
    )
    .unwrap();
    let output = Command::new(tollbridge_e2e::binary())
        .args(["calls", "--config"])
        .arg(&config)
        .env_remove("TOLLBRIDGE_CONFIG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

#[test]
fn stripe_webhooks_and_the_api_work_over_https_and_a_new_certificate_loads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = pki(dir.path(), "first");
    let daemon = start_https(&first.certificate, &first.private_key);

    // The API, with the chain and the name checked.
    let (code, status, body) = curl(&daemon, &first.ca, "GET", "/v1/status", &[bearer()], None);
    assert_eq!((code, status), (0, 200), "{body}");
    let (code, status, body) = curl(&daemon, &first.ca, "GET", "/readyz", &[], None);
    assert_eq!((code, status), (0, 200), "{body}");
    // The CLI, trusting the daemon's own certificate.
    let (code, out) = cli_calls(&daemon, &first.certificate, &first.private_key);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 call(s)"), "{out}");

    // A webhook signed as Stripe signs it: verified, applied once.
    let event = json!({"id": "evt_https_1", "type": "charge.refunded",
                       "data": {"object": {"id": "ch_1", "object": "charge", "payment_intent": "pi_none"}}});
    let (payload, signature) = signed_event(WEBHOOK_SECRET, &event).unwrap();
    let header = format!("Stripe-Signature: {signature}");
    let deliver = |payload: &str, header: &str| {
        curl(
            &daemon,
            &first.ca,
            "POST",
            "/v1/stripe/webhook",
            &[header.to_owned()],
            Some(payload),
        )
    };
    let (code, status, body) = deliver(&payload, &header);
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body.contains("\"duplicate\":false"), "{body}");
    let (_, status, body) = deliver(&payload, &header);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"duplicate\":true"), "{body}");
    let (_, bad_signature) = signed_event("whsec_wrong", &event).unwrap();
    let (_, status, body) = deliver(&payload, &format!("Stripe-Signature: {bad_signature}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_signature"), "{body}");

    // Plain HTTP on the HTTPS port gets no answer it could take.
    let plain = tollbridge_e2e::http_request_with(daemon.http, "GET", "/readyz", &[], None);
    assert!(
        plain.as_ref().map_or(true, |(status, _)| *status != 200),
        "{plain:?}"
    );
    // A client that does not trust the CA is refused by its own check.
    let stranger = pki(dir.path(), "stranger");
    let (code, _, body) = curl(&daemon, &stranger.ca, "GET", "/readyz", &[], None);
    assert_ne!(code, 0, "{body}");

    // Bad files on reload: logged, the running certificate stays.
    let certificate = std::fs::read(&first.certificate).unwrap();
    std::fs::write(&first.certificate, "truncated").unwrap();
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log("https certificate not reloaded", Duration::from_secs(10)),
        "{:?}",
        daemon.logs()
    );
    let (code, status, body) = curl(&daemon, &first.ca, "GET", "/readyz", &[], None);
    assert_eq!((code, status), (0, 200), "{body}");

    // A renewed certificate (another CA here, to tell them apart) is
    // served after SIGHUP, without a restart.
    let second = pki(dir.path(), "second");
    std::fs::copy(&second.certificate, &first.certificate).unwrap();
    std::fs::copy(&second.private_key, &first.private_key).unwrap();
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log("https certificate re-read", Duration::from_secs(10)),
        "{:?}",
        daemon.logs()
    );
    let (code, status, body) = curl(&daemon, &second.ca, "GET", "/readyz", &[], None);
    assert_eq!((code, status), (0, 200), "{body}");
    let (code, _, body) = curl(&daemon, &first.ca, "GET", "/readyz", &[], None);
    assert_ne!(code, 0, "the old CA no longer fits: {body}");
    let (code, out) = cli_calls(&daemon, &first.certificate, &first.private_key);
    assert_eq!(code, 0, "the CLI pins the file it reads: {out}");
    // A certificate other than the one served: the CLI refuses to talk.
    let (code, out) = cli_calls(&daemon, &stranger.certificate, &stranger.private_key);
    assert_eq!(code, 1, "{out}");
    drop(certificate);
}

#[test]
fn bad_certificate_files_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = pki(dir.path(), "first");
    let other = pki(dir.path(), "other");
    let config = |certificate: &Path, key: &Path| {
        let path = dir.path().join("tollbridge.toml");
        std::fs::write(
            &path,
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\n\n[http.tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
                certificate.display(),
                key.display()
            ),
        )
        .unwrap();
        path
    };
    let check = tollbridge_e2e::check_config;
    assert_eq!(
        check(&config(&first.certificate, &first.private_key)),
        (Some(0), String::new())
    );
    let (code, err) = check(&config(&first.certificate, &other.private_key));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("http.tls.private_key") && err.contains("does not belong"),
        "{err}"
    );
    let (code, err) = check(&config(&first.private_key, &first.private_key));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("http.tls.certificate"), "{err}");
    let (code, err) = check(&config(&dir.path().join("missing.crt"), &first.private_key));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("http.tls.certificate") && err.contains("no such file"),
        "{err}"
    );
    // `run` refuses the same, and says why.
    let output = Command::new(tollbridge_e2e::binary())
        .args(["run", "--config"])
        .arg(config(&first.certificate, &other.private_key))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("does not belong"), "{err}");
}
