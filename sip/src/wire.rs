//! Checks on a raw SIP message before any parser trusts it.
//!
//! rsipstack's parser is lenient where we must not be: it silently drops
//! the headers after a non-UTF-8 byte and accepts a body shorter than its
//! Content-Length. So every datagram (and every stream frame) passes these
//! checks first. A message that fails them gets `400` with a reason phrase
//! when it is a request carrying enough headers to address a response, and
//! is dropped otherwise; either way nothing else happens.
//!
//! Written by hand because the point is to be stricter than the parser
//! behind it: this only scans lines and counts bytes, it builds no message.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// The size limits of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest message accepted, headers and body (bytes).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    /// 8 KiB: five times a Twilio INVITE with SDP, and the size of
    /// rsipstack's receive buffer, so nothing we accept is cut short.
    fn default() -> Self {
        Limits {
            max_message_bytes: 8 * 1024,
        }
    }
}

/// What kind of message passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A request, with its method as written (`INVITE`).
    Request(String),
    /// A response, with its status code.
    Response(u16),
}

/// A message that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Request or response.
    pub kind: Kind,
    /// The top Via's transport, host, port and whether it asks for `rport`.
    pub top_via: Via,
    /// The Call-ID, for logs.
    pub call_id: String,
    to_tagged: bool,
}

impl Checked {
    /// Whether To carries a tag: a request inside a dialog (re-INVITE, BYE).
    pub fn has_to_tag(&self) -> bool {
        self.to_tagged
    }
}

/// A message that failed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Why, as a short phrase; it becomes the 400's reason phrase.
    pub reason: &'static str,
    /// The 400 response to send back, when the message was a request with
    /// the headers a response must copy; `None` means drop silently.
    pub reply: Option<Reply>,
}

/// A response to a message that failed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response, ready to send.
    pub bytes: Vec<u8>,
    /// The top Via of the request, which says where the response goes.
    pub via: Via,
}

/// The parts of a Via header that decide where responses go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, ... as written (upper-cased).
    pub transport: String,
    /// The sent-by host.
    pub host: String,
    /// The sent-by port, if given.
    pub port: Option<u16>,
    /// Whether the `rport` parameter is present (RFC 3581).
    pub rport: bool,
}

impl Via {
    /// Where a response to a request received from `source` over an
    /// unreliable transport goes (RFC 3261 §18.2.2 with RFC 3581): always
    /// the source IP (the `received` address); the source port when `rport`
    /// was asked for, else the sent-by port, else the transport's default.
    /// Never a host named in From, To or Contact.
    pub fn response_target(&self, source: SocketAddr) -> SocketAddr {
        if self.rport {
            return source;
        }
        let default_port = if self.transport == "TLS" { 5061 } else { 5060 };
        SocketAddr::new(source.ip(), self.port.unwrap_or(default_port))
    }
}

/// Headers that may appear once only, by canonical name.
const SINGLE: [&str; 6] = [
    "from",
    "to",
    "call-id",
    "cseq",
    "max-forwards",
    "content-length",
];

/// Expands a compact header name (RFC 3261 §7.3.3) and lower-cases it.
fn canonical_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let long = match lower.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "l" => "content-length",
        "m" => "contact",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "e" => "content-encoding",
        "o" => "event",
        "r" => "refer-to",
        "u" => "allow-events",
        _ => return lower,
    };
    long.to_owned()
}

/// RFC 3261 `token` characters (method and header names).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// One header line, after unfolding.
struct Header<'a> {
    name: String,
    raw_name: &'a str,
    value: String,
}

