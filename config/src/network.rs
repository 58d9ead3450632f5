//! `[sip]` and `[media]`: where signalling and RTP are received, the
//! addresses peers are told, and the limits on both.

use std::net::IpAddr;
use std::time::Duration;

use std::path::PathBuf;

use crate::schema::{TlsFiles, duration_in, existing_file, read_tls_files};
use crate::tree::TableReader;
use crate::values::{Latch, ListenAddr, PortRange, PublicAddress, Srtp, Transport, UnknownSource};

/// `[sip]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SipConfig {
    /// `sip.listen`: where SIP is received.
    pub listen: Vec<ListenAddr>,
    /// `sip.public_address`: the host in our Contact and Via; when unset, the
    /// listener's own address.
    pub public_address: Option<PublicAddress>,
    /// `sip.unknown_source`: answer 403 or stay silent to sources no trunk allows.
    pub unknown_source: UnknownSource,
    /// `sip.invites_per_second`: new INVITEs (and other out-of-dialog
    /// requests but CANCEL/ACK) accepted per source address per second
    /// (bursts up to twice that); over it, 503 with Retry-After.
    pub invites_per_second: u32,
    /// `sip.user_agent`: our `User-Agent` and `Server` header. Without the
    /// version by default: a version tells a scanner what to try.
    pub user_agent: String,
    /// `[sip.tls]`: our certificate for `tls:` listeners, and whom we trust
    /// when we open TLS to a peer.
    pub tls: SipTls,
}

/// `[sip.tls]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SipTls {
    /// `sip.tls.certificate` and `sip.tls.private_key`: what `tls:`
    /// listeners serve (required with one); re-read on reload.
    pub files: Option<TlsFiles>,
    /// `sip.tls.ca`: PEM certificates of the authorities trusted for
    /// outbound TLS (a trunk's `;transport=tls` termination URI) instead of
    /// the system's roots; for a private PKI or a test.
    pub ca: Option<PathBuf>,
}

/// `[media]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// `media.address`: local address the RTP sockets bind to.
    pub address: IpAddr,
    /// `media.public_address`: the address written in our SDP; when unset,
    /// `media.address`.
    pub public_address: Option<IpAddr>,
    /// `media.ports`: RTP/RTCP port range.
    pub ports: PortRange,
    /// `media.timeout`: a call with no RTP for this long ends (not while on hold).
    pub timeout: Duration,
    /// `media.latch`: which sources RTP may be latched to.
    pub latch: Latch,
    /// `media.port_quarantine`: how long a released port pair (and the
    /// ports of calls a crash left open, once their parties are hung up)
    /// stays out of use, so late packets never reach another call.
    pub port_quarantine: Duration,
    /// `media.threads`: relay threads, calls spread over them; `None`:
    /// one per core.
    pub threads: Option<usize>,
    /// `media.srtp`: SRTP on legs whose trunk or callee says nothing.
    pub srtp: Srtp,
    /// `media.fast_path`: interfaces where the parties' RTP arrives, at
    /// whose ingress the kernel forwards plain RTP; empty: off.
    pub fast_path: Vec<String>,
}

pub(crate) const SIP_KEYS: [&str; 6] = [
    "listen",
    "public_address",
    "unknown_source",
    "invites_per_second",
    "user_agent",
    "tls",
];
pub(crate) const SIP_TLS_KEYS: [&str; 3] = ["certificate", "private_key", "ca"];
pub(crate) const MEDIA_KEYS: [&str; 9] = [
    "address",
    "public_address",
    "ports",
    "timeout",
    "latch",
    "port_quarantine",
    "threads",
    "srtp",
    "fast_path",
];

