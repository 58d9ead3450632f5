//! `tollbridge calls` and `tollbridge hangup`: the running daemon's API
//! from a shell, with the address and token from its config, as
//! `rtpengine-ctl` talks to rtpengine.
//!
//! The config's secrets may be systemd credential names; outside the unit
//! they are read from `/etc/tollbridge/credentials/` (the directory the
//! unit loads them from), or from `--credentials DIR`.
//!
//! With `[http.tls]` the local daemon is reached over HTTPS and trusted
//! by its own certificate (the file the config names, compared byte for
//! byte: the listener's name rarely matches the loopback address we dial).
//! `--api https://...` for another node is checked against the usual
//! public roots.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;
use tollbridge_config::{Config, Environment, ProcessEnvironment};

use crate::cli::ApiArgs;

/// Where the unit's `LoadCredential=` lines read the secrets from.
pub const DEFAULT_CREDENTIALS: &str = "/etc/tollbridge/credentials";

/// How long one API request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// The process environment, with `$CREDENTIALS_DIRECTORY` pointing at
/// the credential files when it is not set (we are not in the unit).
struct CliEnvironment {
    credentials: Option<PathBuf>,
}

impl Environment for CliEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        match (ProcessEnvironment.var(name), name) {
            (Some(value), _) => Some(value),
            (None, "CREDENTIALS_DIRECTORY") => self
                .credentials
                .as_ref()
                .map(|dir| dir.display().to_string()),
            (None, _) => None,
        }
    }
}

/// How the command line reaches the daemon's API.
#[derive(Debug, Clone)]
pub struct ApiTarget {
    base: String,
    token: String,
    /// Built once, trusting what `Trust` says; reused by every request.
    client: ApiClient,
}

type ApiClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How an HTTPS answer is trusted.
#[derive(Debug, Clone)]
enum Trust {
    /// Plain HTTP.
    Plain,
    /// Only this certificate (the local daemon's own).
    Pinned(CertificateDer<'static>),
    /// The public roots (another node's API).
    PublicRoots,
}

/// Something that keeps a command from talking to the API, in words for
/// the operator; the exit status says which kind.
#[derive(Debug)]
pub struct CtlError {
    /// 1 for the API or the network, 2 for the config or the command line.
    pub exit: u8,
    /// What went wrong.
    pub message: String,
}

impl CtlError {
    fn usage(message: impl Into<String>) -> CtlError {
        CtlError {
            exit: crate::cli::EXIT_BAD_CONFIG,
            message: message.into(),
        }
    }

    fn api(message: impl Into<String>) -> CtlError {
        CtlError {
            exit: 1,
            message: message.into(),
        }
    }

    /// Prints the error and gives the exit status.
    pub fn report(self) -> ExitCode {
        eprintln!("tollbridge: {}", self.message);
        ExitCode::from(self.exit)
    }
}

impl ApiTarget {
    /// The API of the daemon running with the config at `path` (the
    /// built-in defaults when none), or at `api` (`http://HOST:PORT`) with
    /// that config's token.
    pub fn from_config(
        path: Option<&Path>,
        api: Option<&str>,
        credentials: &Path,
    ) -> Result<ApiTarget, CtlError> {
        let env = CliEnvironment {
            credentials: credentials.is_dir().then(|| credentials.to_path_buf()),
        };
        let config = match path {
            Some(path) => Config::load_with(path, &env).map_err(|e| {
                let lines: Vec<String> = e
                    .errors()
                    .iter()
                    .map(|line| format!("{}: {line}", path.display()))
                    .collect();
                CtlError::usage(lines.join("\n"))
            })?,
            None => Config::defaults(&env),
        };
        let token = config
            .http
            .api_token
            .as_ref()
            .map(|secret| secret.expose().to_owned())
            .ok_or_else(|| {
                CtlError::usage(
                    "the config has no http.api_token, so the daemon's /v1 API is disabled",
                )
            })?;
        let (base, trust) = match (api, &config.http.tls) {
            (Some(api), _) => {
                let api = api.trim_end_matches('/');
                let trust = if api.starts_with("http://") {
                    Trust::Plain
                } else if api.starts_with("https://") {
                    Trust::PublicRoots
                } else {
                    return Err(CtlError::usage(format!(
                        "--api {api}: expected http://HOST:PORT or https://HOST:PORT"
                    )));
                };
                (api.to_owned(), trust)
            }
            (None, None) => (
                format!("http://{}", reachable(config.http.listen)),
                Trust::Plain,
            ),
            (None, Some(tls)) => {
                let leaf = CertificateDer::pem_file_iter(&tls.certificate)
                    .ok()
                    .and_then(|mut chain| chain.next())
                    .and_then(Result::ok)
                    .ok_or_else(|| {
                        CtlError::usage(format!(
                            "http.tls.certificate = {:?}: cannot read a certificate from it",
                            tls.certificate
                        ))
                    })?;
                (
                    format!("https://{}", reachable(config.http.listen)),
                    Trust::Pinned(leaf),
                )
            }
        };
        let client = client_for(&trust)?;
        Ok(ApiTarget {
            base,
            token,
            client,
        })
    }