/// Checks one complete message (a datagram, or a frame cut from a stream
/// by its Content-Length).
pub fn check(message: &[u8], limits: Limits) -> Result<Checked, Malformed> {
    let drop = |reason| Malformed {
        reason,
        reply: None,
    };
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let start = message
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(message.len());
    let message = &message[start..];
    let Some(head_end) = find(message, b"\r\n\r\n") else {
        return Err(drop("Missing Header Terminator"));
    };
    let head = &message[..head_end];
    let body = &message[head_end + 4..];
    let Ok(head) = std::str::from_utf8(head) else {
        return Err(drop("Non-UTF-8 Header"));
    };
    if head
        .bytes()
        .any(|b| b.is_ascii_control() && b != b'\r' && b != b'\n' && b != b'\t')
    {
        return Err(drop("Control Character In Header"));
    }
    let mut lines = head.split("\r\n");
    let start_line = lines.next().unwrap_or_default();
    let kind = parse_start_line(start_line).ok_or(drop("Bad Start Line"))?;
    let is_request = matches!(kind, Kind::Request(_));
    let headers = match unfold(lines) {
        Some(headers) => headers,
        None => return Err(drop("Bad Header Line")),
    };
    // From here on a request with routable headers gets a 400.
    let fail = |reason: &'static str| Malformed {
        reason,
        reply: match &kind {
            Kind::Request(method) if method != "ACK" => {
                ReplyHeaders::collect(&headers).map(|h| Reply {
                    bytes: h.render(400, reason, &[]),
                    via: h.via,
                })
            }
            _ => None,
        },
    };

    if message.len() > limits.max_message_bytes {
        return Err(fail("Message Too Large"));
    }
    for name in SINGLE {
        if headers.iter().filter(|h| h.name == name).count() > 1 {
            return Err(fail(duplicate_reason(name)));
        }
    }
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.trim())
    };
    let mut required = vec!["via", "from", "to", "call-id", "cseq"];
    if is_request {
        required.push("max-forwards");
    }
    for name in required {
        if value(name).is_none_or(str::is_empty) {
            return Err(fail(missing_reason(name)));
        }
    }
    let top_via = value("via")
        .and_then(parse_top_via)
        .ok_or(fail("Bad Via"))?;
    let (cseq_number, cseq_method) = value("cseq")
        .and_then(|cseq| cseq.split_once(char::is_whitespace))
        .ok_or(fail("Bad CSeq"))?;
    let cseq_ok = cseq_number
        .parse::<u32>()
        .is_ok_and(|n| n <= i32::MAX as u32)
        && is_token(cseq_method.trim());
    if !cseq_ok {
        return Err(fail("Bad CSeq"));
    }
    if let Kind::Request(method) = &kind
        && method != cseq_method.trim()
    {
        return Err(fail("CSeq Method Mismatch"));
    }
    if is_request
        && value("max-forwards")
            .and_then(|v| v.parse::<u8>().ok())
            .is_none()
    {
        return Err(fail("Bad Max-Forwards"));
    }
    if let Some(length) = value("content-length") {
        match length.parse::<usize>() {
            Ok(length) if length == body.len() => {}
            Ok(_) => return Err(fail("Content-Length Mismatch")),
            Err(_) => return Err(fail("Bad Content-Length")),
        }
    }
    Ok(Checked {
        kind,
        top_via,
        call_id: value("call-id").unwrap_or_default().to_owned(),
        to_tagged: value("to").is_some_and(|to| to.to_ascii_lowercase().contains(";tag=")),
    })
}

/// For a stream transport: the length of the first complete message in
/// `buffer`, `Ok(None)` when more bytes are needed, or an error when the
/// stream cannot be framed (no Content-Length, or too large) and must be
/// closed. Leading CRLF keep-alives count into the frame.
pub fn frame_length(buffer: &[u8], limits: Limits) -> Result<Option<usize>, &'static str> {
    let start = buffer
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buffer.len());
    let Some(head_end) = find(&buffer[start..], b"\r\n\r\n").map(|i| start + i) else {
        return if buffer.len() > limits.max_message_bytes {
            Err("Message Too Large")
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buffer[start..head_end]);
    let length = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| canonical_name(name.trim()) == "content-length")
        .map(|(_, value)| value.trim().parse::<usize>());
    let length = match length {
        Some(Ok(length)) => length,
        Some(Err(_)) => return Err("Bad Content-Length"),
        None => return Err("Missing Content-Length"),
    };
    let total = head_end + 4 + length;
    if total - start > limits.max_message_bytes {
        return Err("Message Too Large");
    }
    Ok((buffer.len() >= total).then_some(total))
}

/// A final response the edge sends on its own (400, 403, 503, ...) to a
/// request that passed [`check`]; `None` for a response or an ACK, which
/// get none, or when the headers a response copies are missing. Built only
/// when needed, so the passing path renders nothing.
pub fn reply_to(
    message: &[u8],
    code: u16,
    reason: &str,
    extra: &[(&str, &str)],
) -> Option<Vec<u8>> {
    let start = message.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let message = &message[start..];
    let head = std::str::from_utf8(&message[..find(message, b"\r\n\r\n")?]).ok()?;
    let mut lines = head.split("\r\n");
    match parse_start_line(lines.next()?)? {
        Kind::Request(method) if method != "ACK" => {}
        _ => return None,
    }
    ReplyHeaders::collect(&unfold(lines)?).map(|headers| headers.render(code, reason, extra))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn parse_start_line(line: &str) -> Option<Kind> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, _reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().ok()?;
        return (100..=699).contains(&code).then_some(Kind::Response(code));
    }
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "SIP/2.0" || !is_token(method) {
        return None;
    }
    let scheme_ok = uri.len() > 4
        && (uri.starts_with("sip:") || uri.starts_with("sips:") || uri.starts_with("tel:"));
    let uri_ok = !uri
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
    (scheme_ok && uri_ok).then(|| Kind::Request(method.to_owned()))
}