pub(crate) fn read_sip(mut t: TableReader, defaults: SipConfig) -> SipConfig {
    let listen = match t.span("listen") {
        Some(span) => {
            let list = t.list::<ListenAddr>("listen").unwrap_or_default();
            check_listeners(&t, &list, span);
            list
        }
        None => defaults.listen,
    };
    let public_address = t.get::<PublicAddress>("public_address");
    if public_address.is_none() && listen.iter().any(|l| l.addr.ip().is_unspecified()) {
        t.diagnostics().report(
            &t.key("public_address"),
            None,
            None,
            "required when a sip.listen address is 0.0.0.0 or [::]: peers must be told an address they can reach",
        );
    }
    let unknown_source = t.get("unknown_source").unwrap_or(defaults.unknown_source);
    let invites_per_second = t
        .get_with("invites_per_second", |node| match node {
            crate::tree::Node::Int(n) if (1..=10_000).contains(n) => Ok(*n as u32),
            _ => Err("expected an integer from 1 to 10000".to_owned()),
        })
        .unwrap_or(defaults.invites_per_second);
    let user_agent = t
        .get_with("user_agent", |node| match node {
            crate::tree::Node::Str(s) if is_header_text(s) => Ok(s.clone()),
            _ => Err(
                "expected 1 to 128 printable ASCII characters, like \"Tollbridge\" or \"Tollbridge/0.1.0\""
                    .to_owned(),
            ),
        })
        .unwrap_or(defaults.user_agent);
    let serves_tls = listen.iter().any(|l| l.transport == Transport::Tls);
    let tls = match t.take("tls") {
        Some(item) => read_sip_tls(
            TableReader::new(&t.key("tls"), Some(item), t.diagnostics()),
            serves_tls,
        ),
        None => {
            if serves_tls {
                t.diagnostics().report(
                    &t.key("tls"),
                    None,
                    None,
                    "required with a tls: listener in sip.listen: [sip.tls] certificate and private_key",
                );
            }
            defaults.tls
        }
    };
    t.finish(&SIP_KEYS);
    SipConfig {
        listen,
        public_address,
        unknown_source,
        invites_per_second,
        user_agent,
        tls,
    }
}

/// `[sip.tls]`: the certificate and key are required with a `tls:`
/// listener and go together without one; `ca` stands alone.
fn read_sip_tls(mut t: TableReader, serves_tls: bool) -> SipTls {
    let files = if serves_tls || t.span("certificate").is_some() || t.span("private_key").is_some()
    {
        read_tls_files(&mut t, "[sip.tls]")
    } else {
        None
    };
    let ca = existing_file(&mut t, "ca");
    t.finish(&SIP_TLS_KEYS);
    SipTls { files, ca }
}

fn check_listeners(t: &TableReader, list: &[ListenAddr], span: std::ops::Range<usize>) {
    let key = t.key("listen");
    if list.is_empty() {
        t.diagnostics().report(
            &key,
            Some("[]".to_owned()),
            Some(span.clone()),
            "at least one listener is needed",
        );
    }
    for (i, listener) in list.iter().enumerate() {
        if list[..i].contains(listener) {
            t.diagnostics().report(
                &key,
                Some(format!("\"{listener}\"")),
                Some(span.clone()),
                "listed twice",
            );
        }
    }
}

pub(crate) fn read_media(mut t: TableReader, defaults: MediaConfig) -> MediaConfig {
    let address = t.get::<IpAddr>("address").unwrap_or(defaults.address);
    let public_address = t.get::<IpAddr>("public_address");
    if public_address.is_none() && address.is_unspecified() {
        t.diagnostics().report(
            &t.key("public_address"),
            None,
            None,
            "required when media.address is 0.0.0.0 or ::, because it is the address written into SDP",
        );
    }
    let media = MediaConfig {
        address,
        public_address,
        ports: t.get("ports").unwrap_or(defaults.ports),
        timeout: duration_in(
            &mut t,
            "timeout",
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )
        .unwrap_or(defaults.timeout),
        latch: t.get("latch").unwrap_or(defaults.latch),
        port_quarantine: duration_in(
            &mut t,
            "port_quarantine",
            Duration::ZERO,
            Duration::from_secs(3600),
        )
        .unwrap_or(defaults.port_quarantine),
        threads: t
            .get_with("threads", |node| match node {
                crate::tree::Node::Int(n) if (1..=256).contains(n) => Ok(Some(*n as usize)),
                _ => Err("expected an integer from 1 to 256 (relay threads)".to_owned()),
            })
            .unwrap_or(defaults.threads),
        srtp: t.get("srtp").unwrap_or(defaults.srtp),
        fast_path: read_fast_path(&mut t).unwrap_or(defaults.fast_path),
    };
    t.finish(&MEDIA_KEYS);
    media
}

/// `media.fast_path`: interface names, each once.
fn read_fast_path(t: &mut TableReader) -> Option<Vec<String>> {
    let span = t.span("fast_path");
    let names = t.list::<crate::values::InterfaceName>("fast_path")?;
    let mut seen: Vec<String> = Vec::new();
    for (i, crate::values::InterfaceName(name)) in names.into_iter().enumerate() {
        if seen.contains(&name) {
            t.diagnostics().report(
                &format!("{}[{i}]", t.key("fast_path")),
                Some(format!("\"{name}\"")),
                span.clone(),
                "listed twice",
            );
        } else {
            seen.push(name);
        }
    }
    Some(seen)
}

/// Whether `text` can stand as a SIP header value as it is: printable
/// ASCII (spaces inside), no line breaks, not blank.
fn is_header_text(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !text.trim().is_empty()
        && text.trim() == text
}