    /// Sends one request; the status and the JSON body.
    pub async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CtlError> {
        let client = &self.client;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| CtlError::usage(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = client.request(request).await.map_err(|e| {
                CtlError::api(format!(
                    "cannot reach the daemon's API at {}: {e} (is it running? --api for another node)",
                    self.base
                ))
            })?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| CtlError::api(format!("the API's answer broke off: {e}")))?
                .to_bytes();
            let value = serde_json::from_slice(&bytes).map_err(|_| {
                CtlError::api(format!(
                    "the API answered {status} with something that is not JSON"
                ))
            })?;
            Ok((status, value))
        };
        tokio::time::timeout(REQUEST_LIMIT, exchange)
            .await
            .map_err(|_| CtlError::api(format!("no answer from {} within 10 s", self.base)))?
    }
}

/// `tollbridge calls`: prints the calls the API lists.
pub fn calls(args: &ApiArgs, query: &CallsQuery, json: bool) -> ExitCode {
    let result = with_api(args, |target| async move {
        let mut path = format!("/v1/calls?limit={}", query.limit);
        let active = query.active || (query.booking.is_none() && query.called.is_none());
        if active {
            path.push_str("&active=true");
        }
        if let Some(booking) = &query.booking {
            path.push_str(&format!("&booking={}", encode(booking)));
        }
        if let Some(called) = &query.called {
            path.push_str(&format!("&called={}", encode(called)));
        }
        let (status, body) = target.request(hyper::Method::GET, &path, None).await?;
        if status != 200 {
            return Err(api_error(status, &body));
        }
        let calls = body["calls"].as_array().cloned().unwrap_or_default();
        if json {
            println!("{body:#}");
        } else {
            print!("{}", calls_table(&calls));
            eprintln!("{} call(s)", calls.len());
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// What `tollbridge calls` asks for.
#[derive(Debug, Clone)]
pub struct CallsQuery {
    /// Calls in progress.
    pub active: bool,
    /// Calls of a booking.
    pub booking: Option<String>,
    /// Calls to a number.
    pub called: Option<String>,
    /// At most this many.
    pub limit: u16,
}

/// `tollbridge hangup ID`: asks the daemon to end the call, then waits
/// (up to 20 s) for its record to close and prints how it ended.
pub fn hang_up(args: &ApiArgs, id: &str, announce: bool) -> ExitCode {
    let result = with_api(args, |target| async move {
        let path = format!("/v1/calls/{}", encode(id));
        let body = serde_json::json!({"announce": announce});
        let (status, answer) = target
            .request(hyper::Method::POST, &format!("{path}/hangup"), Some(&body))
            .await?;
        if status != 202 {
            return Err(api_error(status, &answer));
        }
        eprintln!(
            "hang-up requested{}",
            if announce {
                " (after the time-up prompt)"
            } else {
                ""
            }
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, call) = target.request(hyper::Method::GET, &path, None).await?;
            if status != 200 {
                return Err(api_error(status, &call));
            }
            if !call["ended_at"].is_null() {
                println!(
                    "{id}: {} ({}), talk {} ms, billed {} s, amount {} {}",
                    call["status"].as_str().unwrap_or("-"),
                    call["end_reason"].as_str().unwrap_or("-"),
                    call["talk_ms"],
                    call["billed_seconds"],
                    call["amount"],
                    call["currency"].as_str().unwrap_or(""),
                );
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CtlError::api(format!(
                    "{id}: asked to hang up, but its record has not closed within 20 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// Runs `work` against the API `args` name, on a runtime of its own.
fn with_api<'a, F, Fut>(args: &ApiArgs, work: F) -> Result<(), CtlError>
where
    F: FnOnce(ApiTarget) -> Fut,
    Fut: std::future::Future<Output = Result<(), CtlError>> + 'a,
{
    let target = ApiTarget::from_config(
        args.config.as_deref(),
        args.api.as_deref(),
        &args.credentials,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::api(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(work(target))
}

/// Percent-encodes a query or path value (everything but unreserved
/// characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Trusts exactly one certificate, and handshakes signed by its key.
#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the daemon serves a certificate other than http.tls.certificate (reloaded since?)"
                    .to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The HTTP client that reaches the API, trusting what `trust` says.
fn client_for(trust: &Trust) -> Result<ApiClient, CtlError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CtlError::usage(format!("cannot set up TLS: {e}")))?;
    let config = match trust {
        Trust::Pinned(leaf) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                leaf: leaf.clone(),
                provider,
            }))
            .with_no_client_auth(),
        Trust::Plain | Trust::PublicRoots => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// The address to reach a listener on: its own, or loopback for a
/// wildcard.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// An API error body in words: its message, or the status.
pub fn api_error(status: u16, body: &Value) -> CtlError {
    let code = body["error"]["code"].as_str().unwrap_or("error");
    let message = body["error"]["message"].as_str().unwrap_or("");
    CtlError::api(format!("the API answered {status} {code}: {message}"))
}

/// Renders a list of calls as the table `tollbridge calls` prints.
pub fn calls_table(calls: &[Value]) -> String {
    let mut out = format!(
        "{:<37} {:<30} {:<16} {:<16} {:<12} {:>8} {:>8} {:<12} {:<5} {:>11}\n",
        "call",
        "booking",
        "caller",
        "called",
        "state",
        "talk",
        "left",
        "node",
        "codec",
        "loss in %"
    );
    for call in calls {
        let text = |key: &str| call[key].as_str().unwrap_or("-").to_owned();
        let live = &call["live"];
        let state = match live["phase"].as_str() {
            Some(phase) => phase.to_owned(),
            None => text("status"),
        };
        let talk_ms = live["talk_ms"]
            .as_u64()
            .or_else(|| call["talk_ms"].as_u64());
        let left = live["remaining_ms"].as_u64().map_or("-".into(), clock);
        let loss = |side: &str| {
            live["media"][side]["loss_percent"]
                .as_f64()
                .map_or("-".to_owned(), |p| format!("{p:.1}"))
        };
        out.push_str(&format!(
            "{:<37} {:<30} {:<16} {:<16} {:<12} {:>8} {:>8} {:<12} {:<5} {:>11}\n",
            text("id"),
            text("booking"),
            text("caller"),
            text("called"),
            state,
            talk_ms.map_or("-".into(), clock),
            left,
            text("node"),
            live["codec"].as_str().unwrap_or("-"),
            format!("{}/{}", loss("caller"), loss("callee")),
        ));
    }
    out
}

/// Milliseconds as `m:ss` (or `h:mm:ss`).
fn clock(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds / 3600 {
        0 => format!("{}:{:02}", seconds / 60, seconds % 60),
        hours => format!("{hours}:{:02}:{:02}", seconds / 60 % 60, seconds % 60),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(encode("+815012345678"), "%2B815012345678");
        assert_eq!(encode("call_01ab-9.~"), "call_01ab-9.~");
        assert_eq!(encode("a b/c?d"), "a%20b%2Fc%3Fd");
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        for (listen, reach) in [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:8080", "[::1]:8080"),
            ("10.0.0.5:9000", "10.0.0.5:9000"),
        ] {
            assert_eq!(
                reachable(listen.parse().unwrap()),
                reach.parse::<SocketAddr>().unwrap()
            );
        }
    }

    #[test]
    fn the_table_shows_live_calls_and_records_alike() {
        let table = calls_table(&[
            json!({"id": "call_1", "booking": "bk_1", "caller": "+819012345678",
                   "called": "+815012345678", "status": "in-progress", "node": "tb1",
                   "talk_ms": 0,
                   "live": {"phase": "talking", "talk_ms": 65_000, "remaining_ms": 3_725_000,
                            "codec": "PCMU",
                            "media": {"caller": {"loss_percent": 0.5}, "callee": {"loss_percent": 0.0}}}}),
            json!({"id": "call_2", "booking": null, "caller": null, "called": "+815012345678",
                   "status": "ringing", "node": "tb2", "talk_ms": 0, "live": null}),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("call "), "{table}");
        for part in [
            "call_1", "bk_1", "talking", "1:05", "1:02:05", "tb1", "PCMU", "0.5/0.0",
        ] {
            assert!(lines[1].contains(part), "{part} in {}", lines[1]);
        }
        for part in ["call_2", "ringing", "tb2", "-/-"] {
            assert!(lines[2].contains(part), "{part} in {}", lines[2]);
        }
    }
}