/// Joins folded lines (RFC 3261 §7.3.1) and splits `name: value`. `None`
/// when a line is not a header.
fn unfold<'a>(lines: impl Iterator<Item = &'a str>) -> Option<Vec<Header<'a>>> {
    let mut headers: Vec<Header> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut()?;
            last.value.push(' ');
            last.value.push_str(line.trim());
            continue;
        }
        let (name, value) = line.split_once(':')?;
        let raw_name = name.trim_end();
        if !is_token(raw_name) {
            return None;
        }
        headers.push(Header {
            name: canonical_name(raw_name),
            raw_name,
            value: value.trim().to_owned(),
        });
    }
    Some(headers)
}

/// Parses the first Via value (`SIP/2.0/UDP host:port;branch=...;rport`).
fn parse_top_via(value: &str) -> Option<Via> {
    let first = value.split(',').next()?.trim();
    let (protocol, rest) = first.split_once(char::is_whitespace)?;
    let transport = protocol
        .strip_prefix("SIP/2.0/")?
        .trim()
        .to_ascii_uppercase();
    if !is_token(&transport) {
        return None;
    }
    let mut parts = rest.trim().split(';');
    let sent_by = parts.next()?.trim();
    let rport = parts.any(|param| {
        let name = param.split('=').next().unwrap_or_default().trim();
        name.eq_ignore_ascii_case("rport")
    });
    let (host, port) = if let Some(v6) = sent_by.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (host.to_owned(), port)
    } else {
        match sent_by.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port.parse().ok()?)),
            None => (sent_by.to_owned(), None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
    host_ok.then_some(Via {
        transport,
        host,
        port,
        rport,
    })
}

fn missing_reason(name: &str) -> &'static str {
    match name {
        "via" => "Missing Via",
        "from" => "Missing From",
        "to" => "Missing To",
        "call-id" => "Missing Call-ID",
        "cseq" => "Missing CSeq",
        _ => "Missing Max-Forwards",
    }
}

fn duplicate_reason(name: &str) -> &'static str {
    match name {
        "from" => "Duplicate From",
        "to" => "Duplicate To",
        "call-id" => "Duplicate Call-ID",
        "cseq" => "Duplicate CSeq",
        "max-forwards" => "Duplicate Max-Forwards",
        _ => "Duplicate Content-Length",
    }
}

/// The headers a response must copy from its request (RFC 3261
/// §8.2.6.2), already rendered: every Via in order, From, To (with a tag
/// added when it has none), Call-ID and CSeq.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReplyHeaders {
    via: Via,
    lines: String,
}

impl ReplyHeaders {
    /// `None` when one of the copied headers is missing or repeated, or the
    /// top Via is unusable: such a response could not be matched or routed,
    /// so the request is dropped instead.
    fn collect(headers: &[Header]) -> Option<ReplyHeaders> {
        let one = |name: &str| {
            let mut found = headers.iter().filter(|h| h.name == name);
            match (found.next(), found.next()) {
                (Some(header), None) if !header.value.is_empty() => Some(header),
                _ => None,
            }
        };
        let vias: Vec<&Header> = headers.iter().filter(|h| h.name == "via").collect();
        let via = parse_top_via(&vias.first()?.value)?;
        let (from, to, call_id, cseq) = (one("from")?, one("to")?, one("call-id")?, one("cseq")?);
        let mut lines = String::new();
        for header in vias {
            let _ = write!(lines, "{}: {}\r\n", header.raw_name, header.value);
        }
        let _ = write!(lines, "{}: {}\r\n", from.raw_name, from.value);
        if to.value.to_ascii_lowercase().contains(";tag=") {
            let _ = write!(lines, "{}: {}\r\n", to.raw_name, to.value);
        } else {
            let _ = write!(
                lines,
                "{}: {};tag={}\r\n",
                to.raw_name,
                to.value,
                reply_tag(&call_id.value)
            );
        }
        let _ = write!(lines, "{}: {}\r\n", call_id.raw_name, call_id.value);
        let _ = write!(lines, "{}: {}\r\n", cseq.raw_name, cseq.value);
        Some(ReplyHeaders { via, lines })
    }

    fn render(&self, code: u16, reason: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut text = format!("SIP/2.0 {code} {reason}\r\n{}", self.lines);
        for (name, value) in extra {
            let _ = write!(text, "{name}: {value}\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        text.into_bytes()
    }
}

/// A To tag for our 400: derived from the Call-ID so a retransmitted bad
/// request gets the identical response.
fn reply_tag(call_id: &str) -> String {
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let hash = call_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("tb{hash:016x}")
}

#[cfg(test)]
mod tests;
