//! REGISTER as the edge sees it (RFC 3261 §10.3): what a softphone asks
//! for, read off the request, and the answers the daemon's registrar
//! gives through [`RegisterRequest`]. Who may register, the digest check
//! and the bindings are the daemon's; this module only speaks SIP.

use std::net::SocketAddr;

use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;

use super::Transport;

/// One Contact of a REGISTER: a device to reach, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactBinding {
    /// The Contact URI, as written.
    pub uri: String,
    /// Its `expires` parameter, when it has one.
    pub expires: Option<u32>,
}

/// What a REGISTER asks of its address-of-record's bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterContacts {
    /// No Contact: only asks what is bound.
    Query,
    /// `Contact: *` (with `Expires: 0`): remove every binding.
    All,
    /// Add, refresh or (with expires 0) remove these.
    Bindings(Vec<ContactBinding>),
}

/// Why a REGISTER's Contact headers cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad Contact: {0}")]
pub struct BadContact(pub String);

/// Splits a header value at the commas that separate its entries (not
/// those inside `<...>` or quotes).
fn entries(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.into_iter().filter(|e| !e.is_empty()).collect()
}

/// One Contact entry: `"Name" <uri>;params` or `uri;params`.
fn binding(entry: &str) -> Result<ContactBinding, BadContact> {
    let (uri, params) = match entry.find('<') {
        Some(open) => {
            let close = entry[open..]
                .find('>')
                .map(|i| open + i)
                .ok_or_else(|| BadContact(format!("unclosed <: {entry}")))?;
            (&entry[open + 1..close], &entry[close + 1..])
        }
        None => match entry.find(';') {
            Some(semicolon) => (&entry[..semicolon], &entry[semicolon..]),
            None => (entry, ""),
        },
    };
    let uri = uri.trim();
    if !(uri.starts_with("sip:") || uri.starts_with("sips:"))
        || rsipstack::sip::Uri::try_from(uri).is_err()
    {
        return Err(BadContact(format!("not a SIP URI: {uri}")));
    }
    let mut expires = None;
    for param in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("expires")
        {
            expires = Some(
                value
                    .trim()
                    .parse()
                    .map_err(|_| BadContact(format!("expires={value}")))?,
            );
        }
    }
    Ok(ContactBinding {
        uri: uri.to_owned(),
        expires,
    })
}

/// Reads the Contact header values of a REGISTER.
pub fn contacts_of(values: &[String]) -> Result<RegisterContacts, BadContact> {
    let all: Vec<&str> = values.iter().flat_map(|v| entries(v)).collect();
    if all.is_empty() {
        return Ok(RegisterContacts::Query);
    }
    if all.contains(&"*") {
        if all.len() > 1 {
            return Err(BadContact("* with other contacts".into()));
        }
        return Ok(RegisterContacts::All);
    }
    all.into_iter()
        .map(binding)
        .collect::<Result<_, _>>()
        .map(RegisterContacts::Bindings)
}

/// A REGISTER waiting for the registrar's answer.
pub struct RegisterRequest {
    /// Where it came from: the public side of the phone's NAT. Calls to
    /// the devices it binds go here (as Kamailio's `fix_nated_register`
    /// does), whatever address the Contact names.
    pub source: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// The To URI's user: the account being registered.
    pub user: String,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    /// What it asks for (`Err`: unreadable Contacts, answered 400 by
    /// [`RegisterRequest::bad_request`]).
    pub contacts: Result<RegisterContacts, BadContact>,
    /// The `Expires` header.
    pub expires: Option<u32>,
    /// Call-ID and CSeq number (RFC 3261 §10.3 step 7 orders refreshes).
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// The phone's `User-Agent`.
    pub user_agent: Option<String>,
    tx: Transaction,
}

impl std::fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("source", &self.source)
            .field("user", &self.user)
            .field("contacts", &self.contacts)
            .finish()
    }
}

impl RegisterRequest {
    /// Reads a REGISTER transaction.
    pub(crate) fn read(tx: Transaction, source: SocketAddr, transport: Transport) -> Self {
        let request = &tx.original;
        let headers = &request.headers;
        let user = super::header_value(headers, "To")
            .as_deref()
            .and_then(super::user_part)
            .unwrap_or_default();
        let contacts = contacts_of(&super::header_values(headers, "Contact"));
        RegisterRequest {
            source,
            transport,
            user,
            authorization: super::header_value(headers, "Authorization"),
            contacts,
            expires: super::header_value(headers, "Expires").and_then(|v| v.parse().ok()),
            call_id: super::header_value(headers, "Call-ID").unwrap_or_default(),
            cseq: super::header_value(headers, "CSeq")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0),
            user_agent: super::header_value(headers, "User-Agent"),
            tx,
        }
    }

    async fn answer(mut self, code: u16, headers: Vec<Header>) {
        if let Err(e) = self
            .tx
            .reply_with(StatusCode::from(code), headers, None)
            .await
        {
            tracing::debug!(error = %e, code, "cannot answer a REGISTER");
        }
    }

    /// 401 with this `WWW-Authenticate` value.
    pub async fn challenge(self, www_authenticate: String) {
        let header = Header::Other("WWW-Authenticate".into(), www_authenticate);
        self.answer(401, vec![header]).await;
    }

    /// 200 with every binding the account now has, each with the seconds
    /// it has left.
    pub async fn accept(self, bindings: &[(String, u32)]) {
        let mut headers: Vec<Header> = bindings
            .iter()
            .map(|(uri, expires)| {
                Header::Other("Contact".into(), format!("<{uri}>;expires={expires}"))
            })
            .collect();
        let date = httpdate(std::time::SystemTime::now());
        headers.push(Header::Other("Date".into(), date));
        self.answer(200, headers).await;
    }

    /// 400: the Contacts cannot be read.
    pub async fn bad_request(self) {
        self.answer(400, Vec::new()).await;
    }

    /// 403: not allowed (a wrong password, another account's AOR, locked
    /// out, too many devices).
    pub async fn forbid(self) {
        self.answer(403, Vec::new()).await;
    }

    /// 423 Interval Too Brief, with the least `Min-Expires` taken.
    pub async fn too_brief(self, min_expires: u32) {
        let header = Header::Other("Min-Expires".into(), min_expires.to_string());
        self.answer(423, vec![header]).await;
    }

    /// 500 with `Retry-After` (a refresh out of order, the ledger away).
    pub async fn retry_later(self, seconds: u32) {
        let header = Header::Other("Retry-After".into(), seconds.to_string());
        self.answer(500, vec![header]).await;
    }

    /// 503 with `Retry-After`: the address sends too many REGISTERs.
    pub async fn slow_down(self, seconds: u32) {
        let header = Header::Other("Retry-After".into(), seconds.to_string());
        self.answer(503, vec![header]).await;
    }
}

/// An HTTP-date (RFC 7231), as SIP's `Date` header wants it.
fn httpdate(at: std::time::SystemTime) -> String {
    let seconds = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = seconds / 86_400;
    let (hour, minute, second) = (seconds / 3_600 % 24, seconds / 60 % 60, seconds % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let (year, month, day) = civil_from_days(days as i64);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday}, {day:02} {month} {year} {hour:02}:{minute:02}:{second:02} GMT")
}

/// (year, month 1-12, day) of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn contacts(values: &[&str]) -> Result<RegisterContacts, BadContact> {
        contacts_of(&values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>())
    }

    fn bound(uri: &str, expires: Option<u32>) -> ContactBinding {
        ContactBinding {
            uri: uri.into(),
            expires,
        }
    }

    #[test]
    fn contacts_are_read_however_they_are_written() {
        assert_eq!(contacts(&[]).unwrap(), RegisterContacts::Query);
        assert_eq!(contacts(&["*"]).unwrap(), RegisterContacts::All);
        assert_eq!(
            contacts(&[
                "\"Alice, desk\" <sip:alice@192.0.2.7:5070;transport=udp>;expires=600;+sip.instance=\"<urn:uuid:1>\"",
                "sip:alice@10.0.0.2;expires=0, <sips:alice@example.com>",
            ])
            .unwrap(),
            RegisterContacts::Bindings(vec![
                bound("sip:alice@192.0.2.7:5070;transport=udp", Some(600)),
                bound("sip:alice@10.0.0.2", Some(0)),
                bound("sips:alice@example.com", None),
            ])
        );
    }

    #[test]
    fn contacts_that_cannot_be_bound_are_refused() {
        for bad in [
            &["*", "<sip:a@b>"][..],
            &["<sip:a@b"],
            &["<tel:+81312345678>"],
            &["<sip:a@b>;expires=soon"],
            &["<sip:a@b>;expires=-1"],
        ] {
            assert!(contacts(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_date_header_is_an_http_date() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_633_600);
        assert_eq!(httpdate(at), "Tue, 02 Dec 2025 00:00:00 GMT");
        assert_eq!(
            httpdate(std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }
}
